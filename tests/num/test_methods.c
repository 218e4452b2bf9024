/* Checks of the hypergradient methods of common/episode.h against the
 * contract (ALGORITHM.md sections 1-5), of LinearEstimation (section 4), of
 * the VJP accounting (section 5 table), of the local runner's determinism
 * (section 7) and of the probe. Every tolerance is written next to its check.
 *
 *  1. rmd against central finite differences of the whole unrolled
 *     L_val(w_T(lam), lam) (s_0 = (phi, 0), T momentum-SGD steps with lam
 *     fixed, then the query loss), computed by an independent forward in this
 *     file, along random unit directions: relative error <= 1e-5.
 *  2. hyperdistill with gamma 0 and theta 1 against onestep at every step,
 *     lam fixed and lam changing between steps.
 *  3. The distilled point: hyperdistill's g_t against gFO_t + theta S_t
 *     alpha_t B(w*_t) with w*_t the explicit weighted average of the recorded
 *     trajectory, gamma in {0, 0.5, 0.9, 0.99} (and pi_mode unit once), and
 *     episode_info.vnorm = ||v_t||. 3b: replayed steps (episode.h) leave the
 *     later hypergradients of every method unchanged.
 *  4. drmad against rmd where DrMAD's interpolation is exact (see the comment
 *     above check_drmad_exact for the analysis).
 *  5. LinearEstimation: linest on y = c x, episode_estimate against an
 *     independent implementation of Algorithm 4 and against the fit of its
 *     own samples, T = 1 structure, pooling across tasks.
 *  6. VJP counts per method.
 *  7. runner_local twice with the same spec: byte-identical outputs.
 *  8. method_posts_at and the episode's posting schedule.
 *  9. probe_run. */
#include "episode.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "inner.h"
#include "linest.h"
#include "method.h"
#include "mlp.h"
#include "probe.h"
#include "rng.h"
#include "runner.h"
#include "spec.h"
#include "task.h"
#include "vec.h"

#define MOMENTUM 0.9
#define FD_H 1e-5       /* central-difference step along a unit direction */
#define FD_REL_TOL 1e-5 /* section 1 bar: rmd vs FD of the unrolled loss */
#define FD_DIRS 4       /* random directions per case */
#define TINY 1e-300

static double *dalloc(size_t n) {
    double *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return v;
}

/* ||a - b||_inf / max(||b||_inf, tiny): the relative measure used below. */
static double rel_inf(size_t n, const double *a, const double *b) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / fmax(den, TINY);
}

static int bit_equal(size_t n, const double *a, const double *b) {
    return memcmp(a, b, n * sizeof *a) == 0;
}

static void random_unit(rng_t *r, size_t n, double *d) {
    for (size_t i = 0; i < n; i++) d[i] = rng_normal(r);
    vec_scale(n, d, 1.0 / vec_nrm2(n, d));
}

/* ---------------------------------------------------------------------- */
/* A network, one task and (lam, phi). */

typedef struct {
    const char *name;
    size_t nwidths;
    size_t widths[6];
    mlp_act act;
    mlp_loss loss;
    size_t k; /* hyper_layers */
    size_t n_s, n_q;
    double lr;
} netspec;

typedef struct {
    const netspec *ns;
    mlp_t *m;
    size_t nl, nw, din, dout;
    size_t n_s, n_q;
    inner_cfg ic;
    double *lam, *phi;
    double *xs, *ys, *xq, *yq; /* owned copies of the task */
} net;

static const netspec NET_SIN_TANH = {
    "1-40-40-1 tanh mse k=2", 4, {1, 40, 40, 1}, MLP_ACT_TANH, MLP_LOSS_MSE, 2, 10, 10, 0.01};
static const netspec NET_GM_TANH = {
    "20-16-16-5 tanh xent k=1", 4, {20, 16, 16, 5}, MLP_ACT_TANH, MLP_LOSS_XENT, 1, 25, 25, 0.1};
static const netspec NET_SIN_RELU = {"1-100-100-100-1 relu mse k=3",
                                     5,
                                     {1, 100, 100, 100, 1},
                                     MLP_ACT_RELU,
                                     MLP_LOSS_MSE,
                                     3,
                                     10,
                                     10,
                                     0.01};
static const netspec NET_SIN_TANH_K1 = {
    "1-40-40-1 tanh mse k=1", 4, {1, 40, 40, 1}, MLP_ACT_TANH, MLP_LOSS_MSE, 1, 10, 10, 0.01};

/* Build the network, draw (lam, phi) from mlp_init_params(seed) and the task
 * (seed, TRAIN, episode 0, slot) from task_make. */
static void net_init(net *N, const netspec *ns, uint64_t seed, uint64_t slot) {
    memset(N, 0, sizeof *N);
    N->ns = ns;
    hd_err err;
    hd_err_clear(&err);
    /* Room for the support and query rows stacked (an episode may compute
     * their features in one cache). */
    size_t rows = ns->n_s + ns->n_q;
    if (mlp_new(ns->nwidths, ns->widths, ns->act, ns->loss, ns->k, rows, &N->m, &err) != HD_OK) {
        fprintf(stderr, "mlp_new %s: %s\n", ns->name, err.msg);
        exit(2);
    }
    N->nl = mlp_n_lam(N->m);
    N->nw = mlp_n_w(N->m);
    N->din = ns->widths[0];
    N->dout = ns->widths[ns->nwidths - 1];
    N->n_s = ns->n_s;
    N->n_q = ns->n_q;
    N->ic.lr = ns->lr;
    N->ic.momentum = MOMENTUM;
    N->lam = dalloc(N->nl);
    N->phi = dalloc(N->nw);
    mlp_init_params(N->m, seed, N->lam, N->phi);
    task_cfg tc;
    memset(&tc, 0, sizeof tc);
    tc.family = ns->loss == MLP_LOSS_XENT ? TASK_GAUSSMIX : TASK_SINUSOID;
    tc.shots = ns->n_s;
    tc.queries = ns->n_q;
    tc.in_dim = N->din;
    tc.out_dim = N->dout;
    tc.classes = tc.family == TASK_GAUSSMIX ? N->dout : 0;
    task_t t;
    if (task_alloc(&t, ns->n_s, ns->n_q, N->din, N->dout, &err) != HD_OK) exit(2);
    task_make(&tc, seed, TASK_STREAM_TRAIN, 0, slot, &t);
    N->xs = dalloc(N->n_s * N->din);
    N->ys = dalloc(N->n_s * N->dout);
    N->xq = dalloc(N->n_q * N->din);
    N->yq = dalloc(N->n_q * N->dout);
    memcpy(N->xs, t.xs, N->n_s * N->din * sizeof(double));
    memcpy(N->ys, t.ys, N->n_s * N->dout * sizeof(double));
    memcpy(N->xq, t.xq, N->n_q * N->din * sizeof(double));
    memcpy(N->yq, t.yq, N->n_q * N->dout * sizeof(double));
    task_clear(&t);
}

static void net_free(net *N) {
    mlp_free(N->m);
    free(N->lam);
    free(N->phi);
    free(N->xs);
    free(N->ys);
    free(N->xq);
    free(N->yq);
}

static episode_t *new_episode(net *N, const method_cfg *mc, int T) {
    episode_t *e = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (episode_new(N->m, &N->ic, mc, T, N->n_s, N->n_q, &e, &err) != HD_OK) {
        fprintf(stderr, "episode_new: %s\n", err.msg);
        exit(2);
    }
    return e;
}

static method_cfg method_of(method_kind k) {
    method_cfg mc;
    method_cfg_default(&mc);
    mc.kind = k;
    return mc;
}

