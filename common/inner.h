/* The inner optimiser Phi (momentum SGD on s = (w, v)) and its exact
 * vector-Jacobian product (ALGORITHM.md section 2):
 *   g = grad_w L(w, lam; D);  v' = mu v + g;  w' = w - eta v'
 * VJP with cotangent (a_w, a_v) on s' = (w', v'):
 *   c = a_v - eta a_w;  a_w' = a_w + H_ww c;  a_v' = mu c;  a_lam = H_lw c.
 * The batch D is given as a feature cache computed at lam (mlp.h). Not
 * thread-safe (uses the network's scratch). */
#ifndef HD_INNER_H
#define HD_INNER_H

#include "mlp.h"

typedef struct {
    double lr;       /* eta > 0 */
    double momentum; /* mu in [0, 1) */
} inner_cfg;

/* One step: (w_out, v_out) = Phi((w, v), lam; D). w_out may alias w and v_out
 * may alias v. scratch holds n_w doubles and receives the gradient g.
 * Returns the training loss at w (before the step). */
double inner_step(mlp_t *m, const mlp_feat_t *fD, const inner_cfg *cfg, const double *lam,
                  const double *w, const double *v, const double *yD, double *w_out, double *v_out,
                  double *scratch);

/* VJP of Phi at (w, lam, D) (v does not enter) with cotangent (a_w, a_v).
 * Writes out_w = a_w', out_v = a_v' and out_lam = a_lam; any output may be
 * NULL to skip it (a NULL out_lam skips the lam block of the HVP). scratch
 * holds 2 * n_w doubles. Outputs must not alias the inputs. One HVP. */
void inner_vjp(mlp_t *m, const mlp_feat_t *fD, const inner_cfg *cfg, const double *lam,
               const double *w, const double *yD, const double *a_w, const double *a_v,
               double *out_w, double *out_v, double *out_lam, double *scratch);

#endif
