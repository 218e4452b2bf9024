/* Episodes under every hypergradient method: ALGORITHM.md sections 3
 * (HyperDistill), 4 (LinearEstimation) and 5 (fo, onestep, drmad, rmd,
 * neumann), for K tasks (slots) at once.
 *
 * Rows of the K tasks are stacked: support rows of slot k at
 * [k n_s, (k+1) n_s), query rows at [K n_s + k n_q, K n_s + (k+1) n_q). Per
 * step the lower-layer (lam) features of all rows are one product per layer;
 * each slot's upper (w) passes run on its own rows; and the lam-gradient of
 * the sum over slots and over products (validation gradient gFO, distilled
 * VJP, reverse-mode VJPs) is one backward pass through the lam layers of the
 * stacked cotangents on the top lam activations (mlp.h, split passes): that
 * backward depends only on (lam, x) and is linear in the cotangent.
 * D*_t = D_t: every step uses the task's full support set, so the distilled
 * minibatch is the batch itself. */
#include "episode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vec.h"

struct episode {
    mlp_t *m;                /* borrowed network (scratch shared) */
    const inner_cfg *ic;     /* borrowed */
    const method_cfg *mc;    /* borrowed */
    int T;                   /* steps per episode */
    int K;                   /* slots */
    int t;                   /* steps done */
    int guard;               /* skip non-finite (or guard_loss-exceeding) steps */
    double guard_loss;       /* > 0: also skip steps whose support loss after the step exceeds it */
    size_t n_s, n_q;         /* support / query rows per slot */
    size_t nw, nl;           /* sizes of w and lam */
    size_t wk;               /* width of the top lam layer (0 if no lam layers) */
    size_t din;              /* input width */
    const double **ys, **yq; /* per slot: borrowed targets */
    const double **phi;      /* per slot: borrowed init */
    double *xsq;             /* stacked inputs, K (n_s + n_q) x din */
    mlp_feat_t *f;           /* features of xsq at the current lam */
    double *w, *v;           /* s_t per slot, K x nw */
    double *wprev;           /* w_{t-1} per slot (onestep) */
    double *wstar;           /* hyperdistill distilled w*_t per slot */
    double *traj;            /* w_0 .. w_T per slot, K x (T+1) x nw (rmd, drmad, estimation) */
    double *wsave, *vsave;   /* state before a guarded step, per slot */
    int *bad;                /* per slot: the current step was skipped by the guard */
    double *aw, *av;         /* cotangents */
    double *aw2, *av2;       /* next cotangents */
    double *alpha;           /* dL_val/dw at the end point */
    double *c;               /* the VJP direction c = a_v - eta a_w */
    double *gw;              /* inner gradient */
    double *gfo, *vt, *acc;  /* lam-sized scratch */
    double *term, *psum;     /* Neumann series */
    double *hw;              /* H_ww products */
    double *pt;              /* an interpolated point */
    double *top;             /* cotangents on A_k of every stacked row */
    double *top2;            /* one slot's support block of cotangents on A_k */
};

static double *slot_w(const episode_t *e, double *base, int k) { return base + (size_t)k * e->nw; }
static size_t srow(const episode_t *e, int k) { return (size_t)k * e->n_s; }
static size_t qrow(const episode_t *e, int k) { return (size_t)e->K * e->n_s + (size_t)k * e->n_q; }
static double *top_at(const episode_t *e, size_t row) { return e->top + row * e->wk; }
static double *traj_at(const episode_t *e, int k, int t) {
    return e->traj + ((size_t)k * (size_t)(e->T + 1) + (size_t)t) * e->nw;
}