/* One episode of T steps with lam fixed; the last posted g goes to g (n_lam).
 * Returns the VJPs spent; *posts counts the posting steps. */
static long run_episode(net *N, const method_cfg *mc, int T, const double *lam, double theta,
                        double *g, int *posts) {
    episode_t *e = new_episode(N, mc, T);
    episode_begin(e, N->phi, N->xs, N->ys, N->xq, N->yq);
    long vjps = 0;
    int np = 0;
    for (int t = 1; t <= T; t++) {
        episode_info info;
        CHECK_EQ_INT(episode_step(e, lam, theta, 0, g, &info), HD_OK);
        vjps += info.vjps;
        np += info.posted;
    }
    episode_free(e);
    if (posts) *posts = np;
    return vjps;
}

/* Independent forward (does not use episode.c or inner.c): T steps of
 * g = grad_w L_train, v = mu v + g, w = w - eta v from (phi, 0) with lam
 * fixed; traj (may be NULL) receives w_0 .. w_T ((T+1) x n_w). Returns the
 * query loss L_val(w_T, lam). */
static double ref_unroll(net *N, const double *lam, int T, double *traj) {
    size_t nw = N->nw;
    double *w = dalloc(nw), *v = dalloc(nw), *g = dalloc(nw);
    memcpy(w, N->phi, nw * sizeof *w);
    if (traj) memcpy(traj, w, nw * sizeof *w);
    for (int t = 1; t <= T; t++) {
        mlp_grad_x(N->m, lam, w, N->xs, N->ys, N->n_s, NULL, g);
        for (size_t i = 0; i < nw; i++) {
            v[i] = N->ic.momentum * v[i] + g[i];
            w[i] -= N->ic.lr * v[i];
        }
        if (traj) memcpy(traj + (size_t)t * nw, w, nw * sizeof *w);
    }
    double L = mlp_loss_x(N->m, lam, w, N->xq, N->yq, N->n_q);
    free(w);
    free(v);
    free(g);
    return L;
}

/* Signs of the hidden pre-activations of the lam layers (mlp.h layout: per
 * layer W (out, in) row-major, then b) on the support and query inputs. For
 * k = L-1 these are all the kinks of a ReLU network, and they depend on
 * (lam, x) only, not on w: the inner trajectory cannot cross a kink. */
static size_t lam_pattern(const net *N, const double *lam, unsigned char *pat, double *minabs) {
    const netspec *ns = N->ns;
    size_t maxw = 0;
    for (size_t l = 0; l < ns->nwidths; l++) maxw = ns->widths[l] > maxw ? ns->widths[l] : maxw;
    double *a = dalloc(maxw), *z = dalloc(maxw);
    size_t np = 0;
    double mn = INFINITY;
    for (int set = 0; set < 2; set++) {
        const double *X = set ? N->xq : N->xs;
        size_t n = set ? N->n_q : N->n_s;
        for (size_t r = 0; r < n; r++) {
            memcpy(a, X + r * N->din, N->din * sizeof *a);
            size_t off = 0;
            for (size_t l = 0; l < ns->k; l++) {
                size_t in = ns->widths[l], out = ns->widths[l + 1];
                const double *W = lam + off, *b = W + out * in;
                off += out * in + out;
                for (size_t j = 0; j < out; j++) {
                    double s = b[j];
                    for (size_t q = 0; q < in; q++) s += W[j * in + q] * a[q];
                    z[j] = s;
                }
                for (size_t j = 0; j < out; j++) {
                    if (pat) pat[np] = (unsigned char)(z[j] > 0.0);
                    np++;
                    mn = fmin(mn, fabs(z[j]));
                    a[j] = z[j] > 0.0 ? z[j] : 0.0;
                }
            }
        }
    }
    free(a);
    free(z);
    if (minabs) *minabs = mn;
    return np;
}

/* ---------------------------------------------------------------------- */
/* 1. rmd vs finite differences of the unrolled validation loss. */

/* ReLU: with k = L-1 (the paper's 1-100-100-100-1, k = 3) every kink sits in
 * the lam layers and depends on (lam, x) only, so L_val(w_T(lam), lam) is a
 * polynomial in lam inside one activation pattern of the 20 support/query
 * inputs. A direction d is used only if the pattern is the same at
 * lam + s h d for s in {-1, -1/2, 0, 1/2, 1}; otherwise it is redrawn (and
 * counted). Inside one pattern the central difference is as exact as for
 * tanh, so the same 1e-5 bar applies. */
static void check_rmd_fd_case(const netspec *ns, int T, uint64_t seed) {
    net N;
    net_init(&N, ns, seed, 3);
    size_t nl = N.nl;
    double *g = dalloc(nl), *d = dalloc(nl), *lp = dalloc(nl);
    method_cfg mc = method_of(METHOD_RMD);
    int posts = 0;
    run_episode(&N, &mc, T, N.lam, 1.0, g, &posts);
    CHECK_EQ_INT(posts, 1);
    double gn = vec_nrm2(nl, g);
    CHECK_MSG(isfinite(gn) && gn > 0.0, "%s T=%d: rmd norm %g", ns->name, T, gn);

    size_t npat = 0;
    unsigned char *pat0 = NULL, *pat = NULL;
    if (ns->act == MLP_ACT_RELU) {
        npat = lam_pattern(&N, N.lam, NULL, NULL);
        pat0 = malloc(npat);
        pat = malloc(npat);
        if (!pat0 || !pat) exit(2);
        lam_pattern(&N, N.lam, pat0, NULL);
    }
    rng_t r;
    rng_seed(&r, seed, (uint64_t)T, 0xfd, 0);
    double worst = 0.0;
    int redrawn = 0;
    for (int k = 0; k < FD_DIRS + 1; k++) {
        /* Direction 0 is g/||g|| (the largest directional derivative); the
         * others are Gaussian unit vectors. */
        int ok = 0;
        for (int tries = 0; tries < 20 && !ok; tries++) {
            if (k == 0 && tries == 0) {
                memcpy(d, g, nl * sizeof *d);
                vec_scale(nl, d, 1.0 / gn);
            } else {
                random_unit(&r, nl, d);
            }
            ok = 1;
            if (ns->act == MLP_ACT_RELU) {
                static const double fr[4] = {-1.0, -0.5, 0.5, 1.0};
                for (int j = 0; j < 4 && ok; j++) {
                    vec_lincomb(nl, lp, 1.0, N.lam, fr[j] * FD_H, d);
                    lam_pattern(&N, lp, pat, NULL);
                    if (memcmp(pat, pat0, npat) != 0) ok = 0;
                }
                if (!ok) redrawn++;
            }
        }
        CHECK_MSG(ok, "%s T=%d: no kink-free direction found", ns->name, T);
        if (!ok) continue;
        vec_lincomb(nl, lp, 1.0, N.lam, FD_H, d);
        double fp = ref_unroll(&N, lp, T, NULL);
        vec_lincomb(nl, lp, 1.0, N.lam, -FD_H, d);
        double fm = ref_unroll(&N, lp, T, NULL);
        double fd = (fp - fm) / (2.0 * FD_H);
        double gd = vec_dot(nl, g, d);
        double rel = fabs(fd - gd) / fmax(fabs(gd), TINY);
        worst = fmax(worst, rel);
        CHECK_MSG(rel <= FD_REL_TOL, "%s T=%d dir %d: rmd.d %.12g vs FD %.12g (rel %.3g > %.0e)",
                  ns->name, T, k, gd, fd, rel, FD_REL_TOL);
    }
    double mn = 0.0;
    if (ns->act == MLP_ACT_RELU) lam_pattern(&N, N.lam, NULL, &mn);
    printf("  rmd vs FD  %-30s T=%-2d  n_lam=%-6zu worst rel %.2e", ns->name, T, nl, worst);
    if (ns->act == MLP_ACT_RELU)
        printf("  (min |pre-act| %.2e, %d directions redrawn)", mn, redrawn);
    printf("\n");
    free(pat0);
    free(pat);
    free(g);
    free(d);
    free(lp);
    net_free(&N);
}

