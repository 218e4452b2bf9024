/* Episodes under every hypergradient method: ALGORITHM.md sections 3
 * (HyperDistill), 4 (LinearEstimation) and 5 (fo, onestep, drmad, rmd,
 * neumann). Per step the lower-layer features of the support and query sets
 * are computed once at the current lam and shared by the inner gradient, the
 * validation gradient and the VJPs (D*_t = D_t: every step uses the task's
 * full support set, so the distilled minibatch is the batch itself). */
#include "episode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

struct episode {
    mlp_t *m;             /* borrowed network (scratch shared) */
    const inner_cfg *ic;  /* borrowed */
    const method_cfg *mc; /* borrowed */
    int T;                /* steps per episode */
    int t;                /* steps done */
    int guard;            /* skip non-finite (or guard_loss-exceeding) steps */
    double guard_loss;    /* > 0: also skip steps whose support loss after the step exceeds it */
    size_t n_s, n_q;      /* support / query rows */
    size_t nw, nl;        /* sizes of w and lam */
    size_t wk;            /* width of the top lam layer (0 if no lam layers) */
    size_t din;           /* input width */
    const double *phi, *ys, *yq; /* borrowed init and targets */
    double *xsq;                 /* support rows then query rows, (n_s + n_q) x din */
    mlp_feat_t *f;               /* features of xsq at the current lam */
    size_t f_rows;               /* rows of xsq the cache holds (n_s or n_s + n_q) */
    double *w, *v;               /* s_t */
    double *wprev;               /* w_{t-1} (onestep) */
    double *wstar;               /* hyperdistill distilled w*_t */
    double *traj;                /* w_0 .. w_T, (T+1) x nw (rmd, drmad, estimation) */
    double *aw, *av;             /* cotangents */
    double *aw2, *av2;           /* next cotangents */
    double *alpha;               /* dL_val/dw at the end point */
    double *c;                   /* the VJP direction c = a_v - eta a_w */
    double *gw;                  /* inner gradient */
    double *gfo;                 /* dL_val/dlam */
    double *vt;                  /* a VJP's lam block */
    double *acc;                 /* accumulated second-order term */
    double *term, *psum;         /* Neumann series */
    double *hw;                  /* H_ww products */
    double *pt;                  /* an interpolated point */
    double *wsave, *vsave;       /* state before a guarded step */
    double *top;                 /* cotangents on A_k: support rows then query rows */
    double *top2;                /* one support block of cotangents on A_k */
};

hd_rc episode_new(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                  size_t n_q, episode_t **out, hd_err *err) {
    if (T < 1) return hd_err_set(err, HD_EINVAL, "inner.steps: must be >= 1, got %d", T);
    if (n_s < 1 || n_q < 1 || n_s + n_q > mlp_max_batch(m))
        return hd_err_set(err, HD_EINVAL,
                          "episode: support %zu + query %zu rows exceed the model's batch %zu", n_s,
                          n_q, mlp_max_batch(m));
    episode_t *e = calloc(1, sizeof *e);
    if (!e) return hd_err_set(err, HD_ENOMEM, "episode: out of memory");
    e->m = m;
    e->ic = ic;
    e->mc = mc;
    e->T = T;
    e->n_s = n_s;
    e->n_q = n_q;
    e->nw = mlp_n_w(m);
    e->nl = mlp_n_lam(m);
    e->din = mlp_in_dim(m);
    size_t k = mlp_hyper_layers(m);
    e->wk = k ? mlp_width(m, k) : 0;
    size_t nw = e->nw, nl = e->nl ? e->nl : 1, wk = e->wk ? e->wk : 1;
    hd_rc rc = mlp_feat_new(m, n_s + n_q, &e->f, err);
    double **bufs_w[] = {&e->w,    &e->v,   &e->wprev, &e->wstar, &e->aw,   &e->av,
                         &e->aw2,  &e->av2, &e->alpha, &e->c,     &e->gw,   &e->term,
                         &e->psum, &e->hw,  &e->pt,    &e->wsave, &e->vsave};
    double **bufs_l[] = {&e->gfo, &e->vt, &e->acc};
    int fail = rc != HD_OK;
    for (size_t i = 0; i < sizeof bufs_w / sizeof *bufs_w; i++)
        fail |= !(*bufs_w[i] = calloc(nw, sizeof(double)));
    for (size_t i = 0; i < sizeof bufs_l / sizeof *bufs_l; i++)
        fail |= !(*bufs_l[i] = calloc(nl, sizeof(double)));
    fail |= !(e->xsq = calloc((n_s + n_q) * e->din, sizeof(double)));
    fail |= !(e->top = calloc((n_s + n_q) * wk, sizeof(double)));
    fail |= !(e->top2 = calloc(n_s * wk, sizeof(double)));
    fail |= !(e->traj = calloc((size_t)(T + 1) * nw, sizeof(double)));
    if (fail) {
        episode_free(e);
        return rc != HD_OK ? rc : hd_err_set(err, HD_ENOMEM, "episode: out of memory");
    }
    *out = e;
    return HD_OK;
}

