/* The batched episode (K tasks stacked into one set of products) computes
 * what K single-task episodes compute: at every step of every method the
 * written hypergradient equals the sum of the K single-task hypergradients,
 * the weights and losses of each slot are the same, and LinearEstimation
 * samples and evaluation losses agree, to 1e-12 relative (the sums are added
 * in a different order). Also with the non-finite guard and pi_mode unit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "episode.h"
#include "spec.h"
#include "task.h"
#include "vec.h"

#define K 3

static double rel(size_t n, const double *a, const double *b) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return d / fmax(m, 1e-300);
}

static void compare_method(const char *json, method_kind kind, int pi_unit, int guard) {
    run_spec sp;
    hd_err err = {0};
    CHECK(spec_parse(json, strlen(json), &sp, &err) == HD_OK);
    sp.method.kind = kind;
    sp.method.pi_unit = pi_unit;
    size_t rows = sp.task.shots + sp.task.queries;
    mlp_t *m1 = NULL, *mk = NULL;
    CHECK(spec_model_new(&sp, rows, &m1, &err) == HD_OK);
    CHECK(spec_model_new(&sp, K * rows, &mk, &err) == HD_OK);
    size_t nl = mlp_n_lam(m1), nw = mlp_n_w(m1);
    double *lam = malloc(nl * sizeof *lam), *phi = malloc(nw * sizeof *phi);
    double *g = calloc(nl, sizeof *g), *gk = calloc(nl, sizeof *gk), *sum = calloc(nl, sizeof *sum);
    mlp_init_params(m1, sp.seed, lam, phi);
    task_t tasks[K];
    episode_t *one[K], *batch = NULL;
    for (int k = 0; k < K; k++) {
        CHECK(task_alloc(&tasks[k], sp.task.shots, sp.task.queries, sp.task.in_dim, sp.task.out_dim,
                         &err) == HD_OK);
        task_make(&sp.task, sp.seed, TASK_STREAM_TRAIN, 1, (uint64_t)k, &tasks[k]);
        CHECK(episode_new(m1, &sp.inner, &sp.method, sp.steps, sp.task.shots, sp.task.queries,
                          &one[k], &err) == HD_OK);
        episode_set_guard(one[k], guard, 0.0);
        episode_begin(one[k], phi, tasks[k].xs, tasks[k].ys, tasks[k].xq, tasks[k].yq);
    }
    CHECK(episode_new_batch(mk, &sp.inner, &sp.method, sp.steps, sp.task.shots, sp.task.queries, K,
                            &batch, &err) == HD_OK);
    CHECK_EQ_INT(episode_slots(batch), K);
    episode_set_guard(batch, guard, 0.0);
    for (int k = 0; k < K; k++)
        episode_begin_slot(batch, k, phi, tasks[k].xs, tasks[k].ys, tasks[k].xq, tasks[k].yq);
    double worst_g = 0, worst_w = 0, worst_l = 0;
    int posts_ok = 1;
    for (int t = 1; t <= sp.steps; t++) {
        /* lam changes between steps, as in an online run. */
        for (size_t i = 0; i < nl; i++) lam[i] *= 1.0 + 1e-3 * sin((double)(i + (size_t)t));
        episode_info info[K], i1;
        vec_zero(nl, sum);
        int posted = 0;
        for (int k = 0; k < K; k++) {
            episode_step(one[k], lam, 0.7, 0, g, &i1);
            if (i1.posted) vec_axpy(nl, sum, 1.0, g), posted = 1;
            info[k] = i1;
        }
        episode_info bi[K];
        episode_step_batch(batch, lam, 0.7, 0, gk, bi);
        posts_ok &= bi[0].posted == posted;
        if (posted) worst_g = fmax(worst_g, rel(nl, gk, sum));
        for (int k = 0; k < K; k++) {
            worst_w = fmax(worst_w, rel(nw, episode_w_slot(batch, k), episode_w(one[k])));
            worst_l = fmax(worst_l, fabs(bi[k].train_loss - info[k].train_loss) /
                                        fmax(fabs(info[k].train_loss), 1e-300));
            if (posted || t == sp.steps)
                worst_l = fmax(worst_l, fabs(bi[k].val_loss - info[k].val_loss) /
                                            fmax(fabs(info[k].val_loss), 1e-300));
        }
    }
    printf("  %-13s%s%s  g rel %.2e  w rel %.2e  losses rel %.2e\n", method_name(kind),
           pi_unit ? " (unit)" : "", guard ? " (guard)" : "", worst_g, worst_w, worst_l);
    CHECK_MSG(posts_ok, "%s: posting steps differ", method_name(kind));
    CHECK_MSG(worst_g <= 1e-12, "%s: batched sum differs (%.3g)", method_name(kind), worst_g);
    CHECK_MSG(worst_w <= 1e-12, "%s: batched weights differ (%.3g)", method_name(kind), worst_w);
    CHECK_MSG(worst_l <= 1e-12, "%s: batched losses differ (%.3g)", method_name(kind), worst_l);

    /* LinearEstimation and evaluation. */
    if (kind == METHOD_HYPERDISTILL && !pi_unit && !guard) {
        int T = sp.steps;
        double *x1 = malloc((size_t)T * sizeof *x1), *y1 = malloc((size_t)T * sizeof *y1);
        double *xk = malloc((size_t)(K * T) * sizeof *xk),
               *yk = malloc((size_t)(K * T) * sizeof *yk);
        linest_sums s1[K], sk[K];
        long v1 = 0, vk = 0;
        for (int k = 0; k < K; k++) {
            episode_begin_slot(batch, k, phi, tasks[k].xs, tasks[k].ys, tasks[k].xq, tasks[k].yq);
            episode_begin(one[k], phi, tasks[k].xs, tasks[k].ys, tasks[k].xq, tasks[k].yq);
            linest_init(&s1[k]);
            linest_init(&sk[k]);
        }
        CHECK(episode_estimate_batch(batch, lam, sp.method.gamma, xk, yk, sk, &vk, &err) == HD_OK);
        double worst_s = 0;
        for (int k = 0; k < K; k++) {
            long v = 0;
            CHECK(episode_estimate(one[k], lam, sp.method.gamma, x1, y1, &s1[k], &v, &err) ==
                  HD_OK);
            v1 += v;
            worst_s = fmax(worst_s, rel((size_t)T, xk + (size_t)k * (size_t)T, x1));
            worst_s = fmax(worst_s, rel((size_t)T, yk + (size_t)k * (size_t)T, y1));
        }
        CHECK_EQ_INT(vk, v1);
        CHECK_MSG(worst_s <= 1e-12, "estimation samples differ (%.3g)", worst_s);
        const double *xs[K], *ys[K], *xq[K], *yq[K];
        double lb[K];
        for (int k = 0; k < K; k++) {
            xs[k] = tasks[k].xs;
            ys[k] = tasks[k].ys;
            xq[k] = tasks[k].xq;
            yq[k] = tasks[k].yq;
        }
        episode_eval_batch(batch, lam, phi, K, xs, ys, xq, yq, lb);
        double worst_e = 0;
        for (int k = 0; k < K; k++) {
            double l1 = episode_eval(one[k], lam, phi, xs[k], ys[k], xq[k], yq[k]);
            worst_e = fmax(worst_e, fabs(lb[k] - l1) / fabs(l1));
        }
        /* A partial batch (n < K) gives the same losses for its tasks. */
        double lp[K];
        episode_eval_batch(batch, lam, phi, 2, xs, ys, xq, yq, lp);
        worst_e = fmax(worst_e, fabs(lp[1] - lb[1]) / fabs(lb[1]));
        printf("  estimation samples rel %.2e, evaluation rel %.2e\n", worst_s, worst_e);
        CHECK_MSG(worst_e <= 1e-12, "evaluation differs (%.3g)", worst_e);
        free(x1);
        free(y1);
        free(xk);
        free(yk);
    }
    for (int k = 0; k < K; k++) {
        episode_free(one[k]);
        task_clear(&tasks[k]);
    }
    episode_free(batch);
    mlp_free(m1);
    mlp_free(mk);
    free(lam);
    free(phi);
    free(g);
    free(gk);
    free(sum);
}