static void check_rmd_fd(void) {
    const netspec *nets[3] = {&NET_SIN_TANH, &NET_GM_TANH, &NET_SIN_RELU};
    const int Ts[2] = {5, 20};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) check_rmd_fd_case(nets[i], Ts[j], 11 + (uint64_t)i);
}

/* ---------------------------------------------------------------------- */
/* 2. hyperdistill(gamma 0, theta 1) == onestep at every step. */

/* lam at step t: fixed, or lam_0 + 0.02 sin(t) d (changing). */
static void lam_at(size_t nl, double *out, const double *lam0, const double *d, int t, int change) {
    if (!change)
        memcpy(out, lam0, nl * sizeof *out);
    else
        vec_lincomb(nl, out, 1.0, lam0, 0.02 * sin((double)t), d);
}

static void check_gamma0_onestep(const netspec *ns, int change) {
    const int T = 12;
    net N;
    net_init(&N, ns, 21, 1);
    size_t nl = N.nl;
    method_cfg mh = method_of(METHOD_HYPERDISTILL), mo = method_of(METHOD_ONESTEP);
    mh.gamma = 0.0;
    episode_t *eh = new_episode(&N, &mh, T), *eo = new_episode(&N, &mo, T);
    episode_begin(eh, N.phi, N.xs, N.ys, N.xq, N.yq);
    episode_begin(eo, N.phi, N.xs, N.ys, N.xq, N.yq);
    double *gh = dalloc(nl), *go = dalloc(nl), *lam = dalloc(nl), *d = dalloc(nl);
    rng_t r;
    rng_seed(&r, 21, 2, 0, 0);
    random_unit(&r, nl, d);
    double worst = 0.0;
    int identical = 1;
    for (int t = 1; t <= T; t++) {
        lam_at(nl, lam, N.lam, d, t, change);
        episode_info ih, io;
        episode_step(eh, lam, 1.0, 0, gh, &ih);
        episode_step(eo, lam, 1.0, 0, go, &io);
        CHECK(ih.posted && io.posted);
        double rel = rel_inf(nl, gh, go);
        worst = fmax(worst, rel);
        identical &= bit_equal(nl, gh, go);
        /* Bar: 1e-14 relative (the brief allows bit-identity or 1e-14). */
        CHECK_MSG(rel <= 1e-14, "%s step %d (lam %s): hyperdistill(0,1) vs onestep rel %.3g",
                  ns->name, t, change ? "changing" : "fixed", rel);
    }
    printf("  hd(gamma 0, theta 1) vs onestep  %-26s lam %-8s worst rel %.2e, bit-identical %s\n",
           ns->name, change ? "changing" : "fixed", worst, identical ? "yes" : "no");
    episode_free(eh);
    episode_free(eo);
    free(gh);
    free(go);
    free(lam);
    free(d);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 3. The distilled point, by its effect on g_t. */

/* unit != 0: pi_mode unit, g_t = gFO_t + v_t / ||v_t|| (section 3). */
static void check_distilled(const netspec *ns, double gamma, int change, int unit) {
    const int T = 15;
    const double theta = 0.7;
    net N;
    net_init(&N, ns, 31, 2);
    size_t nl = N.nl, nw = N.nw;
    method_cfg mh = method_of(METHOD_HYPERDISTILL);
    mh.gamma = gamma;
    mh.pi_unit = unit;
    episode_t *e = new_episode(&N, &mh, T);
    episode_begin(e, N.phi, N.xs, N.ys, N.xq, N.yq);
    double *traj = dalloc((size_t)(T + 1) * nw), *wstar = dalloc(nw), *alpha = dalloc(nw),
           *gfo = dalloc(nl), *v = dalloc(nl), *gref = dalloc(nl), *g = dalloc(nl),
           *lam = dalloc(nl), *d = dalloc(nl), *zero = dalloc(nw), *scr = dalloc(2 * nw);
    mlp_feat_t *fs = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(N.m, N.n_s, &fs, &err) != HD_OK) exit(2);
    rng_t r;
    rng_seed(&r, 31, 3, 0, 0);
    random_unit(&r, nl, d);
    memcpy(traj, N.phi, nw * sizeof *traj);
    double worst = 0.0, vbad = 0.0;
    for (int t = 1; t <= T; t++) {
        lam_at(nl, lam, N.lam, d, t, change);
        episode_info info;
        episode_step(e, lam, theta, 0, g, &info);
        memcpy(traj + (size_t)t * nw, episode_w(e), nw * sizeof *traj);
        /* w*_t = sum_{i=1..t} gamma^(t-i) w_{i-1} / S_t (gamma^0 = 1, also for gamma = 0) */
        double S = 0.0;
        vec_zero(nw, wstar);
        for (int i = 1; i <= t; i++) {
            double c = pow(gamma, (double)(t - i));
            S += c;
            vec_axpy(nw, wstar, c, traj + (size_t)(i - 1) * nw);
        }
        vec_scale(nw, wstar, 1.0 / S);
        mlp_grad_x(N.m, lam, traj + (size_t)t * nw, N.xq, N.yq, N.n_q, gfo, alpha);
        mlp_feat_compute(N.m, fs, lam, N.xs, N.n_s);
        inner_vjp(N.m, fs, &N.ic, lam, wstar, N.ys, alpha, zero, NULL, NULL, v, scr);
        if (unit)
            vec_lincomb(nl, gref, 1.0, gfo, 1.0 / vec_nrm2(nl, v), v);
        else
            vec_lincomb(nl, gref, 1.0, gfo, theta * S, v);
        double rel = rel_inf(nl, g, gref);
        worst = fmax(worst, rel);
        CHECK_MSG(info.posted && rel <= 1e-12,
                  "%s gamma %g step %d: hyperdistill g vs explicit w*_t rel %.3g (> 1e-12)",
                  ns->name, gamma, t, rel);
        /* episode_info.vnorm is ||v_t|| in pi_mode unit (the only mode that
         * needs v_t on its own), 0 in fitted mode. */
        if (unit)
            vbad = fmax(vbad, fabs(info.vnorm - vec_nrm2(nl, v)) / vec_nrm2(nl, v));
        else
            vbad = fmax(vbad, fabs(info.vnorm));
    }
    CHECK_MSG(vbad <= 1e-12, "%s gamma %g: info.vnorm differs from ||v_t|| (worst rel %.3g)",
              ns->name, gamma, vbad);
    printf("  distilled point %-26s gamma %-5g lam %-8s%s worst rel %.2e\n", ns->name, gamma,
           change ? "changing" : "fixed", unit ? " pi unit" : "", worst);
    mlp_feat_free(fs);
    episode_free(e);
    free(traj);
    free(wstar);
    free(alpha);
    free(gfo);
    free(v);
    free(gref);
    free(g);
    free(lam);
    free(d);
    free(zero);
    free(scr);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 3b. Replay (episode.h): replaying steps 1..r (inner step only, as after a
 * lease moved) and running r+1..T normally gives the same hypergradients at
 * the posting steps > r as an uninterrupted episode, for every method (the
 * distilled point, w_{t-1} and the stored trajectory are kept during replay).
 * Bar: 1e-14 relative (the same operations run; bit-identity expected). */
static void check_replay(const netspec *ns, method_kind kind) {
    const int T = 10, r = 6;
    net N;
    net_init(&N, ns, 91, 0);
    size_t nl = N.nl;
    method_cfg mc = method_of(kind);
    mc.gamma = 0.9;
    mc.neumann_k = 3;
    episode_t *a = new_episode(&N, &mc, T), *b = new_episode(&N, &mc, T);
    episode_begin(a, N.phi, N.xs, N.ys, N.xq, N.yq);
    episode_begin(b, N.phi, N.xs, N.ys, N.xq, N.yq);
    double *ga = dalloc(nl), *gb = dalloc(nl), *lam = dalloc(nl), *d = dalloc(nl);
    rng_t rg;
    rng_seed(&rg, 91, 1, 0, 0);
    random_unit(&rg, nl, d);
    double worst = 0.0;
    int compared = 0;
    for (int t = 1; t <= T; t++) {
        lam_at(nl, lam, N.lam, d, t, 1);
        episode_info ia, ib;
        episode_step(a, lam, 0.8, 0, ga, &ia);
        episode_step(b, lam, 0.8, t <= r, gb, &ib);
        if (t <= r) {
            CHECK_MSG(!ib.posted && ib.vjps == 0, "%s replay step %d posted %d vjps %ld",
                      method_name(kind), t, ib.posted, ib.vjps);
        } else if (ia.posted) {
            CHECK(ib.posted);
            worst = fmax(worst, rel_inf(nl, gb, ga));
            compared++;
        }
    }
    CHECK(bit_equal(N.nw, episode_w(a), episode_w(b)));
    CHECK_MSG(worst <= 1e-14, "%s: hypergradient after replay differs (rel %.3g)",
              method_name(kind), worst);
    printf("  replay 1..%d then %d..%d  %-13s %d posts compared, worst rel %.2e\n", r, r + 1, T,
           method_name(kind), compared, worst);
    episode_free(a);
    episode_free(b);
    free(ga);
    free(gb);
    free(lam);
    free(d);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 4. drmad == rmd where DrMAD's interpolation is exact.
 *
 * Analysis. RMD and DrMAD run the same reverse recursion (section 2)
 *   c_i = a_v - eta a_w,  a_w <- a_w + H_ww(p_i) c_i,  a_v <- mu c_i,
 *   a_lam += H_lw(p_i) c_i,   i = T .. 1,
 * at p_i = w_{i-1} (RMD) or p_i = w_0 + ((i-1)/T)(w_T - w_0) (DrMAD). So
 * drmad == rmd whenever p_i = w_{i-1} for every i, i.e. whenever the
 * trajectory is a straight line walked at constant velocity
 * (w_i - w_{i-1} independent of i); a straight line alone is not enough,
 * because the interpolation is linear in the step index.
 *
 * Can the points differ while the results agree? Take the quadratic case:
 * MSE, one output, w = the last (linear) layer (k = L-1), features h_i(lam).
 * Then H_ww = (2/n) sum u_i u_i^T with u_i = (h_i, 1) is constant, so the
 * c_i are the same in both passes, but
 *   H_lw c = (2/n) sum_i J_i^T [W^T (C h_i + c_b) + C^T (W h_i + b - y_i)],
 * J_i = dh_i/dlam, c = (C, c_b), depends affinely on w = (W, b) (the
 * residual term the brief mentions, and the W^T term). There is no w-free
 * cross block with this MLP (w always holds a whole layer, weights included),
 * so agreement needs p_i = w_{i-1}.
 *
 * Which momentum-SGD trajectories have constant velocity? v_1 = g_1, so
 * constant velocity means v_t = g_1 for all t, i.e. g_t = (1 - mu) g_1 for
 * t >= 2. On a quadratic g_t = g_{t-1} - eta H v_{t-1} = g_{t-1} - eta H g_1:
 *   t = 2:  needs H g_1 = (mu/eta) g_1 (g_1 an eigenvector of H_ww);
 *   t = 3:  needs H g_1 = 0, hence (t = 2) mu g_1 = 0.
 * For mu = 0, H g_1 = 0 is needed at once. But g = (2/n) sum r_i u_i lies in
 * range(H_ww) = span(u_i), and H g = 0 with g in range(H) forces g = 0. So:
 *   - T = 1: the only point is w_0 (p_1 = w_0 exactly): drmad == rmd for any
 *     network and any task, bit for bit;
 *   - T = 2: a non-trivial exact case exists: one support example (H_ww =
 *     2 u u^T has rank one, so g_1 = 2 r u is an eigenvector, eigenvalue
 *     lambda = 2 |u|^2) and eta = mu / lambda: then v_2 = v_1 and
 *     w_1 = (w_0 + w_2) / 2 (in exact arithmetic; in floating point to a few
 *     ulps, hence the 1e-12 bar);
 *   - T >= 3: only the static trajectory g_1 = 0 (w_t = w_0 for all t) is a
 *     constant-velocity line. It is built exactly by setting the support
 *     targets to the network's own outputs at (lam, phi): the residual is
 *     exactly 0, so the gradient is exactly 0 and w never moves (checked bit
 *     for bit). This works for any k (also k < L-1, where the loss is not
 *     quadratic in w). The second-order term is not zero there (the
 *     query-set cotangent still flows through H_lw at w_0), so the check is
 *     not vacuous: rmd - fo is checked to be large.
 * A control run of the T = 2 case with eta halved (velocity not constant)
 * must show a clear drmad/rmd difference, so that the equality above is not
 * an artefact of the check. */
static void check_drmad_t1(const netspec *ns) {
    net N;
    net_init(&N, ns, 41, 4);
    double *gr = dalloc(N.nl), *gd = dalloc(N.nl);
    method_cfg mr = method_of(METHOD_RMD), md = method_of(METHOD_DRMAD);
    run_episode(&N, &mr, 1, N.lam, 1.0, gr, NULL);
    run_episode(&N, &md, 1, N.lam, 1.0, gd, NULL);
    double rel = rel_inf(N.nl, gd, gr);
    /* Bar: bit-identical expected (p_1 = 1.0 * w_0 + 0.0 * w_1 = w_0); 1e-14 relative checked. */
    CHECK_MSG(rel <= 1e-14, "%s T=1: drmad vs rmd rel %.3g", ns->name, rel);
    printf("  drmad vs rmd T=1   %-30s rel %.2e, bit-identical %s\n", ns->name, rel,
           bit_equal(N.nl, gd, gr) ? "yes" : "no");
    free(gr);
    free(gd);
    net_free(&N);
}

static void check_drmad_static(const netspec *ns, int T) {
    net N;
    net_init(&N, ns, 42, 5);
    size_t nl = N.nl, nw = N.nw;
    /* Support targets := the network's outputs at (lam, phi). */
    mlp_feat_t *fs = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(N.m, N.n_s, &fs, &err) != HD_OK) exit(2);
    double *out = dalloc(N.n_s * N.dout);
    mlp_feat_compute(N.m, fs, N.lam, N.xs, N.n_s);
    mlp_forward_f(N.m, fs, N.phi, N.ys, out);
    memcpy(N.ys, out, N.n_s * N.dout * sizeof *out);
    double *gr = dalloc(nl), *gd = dalloc(nl), *gf = dalloc(nl), *gw = dalloc(nw);
    double Ls = mlp_grad_x(N.m, N.lam, N.phi, N.xs, N.ys, N.n_s, NULL, gw);
    int zero_grad = 1;
    for (size_t i = 0; i < nw; i++) zero_grad &= gw[i] == 0.0;
    CHECK_MSG(Ls == 0.0 && zero_grad, "%s: support loss %g at phi is not exactly 0", ns->name, Ls);
    /* Premise: the trajectory is static, bit for bit. */
    method_cfg mr = method_of(METHOD_RMD), md = method_of(METHOD_DRMAD), mf = method_of(METHOD_FO);
    episode_t *e = new_episode(&N, &mr, T);
    episode_begin(e, N.phi, N.xs, N.ys, N.xq, N.yq);
    int moved = 0;
    for (int t = 1; t <= T; t++) {
        episode_step(e, N.lam, 1.0, 0, gr, NULL);
        moved |= !bit_equal(nw, episode_w(e), N.phi);
    }
    CHECK_MSG(!moved, "%s: static trajectory moved", ns->name);
    episode_free(e);
    run_episode(&N, &md, T, N.lam, 1.0, gd, NULL);
    run_episode(&N, &mf, T, N.lam, 1.0, gf, NULL);
    double rel = rel_inf(nl, gd, gr);
    /* Bar 1e-12: the interpolated points (1-f) w_0 + f w_0 differ from w_0 by
     * at most an ulp. */
    CHECK_MSG(rel <= 1e-12, "%s T=%d static: drmad vs rmd rel %.3g", ns->name, T, rel);
    double so = rel_inf(nl, gf, gr);
    CHECK_MSG(so > 1e-3, "%s: second-order term too small to make the check meaningful (%.3g)",
              ns->name, so);
    printf("  drmad vs rmd static trajectory %-26s T=%d rel %.2e (|rmd-fo|/|rmd| %.2e)\n", ns->name,
           T, rel, so);
    mlp_feat_free(fs);
    free(out);
    free(gr);
    free(gd);
    free(gf);
    free(gw);
    net_free(&N);
}

/* T = 2 constant velocity: one support example, eta = mu / lambda. */
static double drmad_t2_run(net *N, double eta, double *wsteps_rel) {
    size_t nl = N->nl, nw = N->nw;
    N->ic.lr = eta;
    double *gr = dalloc(nl), *gd = dalloc(nl), *w1 = dalloc(nw), *w2 = dalloc(nw);
    method_cfg mr = method_of(METHOD_RMD), md = method_of(METHOD_DRMAD);
    episode_t *e = new_episode(N, &mr, 2);
    episode_begin(e, N->phi, N->xs, N->ys, N->xq, N->yq);
    episode_step(e, N->lam, 1.0, 0, gr, NULL);
    memcpy(w1, episode_w(e), nw * sizeof *w1);
    episode_step(e, N->lam, 1.0, 0, gr, NULL);
    memcpy(w2, episode_w(e), nw * sizeof *w2);
    episode_free(e);
    /* (w_2 - w_1) vs (w_1 - w_0) */
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < nw; i++) {
        double s1 = w1[i] - N->phi[i], s2 = w2[i] - w1[i];
        num = fmax(num, fabs(s2 - s1));
        den = fmax(den, fabs(s1));
    }
    *wsteps_rel = num / fmax(den, TINY);
    run_episode(N, &md, 2, N->lam, 1.0, gd, NULL);
    double rel = rel_inf(nl, gd, gr);
    free(gr);
    free(gd);
    free(w1);
    free(w2);
    return rel;
}