hd_rc episode_new_batch(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                        size_t n_q, int K, episode_t **out, hd_err *err) {
    if (T < 1) return hd_err_set(err, HD_EINVAL, "inner.steps: must be >= 1, got %d", T);
    if (K < 1 || K > 65536) return hd_err_set(err, HD_EINVAL, "episode: %d slots", K);
    if (n_s < 1 || n_q < 1 || (size_t)K * (n_s + n_q) > mlp_max_batch(m))
        return hd_err_set(
            err, HD_EINVAL,
            "episode: %d x (support %zu + query %zu) rows exceed the model's batch %zu", K, n_s,
            n_q, mlp_max_batch(m));
    episode_t *e = calloc(1, sizeof *e);
    if (!e) return hd_err_set(err, HD_ENOMEM, "episode: out of memory");
    e->m = m;
    e->ic = ic;
    e->mc = mc;
    e->T = T;
    e->K = K;
    e->n_s = n_s;
    e->n_q = n_q;
    e->nw = mlp_n_w(m);
    e->nl = mlp_n_lam(m);
    e->din = mlp_in_dim(m);
    size_t k = mlp_hyper_layers(m);
    e->wk = k ? mlp_width(m, k) : 0;
    size_t nw = e->nw, nl = e->nl ? e->nl : 1, wk = e->wk ? e->wk : 1, Kz = (size_t)K;
    size_t rows = Kz * (n_s + n_q);
    hd_rc rc = mlp_feat_new(m, rows, &e->f, err);
    double **bufs_w[] = {&e->aw, &e->av,   &e->aw2,  &e->av2, &e->alpha, &e->c,
                         &e->gw, &e->term, &e->psum, &e->hw,  &e->pt};
    double **bufs_kw[] = {&e->w, &e->v, &e->wprev, &e->wstar, &e->wsave, &e->vsave};
    double **bufs_l[] = {&e->gfo, &e->vt, &e->acc};
    int fail = rc != HD_OK;
    for (size_t i = 0; i < sizeof bufs_w / sizeof *bufs_w; i++)
        fail |= !(*bufs_w[i] = calloc(nw, sizeof(double)));
    for (size_t i = 0; i < sizeof bufs_kw / sizeof *bufs_kw; i++)
        fail |= !(*bufs_kw[i] = calloc(Kz * nw, sizeof(double)));
    for (size_t i = 0; i < sizeof bufs_l / sizeof *bufs_l; i++)
        fail |= !(*bufs_l[i] = calloc(nl, sizeof(double)));
    fail |= !(e->xsq = calloc(rows * e->din, sizeof(double)));
    fail |= !(e->top = calloc(rows * wk, sizeof(double)));
    fail |= !(e->top2 = calloc(n_s * wk, sizeof(double)));
    fail |= !(e->traj = calloc(Kz * (size_t)(T + 1) * nw, sizeof(double)));
    fail |= !(e->bad = calloc(Kz, sizeof(int)));
    fail |= !(e->ys = calloc(Kz, sizeof(double *)));
    fail |= !(e->yq = calloc(Kz, sizeof(double *)));
    fail |= !(e->phi = calloc(Kz, sizeof(double *)));
    if (fail) {
        episode_free(e);
        return rc != HD_OK ? rc : hd_err_set(err, HD_ENOMEM, "episode: out of memory");
    }
    *out = e;
    return HD_OK;
}

hd_rc episode_new(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                  size_t n_q, episode_t **out, hd_err *err) {
    return episode_new_batch(m, ic, mc, T, n_s, n_q, 1, out, err);
}

void episode_free(episode_t *e) {
    if (!e) return;
    mlp_feat_free(e->f);
    double *all[] = {e->w,   e->v,   e->wprev, e->wstar, e->wsave, e->vsave, e->aw,   e->av,
                     e->aw2, e->av2, e->alpha, e->c,     e->gw,    e->term,  e->psum, e->hw,
                     e->pt,  e->gfo, e->vt,    e->acc,   e->xsq,   e->top,   e->top2, e->traj};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(e->bad);
    free((void *)e->ys);
    free((void *)e->yq);
    free((void *)e->phi);
    free(e);
}

int episode_slots(const episode_t *e) { return e->K; }

void episode_set_guard(episode_t *e, int skip_nonfinite, double max_loss) {
    e->guard = skip_nonfinite || max_loss > 0.0;
    e->guard_loss = max_loss;
}

/* Stack slot k's support and query inputs. */
static void set_inputs(episode_t *e, int k, const double *xs, const double *xq) {
    memcpy(e->xsq + srow(e, k) * e->din, xs, e->n_s * e->din * sizeof(double));
    memcpy(e->xsq + qrow(e, k) * e->din, xq, e->n_q * e->din * sizeof(double));
}

void episode_begin_slot(episode_t *e, int k, const double *phi, const double *xs, const double *ys,
                        const double *xq, const double *yq) {
    HD_ASSERT(k >= 0 && k < e->K);
    e->phi[k] = phi;
    e->ys[k] = ys;
    e->yq[k] = yq;
    set_inputs(e, k, xs, xq);
    e->t = 0;
    vec_copy(e->nw, slot_w(e, e->w, k), phi);
    vec_zero(e->nw, slot_w(e, e->v, k));
    vec_copy(e->nw, traj_at(e, k, 0), phi);
}

