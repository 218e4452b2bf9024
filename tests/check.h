/* Header-only test harness (STYLE C16). Each CHECK prints both values and
 * file:line on failure; check_finish() prints a summary and returns the exit
 * status (non-zero if any check failed). */
#ifndef HD_CHECK_H
#define HD_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_failed_count = 0;
static int check_passed_count = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond)                                                                                  \
            check_passed_count++;                                                                  \
        else {                                                                                     \
            check_failed_count++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond)                                                                                  \
            check_passed_count++;                                                                  \
        else {                                                                                     \
            check_failed_count++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        if (check_a_ == check_b_)                                                                  \
            check_passed_count++;                                                                  \
        else {                                                                                     \
            check_failed_count++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld vs %lld)\n", __FILE__,     \
                    __LINE__, #a, #b, check_a_, check_b_);                                         \
        }                                                                                          \
    } while (0)

/* |a - b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double check_a_ = (double)(a), check_b_ = (double)(b), check_t_ = (double)(tol);           \
        if (fabs(check_a_ - check_b_) <= check_t_)                                                 \
            check_passed_count++;                                                                  \
        else {                                                                                     \
            check_failed_count++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK_NEAR failed: %s ~ %s (%.17g vs %.17g, tol %.3g)\n",      \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_, check_t_);                     \
        }                                                                                          \
    } while (0)

static inline int check_finish(const char *name) {
    printf("%s: %d checks passed, %d failed\n", name, check_passed_count, check_failed_count);
    return check_failed_count ? 1 : 0;
}

#endif