void episode_free(episode_t *e) {
    if (!e) return;
    mlp_feat_free(e->f);
    double *all[] = {e->w,     e->v,   e->wprev, e->wstar, e->aw,   e->av,  e->aw2,  e->av2,
                     e->alpha, e->c,   e->gw,    e->term,  e->psum, e->hw,  e->pt,   e->wsave,
                     e->vsave, e->gfo, e->vt,    e->acc,   e->xsq,  e->top, e->top2, e->traj};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(e);
}

void episode_set_guard(episode_t *e, int skip_nonfinite, double max_loss) {
    e->guard = skip_nonfinite || max_loss > 0.0;
    e->guard_loss = max_loss;
}

/* Stack the support and query inputs so that one product per layer computes
 * the features of both. */
static void set_inputs(episode_t *e, const double *xs, const double *xq) {
    memcpy(e->xsq, xs, e->n_s * e->din * sizeof(double));
    memcpy(e->xsq + e->n_s * e->din, xq, e->n_q * e->din * sizeof(double));
}

void episode_begin(episode_t *e, const double *phi, const double *xs, const double *ys,
                   const double *xq, const double *yq) {
    e->phi = phi;
    e->ys = ys;
    e->yq = yq;
    set_inputs(e, xs, xq);
    e->t = 0;
    vec_copy(e->nw, e->w, phi);
    vec_zero(e->nw, e->v);
    vec_copy(e->nw, e->traj, phi);
}

int episode_t_done(const episode_t *e) { return e->t; }
const double *episode_w(const episode_t *e) { return e->w; }
const double *episode_v(const episode_t *e) { return e->v; }

/* Features of the first `rows` stacked rows (n_s: support only; n_s + n_q). */
static void features(episode_t *e, const double *lam, size_t rows) {
    mlp_feat_compute(e->m, e->f, lam, e->xsq, rows);
    e->f_rows = rows;
}

double episode_val_loss(episode_t *e, const double *lam) {
    features(e, lam, e->n_s + e->n_q);
    return mlp_upper_grad(e->m, e->f, e->n_s, e->n_q, lam, e->w, e->yq, e->gw, NULL);
}

/* Phi on the support rows: v' = mu v + g, w' = w - eta v'. Returns the loss. */
static double inner_update(episode_t *e, const double *lam, double *w, double *v) {
    double loss = mlp_upper_grad(e->m, e->f, 0, e->n_s, lam, w, e->ys, e->gw, NULL);
    double mu = e->ic->momentum, eta = e->ic->lr;
    for (size_t i = 0; i < e->nw; i++) {
        v[i] = mu * v[i] + e->gw[i];
        w[i] -= eta * v[i];
    }
    return loss;
}

/* w-part of a VJP of Phi at point w with cotangent (a_w, a_v) (section 2):
 * c = a_v - eta a_w; out_w = a_w + H_ww c; out_v = mu c; and the cotangent
 * on A_k whose lower backward is H_lw c goes to Rtop (n_s x wk) when
 * non-NULL. One HVP. */
