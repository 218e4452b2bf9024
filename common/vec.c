/* Vector helpers: plain loops for short vectors, CBLAS for long ones. */
#include "vec.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void vec_zero(size_t n, double *out) {
    if (n) memset(out, 0, n * sizeof *out);
}

void vec_copy(size_t n, double *out, const double *x) {
    if (n && out != x) memmove(out, x, n * sizeof *out);
}

void vec_axpy(size_t n, double *restrict y, double a, const double *restrict x) {
    if (n >= VEC_BLAS_MIN) {
        cblas_daxpy((int)n, a, x, 1, y, 1);
        return;
    }
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void vec_scale(size_t n, double *x, double a) {
    if (n >= VEC_BLAS_MIN) {
        cblas_dscal((int)n, a, x, 1);
        return;
    }
    for (size_t i = 0; i < n; i++) x[i] *= a;
}

void vec_lincomb(size_t n, double *out, double a, const double *x, double b, const double *y) {
    for (size_t i = 0; i < n; i++) out[i] = a * x[i] + b * y[i];
}

double vec_dot(size_t n, const double *x, const double *y) {
    if (n >= VEC_BLAS_MIN) return cblas_ddot((int)n, x, 1, y, 1);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

double vec_nrm2(size_t n, const double *x) {
    if (n >= VEC_BLAS_MIN) return cblas_dnrm2((int)n, x, 1);
    double scale = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(x[i]));
    if (scale == 0.0) return 0.0;
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double r = x[i] / scale;
        s += r * r;
    }
    return scale * sqrt(s);
}

int vec_all_finite(size_t n, const double *x) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

double vec_cosine(size_t n, const double *x, const double *y) {
    double nx = vec_nrm2(n, x), ny = vec_nrm2(n, y);
    if (nx == 0.0 || ny == 0.0) return 0.0;
    return vec_dot(n, x, y) / (nx * ny);
}

double vec_max_rel_diff(size_t n, const double *x, const double *y) {
    double d = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs(x[i] - y[i]));
        m = fmax(m, fabs(y[i]));
    }
    return d / fmax(m, 1e-300);
}
