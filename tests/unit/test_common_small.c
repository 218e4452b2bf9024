/* Unit tests of the small plain-data modules of common/: outer.h (Adam
 * against a hand-computed two-step example, SGD, clipping, Reptile),
 * linest.h (exact recovery, pooling, the no-sample case), method.h (names,
 * posting schedule, VJP table, estimation episodes) and task.h (determinism
 * of (seed, stream, episode, slot), sinusoid ranges, gaussmix one-hot
 * targets). Tolerances are stated at each check. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "linest.h"
#include "method.h"
#include "outer.h"
#include "task.h"

/* ---- outer.h ------------------------------------------------------------- */

static void test_outer_cfg(void) {
    outer_cfg c;
    outer_cfg_default(&c);
    CHECK_EQ_INT(c.kind, OUTER_ADAM);
    CHECK(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8);
    outer_kind k = OUTER_ADAM;
    CHECK_EQ_INT(outer_kind_parse("sgd", &k), 0);
    CHECK_EQ_INT(k, OUTER_SGD);
    CHECK_EQ_INT(outer_kind_parse("adam", &k), 0);
    CHECK_EQ_INT(k, OUTER_ADAM);
    CHECK_EQ_INT(outer_kind_parse("Adam", &k), -1);
    CHECK_EQ_INT(outer_kind_parse("", &k), -1);
    CHECK(strcmp(outer_kind_name(OUTER_ADAM), "adam") == 0);
    CHECK(strcmp(outer_kind_name(OUTER_SGD), "sgd") == 0);
}

/* Two Adam steps on two parameters. The reference is the textbook formula
 * written out here, independently of outer.c's algebraically equal form
 * (step = lr / bc1, sqrt(v) / sqrt(bc2)); the two differ by a few ulps, so
 * the tolerance is 1e-15 absolute on values of order 1. The literal numbers
 * were computed by hand (step 1: m^ = g, v^ = g^2, so the update is
 * lr * g / (|g| + eps)) and with Python floats for step 2. */