void episode_begin(episode_t *e, const double *phi, const double *xs, const double *ys,
                   const double *xq, const double *yq) {
    episode_begin_slot(e, 0, phi, xs, ys, xq, yq);
}

int episode_t_done(const episode_t *e) { return e->t; }
const double *episode_w_slot(const episode_t *e, int k) { return e->w + (size_t)k * e->nw; }
const double *episode_w(const episode_t *e) { return e->w; }
const double *episode_v(const episode_t *e) { return e->v; }

/* Features of the support rows only (all_rows = 0) or of every row. */
static void features(episode_t *e, const double *lam, int all_rows) {
    size_t rows = (size_t)e->K * (all_rows ? e->n_s + e->n_q : e->n_s);
    mlp_feat_compute(e->m, e->f, lam, e->xsq, rows);
}

double episode_val_loss(episode_t *e, const double *lam) {
    features(e, lam, 1);
    return mlp_upper_loss(e->m, e->f, qrow(e, 0), e->n_q, e->w, e->yq[0]);
}

/* Phi on slot k's support rows: v' = mu v + g, w' = w - eta v'. Returns the loss. */
static double inner_update(episode_t *e, int k, const double *lam, double *w, double *v) {
    double loss = mlp_upper_grad(e->m, e->f, srow(e, k), e->n_s, lam, w, e->ys[k], e->gw, NULL);
    double mu = e->ic->momentum, eta = e->ic->lr;
    for (size_t i = 0; i < e->nw; i++) {
        v[i] = mu * v[i] + e->gw[i];
        w[i] -= eta * v[i];
    }
    return loss;
}

/* w-part of a VJP of Phi at slot k's point w with cotangent (a_w, a_v)
 * (section 2): c = a_v - eta a_w; out_w = a_w + H_ww c; out_v = mu c; the
 * cotangent on A_k whose lower backward is H_lw c goes to Rtop (n_s x wk)
 * when non-NULL. One HVP. */
static void vjp_upper(episode_t *e, int k, const double *lam, const double *w, const double *a_w,
                      const double *a_v, double *out_w, double *out_v, double *Rtop) {
    size_t nw = e->nw;
    double eta = e->ic->lr, mu = e->ic->momentum;
    for (size_t i = 0; i < nw; i++) e->c[i] = (a_v ? a_v[i] : 0.0) - eta * a_w[i];
    mlp_upper_hvp(e->m, e->f, srow(e, k), e->n_s, lam, w, e->ys[k], e->c, e->hw,
                  e->nl ? Rtop : NULL);
    if (out_w)
        for (size_t i = 0; i < nw; i++) out_w[i] = a_w[i] + e->hw[i];
    if (out_v)
        for (size_t i = 0; i < nw; i++) out_v[i] = mu * e->c[i];
}

/* g (nl) = lower backward of the cotangents of rows [r0, r0+n). */
static void lower(episode_t *e, const double *lam, size_t r0, size_t n, double *g) {
    if (e->nl) mlp_lower_backward(e->m, e->f, r0, n, lam, top_at(e, r0), g);
}

/* The DrMAD point s^_{i-1} = (1 - (i-1)/T) s_0 + ((i-1)/T) s_T of slot k. */
static const double *drmad_point(episode_t *e, int k, int i) {
    double f = (double)(i - 1) / (double)e->T;
    vec_lincomb(e->nw, e->pt, 1.0 - f, traj_at(e, k, 0), f, traj_at(e, k, e->T));
    return e->pt;
}

/* Reverse pass of slot k from cotangent (alpha, 0) at w_T over the stored
 * (rmd) or interpolated (drmad) points. The lam cotangents of the T VJPs
 * share the slot's support rows at the same lam, so their A_k cotangents are
 * summed into the slot's support block of e->top. */
static void reverse_pass(episode_t *e, int k, const double *lam, int interpolate) {
    size_t nw = e->nw, blk = e->n_s * e->wk;
    double *topk = top_at(e, srow(e, k));
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    vec_zero(blk, topk);
    for (int i = e->T; i >= 1; i--) {
        const double *p = interpolate ? drmad_point(e, k, i) : traj_at(e, k, i - 1);
        vjp_upper(e, k, lam, p, e->aw, e->av, e->aw2, e->av2, e->top2);
        vec_axpy(blk, topk, 1.0, e->top2);
        double *t = e->aw;
        e->aw = e->aw2;
        e->aw2 = t;
        t = e->av;
        e->av = e->av2;
        e->av2 = t;
    }
}