static void vjp_upper(episode_t *e, const double *lam, const double *w, const double *a_w,
                      const double *a_v, double *out_w, double *out_v, double *Rtop) {
    size_t nw = e->nw;
    double eta = e->ic->lr, mu = e->ic->momentum;
    for (size_t i = 0; i < nw; i++) e->c[i] = (a_v ? a_v[i] : 0.0) - eta * a_w[i];
    mlp_upper_hvp(e->m, e->f, 0, e->n_s, lam, w, e->ys, e->c, e->hw, e->nl ? Rtop : NULL);
    if (out_w)
        for (size_t i = 0; i < nw; i++) out_w[i] = a_w[i] + e->hw[i];
    if (out_v)
        for (size_t i = 0; i < nw; i++) out_v[i] = mu * e->c[i];
}

/* g (nl) = lower backward of the cotangents on A_k of rows [r0, r0+n). */
static void lower(episode_t *e, const double *lam, size_t r0, size_t n, const double *top,
                  double *g) {
    if (e->nl) mlp_lower_backward(e->m, e->f, r0, n, lam, top, g);
}

/* The DrMAD point s^_{i-1} = (1 - (i-1)/T) s_0 + ((i-1)/T) s_T. */
static const double *drmad_point(episode_t *e, int i) {
    double f = (double)(i - 1) / (double)e->T;
    vec_lincomb(e->nw, e->pt, 1.0 - f, e->traj, f, e->traj + (size_t)e->T * e->nw);
    return e->pt;
}

/* Reverse pass from cotangent (alpha, 0) at w_T over the stored (rmd) or
 * interpolated (drmad) points. The lam cotangents of all T VJPs share the
 * support rows at the same lam, so their A_k cotangents are summed into the
 * support block of e->top and pushed through the lam layers once. */
static void reverse_pass(episode_t *e, const double *lam, int interpolate) {
    size_t nw = e->nw, blk = e->n_s * e->wk;
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    vec_zero(blk, e->top);
    for (int i = e->T; i >= 1; i--) {
        const double *p = interpolate ? drmad_point(e, i) : e->traj + (size_t)(i - 1) * nw;
        vjp_upper(e, lam, p, e->aw, e->av, e->aw2, e->av2, e->top2);
        vec_axpy(blk, e->top, 1.0, e->top2);
        double *t = e->aw;
        e->aw = e->aw2;
        e->aw2 = t;
        t = e->av;
        e->av = e->av2;
        e->av2 = t;
    }
}