static void test_outer_adam(void) {
    outer_cfg c = {OUTER_ADAM, 0.01, 0.9, 0.999, 1e-8};
    outer_state st;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(outer_state_init(&st, &c, 2, &err), HD_OK);
    CHECK(st.m != NULL && st.v != NULL && st.step == 0);
    CHECK(st.m[0] == 0.0 && st.m[1] == 0.0 && st.v[0] == 0.0 && st.v[1] == 0.0);

    const double g[2][2] = {{0.5, -1.0}, {0.1, 3.0}};
    double lam[2] = {1.0, -2.0}, ref[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
    for (int t = 1; t <= 2; t++) {
        outer_apply(&c, &st, lam, g[t - 1]);
        for (int i = 0; i < 2; i++) {
            double gi = g[t - 1][i];
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
            double mhat = m[i] / (1.0 - pow(c.beta1, t));
            double vhat = v[i] / (1.0 - pow(c.beta2, t));
            ref[i] -= c.lr * mhat / (sqrt(vhat) + c.eps);
            CHECK_NEAR(lam[i], ref[i], 1e-15);
            CHECK_NEAR(st.m[i], m[i], 1e-17);
            CHECK_NEAR(st.v[i], v[i], 1e-17);
        }
        CHECK_EQ_INT(st.step, t);
        if (t == 1) {
            /* 1 - 0.01 * 0.5 / 0.50000001 and -2 + 0.01 * 1 / 1.00000001 */
            CHECK_NEAR(lam[0], 0.9900000002, 1e-15);
            CHECK_NEAR(lam[1], -1.9900000001, 1e-15);
        }
    }
    CHECK_NEAR(lam[0], 0.9819695906384652, 1e-15);
    CHECK_NEAR(lam[1], -1.9949418984108744, 1e-15);
    outer_state_clear(&st);
    CHECK(st.m == NULL && st.v == NULL && st.step == 0);
    outer_state_clear(&st); /* twice is fine */

    /* A zeroed state can be cleared; n = 0 allocates nothing. */
    outer_state z;
    memset(&z, 0, sizeof z);
    outer_state_clear(&z);
    CHECK_EQ_INT(outer_state_init(&z, &c, 0, &err), HD_OK);
    outer_apply(&c, &z, NULL, NULL);
    CHECK_EQ_INT(z.step, 1);
    outer_state_clear(&z);
}

static void test_outer_sgd(void) {
    outer_cfg c = {OUTER_SGD, 0.5, 0.9, 0.999, 1e-8};
    outer_state st;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(outer_state_init(&st, &c, 3, &err), HD_OK);
    CHECK(st.m == NULL && st.v == NULL);
    double lam[3] = {1.0, 2.0, -3.0};
    const double g[3] = {2.0, -4.0, 0.25};
    outer_apply(&c, &st, lam, g);
    /* lam - 0.5 g, exact in binary */
    CHECK(lam[0] == 0.0 && lam[1] == 4.0 && lam[2] == -3.125);
    outer_apply(&c, &st, lam, g);
    CHECK(lam[0] == -1.0 && lam[1] == 6.0 && lam[2] == -3.25);
    CHECK_EQ_INT(st.step, 2);
    outer_state_clear(&st);
}

static void test_outer_clip_reptile(void) {
    double g[2] = {3.0, 4.0};
    CHECK_NEAR(outer_clip(2, g, 10.0), 5.0, 1e-15);
    CHECK(g[0] == 3.0 && g[1] == 4.0); /* below the bound: untouched */
    CHECK_NEAR(outer_clip(2, g, 1.0), 5.0, 1e-15);
    CHECK_NEAR(g[0], 0.6, 1e-15);
    CHECK_NEAR(g[1], 0.8, 1e-15);
    CHECK_NEAR(sqrt(g[0] * g[0] + g[1] * g[1]), 1.0, 1e-15);
    double z[3] = {0, 0, 0};
    CHECK(outer_clip(3, z, 1.0) == 0.0);
    CHECK(z[0] == 0.0 && z[1] == 0.0 && z[2] == 0.0);
    double e[2] = {1.0, 0.0};
    CHECK(outer_clip(2, e, 1.0) == 1.0); /* exactly at the bound */
    CHECK(e[0] == 1.0);

    double phi[2] = {1.0, 2.0};
    const double mean[2] = {3.0, -2.0};
    outer_reptile(2, phi, 0.5, mean);
    CHECK(phi[0] == 2.0 && phi[1] == 0.0);
    outer_reptile(2, phi, 0.0, mean); /* 0 disables */
    CHECK(phi[0] == 2.0 && phi[1] == 0.0);
    outer_reptile(2, phi, 1.0, mean); /* 1 jumps to the mean */
    CHECK(phi[0] == 3.0 && phi[1] == -2.0);
}

/* ---- linest.h ------------------------------------------------------------ */

static void test_linest(void) {
    linest_sums s;
    double theta = 42.0;
    linest_init(&s);
    CHECK_EQ_INT(s.n, 0);
    CHECK_EQ_INT(linest_fit(&s, &theta), -1); /* no sample */
    CHECK(theta == 42.0);
    linest_add(&s, 0.0, 5.0); /* x = 0 carries no information */
    CHECK_EQ_INT(linest_fit(&s, &theta), -1);
    CHECK(theta == 42.0);
    linest_add(&s, NAN, 1.0);
    CHECK_EQ_INT(linest_fit(&s, &theta), -1);
    CHECK(theta == 42.0);

    /* y = theta x exactly: x and theta are small binary fractions, so every
     * product and sum is exact and the fit is exact. */
    linest_init(&s);
    for (int i = -5; i <= 6; i++) linest_add(&s, 0.5 * i, -2.25 * (0.5 * i));
    CHECK_EQ_INT(s.n, 12);
    CHECK_EQ_INT(linest_fit(&s, &theta), 0);
    CHECK(theta == -2.25);
    /* Irrational theta, generic x: exact up to rounding (1e-14 relative). */
    linest_init(&s);
    for (int i = 1; i <= 50; i++) {
        double x = sin(1.0 + i) * i;
        linest_add(&s, x, M_PI * x);
    }
    CHECK_EQ_INT(linest_fit(&s, &theta), 0);
    CHECK_NEAR(theta, M_PI, 1e-14 * M_PI);

    /* Pooling: sums of two halves merged == sums over all samples. Summation
     * order differs, so allow 1e-13 relative; the fit must agree as well. */
    linest_sums a, b, all;
    linest_init(&a);
    linest_init(&b);
    linest_init(&all);
    for (int i = 0; i < 100; i++) {
        double x = cos(0.37 * i) * 3.0, y = 1.7 * x + 0.3 * sin(2.1 * i);
        linest_add(i < 40 ? &a : &b, x, y);
        linest_add(&all, x, y);
    }
    linest_merge(&a, &b);
    CHECK_EQ_INT(a.n, 100);
    CHECK_EQ_INT(all.n, 100);
    CHECK_NEAR(a.sxx, all.sxx, 1e-13 * fabs(all.sxx));
    CHECK_NEAR(a.sxy, all.sxy, 1e-13 * fabs(all.sxy));
    CHECK_NEAR(a.syy, all.syy, 1e-13 * fabs(all.syy));
    double ta = 0.0, tall = 0.0;
    CHECK_EQ_INT(linest_fit(&a, &ta), 0);
    CHECK_EQ_INT(linest_fit(&all, &tall), 0);
    CHECK_NEAR(ta, tall, 1e-13 * fabs(tall));
    CHECK_NEAR(tall, 1.7, 0.1); /* the noise is small */
    /* Merging an empty set changes nothing. */
    linest_sums e;
    linest_init(&e);
    linest_sums before = a;
    linest_merge(&a, &e);
    CHECK(a.sxx == before.sxx && a.sxy == before.sxy && a.syy == before.syy && a.n == before.n);
}

/* ---- method.h ------------------------------------------------------------ */

static void test_method_names(void) {
    static const char *const want[METHOD_COUNT] = {"fo",    "onestep", "hyperdistill",
                                                   "drmad", "rmd",     "neumann"};
    for (int k = 0; k < METHOD_COUNT; k++) {
        CHECK(strcmp(method_name((method_kind)k), want[k]) == 0);
        method_kind got = METHOD_COUNT;
        CHECK_EQ_INT(method_parse(method_name((method_kind)k), &got), 0);
        CHECK_EQ_INT(got, k);
    }
    method_kind got = METHOD_FO;
    CHECK_EQ_INT(method_parse("sgd", &got), -1);
    CHECK_EQ_INT(method_parse("", &got), -1);
    CHECK_EQ_INT(method_parse("RMD", &got), -1);
    CHECK_EQ_INT(method_parse(NULL, &got), -1);
    CHECK_EQ_INT(got, METHOD_FO);
    CHECK(strcmp(method_name(METHOD_COUNT), "unknown") == 0);
    CHECK(strcmp(method_name((method_kind)-1), "unknown") == 0);

    method_cfg c;
    method_cfg_default(&c);
    CHECK_EQ_INT(c.kind, METHOD_HYPERDISTILL);
    CHECK(c.gamma == 0.99);
    CHECK_EQ_INT(c.pi_unit, 0);
    CHECK_EQ_INT(c.estimation_period, 50);
    CHECK(c.theta_init == 1.0);
    CHECK_EQ_INT(c.neumann_n, 3);
    CHECK_EQ_INT(c.neumann_k, 5);
    CHECK(c.neumann_lr == 0.0);
}

static void test_method_schedule(void) {
    const int T = 10;
    method_cfg c;
    method_cfg_default(&c);
    c.neumann_k = 3;
    /* posts per episode and VJPs per episode, indexed by kind (section 5). */
    static const int posts[METHOD_COUNT] = {10, 10, 10, 1, 1, 3};
    for (int k = 0; k < METHOD_COUNT; k++) {
        c.kind = (method_kind)k;
        int n = 0;
        for (int t = 1; t <= T; t++) {
            int p = method_posts_at(&c, t, T);
            int want;
            switch (c.kind) {
            case METHOD_DRMAD:
            case METHOD_RMD:
                want = t == T;
                break;
            case METHOD_NEUMANN:
                want = t >= 8;
                break; /* the last K = 3 steps */
            default:
                want = 1;
                break;
            }
            CHECK_MSG(p == want, "%s t=%d: posts_at %d, want %d", method_name(c.kind), t, p, want);
            n += p;
        }
        CHECK_EQ_INT(n, posts[k]);
        CHECK_EQ_INT(method_posts_per_episode(&c, T), posts[k]);
    }

    c.neumann_n = 3;
    static const long vjps[METHOD_COUNT] = {0, 10, 10, 10, 10, (3 + 1) * 3};
    for (int k = 0; k < METHOD_COUNT; k++) {
        c.kind = (method_kind)k;
        CHECK_MSG(method_vjps_per_episode(&c, T) == vjps[k], "%s: %ld VJPs, want %ld",
                  method_name(c.kind), method_vjps_per_episode(&c, T), vjps[k]);
    }
    c.kind = METHOD_NEUMANN;
    c.neumann_n = 0;
    c.neumann_k = 1;
    CHECK_EQ_INT(method_vjps_per_episode(&c, T), 1);
    CHECK_EQ_INT(method_posts_per_episode(&c, T), 1);
    CHECK_EQ_INT(method_posts_at(&c, T, T), 1);
    CHECK_EQ_INT(method_posts_at(&c, T - 1, T), 0);
    c.neumann_n = 100;
    c.neumann_k = 10; /* K = T: every step */
    CHECK_EQ_INT(method_vjps_per_episode(&c, T), 101 * 10);
    CHECK_EQ_INT(method_posts_per_episode(&c, T), 10);
    /* Header: an estimation run is T DrMAD VJPs plus T distilled VJPs. */
    CHECK_EQ_INT(method_estimation_vjps(T), 2 * T);
    CHECK_EQ_INT(method_estimation_vjps(30), 60);
}

static void test_method_estimation(void) {
    method_cfg c;
    method_cfg_default(&c);
    CHECK_EQ_INT(c.estimation_period, 50);
    for (int m = 1; m <= 160; m++) {
        int want = m == 1 || m == 51 || m == 101 || m == 151;
        CHECK_MSG(method_is_estimation_episode(&c, m) == want, "period 50 m=%d", m);
    }
    c.estimation_period = 1; /* every episode */
    for (int m = 1; m <= 5; m++) CHECK_EQ_INT(method_is_estimation_episode(&c, m), 1);
    c.estimation_period = 0; /* never */
    for (int m = 1; m <= 200; m++) CHECK_EQ_INT(method_is_estimation_episode(&c, m), 0);
    c.estimation_period = 50;
    c.pi_unit = 1; /* unit pi: no theta to fit */
    for (int m = 1; m <= 200; m++) CHECK_EQ_INT(method_is_estimation_episode(&c, m), 0);
    c.pi_unit = 0;
    for (int k = 0; k < METHOD_COUNT; k++) {
        if (k == METHOD_HYPERDISTILL) continue;
        c.kind = (method_kind)k;
        CHECK_EQ_INT(method_is_estimation_episode(&c, 1), 0);
        CHECK_EQ_INT(method_is_estimation_episode(&c, 51), 0);
    }
}

/* ---- task.h -------------------------------------------------------------- */

static int same_task(const task_t *a, const task_t *b) {
    return memcmp(a->xs, b->xs, a->n_s * a->in_dim * sizeof(double)) == 0 &&
           memcmp(a->ys, b->ys, a->n_s * a->out_dim * sizeof(double)) == 0 &&
           memcmp(a->xq, b->xq, a->n_q * a->in_dim * sizeof(double)) == 0 &&
           memcmp(a->yq, b->yq, a->n_q * a->out_dim * sizeof(double)) == 0 &&
           memcmp(&a->amp, &b->amp, sizeof a->amp) == 0 &&
           memcmp(&a->phase, &b->phase, sizeof a->phase) == 0;
}

static void test_task_names(void) {
    task_family f = TASK_GAUSSMIX;
    CHECK_EQ_INT(task_family_parse("sinusoid", &f), 0);
    CHECK_EQ_INT(f, TASK_SINUSOID);
    CHECK_EQ_INT(task_family_parse("gaussmix", &f), 0);
    CHECK_EQ_INT(f, TASK_GAUSSMIX);
    CHECK_EQ_INT(task_family_parse("omniglot", &f), -1);
    CHECK_EQ_INT(f, TASK_GAUSSMIX);
    CHECK(strcmp(task_family_name(TASK_SINUSOID), "sinusoid") == 0);
    CHECK(strcmp(task_family_name(TASK_GAUSSMIX), "gaussmix") == 0);
    task_t z;
    memset(&z, 0, sizeof z);
    task_clear(&z); /* a zeroed task can be cleared */
}

static void test_task_sinusoid(void) {
    const task_cfg c = {TASK_SINUSOID, 10, 12, 1, 1, 0};
    task_t a, b;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(task_alloc(&a, c.shots, c.queries, 1, 1, &err), HD_OK);
    CHECK_EQ_INT(task_alloc(&b, c.shots, c.queries, 1, 1, &err), HD_OK);

    task_make(&c, 7, TASK_STREAM_TRAIN, 3, 4, &a);
    task_make(&c, 7, TASK_STREAM_TRAIN, 3, 4, &b);
    CHECK(same_task(&a, &b));
    task_make(&c, 7, TASK_STREAM_VAL, 3, 4, &b);
    CHECK(!same_task(&a, &b) && a.xs[0] != b.xs[0] && a.amp != b.amp);
    task_make(&c, 7, TASK_STREAM_TEST, 3, 4, &b);
    CHECK(!same_task(&a, &b) && a.xs[0] != b.xs[0]);
    task_make(&c, 7, TASK_STREAM_TRAIN, 4, 4, &b);
    CHECK(!same_task(&a, &b) && a.xs[0] != b.xs[0]);
    task_make(&c, 7, TASK_STREAM_TRAIN, 3, 5, &b);
    CHECK(!same_task(&a, &b) && a.xs[0] != b.xs[0]);
    task_make(&c, 8, TASK_STREAM_TRAIN, 3, 4, &b);
    CHECK(!same_task(&a, &b) && a.xs[0] != b.xs[0]);
    /* episode and slot are not interchangeable */
    task_make(&c, 7, TASK_STREAM_TRAIN, 4, 3, &b);
    CHECK(!same_task(&a, &b));
    /* the same task again after others: no hidden state */
    task_make(&c, 7, TASK_STREAM_TRAIN, 3, 4, &b);
    CHECK(same_task(&a, &b));

    /* Ranges and the target formula over many tasks. y is recomputed with the
     * same expression, so equality is exact up to libm (1e-12 absolute). */
    double amin = 1e9, amax = -1e9, pmin = 1e9, pmax = -1e9, xmin = 1e9, xmax = -1e9;
    int bad = 0;
    for (uint64_t ep = 0; ep < 300; ep++) {
        task_make(&c, 11, TASK_STREAM_TRAIN, ep, ep % 7, &a);
        CHECK(a.amp >= 0.1 && a.amp < 5.0);
        CHECK(a.phase >= 0.0 && a.phase < M_PI);
        amin = fmin(amin, a.amp);
        amax = fmax(amax, a.amp);
        pmin = fmin(pmin, a.phase);
        pmax = fmax(pmax, a.phase);
        for (size_t i = 0; i < a.n_s + a.n_q; i++) {
            double x = i < a.n_s ? a.xs[i] : a.xq[i - a.n_s];
            double y = i < a.n_s ? a.ys[i] : a.yq[i - a.n_s];
            if (!(x >= -5.0 && x < 5.0)) bad++;
            if (fabs(y - a.amp * sin(x + a.phase)) > 1e-12) bad++;
            xmin = fmin(xmin, x);
            xmax = fmax(xmax, x);
        }
    }
    CHECK_EQ_INT(bad, 0);
    /* The draws cover their ranges (300 amps, 6600 points). */
    CHECK(amin < 0.3 && amax > 4.8 && pmin < 0.1 && pmax > M_PI - 0.1);
    CHECK(xmin < -4.9 && xmax > 4.9);
    /* Support and query points differ. */
    CHECK(memcmp(a.xs, a.xq, a.n_s * sizeof(double)) != 0);
    task_clear(&a);
    task_clear(&b);
    CHECK(a.xs == NULL && a.n_s == 0);
}

static void test_task_gaussmix(void) {
    const size_t d = 8, k = 4;
    const task_cfg c = {TASK_GAUSSMIX, 20, 30, d, k, k};
    task_t a, b;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(task_alloc(&a, c.shots, c.queries, d, k, &err), HD_OK);
    CHECK_EQ_INT(task_alloc(&b, c.shots, c.queries, d, k, &err), HD_OK);
    task_make(&c, 5, TASK_STREAM_TRAIN, 1, 2, &a);
    task_make(&c, 5, TASK_STREAM_TRAIN, 1, 2, &b);
    CHECK(same_task(&a, &b));
    task_make(&c, 5, TASK_STREAM_TRAIN, 1, 3, &b);
    CHECK(!same_task(&a, &b));
    CHECK(a.amp == 0.0 && a.phase == 0.0);

    /* Every target row is one-hot; over the task several classes occur. */
    size_t count[4] = {0, 0, 0, 0};
    int bad = 0;
    for (size_t i = 0; i < a.n_s + a.n_q; i++) {
        const double *y = i < a.n_s ? a.ys + i * k : a.yq + (i - a.n_s) * k;
        size_t ones = 0, hot = 0;
        for (size_t j = 0; j < k; j++) {
            if (y[j] == 1.0) {
                ones++;
                hot = j;
            } else if (y[j] != 0.0)
                bad++;
        }
        if (ones != 1)
            bad++;
        else
            count[hot]++;
        const double *x = i < a.n_s ? a.xs + i * d : a.xq + (i - a.n_s) * d;
        for (size_t j = 0; j < d; j++)
            if (!isfinite(x[j])) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    size_t seen = 0;
    for (size_t j = 0; j < k; j++) seen += count[j] > 0;
    CHECK(seen >= 3); /* 50 draws from 4 classes */
    task_clear(&a);
    task_clear(&b);
}

int main(void) {
    test_outer_cfg();
    test_outer_adam();
    test_outer_sgd();
    test_outer_clip_reptile();
    test_linest();
    test_method_names();
    test_method_schedule();
    test_method_estimation();
    test_task_names();
    test_task_sinusoid();
    test_task_gaussmix();
    return check_finish("test_common_small");
}