/* Slot k's contribution at a posting step t: its query rows' cotangents
 * (gFO) and its support rows' cotangents (the second-order term) in e->top.
 * Returns the VJPs spent. */
static long slot_cotangents(episode_t *e, int k, const double *lam, double theta, int t) {
    const method_cfg *mc = e->mc;
    size_t nw = e->nw, blk = e->n_s * e->wk;
    double *topS = top_at(e, srow(e, k));
    double *wk_ = slot_w(e, e->w, k);
    switch (mc->kind) {
    case METHOD_FO:
        if (blk) vec_zero(blk, topS);
        return 0;
    case METHOD_ONESTEP:
        /* gFO + alpha B(s_{t-1}) */
        vjp_upper(e, k, lam, slot_w(e, e->wprev, k), e->alpha, NULL, NULL, NULL, topS);
        return 1;
    case METHOD_HYPERDISTILL:
        vjp_upper(e, k, lam, slot_w(e, e->wstar, k), e->alpha, NULL, NULL, NULL, topS);
        if (!mc->pi_unit) {
            /* pi_t v_t / ||v_t|| = theta S_t v_t, S_t = (1 - gamma^t) / (1 - gamma) */
            double S = (1.0 - pow(mc->gamma, (double)t)) / (1.0 - mc->gamma);
            if (blk) vec_scale(blk, topS, theta * S);
        }
        return 1;
    case METHOD_RMD:
    case METHOD_DRMAD:
        reverse_pass(e, k, lam, mc->kind == METHOD_DRMAD);
        return e->T;
    case METHOD_NEUMANN: {
        /* p = sum_{j=0..N} (I - eta_N H_ww)^j alpha;  g = gFO - eta_N H_lw p */
        double eta = mc->neumann_lr > 0.0 ? mc->neumann_lr : e->ic->lr;
        vec_copy(nw, e->term, e->alpha);
        vec_copy(nw, e->psum, e->alpha);
        for (int j = 1; j <= mc->neumann_n; j++) {
            mlp_upper_hvp(e->m, e->f, srow(e, k), e->n_s, lam, wk_, e->ys[k], e->term, e->hw, NULL);
            vec_axpy(nw, e->term, -eta, e->hw);
            vec_axpy(nw, e->psum, 1.0, e->term);
        }
        mlp_upper_hvp(e->m, e->f, srow(e, k), e->n_s, lam, wk_, e->ys[k], e->psum, e->hw,
                      e->nl ? topS : NULL);
        if (blk) vec_scale(blk, topS, -eta);
        return mc->neumann_n + 1;
    }
    default:
        HD_ASSERT(0);
    }
    return 0;
}

