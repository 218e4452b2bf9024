/* Task families: sinusoid regression and Gaussian-mixture classification. */
#include "task.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int task_family_parse(const char *s, task_family *out) {
    if (!s) return -1;
    if (strcmp(s, "sinusoid") == 0)
        *out = TASK_SINUSOID;
    else if (strcmp(s, "gaussmix") == 0)
        *out = TASK_GAUSSMIX;
    else
        return -1;
    return 0;
}

const char *task_family_name(task_family f) { return f == TASK_GAUSSMIX ? "gaussmix" : "sinusoid"; }

hd_rc task_alloc(task_t *t, size_t n_s, size_t n_q, size_t in_dim, size_t out_dim, hd_err *err) {
    memset(t, 0, sizeof *t);
    t->n_s = n_s;
    t->n_q = n_q;
    t->in_dim = in_dim;
    t->out_dim = out_dim;
    t->xs = calloc(n_s * in_dim, sizeof(double));
    t->ys = calloc(n_s * out_dim, sizeof(double));
    t->xq = calloc(n_q * in_dim, sizeof(double));
    t->yq = calloc(n_q * out_dim, sizeof(double));
    if (!t->xs || !t->ys || !t->xq || !t->yq) {
        task_clear(t);
        return hd_err_set(err, HD_ENOMEM, "task: out of memory");
    }
    return HD_OK;
}

void task_clear(task_t *t) {
    free(t->xs);
    free(t->ys);
    free(t->xq);
    free(t->yq);
    memset(t, 0, sizeof *t);
}

static void sinusoid_points(rng_t *r, double amp, double phase, size_t n, double *x, double *y) {
    for (size_t i = 0; i < n; i++) {
        x[i] = rng_range(r, -5.0, 5.0);
        y[i] = amp * sin(x[i] + phase);
    }
}

/* Gaussian mixture: class c's mean is drawn from its own stream (a pure
 * function of the task's seed words and c), so no memory is needed for the
 * means; each point is mean + unit noise. Means have norm about 1.5. */
static void gaussmix_points(rng_t *r, const uint64_t key[4], size_t classes, size_t d, size_t n,
                            double *x, double *y) {
    double scale = 1.5 / sqrt((double)d);
    for (size_t i = 0; i < n; i++) {
        size_t c = (size_t)rng_below(r, classes);
        rng_t mr;
        rng_seed(&mr, key[0], key[1] ^ 0x6d65616eULL, key[2], key[3] * 65537ULL + c);
        for (size_t j = 0; j < d; j++) x[i * d + j] = scale * rng_normal(&mr) + rng_normal(r);
        for (size_t j = 0; j < classes; j++) y[i * classes + j] = j == c ? 1.0 : 0.0;
    }
}

void task_make(const task_cfg *c, uint64_t seed, task_stream stream, uint64_t episode,
               uint64_t slot, task_t *t) {
    rng_t r;
    rng_seed(&r, seed, (uint64_t)stream + 0x5eed0000ULL, episode, slot);
    HD_ASSERT(t->n_s == c->shots && t->n_q == c->queries);
    if (c->family == TASK_SINUSOID) {
        t->amp = rng_range(&r, 0.1, 5.0);
        t->phase = rng_range(&r, 0.0, M_PI);
        sinusoid_points(&r, t->amp, t->phase, t->n_s, t->xs, t->ys);
        sinusoid_points(&r, t->amp, t->phase, t->n_q, t->xq, t->yq);
        return;
    }
    HD_ASSERT(t->in_dim == c->in_dim && t->out_dim == c->out_dim);
    const uint64_t key[4] = {seed, (uint64_t)stream, episode, slot};
    gaussmix_points(&r, key, t->out_dim, t->in_dim, t->n_s, t->xs, t->ys);
    gaussmix_points(&r, key, t->out_dim, t->in_dim, t->n_q, t->xq, t->yq);
    t->amp = t->phase = 0.0;
}