static void check_drmad_t2(void) {
    netspec ns = NET_SIN_TANH; /* 1-40-40-1 tanh, k = 2: w = last layer */
    ns.n_s = 1;
    ns.name = "1-40-40-1 tanh mse k=2, 1 shot";
    net N;
    net_init(&N, &ns, 43, 6);
    size_t nw = N.nw;
    double *g1 = dalloc(nw), *hg = dalloc(nw);
    mlp_grad_x(N.m, N.lam, N.phi, N.xs, N.ys, 1, NULL, g1);
    mlp_hvp_x(N.m, N.lam, N.phi, N.xs, N.ys, 1, NULL, g1, NULL, hg);
    double lambda = vec_dot(nw, g1, hg) / vec_dot(nw, g1, g1);
    /* Premise: g_1 is an eigenvector of H_ww (rank one), to rounding. */
    double ev = 0.0;
    for (size_t i = 0; i < nw; i++) ev = fmax(ev, fabs(hg[i] - lambda * g1[i]));
    ev /= fmax(vec_nrm2(nw, hg), TINY);
    CHECK_MSG(ev <= 1e-13, "H_ww g_1 != lambda g_1 (rel %.3g)", ev);
    double eta = MOMENTUM / lambda, steps;
    double rel = drmad_t2_run(&N, eta, &steps);
    CHECK_MSG(steps <= 1e-12, "T=2 trajectory velocity not constant (rel %.3g)", steps);
    /* Bar 1e-12: exact in exact arithmetic, a few ulps of w in floating point. */
    CHECK_MSG(rel <= 1e-12, "T=2 constant velocity: drmad vs rmd rel %.3g", rel);
    double steps_c, rel_c = drmad_t2_run(&N, 0.5 * eta, &steps_c);
    CHECK_MSG(rel_c > 1e-6, "control (eta/2): drmad vs rmd rel %.3g should be clearly > 0", rel_c);
    printf("  drmad vs rmd T=2 constant velocity (eta = mu/lambda = %.4g): rel %.2e "
           "[velocity rel %.1e]; control eta/2: rel %.2e\n",
           eta, rel, steps, rel_c);
    free(g1);
    free(hg);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 5. LinearEstimation. */

static void check_linest_direct(void) {
    /* Dyadic data: every product and partial sum is exact, so theta == c. */
    linest_sums s;
    linest_init(&s);
    const double c = 0.375;
    for (int i = 1; i <= 12; i++) {
        double x = (double)((i * 7) % 13) - 6.0;
        linest_add(&s, x, c * x);
    }
    double th = -1.0;
    CHECK_EQ_INT(linest_fit(&s, &th), 0);
    CHECK(th == c);
    CHECK_EQ_INT(s.n, 12);
    /* Random x, c = 1/3: sxy = sum x (c x) and sxx = sum x x agree to the
     * rounding of two length-10 sums, so theta = c to 1e-15 relative. */
    rng_t r;
    rng_seed(&r, 5, 5, 5, 5);
    linest_sums q;
    linest_init(&q);
    const double c2 = 1.0 / 3.0;
    for (int i = 0; i < 10; i++) {
        double x = rng_range(&r, -2.0, 2.0);
        linest_add(&q, x, c2 * x);
    }
    CHECK_EQ_INT(linest_fit(&q, &th), 0);
    CHECK_NEAR(th, c2, 1e-15 * c2);
    /* No usable sample: -1 and theta untouched. */
    linest_sums z;
    linest_init(&z);
    th = 42.0;
    CHECK_EQ_INT(linest_fit(&z, &th), -1);
    CHECK(th == 42.0);
    linest_add(&z, 0.0, 3.0);
    CHECK_EQ_INT(linest_fit(&z, &th), -1);
    CHECK(th == 42.0);
}

/* Independent Algorithm 4 (section 4), from the reference forward of this
 * file: DrMAD reverse over the interpolated points, distilled point over the
 * last s steps by its explicit weights
 *   s*_s = sum_{j=1..s} gamma^(j-1) s_{T-j} / sum_{j=1..s} gamma^(j-1)
 * (the closed form of Eq. 17-18's recursion: s*_1 = s_{T-1}, and the weight
 * 1 - p_s of s_{T-s} is gamma^(s-1) / sum_{j<=s} gamma^(j-1)), then
 * x_s = ||v_s|| S_s, y_s = v_s . gSO_s / ||v_s||. */
static void ref_estimate(net *N, const double *lam, int T, double gamma, double *x, double *y) {
    size_t nl = N->nl, nw = N->nw;
    double *traj = dalloc((size_t)(T + 1) * nw), *alpha = dalloc(nw), *aw = dalloc(nw),
           *av = dalloc(nw), *aw2 = dalloc(nw), *av2 = dalloc(nw), *p = dalloc(nw),
           *gso = dalloc(nl), *al = dalloc(nl), *v = dalloc(nl), *ws = dalloc(nw),
           *zero = dalloc(nw), *scr = dalloc(2 * nw);
    ref_unroll(N, lam, T, traj);
    const double *w0 = traj, *wT = traj + (size_t)T * nw;
    mlp_grad_x(N->m, lam, wT, N->xq, N->yq, N->n_q, NULL, alpha);
    mlp_feat_t *fs = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(N->m, N->n_s, &fs, &err) != HD_OK) exit(2);
    mlp_feat_compute(N->m, fs, lam, N->xs, N->n_s);
    memcpy(aw, alpha, nw * sizeof *aw);
    for (int t = T; t >= 1; t--) {
        int s = T - t + 1;
        double f = (double)(t - 1) / (double)T;
        for (size_t i = 0; i < nw; i++) p[i] = (1.0 - f) * w0[i] + f * wT[i];
        inner_vjp(N->m, fs, &N->ic, lam, p, N->ys, aw, av, aw2, av2, al, scr);
        vec_axpy(nl, gso, 1.0, al);
        memcpy(aw, aw2, nw * sizeof *aw);
        memcpy(av, av2, nw * sizeof *av);
        double S = 0.0;
        vec_zero(nw, ws);
        for (int j = 1; j <= s; j++) {
            double c = pow(gamma, (double)(j - 1));
            S += c;
            vec_axpy(nw, ws, c, traj + (size_t)(T - j) * nw);
        }
        vec_scale(nw, ws, 1.0 / S);
        inner_vjp(N->m, fs, &N->ic, lam, ws, N->ys, alpha, zero, NULL, NULL, v, scr);
        double vn = vec_nrm2(nl, v);
        x[s - 1] = vn * S;
        y[s - 1] = vec_dot(nl, v, gso) / vn;
    }
    mlp_feat_free(fs);
    free(traj);
    free(alpha);
    free(aw);
    free(av);
    free(aw2);
    free(av2);
    free(p);
    free(gso);
    free(al);
    free(v);
    free(ws);
    free(zero);
    free(scr);
}

