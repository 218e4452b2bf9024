/* Unit test of common/vec.h: every helper against a naive loop, at sizes below,
 * at and above VEC_BLAS_MIN (so that both the plain-loop and the BLAS paths
 * run), plus the edge cases of the contract (aliasing in vec_lincomb, zero
 * vectors in vec_cosine, overflow and underflow in vec_nrm2). Tolerances are
 * the floating-point error bounds of the two summation orders, stated at each
 * check. */
#include "vec.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

#define EPS 0x1.0p-52 /* double machine epsilon */

/* Sizes around the BLAS threshold, and a few large ones. */
static const size_t sizes[] = {0,   1,    2,   7, VEC_BLAS_MIN - 1, VEC_BLAS_MIN, VEC_BLAS_MIN + 1,
                               100, 1000, 4099};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Buffers are allocated at their exact size (at least one element) so that
 * AddressSanitizer catches any access past n. */
static double *alloc(size_t n) {
    double *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static void fill(rng_t *r, size_t n, double *x) {
    for (size_t i = 0; i < n; i++) x[i] = rng_range(r, -2.0, 2.0);
}

static void test_zero_copy(rng_t *r) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        double *x = alloc(n), *y = alloc(n);
        fill(r, n, x);
        vec_copy(n, y, x);
        CHECK(n == 0 || memcmp(x, y, n * sizeof *x) == 0);
        vec_copy(n, y, y); /* out == x is allowed */
        CHECK(n == 0 || memcmp(x, y, n * sizeof *x) == 0);
        vec_zero(n, y);
        int allzero = 1;
        for (size_t i = 0; i < n; i++) allzero &= (y[i] == 0.0);
        CHECK_MSG(allzero, "vec_zero n=%zu", n);
        free(x);
        free(y);
    }
}

static void test_axpy_scale_lincomb(rng_t *r) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        double *x = alloc(n), *y = alloc(n), *ref = alloc(n), *out = alloc(n);
        fill(r, n, x);
        fill(r, n, y);
        const double a = -0.37, b = 1.9;

        /* axpy: one multiply and one add per element; a fused multiply-add in
         * BLAS may round once instead of twice, so allow 2 ulps of the terms. */
        for (size_t i = 0; i < n; i++) ref[i] = y[i] + a * x[i];
        vec_copy(n, out, y);
        vec_axpy(n, out, a, x);
        int bad = 0;
        for (size_t i = 0; i < n; i++)
            if (fabs(out[i] - ref[i]) > 2.0 * EPS * (fabs(y[i]) + fabs(a * x[i]))) bad++;
        CHECK_MSG(bad == 0, "vec_axpy n=%zu: %d elements off", n, bad);

        /* scale: a single rounded multiply per element. */
        vec_copy(n, out, x);
        vec_scale(n, out, a);
        bad = 0;
        for (size_t i = 0; i < n; i++)
            if (fabs(out[i] - a * x[i]) > EPS * fabs(a * x[i])) bad++;
        CHECK_MSG(bad == 0, "vec_scale n=%zu: %d elements off", n, bad);

        /* lincomb: the naive loop written the same way; allow 2 ulps for FMA. */
        for (size_t i = 0; i < n; i++) ref[i] = a * x[i] + b * y[i];
        vec_lincomb(n, out, a, x, b, y);
        bad = 0;
        for (size_t i = 0; i < n; i++)
            if (fabs(out[i] - ref[i]) > 2.0 * EPS * (fabs(a * x[i]) + fabs(b * y[i]))) bad++;
        CHECK_MSG(bad == 0, "vec_lincomb n=%zu: %d elements off", n, bad);

        /* lincomb with out aliasing x, then out aliasing y. */
        double *xa = alloc(n), *ya = alloc(n);
        vec_copy(n, xa, x);
        vec_copy(n, ya, y);
        vec_lincomb(n, xa, a, xa, b, y);
        vec_lincomb(n, ya, a, x, b, ya);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            double tol = 2.0 * EPS * (fabs(a * x[i]) + fabs(b * y[i]));
            if (fabs(xa[i] - ref[i]) > tol || fabs(ya[i] - ref[i]) > tol) bad++;
        }
        CHECK_MSG(bad == 0, "vec_lincomb aliased n=%zu: %d elements off", n, bad);
        free(xa);
        free(ya);
        free(x);
        free(y);
        free(ref);
        free(out);
    }
}

static void test_dot_nrm2(rng_t *r) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        double *x = alloc(n), *y = alloc(n);
        fill(r, n, x);
        fill(r, n, y);
        /* Naive sums in long double as the reference. Any order of a float64
         * sum of n products is within n*eps*sum|x_i y_i| of the exact value
         * (Higham, Thm 3.1 with gamma_n ~ n u, u = eps/2); we allow (n+1)*eps. */
        long double d = 0.0L, sa = 0.0L, ss = 0.0L;
        for (size_t i = 0; i < n; i++) {
            d += (long double)x[i] * y[i];
            sa += fabsl((long double)x[i] * y[i]);
            ss += (long double)x[i] * x[i];
        }
        double got = vec_dot(n, x, y);
        CHECK_NEAR(got, (double)d, (double)(n + 1) * EPS * (double)sa);
        double nr = vec_nrm2(n, x);
        double nref = sqrt((double)ss);
        /* The norm is a sum of positive terms, then a square root (and a
         * rescale in the overflow-safe form): relative (n+4)*eps. */
        CHECK_NEAR(nr, nref, (double)(n + 4) * EPS * nref);
        if (n == 0) {
            CHECK(got == 0.0);
            CHECK(nr == 0.0);
        }
        free(x);
        free(y);
    }
}

