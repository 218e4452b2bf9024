/* Unit test of common/rng.h: streams are pure functions of their seed words,
 * uniform draws stay in range with 53-bit granularity, and the first two
 * moments of the uniform and normal samplers match their distributions. The
 * statistical bounds are 6 standard errors of 1e5 samples (a false failure
 * has probability ~1e-9 per check; the seeds are fixed anyway, so the test is
 * deterministic). */
#include "rng.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

#define NS 100000

static void test_determinism(void) {
    rng_t a, b;
    rng_seed(&a, 1, 2, 3, 4);
    rng_seed(&b, 1, 2, 3, 4);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= (rng_next(&a) == rng_next(&b));
    CHECK_MSG(same, "same seed gave different 64-bit streams");

    /* Every mixed draw type too (a stream is a function of the number of calls). */
    rng_seed(&a, 7, 0, 0, 0);
    rng_seed(&b, 7, 0, 0, 0);
    same = 1;
    for (int i = 0; i < 1000; i++) {
        same &= (rng_uniform(&a) == rng_uniform(&b));
        same &= (rng_normal(&a) == rng_normal(&b));
        same &= (rng_below(&a, 1000003) == rng_below(&b, 1000003));
        same &= (rng_range(&a, -3.0, 2.0) == rng_range(&b, -3.0, 2.0));
    }
    CHECK_MSG(same, "same seed gave different mixed streams");

    /* Changing any one seed word changes the stream. */
    const uint64_t base[4] = {11, 22, 33, 44};
    rng_seed(&a, base[0], base[1], base[2], base[3]);
    uint64_t first[8];
    for (int i = 0; i < 8; i++) first[i] = rng_next(&a);
    for (int w = 0; w < 4; w++) {
        uint64_t s[4] = {base[0], base[1], base[2], base[3]};
        s[w] += 1;
        rng_seed(&b, s[0], s[1], s[2], s[3]);
        int differ = 0;
        for (int i = 0; i < 8; i++) differ += (rng_next(&b) != first[i]);
        CHECK_MSG(differ >= 7, "seed word %d: only %d of 8 draws differ", w, differ);
    }
    /* Word order matters: (a, b) and (b, a) are different streams. */
    rng_seed(&a, 5, 6, 0, 0);
    rng_seed(&b, 6, 5, 0, 0);
    CHECK(rng_next(&a) != rng_next(&b));

    /* An all-zero seed still gives a valid (non-zero) state and a stream
     * that is not constant. */
    rng_seed(&a, 0, 0, 0, 0);
    CHECK((a.s[0] | a.s[1] | a.s[2] | a.s[3]) != 0);
    uint64_t x0 = rng_next(&a), x1 = rng_next(&a), x2 = rng_next(&a);
    CHECK(x0 != x1 && x1 != x2);
    /* The state is never all zero for a range of seeds. */
    int nonzero = 1;
    for (uint64_t s = 0; s < 1000; s++) {
        rng_seed(&a, s, s * 3, 0, s ^ 0xffu);
        nonzero &= ((a.s[0] | a.s[1] | a.s[2] | a.s[3]) != 0);
    }
    CHECK(nonzero);
}

static void test_uniform(void) {
    rng_t r;
    rng_seed(&r, 42, 0, 0, 0);
    int in_range = 1, granular = 1;
    double sum = 0.0, mn = 1.0, mx = 0.0;
    double *u = malloc(NS * sizeof *u);
    if (!u) exit(2);
    for (int i = 0; i < NS; i++) {
        u[i] = rng_uniform(&r);
        in_range &= (u[i] >= 0.0 && u[i] < 1.0);
        /* 53 random bits: u * 2^53 is an integer. */
        double t = u[i] * 0x1.0p53;
        granular &= (t == floor(t));
        sum += u[i];
        if (u[i] < mn) mn = u[i];
        if (u[i] > mx) mx = u[i];
    }
    CHECK(in_range);
    CHECK(granular);
    double mean = sum / NS;
    double var = 0.0;
    for (int i = 0; i < NS; i++) var += (u[i] - mean) * (u[i] - mean);
    var /= (NS - 1);
    /* mean: sd = sqrt(1/12 / n) = 9.1e-4; variance: sd of the sample variance
     * = sqrt((1/80 - 1/144) / n) = 2.4e-4. */
    CHECK_NEAR(mean, 0.5, 6.0 * sqrt(1.0 / 12.0 / NS));
    CHECK_NEAR(var, 1.0 / 12.0, 6.0 * sqrt((1.0 / 80.0 - 1.0 / 144.0) / NS));
    /* The sample reaches near both ends (P(min > 1e-3) = (1-1e-3)^1e5 ~ 4e-44). */
    CHECK(mn < 1e-3);
    CHECK(mx > 1.0 - 1e-3);
    /* Ten equal bins, each 1e4 +- 6 * sqrt(1e5 * 0.1 * 0.9) = 1e4 +- 569. */
    int bins[10] = {0};
    for (int i = 0; i < NS; i++) {
        int b = (int)(u[i] * 10.0);
        bins[b > 9 ? 9 : b]++;
    }
    for (int b = 0; b < 10; b++) CHECK_NEAR(bins[b], NS / 10, 6.0 * sqrt(NS * 0.1 * 0.9));
    free(u);

    /* rng_range */
    int ok = 1;
    double s2 = 0.0;
    for (int i = 0; i < NS; i++) {
        double v = rng_range(&r, -5.0, 5.0);
        ok &= (v >= -5.0 && v < 5.0);
        s2 += v;
    }
    CHECK(ok);
    CHECK_NEAR(s2 / NS, 0.0, 6.0 * 10.0 * sqrt(1.0 / 12.0 / NS));
    ok = 1;
    for (int i = 0; i < 1000; i++) {
        double v = rng_range(&r, 2.0, 2.5);
        ok &= (v >= 2.0 && v < 2.5);
    }
    CHECK(ok);
}