int main(void) {
    static const char *const specs[] = {
        "{\"task\": {\"family\": \"sinusoid\", \"shots\": 10, \"queries\": 7},"
        " \"model\": {\"layers\": [1, 32, 32, 1], \"activation\": \"tanh\", \"hyper_layers\": 2},"
        " \"inner\": {\"steps\": 6, \"lr\": 0.01, \"momentum\": 0.9},"
        " \"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.9, \"neumann_n\": 2, "
        "\"neumann_k\": 3}}",
        "{\"task\": {\"family\": \"gaussmix\", \"shots\": 8, \"queries\": 6, \"classes\": 4},"
        " \"model\": {\"layers\": [12, 16, 16, 4], \"activation\": \"relu\", \"hyper_layers\": 1},"
        " \"inner\": {\"steps\": 5, \"lr\": 0.05, \"momentum\": 0.5},"
        " \"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.5, \"neumann_n\": 1, "
        "\"neumann_k\": 2}}",
    };
    for (size_t s = 0; s < sizeof specs / sizeof *specs; s++) {
        printf("spec %zu\n", s);
        for (int k = 0; k < METHOD_COUNT; k++) compare_method(specs[s], (method_kind)k, 0, 0);
        compare_method(specs[s], METHOD_HYPERDISTILL, 1, 0);
        compare_method(specs[s], METHOD_HYPERDISTILL, 0, 1);
    }
    return check_finish("test_episode_batch");
}