/* vec_nrm2 must not overflow or underflow where the plain sum of squares
 * would: the contract says "overflow-safe". */
static void test_nrm2_extremes(void) {
    const size_t ns[] = {3, VEC_BLAS_MIN + 5};
    for (size_t k = 0; k < 2; k++) {
        size_t n = ns[k];
        double *x = alloc(n);
        for (size_t i = 0; i < n; i++) x[i] = 1e200;
        double want = 1e200 * sqrt((double)n);
        double got = vec_nrm2(n, x);
        CHECK_MSG(isfinite(got), "nrm2 overflow n=%zu got %g", n, got);
        CHECK_NEAR(got, want, 1e-14 * want);
        for (size_t i = 0; i < n; i++) x[i] = -1e-200;
        want = 1e-200 * sqrt((double)n);
        got = vec_nrm2(n, x);
        CHECK_NEAR(got, want, 1e-14 * want);
        vec_zero(n, x);
        CHECK(vec_nrm2(n, x) == 0.0);
        free(x);
    }
}

static void test_all_finite(void) {
    const size_t n = 50;
    double *x = alloc(n);
    for (size_t i = 0; i < n; i++) x[i] = (double)i - 25.0;
    CHECK(vec_all_finite(n, x) == 1);
    CHECK(vec_all_finite(0, x) == 1);
    const size_t pos[] = {0, 17, n - 1};
    const double bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t p = 0; p < 3; p++)
        for (size_t b = 0; b < 3; b++) {
            double keep = x[pos[p]];
            x[pos[p]] = bad[b];
            CHECK_MSG(vec_all_finite(n, x) == 0, "pos=%zu val=%g", pos[p], bad[b]);
            x[pos[p]] = keep;
        }
    /* DBL_MAX and subnormals are finite. */
    x[3] = 1.7976931348623157e308;
    x[4] = 4.9e-324;
    CHECK(vec_all_finite(n, x) == 1);
    free(x);
}

static void test_cosine(rng_t *r) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        if (n == 0) continue;
        double *x = alloc(n), *y = alloc(n), *z = alloc(n);
        fill(r, n, x);
        fill(r, n, y);
        long double d = 0.0L, nx = 0.0L, ny = 0.0L;
        for (size_t i = 0; i < n; i++) {
            d += (long double)x[i] * y[i];
            nx += (long double)x[i] * x[i];
            ny += (long double)y[i] * y[i];
        }
        double want = (double)(d / sqrtl(nx * ny));
        /* Absolute error of a cosine is bounded by ~(n+4) eps (it is a ratio
         * of sums whose error is relative to sum|x||y| <= |x||y|). */
        CHECK_NEAR(vec_cosine(n, x, y), want, (double)(n + 8) * EPS);
        /* Parallel, antiparallel, scaled. */
        vec_copy(n, z, x);
        vec_scale(n, z, 3.5);
        CHECK_NEAR(vec_cosine(n, x, z), 1.0, (double)(n + 8) * EPS);
        vec_scale(n, z, -1.0);
        CHECK_NEAR(vec_cosine(n, x, z), -1.0, (double)(n + 8) * EPS);
        /* Zero vector on either side gives 0. */
        vec_zero(n, z);
        CHECK(vec_cosine(n, x, z) == 0.0);
        CHECK(vec_cosine(n, z, y) == 0.0);
        free(x);
        free(y);
        free(z);
    }
    /* Orthogonal pair. */
    double e1[40] = {0}, e2[40] = {0};
    e1[3] = 2.0;
    e2[1] = 0.5;
    e2[39] = -5.0;
    CHECK(vec_cosine(3 + 1, e1, e2) == 0.0);
    CHECK(vec_cosine(40, e1, e2) == 0.0);
}

static void test_max_rel_diff(rng_t *r) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t n = sizes[s];
        double *x = alloc(n), *y = alloc(n);
        fill(r, n, x);
        fill(r, n, y);
        double d = 0.0, m = 0.0;
        for (size_t i = 0; i < n; i++) {
            if (fabs(x[i] - y[i]) > d) d = fabs(x[i] - y[i]);
            if (fabs(y[i]) > m) m = fabs(y[i]);
        }
        double want = n ? d / m : 0.0;
        CHECK_NEAR(vec_max_rel_diff(n, x, y), want, 4.0 * EPS * want);
        CHECK(vec_max_rel_diff(n, x, x) == 0.0);
        free(x);
        free(y);
    }
    /* y == 0: the denominator is floored at a tiny positive value, so the
     * result is finite and large, not NaN or Inf. */
    double x0[3] = {1e-310, 0.0, 0.0}, y0[3] = {0.0, 0.0, 0.0};
    double v = vec_max_rel_diff(3, x0, y0);
    CHECK_MSG(isfinite(v) && v > 0.0, "max_rel_diff vs zero = %g", v);
    CHECK(vec_max_rel_diff(3, y0, y0) == 0.0);
}

int main(void) {
    rng_t r;
    rng_seed(&r, 20240501u, 1, 2, 3);
    test_zero_copy(&r);
    test_axpy_scale_lincomb(&r);
    test_dot_nrm2(&r);
    test_nrm2_extremes();
    test_all_finite();
    test_cosine(&r);
    test_max_rel_diff(&r);
    return check_finish("test_vec");
}
