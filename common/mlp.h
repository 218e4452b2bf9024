/* Multilayer perceptron with exact gradients and Hessian-vector products
 * (ALGORITHM.md section 2). float64 throughout.
 *
 * Parameters are flattened layer by layer, each layer as its weight matrix of
 * shape (out, in) in row-major order followed by its bias (out): the PyTorch
 * nn.Linear convention. The first `hyper_layers` layers form `lam` (the
 * hyperparameters, ANIL style), the remaining layers form `w`; the full
 * parameter vector is lam followed by w. Hidden layers use the activation,
 * the last layer is linear. Inputs x are row-major (n, in), targets y are
 * row-major (n, out): regression targets for MSE, class probabilities
 * (usually one-hot) for softmax cross-entropy.
 *
 * Losses: MSE = mean over all n*out elements of (f - y)^2 (PyTorch
 * MSELoss); XENT = -(1/n) sum_i sum_j y_ij log softmax(f_i)_j.
 *
 * Lower-layer features: the activations of the lam layers depend only on
 * (lam, x). An mlp_feat_t caches them so that several products at the same
 * (lam, x) (inner gradient, distilled VJP, ...) compute them once.
 *
 * An mlp_t holds scratch memory for one call at a time: it is NOT
 * thread-safe; use one per thread. Functions never allocate after mlp_new. */
#ifndef HD_MLP_H
#define HD_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MLP_MAX_LAYERS 16

typedef enum { MLP_ACT_RELU = 0, MLP_ACT_TANH = 1 } mlp_act;
typedef enum { MLP_LOSS_MSE = 0, MLP_LOSS_XENT = 1 } mlp_loss;

typedef struct mlp mlp_t;
typedef struct mlp_feat mlp_feat_t;

/* Create a network with nwidths-1 layers (widths[0] = input, last = output),
 * 2 <= nwidths <= MLP_MAX_LAYERS+1, every width >= 1, hyper_layers in
 * [0, nwidths-1) (at least one layer stays in w), max_batch >= 1 rows per
 * call. Returns HD_OK, HD_EINVAL or HD_ENOMEM; *out is owned by the caller
 * and freed with mlp_free(). */
hd_rc mlp_new(size_t nwidths, const size_t *widths, mlp_act act, mlp_loss loss, size_t hyper_layers,
              size_t max_batch, mlp_t **out, hd_err *err);
/* Free a network; NULL is allowed. */
void mlp_free(mlp_t *m);

size_t mlp_n_lam(const mlp_t *m);    /* number of hyperparameters */
size_t mlp_n_w(const mlp_t *m);      /* number of inner weights */
size_t mlp_n_layers(const mlp_t *m); /* number of linear layers */
size_t mlp_hyper_layers(const mlp_t *m);
size_t mlp_in_dim(const mlp_t *m);
size_t mlp_out_dim(const mlp_t *m);
size_t mlp_max_batch(const mlp_t *m);
size_t mlp_width(const mlp_t *m, size_t i); /* widths[i] */
mlp_act mlp_activation(const mlp_t *m);
mlp_loss mlp_loss_kind(const mlp_t *m);
/* Multiply-add count of one forward pass at batch n (for FLOP reports). */
double mlp_forward_macs(const mlp_t *m, size_t n);

/* Initialise lam and w like PyTorch's default (weights and biases uniform in
 * +-1/sqrt(fan_in)) from seed. lam may be NULL when there are no hyper layers. */
void mlp_init_params(const mlp_t *m, uint64_t seed, double *lam, double *w);

/* Feature cache for up to max_n rows. Returns HD_OK or HD_ENOMEM. */
hd_rc mlp_feat_new(const mlp_t *m, size_t max_n, mlp_feat_t **out, hd_err *err);
void mlp_feat_free(mlp_feat_t *f);
/* Compute the lam-layer activations of x (n rows, n <= both max_n and
 * mlp_max_batch) at lam. Borrows x for the lifetime of the cache contents:
 * x must stay valid and unchanged while the cache is used. */
void mlp_feat_compute(const mlp_t *m, mlp_feat_t *f, const double *lam, const double *x, size_t n);
size_t mlp_feat_rows(const mlp_feat_t *f);

/* Forward: writes the network outputs (n, out) when out is non-NULL and
 * returns the loss against y. */
double mlp_forward_f(mlp_t *m, const mlp_feat_t *f, const double *w, const double *y, double *out);

/* Gradient of the loss at (lam, w) on the cached batch: g_w (n_w) and, when
 * g_lam is non-NULL, g_lam (n_lam); a NULL g_lam skips the backward pass
 * through the lam layers. Returns the loss. lam must be the one the cache was
 * computed at. */
double mlp_grad_f(mlp_t *m, const mlp_feat_t *f, const double *lam, const double *w,
                  const double *y, double *g_lam, double *g_w);

/* Hessian-vector product of the loss at (lam, w) in direction (c_lam, c_w),
 * by Pearlmutter's R-operator (one R-forward, one R-backward):
 *   h_w   = H_ww c_w + H_wl c_lam,   h_lam = H_lw c_w + H_ll c_lam.
 * c_lam == NULL means a zero lam part (the R-forward through the lam layers is
 * skipped); h_lam == NULL skips the lam block; h_w is required. Returns the loss. When g_w is
 * non-NULL the gradient in w is written too (it comes from the same pass). */
double mlp_hvp_f(mlp_t *m, const mlp_feat_t *f, const double *lam, const double *w, const double *y,
                 const double *c_lam, const double *c_w, double *h_lam, double *h_w, double *g_w);

/* Split passes over a row range [r0, r0+n) of a feature cache, for models
 * with k >= 1 hyper layers. The lam-gradient of any scalar is the backward
 * of its cotangent on the top lam activations A_k through the lam layers;
 * that backward depends only on (lam, x) and is linear in the cotangent, so
 * callers can add cotangents of several products (over rows, or over steps at
 * the same lam and batch) and run it once.
 *
 * Targets y point at the range's first row; every loss is the mean over the
 * range's rows. mlp_upper_loss: the loss over the rows (forward only).
 * mlp_upper_grad: loss and g_w over the rows; when dtop (n x widths[k]) is
 * non-NULL, the cotangent on A_k. Then g_lam = mlp_lower_backward(dtop).
 * mlp_upper_hvp: HVP in direction (0, c_w): h_w = H_ww c_w and, when Rdtop is
 * non-NULL, the R-cotangent on A_k, with H_lw c_w = mlp_lower_backward(Rdtop).
 * mlp_lower_backward: g_lam (overwritten) = backward of dtop (n x widths[k])
 * through layers k..1 at rows [r0, r0+n) of the cache. */
double mlp_upper_loss(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *w,
                      const double *y);
double mlp_upper_grad(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                      const double *w, const double *y, double *g_w, double *dtop);
double mlp_upper_hvp(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                     const double *w, const double *y, const double *c_w, double *h_w,
                     double *Rdtop);
void mlp_lower_backward(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                        const double *dtop, double *g_lam);

/* Conveniences that compute the features of x into the network's own cache
 * first (n <= mlp_max_batch). Same contracts as the _f forms. */
double mlp_loss_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                  size_t n);
double mlp_grad_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                  size_t n, double *g_lam, double *g_w);
double mlp_hvp_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                 size_t n, const double *c_lam, const double *c_w, double *h_lam, double *h_w);

#endif