hd_rc episode_step(episode_t *e, const double *lam, double theta, int replay, double *g,
                   episode_info *info) {
    episode_info local;
    if (!info) info = &local;
    memset(info, 0, sizeof *info);
    if (e->t >= e->T) return HD_ECONFLICT;
    const method_cfg *mc = e->mc;
    size_t nw = e->nw, nl = e->nl, n_s = e->n_s, n_q = e->n_q, blk = n_s * e->wk;
    int t = ++e->t;
    int posts = method_posts_at(mc, t, e->T) && !replay;
    features(e, lam, posts || t == e->T ? n_s + n_q : n_s);

    /* Before the step: the points that need s_{t-1}. */
    if (mc->kind == METHOD_HYPERDISTILL) {
        if (t == 1) {
            vec_copy(nw, e->wstar, e->w);
        } else {
            /* p_t = (gamma - gamma^t) / (1 - gamma^t) */
            double gt = pow(mc->gamma, (double)t);
            double p = (mc->gamma - gt) / (1.0 - gt);
            vec_lincomb(nw, e->wstar, p, e->wstar, 1.0 - p, e->w);
        }
    } else if (mc->kind == METHOD_ONESTEP) {
        vec_copy(nw, e->wprev, e->w);
    }
    if (e->guard) {
        vec_copy(nw, e->wsave, e->w);
        vec_copy(nw, e->vsave, e->v);
    }
    info->train_loss = inner_update(e, lam, e->w, e->v);
    int bad = !isfinite(info->train_loss) || !vec_all_finite(nw, e->w);
    if (!bad && e->guard_loss > 0.0) {
        double after = mlp_upper_loss(e->m, e->f, 0, n_s, e->w, e->ys);
        bad = !(after <= e->guard_loss);
    }
    if (bad) {
        info->nonfinite = 1;
        if (e->guard) {
            vec_copy(nw, e->w, e->wsave);
            vec_copy(nw, e->v, e->vsave);
        }
    }
    vec_copy(nw, e->traj + (size_t)t * nw, e->w);
    if (replay) return HD_OK;
    if (!posts) {
        if (t == e->T)
            info->val_loss = mlp_upper_grad(e->m, e->f, n_s, n_q, lam, e->w, e->yq, e->gw, NULL);
        return HD_OK;
    }
    /* alpha_t = dL_val/dw_t and the query rows' cotangent on A_k (gFO). */
    double *topQ = e->top + blk;
    info->val_loss =
        mlp_upper_grad(e->m, e->f, n_s, n_q, lam, e->w, e->yq, e->alpha, nl ? topQ : NULL);
    if (bad && e->guard) {
        vec_zero(nl, g);
        info->posted = 1;
        return HD_OK;
    }
    switch (mc->kind) {
    case METHOD_FO:
        lower(e, lam, n_s, n_q, topQ, g);
        break;
    case METHOD_ONESTEP:
        /* g = gFO + alpha B(s_{t-1}): one pass over the stacked rows. */
        vjp_upper(e, lam, e->wprev, e->alpha, NULL, NULL, NULL, e->top);
        info->vjps = 1;
        lower(e, lam, 0, n_s + n_q, e->top, g);
        break;
    case METHOD_HYPERDISTILL:
        vjp_upper(e, lam, e->wstar, e->alpha, NULL, NULL, NULL, e->top);
        info->vjps = 1;
        if (mc->pi_unit) {
            lower(e, lam, 0, n_s, e->top, e->vt);
            lower(e, lam, n_s, n_q, topQ, e->gfo);
            double vn = sqrt(vec_dot(nl, e->vt, e->vt));
            info->vnorm = vn;
            vec_copy(nl, g, e->gfo);
            if (vn > 0.0) vec_axpy(nl, g, 1.0 / vn, e->vt);
        } else {
            /* pi_t v_t / ||v_t|| = theta S_t v_t with S_t = (1 - gamma^t) / (1 - gamma):
             * scale the support cotangents, then one pass over the stacked rows. */
            double S = (1.0 - pow(mc->gamma, (double)t)) / (1.0 - mc->gamma);
            vec_scale(blk, e->top, theta * S);
            lower(e, lam, 0, n_s + n_q, e->top, g);
        }
        break;
    case METHOD_RMD:
    case METHOD_DRMAD:
        reverse_pass(e, lam, mc->kind == METHOD_DRMAD);
        info->vjps = e->T;
        lower(e, lam, 0, n_s + n_q, e->top, g);
        break;
    case METHOD_NEUMANN: {
        /* p = sum_{j=0..N} (I - eta_N H_ww)^j alpha;  g = gFO - eta_N H_lw p */
        double eta = mc->neumann_lr > 0.0 ? mc->neumann_lr : e->ic->lr;
        vec_copy(nw, e->term, e->alpha);
        vec_copy(nw, e->psum, e->alpha);
        for (int j = 1; j <= mc->neumann_n; j++) {
            mlp_upper_hvp(e->m, e->f, 0, n_s, lam, e->w, e->ys, e->term, e->hw, NULL);
            vec_axpy(nw, e->term, -eta, e->hw);
            vec_axpy(nw, e->psum, 1.0, e->term);
        }
        mlp_upper_hvp(e->m, e->f, 0, n_s, lam, e->w, e->ys, e->psum, e->hw, nl ? e->top : NULL);
        info->vjps = mc->neumann_n + 1;
        vec_scale(blk, e->top, -eta);
        lower(e, lam, 0, n_s + n_q, e->top, g);
        break;
    }
    default:
        HD_ASSERT(0);
    }
    info->posted = 1;
    info->grad_norm = sqrt(vec_dot(nl, g, g));
    if (!isfinite(info->grad_norm)) info->nonfinite = 1;
    return HD_OK;
}

