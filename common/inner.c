/* Phi (momentum SGD) and its VJP, ALGORITHM.md section 2. float64. */
#include "inner.h"

#include "vec.h"

double inner_step(mlp_t *m, const mlp_feat_t *fD, const inner_cfg *cfg, const double *lam,
                  const double *w, const double *v, const double *yD, double *w_out, double *v_out,
                  double *scratch) {
    size_t nw = mlp_n_w(m);
    double *g = scratch;
    double loss = mlp_grad_f(m, fD, lam, w, yD, NULL, g);
    /* v' = mu v + g;  w' = w - eta v' (elementwise, so aliasing is safe) */
    for (size_t i = 0; i < nw; i++) {
        double vn = cfg->momentum * v[i] + g[i];
        v_out[i] = vn;
        w_out[i] = w[i] - cfg->lr * vn;
    }
    return loss;
}

void inner_vjp(mlp_t *m, const mlp_feat_t *fD, const inner_cfg *cfg, const double *lam,
               const double *w, const double *yD, const double *a_w, const double *a_v,
               double *out_w, double *out_v, double *out_lam, double *scratch) {
    size_t nw = mlp_n_w(m);
    double *c = scratch, *hw = out_w ? out_w : scratch + nw;
    /* c = a_v - eta a_w */
    vec_lincomb(nw, c, 1.0, a_v, -cfg->lr, a_w);
    if (out_w || out_lam) {
        mlp_hvp_f(m, fD, lam, w, yD, NULL, c, out_lam, hw, NULL);
        if (out_w) vec_axpy(nw, out_w, 1.0, a_w);
    }
    if (out_v)
        for (size_t i = 0; i < nw; i++) out_v[i] = cfg->momentum * c[i];
}