hd_rc episode_step_batch(episode_t *e, const double *lam, double theta, int replay, double *g,
                         episode_info *info) {
    if (e->t >= e->T) return HD_ECONFLICT;
    const method_cfg *mc = e->mc;
    size_t nw = e->nw, nl = e->nl, n_s = e->n_s, n_q = e->n_q, wk = e->wk;
    int K = e->K, t = ++e->t;
    int posts = method_posts_at(mc, t, e->T) && !replay;
    if (info) memset(info, 0, (size_t)K * sizeof *info);
    features(e, lam, posts || t == e->T);

    for (int k = 0; k < K; k++) {
        double *w = slot_w(e, e->w, k), *v = slot_w(e, e->v, k);
        /* Before the step: the points that need s_{t-1}. */
        if (mc->kind == METHOD_HYPERDISTILL) {
            double *ws = slot_w(e, e->wstar, k);
            if (t == 1) {
                vec_copy(nw, ws, w);
            } else {
                /* p_t = (gamma - gamma^t) / (1 - gamma^t) */
                double gt = pow(mc->gamma, (double)t);
                double p = (mc->gamma - gt) / (1.0 - gt);
                vec_lincomb(nw, ws, p, ws, 1.0 - p, w);
            }
        } else if (mc->kind == METHOD_ONESTEP) {
            vec_copy(nw, slot_w(e, e->wprev, k), w);
        }
        if (e->guard) {
            vec_copy(nw, slot_w(e, e->wsave, k), w);
            vec_copy(nw, slot_w(e, e->vsave, k), v);
        }
        double loss = inner_update(e, k, lam, w, v);
        int bad = !isfinite(loss) || !vec_all_finite(nw, w);
        if (!bad && e->guard_loss > 0.0) {
            double after = mlp_upper_loss(e->m, e->f, srow(e, k), n_s, w, e->ys[k]);
            bad = !(after <= e->guard_loss);
        }
        if (bad && e->guard) {
            vec_copy(nw, w, slot_w(e, e->wsave, k));
            vec_copy(nw, v, slot_w(e, e->vsave, k));
        }
        e->bad[k] = bad;
        vec_copy(nw, traj_at(e, k, t), w);
        if (info) {
            info[k].train_loss = loss;
            info[k].nonfinite = bad;
        }
    }
    if (replay) return HD_OK;
    if (!posts) {
        if (t == e->T && info)
            for (int k = 0; k < K; k++)
                info[k].val_loss =
                    mlp_upper_loss(e->m, e->f, qrow(e, k), n_q, slot_w(e, e->w, k), e->yq[k]);
        return HD_OK;
    }
    for (int k = 0; k < K; k++) {
        /* alpha_t = dL_val/dw_t and the query rows' cotangent on A_k (gFO). */
        double *topQ = top_at(e, qrow(e, k));
        double vl = mlp_upper_grad(e->m, e->f, qrow(e, k), n_q, lam, slot_w(e, e->w, k), e->yq[k],
                                   e->alpha, nl ? topQ : NULL);
        if (info) info[k].val_loss = vl;
        if (e->bad[k] && e->guard) {
            /* A skipped step contributes zero. */
            if (nl) {
                vec_zero(n_q * wk, topQ);
                vec_zero(n_s * wk, top_at(e, srow(e, k)));
            }
            continue;
        }
        long vj = slot_cotangents(e, k, lam, theta, t);
        if (info) info[k].vjps = vj;
        if (mc->kind == METHOD_HYPERDISTILL && mc->pi_unit && nl) {
            /* pi unit needs each slot's v_t on its own: g_k = gFO_k + v_k / ||v_k||. */
            lower(e, lam, srow(e, k), n_s, e->vt);
            double vn = sqrt(vec_dot(nl, e->vt, e->vt));
            if (info) info[k].vnorm = vn;
            vec_scale(n_s * wk, top_at(e, srow(e, k)), vn > 0.0 ? 1.0 / vn : 0.0);
        }
    }
    /* One backward through the lam layers for every slot and every product. */
    if (mc->kind == METHOD_FO)
        lower(e, lam, (size_t)K * n_s, (size_t)K * n_q, g);
    else
        lower(e, lam, 0, (size_t)K * (n_s + n_q), g);
    double gn = sqrt(vec_dot(nl, g, g));
    if (info)
        for (int k = 0; k < K; k++) {
            info[k].posted = 1;
            info[k].grad_norm = gn;
            if (!isfinite(gn)) info[k].nonfinite = 1;
        }
    return HD_OK;
}

hd_rc episode_step(episode_t *e, const double *lam, double theta, int replay, double *g,
                   episode_info *info) {
    HD_ASSERT(e->K == 1);
    return episode_step_batch(e, lam, theta, replay, g, info);
}

