/* Dense float64 vector helpers on OpenBLAS (CBLAS, row-major). Kernels take
 * (n, out, in..., scalars), never allocate, log or touch globals. Small sizes
 * (below VEC_BLAS_MIN) use plain loops, larger ones BLAS; both accumulate in
 * double. Thread-safe (no shared state). */
#ifndef HD_VEC_H
#define HD_VEC_H

#include <stddef.h>

#define VEC_BLAS_MIN 32

/* out[i] = 0 */
void vec_zero(size_t n, double *out);
/* out[i] = x[i]; out and x must not overlap unless equal. */
void vec_copy(size_t n, double *out, const double *x);
/* y[i] += a * x[i] */
void vec_axpy(size_t n, double *restrict y, double a, const double *restrict x);
/* x[i] *= a */
void vec_scale(size_t n, double *x, double a);
/* out[i] = a * x[i] + b * y[i]; out may alias x or y. */
void vec_lincomb(size_t n, double *out, double a, const double *x, double b, const double *y);
/* sum_i x[i] * y[i] */
double vec_dot(size_t n, const double *x, const double *y);
/* Euclidean norm, overflow-safe. */
double vec_nrm2(size_t n, const double *x);
/* 1 if every x[i] is finite, else 0. */
int vec_all_finite(size_t n, const double *x);
/* x . y / (|x| |y|); 0 if either is the zero vector. */
double vec_cosine(size_t n, const double *x, const double *y);
/* max_i |x[i] - y[i]| / max(max_i |y[i]|, tiny): a relative difference. */
double vec_max_rel_diff(size_t n, const double *x, const double *y);

#endif