static void check_estimate(const netspec *ns, int T, double gamma) {
    net N;
    net_init(&N, ns, 51, 7);
    method_cfg mh = method_of(METHOD_HYPERDISTILL);
    mh.gamma = gamma;
    episode_t *e = new_episode(&N, &mh, T);
    episode_begin(e, N.phi, N.xs, N.ys, N.xq, N.yq);
    double *x = dalloc((size_t)T), *y = dalloc((size_t)T), *xr = dalloc((size_t)T),
           *yr = dalloc((size_t)T);
    linest_sums sums;
    linest_init(&sums);
    long vjps = -1;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(episode_estimate(e, N.lam, gamma, x, y, &sums, &vjps, &err), HD_OK);
    CHECK_EQ_INT(sums.n, T);
    /* VJPs: T DrMAD reverse VJPs + T distilled VJPs (section 4's "about 3T"
     * also counts the T forward gradient evaluations, which are not VJPs). */
    CHECK_EQ_INT(vjps, 2L * T);
    CHECK_EQ_INT(method_estimation_vjps(T), 2L * T);
    /* The episode is left at s_0, ready for a fresh run. */
    CHECK_EQ_INT(episode_t_done(e), 0);
    CHECK(bit_equal(N.nw, episode_w(e), N.phi));
    ref_estimate(&N, N.lam, T, gamma, xr, yr);
    double rx = rel_inf((size_t)T, x, xr), ry = rel_inf((size_t)T, y, yr);
    /* Bar 1e-12 relative to the largest sample. */
    CHECK_MSG(rx <= 1e-12 && ry <= 1e-12,
              "%s T=%d gamma %g: estimation samples vs reference: "
              "x rel %.3g, y rel %.3g",
              ns->name, T, gamma, rx, ry);
    /* theta from the sums == sum(xy) / sum(xx) over the returned samples,
     * same order of summation: bit for bit (checked to 1e-15). */
    double sxy = 0.0, sxx = 0.0;
    for (int s = 0; s < T; s++) {
        sxy += x[s] * y[s];
        sxx += x[s] * x[s];
    }
    double th = NAN;
    CHECK_EQ_INT(linest_fit(&sums, &th), 0);
    CHECK_NEAR(th, sxy / sxx, 1e-15 * fabs(sxy / sxx));
    printf("  estimation %-26s T=%-2d gamma %-4g theta %.6f  samples vs ref: x %.1e, y %.1e\n",
           ns->name, T, gamma, th, rx, ry);
    if (T == 1) {
        /* One sample: the distilled point is s_0 (the DrMAD point too), so
         * v_1 = gSO and y_1 = x_1 = ||v_1||: theta = 1. Bar 1e-14. */
        CHECK_NEAR(th, 1.0, 1e-14);
        CHECK_NEAR(y[0], x[0], 1e-14 * x[0]);
    }
    episode_free(e);
    free(x);
    free(y);
    free(xr);
    free(yr);
    net_free(&N);
}