hd_rc episode_estimate(episode_t *e, const double *lam, double gamma, double *x, double *y,
                       linest_sums *sums, long *vjps, hd_err *err) {
    size_t nw = e->nw, nl = e->nl, n_s = e->n_s, blk = n_s * e->wk;
    int T = e->T;
    features(e, lam, n_s + e->n_q);
    /* Forward, storing w_0 .. w_T. */
    vec_copy(nw, e->w, e->phi);
    vec_zero(nw, e->v);
    vec_copy(nw, e->traj, e->w);
    for (int t = 1; t <= T; t++) {
        inner_update(e, lam, e->w, e->v);
        vec_copy(nw, e->traj + (size_t)t * nw, e->w);
    }
    e->t = 0;
    vec_copy(nw, e->w, e->phi);
    vec_zero(nw, e->v);
    if (!vec_all_finite((size_t)(T + 1) * nw, e->traj))
        return hd_err_set(err, HD_ENONFINITE, "estimation: inner trajectory is not finite");
    /* alpha_T = dL_val(w_T)/dw */
    mlp_upper_grad(e->m, e->f, n_s, e->n_q, lam, e->traj + (size_t)T * nw, e->yq, e->alpha, NULL);
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    vec_zero(blk, e->top); /* support block: sum of the DrMAD A_k cotangents */
    long count = 0;
    for (int t = T; t >= 1; t--) {
        int s = T - t + 1;
        /* DrMAD reverse step at s^_{t-1}; gSO = lower backward of the sum. */
        vjp_upper(e, lam, drmad_point(e, t), e->aw, e->av, e->aw2, e->av2, e->top2);
        count++;
        vec_axpy(blk, e->top, 1.0, e->top2);
        lower(e, lam, 0, n_s, e->top, e->acc);
        double *tmp = e->aw;
        e->aw = e->aw2;
        e->aw2 = tmp;
        tmp = e->av;
        e->av = e->av2;
        e->av2 = tmp;
        /* Distilled point over the last s steps (Eq. 17-18). */
        const double *w_Tms = e->traj + (size_t)(T - s) * nw;
        if (s == 1) {
            vec_copy(nw, e->wstar, w_Tms);
        } else {
            double p = (1.0 - pow(gamma, (double)(s - 1))) / (1.0 - pow(gamma, (double)s));
            vec_lincomb(nw, e->wstar, p, e->wstar, 1.0 - p, w_Tms);
        }
        /* v_s = alpha_T B(s*_s): cotangent (alpha_T, 0). */
        vjp_upper(e, lam, e->wstar, e->alpha, NULL, NULL, NULL, e->top2);
        lower(e, lam, 0, n_s, e->top2, e->vt);
        count++;
        double vn = sqrt(vec_dot(nl, e->vt, e->vt));
        double S = (1.0 - pow(gamma, (double)s)) / (1.0 - gamma);
        x[s - 1] = vn * S;
        y[s - 1] = vn > 0.0 ? vec_dot(nl, e->vt, e->acc) / vn : 0.0;
    }
    if (sums)
        for (int s = 0; s < T; s++) linest_add(sums, x[s], y[s]);
    if (vjps) *vjps = count;
    return HD_OK;
}

double episode_eval(episode_t *e, const double *lam, const double *phi, const double *xs,
                    const double *ys, const double *xq, const double *yq) {
    size_t nw = e->nw;
    set_inputs(e, xs, xq);
    e->ys = ys;
    e->yq = yq;
    features(e, lam, e->n_s + e->n_q);
    vec_copy(nw, e->w, phi);
    vec_zero(nw, e->v);
    for (int t = 1; t <= e->T; t++) inner_update(e, lam, e->w, e->v);
    double loss = mlp_upper_grad(e->m, e->f, e->n_s, e->n_q, lam, e->w, yq, e->gw, NULL);
    e->t = 0;
    return loss;
}
