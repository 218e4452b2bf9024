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
    mlp_t *m;               /* borrowed network (scratch shared) */
    const inner_cfg *ic;    /* borrowed */
    const method_cfg *mc;   /* borrowed */
    int T;                  /* steps per episode */
    int t;                  /* steps done */
    int guard;              /* skip non-finite steps */
    size_t n_s, n_q;        /* support / query rows */
    size_t nw, nl;          /* sizes of w and lam */
    const double *phi, *xs, *ys, *xq, *yq; /* borrowed task and init */
    mlp_feat_t *fs, *fq;    /* features of support / query at the current lam */
    double *w, *v;          /* s_t */
    double *wprev;          /* w_{t-1} (onestep) */
    double *wstar;          /* hyperdistill distilled w*_t */
    double *traj;           /* w_0 .. w_T, (T+1) x nw (rmd, drmad, estimation) */
    double *aw, *av;        /* cotangents */
    double *aw2, *av2;      /* next cotangents */
    double *alpha;          /* dL_val/dw at the end point */
    double *gfo;            /* dL_val/dlam */
    double *vt;             /* a VJP's lam block */
    double *acc;            /* accumulated second-order term */
    double *term, *psum;    /* Neumann series */
    double *hw;             /* H_ww products */
    double *scratch;        /* 2 nw for inner_vjp / inner_step */
    double *wsave, *vsave;  /* state before a guarded step */
};

hd_rc episode_new(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                  size_t n_q, episode_t **out, hd_err *err) {
    if (T < 1) return hd_err_set(err, HD_EINVAL, "inner.steps: must be >= 1, got %d", T);
    if (n_s < 1 || n_q < 1 || n_s > mlp_max_batch(m) || n_q > mlp_max_batch(m))
        return hd_err_set(err, HD_EINVAL, "episode: support %zu / query %zu rows exceed batch %zu",
                          n_s, n_q, mlp_max_batch(m));
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
    size_t nw = e->nw, nl = e->nl ? e->nl : 1;
    hd_rc rc = mlp_feat_new(m, n_s, &e->fs, err);
    if (rc == HD_OK) rc = mlp_feat_new(m, n_q, &e->fq, err);
    double **bufs_w[] = {&e->w, &e->v, &e->wprev, &e->wstar, &e->aw, &e->av, &e->aw2,
                         &e->av2, &e->alpha, &e->term, &e->psum, &e->hw, &e->wsave, &e->vsave};
    double **bufs_l[] = {&e->gfo, &e->vt, &e->acc};
    int fail = rc != HD_OK;
    for (size_t i = 0; i < sizeof bufs_w / sizeof *bufs_w; i++)
        fail |= !(*bufs_w[i] = calloc(nw, sizeof(double)));
    for (size_t i = 0; i < sizeof bufs_l / sizeof *bufs_l; i++)
        fail |= !(*bufs_l[i] = calloc(nl, sizeof(double)));
    fail |= !(e->scratch = calloc(2 * nw, sizeof(double)));
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
    mlp_feat_free(e->fs);
    mlp_feat_free(e->fq);
    double *all[] = {e->w,   e->v,    e->wprev, e->wstar, e->aw,  e->av,   e->aw2,
                     e->av2, e->alpha, e->term, e->psum,  e->hw,  e->wsave, e->vsave,
                     e->gfo, e->vt,   e->acc,   e->scratch, e->traj};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(e);
}

void episode_set_guard(episode_t *e, int skip_nonfinite) { e->guard = skip_nonfinite; }

void episode_begin(episode_t *e, const double *phi, const double *xs, const double *ys,
                   const double *xq, const double *yq) {
    e->phi = phi;
    e->xs = xs;
    e->ys = ys;
    e->xq = xq;
    e->yq = yq;
    e->t = 0;
    vec_copy(e->nw, e->w, phi);
    vec_zero(e->nw, e->v);
    vec_copy(e->nw, e->traj, phi);
}

int episode_t_done(const episode_t *e) { return e->t; }
const double *episode_w(const episode_t *e) { return e->w; }
const double *episode_v(const episode_t *e) { return e->v; }

double episode_val_loss(episode_t *e, const double *lam) {
    mlp_feat_compute(e->m, e->fq, lam, e->xq, e->n_q);
    return mlp_forward_f(e->m, e->fq, e->w, e->yq, NULL);
}

/* a_lam of the VJP of Phi at (w, lam, D) with cotangent (a_w, 0):
 * c = -eta a_w, a_lam = H_lw c. One HVP. */