/* LinearEstimation of slot k; features of every row at lam are current. */
static hd_rc estimate_slot(episode_t *e, int k, const double *lam, double gamma, double *x,
                           double *y, linest_sums *sums, long *vjps) {
    size_t nw = e->nw, nl = e->nl, n_s = e->n_s, blk = n_s * e->wk;
    int T = e->T;
    double *w = slot_w(e, e->w, k), *v = slot_w(e, e->v, k);
    double *topS = top_at(e, srow(e, k));
    /* Forward, storing w_0 .. w_T. */
    vec_copy(nw, w, e->phi[k]);
    vec_zero(nw, v);
    vec_copy(nw, traj_at(e, k, 0), w);
    for (int t = 1; t <= T; t++) {
        inner_update(e, k, lam, w, v);
        vec_copy(nw, traj_at(e, k, t), w);
    }
    vec_copy(nw, w, e->phi[k]);
    vec_zero(nw, v);
    if (!vec_all_finite((size_t)(T + 1) * nw, traj_at(e, k, 0))) {
        for (int s = 0; s < T; s++) x[s] = y[s] = (double)NAN;
        return HD_ENONFINITE;
    }
    /* alpha_T = dL_val(w_T)/dw */
    mlp_upper_grad(e->m, e->f, qrow(e, k), e->n_q, lam, traj_at(e, k, T), e->yq[k], e->alpha, NULL);
    vec_copy(nw, e->aw, e->alpha);
    vec_zero(nw, e->av);
    if (blk) vec_zero(blk, topS); /* sum of the DrMAD A_k cotangents */
    long count = 0;
    for (int t = T; t >= 1; t--) {
        int s = T - t + 1;
        /* DrMAD reverse step at s^_{t-1}; gSO = lower backward of the sum. */
        vjp_upper(e, k, lam, drmad_point(e, k, t), e->aw, e->av, e->aw2, e->av2, e->top2);
        count++;
        if (blk) vec_axpy(blk, topS, 1.0, e->top2);
        if (nl) mlp_lower_backward(e->m, e->f, srow(e, k), n_s, lam, topS, e->acc);
        double *tmp = e->aw;
        e->aw = e->aw2;
        e->aw2 = tmp;
        tmp = e->av;
        e->av = e->av2;
        e->av2 = tmp;
        /* Distilled point over the last s steps (Eq. 17-18). */
        double *ws = slot_w(e, e->wstar, k);
        const double *w_Tms = traj_at(e, k, T - s);
        if (s == 1) {
            vec_copy(nw, ws, w_Tms);
        } else {
            double p = (1.0 - pow(gamma, (double)(s - 1))) / (1.0 - pow(gamma, (double)s));
            vec_lincomb(nw, ws, p, ws, 1.0 - p, w_Tms);
        }
        /* v_s = alpha_T B(s*_s): cotangent (alpha_T, 0). */
        vjp_upper(e, k, lam, ws, e->alpha, NULL, NULL, NULL, e->top2);
        if (nl) mlp_lower_backward(e->m, e->f, srow(e, k), n_s, lam, e->top2, e->vt);
        count++;
        double vn = sqrt(vec_dot(nl, e->vt, e->vt));
        double S = (1.0 - pow(gamma, (double)s)) / (1.0 - gamma);
        x[s - 1] = vn * S;
        y[s - 1] = vn > 0.0 ? vec_dot(nl, e->vt, e->acc) / vn : 0.0;
    }
    if (sums)
        for (int s = 0; s < T; s++) linest_add(sums, x[s], y[s]);
    *vjps += count;
    return HD_OK;
}

hd_rc episode_estimate_batch(episode_t *e, const double *lam, double gamma, double *x, double *y,
                             linest_sums *sums, long *vjps, hd_err *err) {
    features(e, lam, 1);
    long count = 0;
    hd_rc rc = HD_OK;
    for (int k = 0; k < e->K; k++) {
        size_t off = (size_t)k * (size_t)e->T;
        if (estimate_slot(e, k, lam, gamma, x + off, y + off, sums ? &sums[k] : NULL, &count) !=
            HD_OK)
            rc = hd_err_set(err, HD_ENONFINITE,
                            "estimation: inner trajectory of slot %d is not finite", k);
    }
    e->t = 0;
    if (vjps) *vjps = count;
    return rc;
}

hd_rc episode_estimate(episode_t *e, const double *lam, double gamma, double *x, double *y,
                       linest_sums *sums, long *vjps, hd_err *err) {
    HD_ASSERT(e->K == 1);
    return episode_estimate_batch(e, lam, gamma, x, y, sums, vjps, err);
}

void episode_eval_batch(episode_t *e, const double *lam, const double *phi, int n,
                        const double *const *xs, const double *const *ys, const double *const *xq,
                        const double *const *yq, double *loss) {
    HD_ASSERT(n >= 1 && n <= e->K);
    size_t nw = e->nw;
    for (int k = 0; k < e->K; k++) {
        /* Unused slots repeat the last task, so that every row is defined. */
        int i = k < n ? k : n - 1;
        set_inputs(e, k, xs[i], xq[i]);
        e->ys[k] = ys[i];
        e->yq[k] = yq[i];
    }
    features(e, lam, 1);
    for (int k = 0; k < n; k++) {
        double *w = slot_w(e, e->w, k), *v = slot_w(e, e->v, k);
        vec_copy(nw, w, phi);
        vec_zero(nw, v);
        for (int t = 1; t <= e->T; t++) inner_update(e, k, lam, w, v);
        loss[k] = mlp_upper_loss(e->m, e->f, qrow(e, k), e->n_q, w, e->yq[k]);
    }
    e->t = 0;
}

double episode_eval(episode_t *e, const double *lam, const double *phi, const double *xs,
                    const double *ys, const double *xq, const double *yq) {
    double loss;
    episode_eval_batch(e, lam, phi, 1, &xs, &ys, &xq, &yq, &loss);
    return loss;
}
