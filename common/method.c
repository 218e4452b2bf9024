/* Method names, schedule and VJP accounting. */
#include "method.h"

#include <string.h>

static const char *const names[METHOD_COUNT] = {"fo",    "onestep", "hyperdistill",
                                                "drmad", "rmd",     "neumann"};

void method_cfg_default(method_cfg *c) {
    c->kind = METHOD_HYPERDISTILL;
    c->gamma = 0.99;
    c->pi_unit = 0;
    c->estimation_period = 50;
    c->theta_init = 1.0;
    c->neumann_n = 3;
    c->neumann_k = 5;
    c->neumann_lr = 0.0;
}

const char *method_name(method_kind k) {
    if ((int)k < 0 || k >= METHOD_COUNT) return "unknown";
    return names[k];
}

int method_parse(const char *s, method_kind *out) {
    for (int i = 0; i < METHOD_COUNT; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *out = (method_kind)i;
            return 0;
        }
    return -1;
}

int method_posts_at(const method_cfg *c, int t, int T) {
    switch (c->kind) {
    case METHOD_DRMAD:
    case METHOD_RMD:
        return t == T;
    case METHOD_NEUMANN:
        return t > T - c->neumann_k;
    default:
        return 1;
    }
}

int method_posts_per_episode(const method_cfg *c, int T) {
    int n = 0;
    for (int t = 1; t <= T; t++) n += method_posts_at(c, t, T);
    return n;
}

int method_is_estimation_episode(const method_cfg *c, int m) {
    if (c->kind != METHOD_HYPERDISTILL || c->pi_unit || c->estimation_period <= 0) return 0;
    return (m - 1) % c->estimation_period == 0;
}

long method_vjps_per_episode(const method_cfg *c, int T) {
    switch (c->kind) {
    case METHOD_FO:
        return 0;
    case METHOD_NEUMANN:
        return (long)(c->neumann_n + 1) * (long)(c->neumann_k < T ? c->neumann_k : T);
    default:
        return T;
    }
}

long method_estimation_vjps(int T) { return 2L * T; }