static void vjp_lam(episode_t *e, const double *lam, const double *w, const double *a_w,
                    double *out_lam) {
    vec_zero(e->nw, e->av2);
    inner_vjp(e->m, e->fs, e->ic, lam, w, e->ys, a_w, e->av2, NULL, NULL, out_lam, e->scratch);
}

/* Reverse pass from cotangent (alpha, 0) at w_T over points w_{i-1}; the
 * point of step i is given by `point`. Accumulates the lam cotangents. */
static const double *drmad_point(episode_t *e, int i, double *buf) {
    /* s^_{i-1} = (1 - (i-1)/T) s_0 + ((i-1)/T) s_T */
    double f = (double)(i - 1) / (double)e->T;
    vec_lincomb(e->nw, buf, 1.0 - f, e->traj, f, e->traj + (size_t)e->T * e->nw);
    return buf;
}

static void reverse_pass(episode_t *e, const double *lam, int interpolate, double *acc) {
    size_t nw = e->nw;
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    vec_zero(e->nl, acc);
    for (int i = e->T; i >= 1; i--) {
        const double *pt = interpolate ? drmad_point(e, i, e->hw) : e->traj + (size_t)(i - 1) * nw;
        inner_vjp(e->m, e->fs, e->ic, lam, pt, e->ys, e->aw, e->av, e->aw2, e->av2, e->vt,
                  e->scratch);
        vec_axpy(e->nl, acc, 1.0, e->vt);
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
    size_t nw = e->nw, nl = e->nl;
    int t = ++e->t;
    mlp_feat_compute(e->m, e->fs, lam, e->xs, e->n_s);

    /* Before the step: the points that need s_{t-1}. */
    if (mc->kind == METHOD_HYPERDISTILL) {
        if (t == 1) {
            vec_copy(nw, e->wstar, e->w);
        } else {
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

    info->train_loss = inner_step(e->m, e->fs, e->ic, lam, e->w, e->v, e->ys, e->w, e->v, e->scratch);
    int bad = !isfinite(info->train_loss) || !vec_all_finite(nw, e->w);
    if (bad) {
        info->nonfinite = 1;
        if (e->guard) {
            vec_copy(nw, e->w, e->wsave);
            vec_copy(nw, e->v, e->vsave);
        }
    }
    vec_copy(nw, e->traj + (size_t)t * nw, e->w);

    int posts = method_posts_at(mc, t, e->T);
    if (replay || (!posts && t < e->T)) return HD_OK;

    mlp_feat_compute(e->m, e->fq, lam, e->xq, e->n_q);
    if (!posts) {
        info->val_loss = mlp_forward_f(e->m, e->fq, e->w, e->yq, NULL);
        return HD_OK;
    }
    info->val_loss = mlp_grad_f(e->m, e->fq, lam, e->w, e->yq, e->gfo, e->alpha);
    if (bad && e->guard) {
        vec_zero(nl, g);
        info->posted = 1;
        return HD_OK;
    }
    switch (mc->kind) {
    case METHOD_FO:
        vec_copy(nl, g, e->gfo);
        break;
    case METHOD_ONESTEP:
        vjp_lam(e, lam, e->wprev, e->alpha, e->vt);
        info->vjps = 1;
        vec_lincomb(nl, g, 1.0, e->gfo, 1.0, e->vt);
        break;
    case METHOD_HYPERDISTILL: {
        vjp_lam(e, lam, e->wstar, e->alpha, e->vt);
        info->vjps = 1;
        double vn = vec_nrm2(nl, e->vt);
        info->vnorm = vn;
        if (mc->pi_unit) {
            vec_copy(nl, g, e->gfo);
            if (vn > 0.0) vec_axpy(nl, g, 1.0 / vn, e->vt);
        } else {
            /* pi_t v_t / ||v_t|| = theta S_t v_t, S_t = (1 - gamma^t) / (1 - gamma) */
            double S = (1.0 - pow(mc->gamma, (double)t)) / (1.0 - mc->gamma);
            vec_lincomb(nl, g, 1.0, e->gfo, theta * S, e->vt);
        }
        break;
    }
    case METHOD_RMD:
    case METHOD_DRMAD:
        reverse_pass(e, lam, mc->kind == METHOD_DRMAD, e->acc);
        info->vjps = e->T;
        vec_lincomb(nl, g, 1.0, e->gfo, 1.0, e->acc);
        break;
    case METHOD_NEUMANN: {
        /* p = sum_{j=0..N} (I - eta_N H_ww)^j alpha;  g = gFO - eta_N H_lw p */
        double eta = mc->neumann_lr > 0.0 ? mc->neumann_lr : e->ic->lr;
        vec_copy(nw, e->term, e->alpha);
        vec_copy(nw, e->psum, e->alpha);
        for (int j = 1; j <= mc->neumann_n; j++) {
            mlp_hvp_f(e->m, e->fs, lam, e->w, e->ys, NULL, e->term, NULL, e->hw, NULL);
            vec_axpy(nw, e->term, -eta, e->hw);
            vec_axpy(nw, e->psum, 1.0, e->term);
        }
        mlp_hvp_f(e->m, e->fs, lam, e->w, e->ys, NULL, e->psum, e->vt, e->hw, NULL);
        info->vjps = mc->neumann_n + 1;
        vec_lincomb(nl, g, 1.0, e->gfo, -eta, e->vt);
        break;
    }
    default:
        HD_ASSERT(0);
    }
    info->posted = 1;
    info->grad_norm = vec_nrm2(nl, g);
    if (!vec_all_finite(nl, g)) info->nonfinite = 1;
    return HD_OK;
}

hd_rc episode_estimate(episode_t *e, const double *lam, double gamma, double *x, double *y,
                       linest_sums *sums, long *vjps, hd_err *err) {
    size_t nw = e->nw, nl = e->nl;
    int T = e->T;
    mlp_feat_compute(e->m, e->fs, lam, e->xs, e->n_s);
    mlp_feat_compute(e->m, e->fq, lam, e->xq, e->n_q);
    /* Forward, storing w_0 .. w_T. */
    vec_copy(nw, e->w, e->phi);
    vec_zero(nw, e->v);
    vec_copy(nw, e->traj, e->w);
    for (int t = 1; t <= T; t++) {
        inner_step(e->m, e->fs, e->ic, lam, e->w, e->v, e->ys, e->w, e->v, e->scratch);
        vec_copy(nw, e->traj + (size_t)t * nw, e->w);
    }
    e->t = 0;
    vec_copy(nw, e->w, e->phi);
    vec_zero(nw, e->v);
    if (!vec_all_finite((size_t)(T + 1) * nw, e->traj))
        return hd_err_set(err, HD_ENONFINITE, "estimation: inner trajectory is not finite");
    /* alpha_T = dL_val(w_T)/dw */
    mlp_grad_f(e->m, e->fq, lam, e->traj + (size_t)T * nw, e->yq, NULL, e->alpha);
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    vec_zero(nl, e->acc);
    long count = 0;
    for (int t = T; t >= 1; t--) {
        int s = T - t + 1;
        /* DrMAD reverse step at s^_{t-1}. */
        inner_vjp(e->m, e->fs, e->ic, lam, drmad_point(e, t, e->hw), e->ys, e->aw, e->av, e->aw2,
                  e->av2, e->vt, e->scratch);
        count++;
        vec_axpy(nl, e->acc, 1.0, e->vt);
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
        vjp_lam(e, lam, e->wstar, e->alpha, e->vt);
        count++;
        double vn = vec_nrm2(nl, e->vt);
        double S = (1.0 - pow(gamma, (double)s)) / (1.0 - gamma);
        double xs = vn * S, ys = vn > 0.0 ? vec_dot(nl, e->vt, e->acc) / vn : 0.0;
        x[s - 1] = xs;
        y[s - 1] = ys;
    }
    if (sums)
        for (int s = 0; s < T; s++) linest_add(sums, x[s], y[s]);
    if (vjps) *vjps = count;
    return HD_OK;
}

double episode_eval(episode_t *e, const double *lam, const double *phi, const double *xs,
                    const double *ys, const double *xq, const double *yq) {
    size_t nw = e->nw;
    mlp_feat_compute(e->m, e->fs, lam, xs, e->n_s);
    vec_copy(nw, e->w, phi);
    vec_zero(nw, e->v);
    for (int t = 1; t <= e->T; t++)
        inner_step(e->m, e->fs, e->ic, lam, e->w, e->v, ys, e->w, e->v, e->scratch);
    mlp_feat_compute(e->m, e->fq, lam, xq, e->n_q);
    double loss = mlp_forward_f(e->m, e->fq, e->w, yq, NULL);
    e->t = 0;
    return loss;
}
