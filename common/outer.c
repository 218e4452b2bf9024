/* Adam (Kingma and Ba, with bias correction), SGD and Reptile. */
#include "outer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

void outer_cfg_default(outer_cfg *c) {
    c->kind = OUTER_ADAM;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
}

int outer_kind_parse(const char *s, outer_kind *out) {
    if (!s) return -1;
    if (strcmp(s, "adam") == 0) *out = OUTER_ADAM;
    else if (strcmp(s, "sgd") == 0) *out = OUTER_SGD;
    else return -1;
    return 0;
}

const char *outer_kind_name(outer_kind k) { return k == OUTER_SGD ? "sgd" : "adam"; }

hd_rc outer_state_init(outer_state *st, const outer_cfg *c, size_t n, hd_err *err) {
    memset(st, 0, sizeof *st);
    st->n = n;
    if (c->kind == OUTER_ADAM && n > 0) {
        st->m = calloc(n, sizeof(double));
        st->v = calloc(n, sizeof(double));
        if (!st->m || !st->v) {
            outer_state_clear(st);
            return hd_err_set(err, HD_ENOMEM, "outer state: out of memory (n=%zu)", n);
        }
    }
    return HD_OK;
}

void outer_state_clear(outer_state *st) {
    free(st->m);
    free(st->v);
    st->m = st->v = NULL;
    st->step = 0;
}

void outer_apply(const outer_cfg *c, outer_state *st, double *lam, const double *g) {
    size_t n = st->n;
    st->step++;
    if (c->kind == OUTER_SGD) {
        vec_axpy(n, lam, -c->lr, g);
        return;
    }
    double b1 = c->beta1, b2 = c->beta2;
    double bc1 = 1.0 - pow(b1, (double)st->step), bc2 = 1.0 - pow(b2, (double)st->step);
    double step = c->lr / bc1, rbc2 = 1.0 / sqrt(bc2);
    for (size_t i = 0; i < n; i++) {
        double m = st->m[i] = b1 * st->m[i] + (1.0 - b1) * g[i];
        double v = st->v[i] = b2 * st->v[i] + (1.0 - b2) * g[i] * g[i];
        lam[i] -= step * m / (sqrt(v) * rbc2 + c->eps);
    }
}

double outer_clip(size_t n, double *g, double max_norm) {
    double nrm = vec_nrm2(n, g);
    if (nrm > max_norm && nrm > 0.0) vec_scale(n, g, max_norm / nrm);
    return nrm;
}

void outer_reptile(size_t n, double *phi, double lr, const double *mean_w) {
    for (size_t i = 0; i < n; i++) phi[i] -= lr * (phi[i] - mean_w[i]);
}