static void test_normal(void) {
    rng_t r;
    rng_seed(&r, 43, 1, 0, 0);
    double sum = 0.0, sq = 0.0, m4 = 0.0;
    int finite = 1, within1 = 0, beyond3 = 0;
    for (int i = 0; i < NS; i++) {
        double z = rng_normal(&r);
        finite &= isfinite(z);
        sum += z;
        sq += z * z;
        m4 += z * z * z * z;
        within1 += (fabs(z) < 1.0);
        beyond3 += (fabs(z) > 3.0);
    }
    CHECK(finite);
    double mean = sum / NS;
    double var = sq / NS - mean * mean;
    /* mean sd = 1/sqrt(n) = 3.2e-3; sample variance sd = sqrt(2/n) = 4.5e-3;
     * fourth moment 3, sd sqrt((105 - 9)/n) = 0.031. */
    CHECK_NEAR(mean, 0.0, 6.0 / sqrt((double)NS));
    CHECK_NEAR(var, 1.0, 6.0 * sqrt(2.0 / NS));
    CHECK_NEAR(m4 / NS, 3.0, 6.0 * sqrt(96.0 / NS));
    /* P(|z| < 1) = 0.682689, P(|z| > 3) = 0.0026998. */
    CHECK_NEAR((double)within1 / NS, 0.682689, 6.0 * sqrt(0.682689 * 0.317311 / NS));
    CHECK_NEAR((double)beyond3 / NS, 0.0026998, 6.0 * sqrt(0.0026998 * 0.9973 / NS));
}

static void test_below(void) {
    rng_t r;
    rng_seed(&r, 44, 2, 0, 0);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= (rng_below(&r, 1) == 0);
    CHECK_MSG(ok, "rng_below(1) != 0");

    /* n = 7: every value in range and each about NS/7 often. */
    int cnt[7] = {0};
    ok = 1;
    for (int i = 0; i < NS; i++) {
        uint64_t v = rng_below(&r, 7);
        if (v >= 7) {
            ok = 0;
            continue;
        }
        cnt[v]++;
    }
    CHECK(ok);
    for (int b = 0; b < 7; b++)
        CHECK_NEAR(cnt[b], NS / 7.0, 6.0 * sqrt(NS * (1.0 / 7.0) * (6.0 / 7.0)));

    /* Large n where modulo bias would be visible: n = 2^63 + 2^62 (3/4 of the
     * 64-bit range). With a plain modulo, values below 2^62 would be twice as
     * likely (probability 1/2 instead of 1/3). */
    const uint64_t big = (UINT64_C(1) << 63) + (UINT64_C(1) << 62);
    int low = 0;
    ok = 1;
    for (int i = 0; i < NS; i++) {
        uint64_t v = rng_below(&r, big);
        ok &= (v < big);
        low += (v < (UINT64_C(1) << 62));
    }
    CHECK(ok);
    CHECK_NEAR((double)low / NS, 1.0 / 3.0, 6.0 * sqrt((1.0 / 3.0) * (2.0 / 3.0) / NS));

    /* Extremes: n = 2 and n = UINT64_MAX, n = 2^63 + 1 (worst rejection rate). */
    ok = 1;
    int ones = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t v = rng_below(&r, 2);
        ok &= (v < 2);
        ones += (int)v;
        ok &= (rng_below(&r, UINT64_MAX) < UINT64_MAX);
        ok &= (rng_below(&r, (UINT64_C(1) << 63) + 1) <= (UINT64_C(1) << 63));
    }
    CHECK(ok);
    CHECK_NEAR(ones, 5000, 6.0 * sqrt(10000 * 0.25));
}

int main(void) {
    test_determinism();
    test_uniform();
    test_normal();
    test_below();
    return check_finish("test_rng");
}