static void check_estimate_pooled(void) {
    const int T = 10, ntask = 4;
    const double gamma = 0.9;
    linest_sums pooled, concat;
    linest_init(&pooled);
    linest_init(&concat);
    double sxy = 0.0, sxx = 0.0;
    for (int k = 0; k < ntask; k++) {
        net N;
        net_init(&N, &NET_SIN_TANH, 61, (uint64_t)k);
        method_cfg mh = method_of(METHOD_HYPERDISTILL);
        mh.gamma = gamma;
        episode_t *e = new_episode(&N, &mh, T);
        episode_begin(e, N.phi, N.xs, N.ys, N.xq, N.yq);
        double x[10], y[10];
        linest_sums one;
        linest_init(&one);
        CHECK_EQ_INT(episode_estimate(e, N.lam, gamma, x, y, &one, NULL, NULL), HD_OK);
        linest_merge(&pooled, &one);
        for (int s = 0; s < T; s++) {
            linest_add(&concat, x[s], y[s]);
            sxy += x[s] * y[s];
            sxx += x[s] * x[s];
        }
        episode_free(e);
        net_free(&N);
    }
    double tp = NAN, tc = NAN;
    CHECK_EQ_INT(linest_fit(&pooled, &tp), 0);
    CHECK_EQ_INT(linest_fit(&concat, &tc), 0);
    CHECK_EQ_INT(pooled.n, (long)T * ntask);
    /* Bar 1e-12 relative (only the grouping of the sums differs). */
    CHECK_NEAR(tp, tc, 1e-12 * fabs(tc));
    CHECK_NEAR(tp, sxy / sxx, 1e-12 * fabs(sxy / sxx));
    printf("  pooled estimation over %d tasks: theta %.12f (concatenated %.12f)\n", ntask, tp, tc);
}

/* ---------------------------------------------------------------------- */
/* 6. VJP counts (section 5 table). */

