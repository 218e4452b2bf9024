/* LinearEstimation sums and fit. */
#include "linest.h"

#include <math.h>

void linest_init(linest_sums *s) {
    s->sxy = s->sxx = s->syy = 0.0;
    s->n = 0;
}

void linest_add(linest_sums *s, double x, double y) {
    s->sxy += x * y;
    s->sxx += x * x;
    s->syy += y * y;
    s->n++;
}

void linest_merge(linest_sums *s, const linest_sums *o) {
    s->sxy += o->sxy;
    s->sxx += o->sxx;
    s->syy += o->syy;
    s->n += o->n;
}

int linest_fit(const linest_sums *s, double *theta) {
    if (!(s->sxx > 0.0) || !isfinite(s->sxx) || !isfinite(s->sxy)) return -1;
    *theta = s->sxy / s->sxx;
    return 0;
}