static void check_vjp_counts(void) {
    const int T = 10;
    net N;
    net_init(&N, &NET_SIN_TANH, 71, 0);
    double *g = dalloc(N.nl);
    struct {
        method_kind k;
        int n, K;
        long want;
    } cases[] = {
        {METHOD_FO, 3, 5, 0},          {METHOD_ONESTEP, 3, 5, T}, {METHOD_HYPERDISTILL, 3, 5, T},
        {METHOD_DRMAD, 3, 5, T},       {METHOD_RMD, 3, 5, T},     {METHOD_NEUMANN, 3, 5, 4 * 5},
        {METHOD_NEUMANN, 0, 2, 1 * 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        method_cfg mc = method_of(cases[i].k);
        mc.neumann_n = cases[i].n;
        mc.neumann_k = cases[i].K;
        long v = run_episode(&N, &mc, T, N.lam, 1.0, g, NULL);
        CHECK_MSG(v == cases[i].want, "%s (N=%d K=%d): %ld VJPs per episode, want %ld",
                  method_name(cases[i].k), cases[i].n, cases[i].K, v, cases[i].want);
        CHECK_EQ_INT(method_vjps_per_episode(&mc, T), cases[i].want);
    }
    free(g);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 8. Posting schedule. */

static void check_posts(void) {
    const int T = 10;
    for (int k = 0; k < METHOD_COUNT; k++) {
        method_cfg mc = method_of((method_kind)k);
        mc.neumann_k = 3;
        int n = 0;
        for (int t = 1; t <= T; t++) {
            int p = method_posts_at(&mc, t, T), want;
            switch (mc.kind) {
            case METHOD_DRMAD:
            case METHOD_RMD:
                want = t == T;
                break;
            case METHOD_NEUMANN:
                want = t > T - 3;
                break;
            default:
                want = 1;
            }
            CHECK_MSG(p == want, "%s posts_at(t=%d) = %d, want %d", method_name(mc.kind), t, p,
                      want);
            n += want;
        }
        CHECK_EQ_INT(method_posts_per_episode(&mc, T), n);
    }
    method_cfg nk = method_of(METHOD_NEUMANN);
    nk.neumann_k = T;
    CHECK_EQ_INT(method_posts_per_episode(&nk, T), T);
    nk.neumann_k = 1;
    CHECK_EQ_INT(method_posts_per_episode(&nk, T), 1);
    CHECK(method_posts_at(&nk, T, T) && !method_posts_at(&nk, T - 1, T));

    /* The episode follows the schedule, and leaves g untouched when it does
     * not post. */
    net N;
    net_init(&N, &NET_SIN_TANH, 81, 0);
    double *g = dalloc(N.nl);
    for (int k = 0; k < METHOD_COUNT; k++) {
        method_cfg mc = method_of((method_kind)k);
        mc.neumann_k = 3;
        episode_t *e = new_episode(&N, &mc, T);
        episode_begin(e, N.phi, N.xs, N.ys, N.xq, N.yq);
        for (int t = 1; t <= T; t++) {
            for (size_t i = 0; i < N.nl; i++) g[i] = 12345.0;
            episode_info info;
            episode_step(e, N.lam, 1.0, 0, g, &info);
            int want = method_posts_at(&mc, t, T);
            CHECK_MSG(info.posted == want, "%s step %d: posted %d, want %d", method_name(mc.kind),
                      t, info.posted, want);
            if (!want) {
                int untouched = 1;
                for (size_t i = 0; i < N.nl; i++) untouched &= g[i] == 12345.0;
                CHECK_MSG(untouched, "%s step %d: g written without posting", method_name(mc.kind),
                          t);
                CHECK_EQ_INT(info.vjps, 0);
            }
        }
        episode_info info;
        CHECK_EQ_INT(episode_step(e, N.lam, 1.0, 0, g, &info), HD_ECONFLICT);
        episode_free(e);
    }
    free(g);
    net_free(&N);
}

/* ---------------------------------------------------------------------- */
/* 7. runner_local determinism. */

static const char RUN_SPEC[] =
    "{\"task\": {\"family\": \"sinusoid\", \"shots\": 10, \"queries\": 10},"
    " \"model\": {\"layers\": [1, 40, 40, 1], \"activation\": \"relu\", \"hyper_layers\": 2},"
    " \"inner\": {\"steps\": 5, \"lr\": 0.01, \"momentum\": 0.9},"
    " \"outer\": {\"optimizer\": \"adam\", \"lr\": 0.001},"
    " \"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.9, \"estimation_period\": 2},"
    " \"episodes\": 3, \"meta_batch\": 3, \"seed\": 7,"
    " \"eval\": {\"meta_val_tasks\": 5, \"meta_test_tasks\": 5}}";

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        unsigned char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    *len = n;
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t la = 0, lb = 0;
    unsigned char *x = read_file(a, &la), *y = read_file(b, &lb);
    int same = x && y && la == lb && la > 0 && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* Remove the files of dir, then dir (one level: the runner writes no subdirs). */
static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void check_runner_determinism(void) {
    run_spec sp;
    hd_err err;
    hd_err_clear(&err);
    if (spec_parse(RUN_SPEC, sizeof RUN_SPEC - 1, &sp, &err) != HD_OK) {
        CHECK_MSG(0, "spec_parse: %s", err.msg);
        return;
    }
    char tmpl[] = "/tmp/hd_test_methods.XXXXXX";
    char *root = mkdtemp(tmpl);
    if (!root) {
        CHECK_MSG(0, "mkdtemp failed");
        return;
    }
    char dir[2][4200];
    runner_result res[2];
    for (int i = 0; i < 2; i++) {
        snprintf(dir[i], sizeof dir[i], "%s/run%d", root, i);
        runner_opts o;
        memset(&o, 0, sizeof o);
        o.out_dir = dir[i];
        o.refit_theta = 1;
        hd_err_clear(&err);
        hd_rc rc = runner_local(&sp, &o, &res[i], &err);
        CHECK_MSG(rc == HD_OK, "runner_local run %d: %s", i, err.msg);
        if (rc != HD_OK) {
            if (i == 1) runner_result_clear(&res[0]);
            remove_tree(root);
            return;
        }
        CHECK(!res[i].failed);
        CHECK_EQ_INT(res[i].episodes_done, 3);
    }
    static const char *const same[] = {"lambda.npy", "phi.npy", "samples.jsonl"};
    for (size_t k = 0; k < sizeof same / sizeof *same; k++) {
        char a[4300], b[4300];
        snprintf(a, sizeof a, "%s/%s", dir[0], same[k]);
        snprintf(b, sizeof b, "%s/%s", dir[1], same[k]);
        CHECK_MSG(same_file(a, b), "%s differs between two runs of the same spec (or is missing)",
                  same[k]);
    }
    static const char *const exist[] = {"metrics.jsonl", "summary.json"};
    for (size_t k = 0; k < sizeof exist / sizeof *exist; k++) {
        char a[4300];
        snprintf(a, sizeof a, "%s/%s", dir[0], exist[k]);
        CHECK_MSG(access(a, R_OK) == 0, "%s missing", exist[k]);
    }
    CHECK(res[0].n_lam == res[1].n_lam && res[0].n_w == res[1].n_w);
    CHECK(bit_equal(res[0].n_lam, res[0].lam, res[1].lam));
    CHECK(bit_equal(res[0].n_w, res[0].phi, res[1].phi));
    CHECK(memcmp(&res[0].theta, &res[1].theta, sizeof(double)) == 0);
    CHECK(memcmp(&res[0].meta_test_loss, &res[1].meta_test_loss, sizeof(double)) == 0);
    /* VJPs: 3 episodes x 3 slots x T, plus 2 estimation rounds (episodes 1
     * and 3) x 3 slots x 2T. refit_theta is reported only, not counted. */
    CHECK_EQ_INT(res[0].vjps_total, 3L * 3 * 5 + 2L * 3 * 2 * 5);
    /* The run did something: lam moved away from its initialisation. */
    mlp_t *m = NULL;
    if (spec_model_new(&sp, 20, &m, &err) == HD_OK) {
        double *l0 = dalloc(mlp_n_lam(m)), *p0 = dalloc(mlp_n_w(m));
        mlp_init_params(m, sp.seed, l0, p0);
        CHECK(!bit_equal(mlp_n_lam(m), l0, res[0].lam));
        free(l0);
        free(p0);
        mlp_free(m);
    }
    printf("  runner_local twice: lam/phi/samples byte-identical; theta %.6g, test loss %.6g\n",
           res[0].theta, res[0].meta_test_loss);
    runner_result_clear(&res[0]);
    runner_result_clear(&res[1]);
    remove_tree(root);
}

/* ---------------------------------------------------------------------- */
/* 9. Probe. */

static void check_probe_case(int T) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"task\": {\"family\": \"sinusoid\", \"shots\": 10, \"queries\": 10},"
             " \"model\": {\"layers\": [1, 40, 40, 1], \"activation\": \"tanh\"},"
             " \"inner\": {\"steps\": %d, \"lr\": 0.01, \"momentum\": 0.9},"
             " \"method\": {\"name\": \"hyperdistill\", \"gamma\": 0.9, \"neumann_k\": 5},"
             " \"seed\": 3}",
             T);
    run_spec sp;
    hd_err err;
    hd_err_clear(&err);
    if (spec_parse(json, strlen(json), &sp, &err) != HD_OK) {
        CHECK_MSG(0, "spec_parse: %s", err.msg);
        return;
    }
    mlp_t *m = NULL;
    if (spec_model_new(&sp, 20, &m, &err) != HD_OK) exit(2);
    size_t nl = mlp_n_lam(m), nw = mlp_n_w(m);
    double *lam = dalloc(nl), *phi = dalloc(nw);
    mlp_init_params(m, sp.seed, lam, phi);
    mlp_free(m);
    task_t task;
    if (task_alloc(&task, 10, 10, 1, 1, &err) != HD_OK) exit(2);
    task_make(&sp.task, sp.seed, TASK_STREAM_TRAIN, 1, 0, &task);
    probe_result r;
    hd_rc rc = probe_run(&sp, lam, phi, &task, &r, &err);
    CHECK_MSG(rc == HD_OK, "probe_run: %s", err.msg);
    if (rc == HD_OK) {
        CHECK_EQ_INT(r.T, T);
        CHECK_EQ_INT(r.n_lam, nl);
        /* Bar 1e-12: x.x / (|x| |x|) rounds to 1 within a few ulps. */
        CHECK_NEAR(r.cosine[METHOD_RMD], 1.0, 1e-12);
        for (int k = 0; k < METHOD_COUNT; k++) {
            CHECK_MSG(vec_all_finite(nl, r.g[k]) && vec_nrm2(nl, r.g[k]) > 0.0,
                      "probe T=%d: %s hypergradient not finite or zero", T,
                      method_name((method_kind)k));
            CHECK_MSG(isfinite(r.cosine[k]) && fabs(r.cosine[k]) <= 1.0 + 1e-12,
                      "probe T=%d: %s cosine %g", T, method_name((method_kind)k), r.cosine[k]);
        }
        CHECK_EQ_INT(r.vjps[METHOD_FO], 0);
        CHECK_EQ_INT(r.vjps[METHOD_RMD], T);
        CHECK_EQ_INT(r.vjps[METHOD_DRMAD], T);
        CHECK(isfinite(r.theta));
        for (int s = 0; s < T; s++) CHECK(isfinite(r.x[s]) && isfinite(r.y[s]));
        if (T == 1) {
            /* T = 1: DrMAD's only point is s_0: identical to rmd; so is
             * onestep (gFO + alpha B(s_0)). */
            CHECK_NEAR(r.cosine[METHOD_DRMAD], 1.0, 1e-12);
            CHECK_NEAR(r.cosine[METHOD_ONESTEP], 1.0, 1e-12);
            CHECK(rel_inf(nl, r.g[METHOD_DRMAD], r.g[METHOD_RMD]) <= 1e-14);
            /* The one estimation sample fits theta = 1 (see check_estimate),
             * so hyperdistill (S_1 = 1) is rmd too. */
            CHECK_NEAR(r.theta, 1.0, 1e-14);
            CHECK_NEAR(r.cosine[METHOD_HYPERDISTILL], 1.0, 1e-12);
        }
        printf("  probe T=%-2d cosines:", T);
        for (int k = 0; k < METHOD_COUNT; k++)
            printf(" %s %.6f", method_name((method_kind)k), r.cosine[k]);
        printf("  theta %.4f\n", r.theta);
        probe_result_clear(&r);
    }
    task_clear(&task);
    free(lam);
    free(phi);
}

int main(void) {
    printf("1. rmd vs central FD (h %.0e, bar %.0e)\n", FD_H, FD_REL_TOL);
    check_rmd_fd();

    printf("2. hyperdistill(gamma 0, theta 1) vs onestep\n");
    for (int change = 0; change < 2; change++) {
        check_gamma0_onestep(&NET_SIN_TANH, change);
        check_gamma0_onestep(&NET_GM_TANH, change);
        check_gamma0_onestep(&NET_SIN_RELU, change);
    }

    printf("3. distilled point vs explicit weighted average\n");
    static const double gammas[4] = {0.0, 0.5, 0.9, 0.99};
    for (int i = 0; i < 4; i++) {
        check_distilled(&NET_SIN_TANH, gammas[i], 1, 0);
        check_distilled(&NET_GM_TANH, gammas[i], 0, 0);
    }
    check_distilled(&NET_SIN_RELU, 0.9, 1, 0);
    check_distilled(&NET_SIN_TANH, 0.9, 1, 1);

    printf("3b. replayed steps\n");
    for (int k = 0; k < METHOD_COUNT; k++) check_replay(&NET_SIN_TANH, (method_kind)k);

    printf("4. drmad vs rmd where the interpolation is exact\n");
    check_drmad_t1(&NET_SIN_TANH);
    check_drmad_t1(&NET_GM_TANH);
    check_drmad_t1(&NET_SIN_RELU);
    check_drmad_t1(&NET_SIN_TANH_K1);
    check_drmad_static(&NET_SIN_TANH, 20);
    check_drmad_static(&NET_SIN_RELU, 20);
    check_drmad_static(&NET_SIN_TANH_K1, 20);
    check_drmad_t2();

    printf("5. LinearEstimation\n");
    check_linest_direct();
    check_estimate(&NET_SIN_TANH, 1, 0.0);
    check_estimate(&NET_SIN_TANH, 1, 0.9);
    check_estimate(&NET_SIN_TANH, 20, 0.0);
    check_estimate(&NET_SIN_TANH, 20, 0.9);
    check_estimate(&NET_GM_TANH, 10, 0.5);
    check_estimate(&NET_SIN_RELU, 10, 0.99);
    check_estimate_pooled();

    printf("6. VJP counts\n");
    check_vjp_counts();

    printf("7. runner_local determinism\n");
    check_runner_determinism();

    printf("8. posting schedule\n");
    check_posts();

    printf("9. probe\n");
    check_probe_case(5);
    check_probe_case(1);

    return check_finish("test_methods");
}
