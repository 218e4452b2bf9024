/* Checks of common/inner.h, the inner optimiser Phi and its VJP (ALGORITHM.md
 * section 2), momentum 0.9, lr 0.01, on the networks of test_mlp_fd:
 * 1-100-100-100-1 ReLU + MSE (batch 10) with hyper_layers 0, 1, 3 and
 * 20-32-32-5 tanh + softmax cross-entropy (batch 16) with 0, 1, 2 (k = 3
 * would leave no layer in w there).
 *
 *  - inner_step against the formula g = grad_w L, v' = mu v + g,
 *    w' = w - eta v' (also with w_out/v_out aliasing w/v);
 *  - inner_vjp against the formula built from mlp_hvp_f, and against central
 *    finite differences of the scalar S(w, v, lam) = a_w.w' + a_v.v', whose
 *    gradient is exactly (a_w', a_v', a_lam): relative error <= 1e-6, per
 *    block (w, v, lam) and over the whole vector. A second scalar
 *    S'(w, v, lam) = a_w.(w' - w) + a_v.v' has gradient (a_w' - a_w, a_v',
 *    a_lam): it checks the H_ww c part of a_w' on its own, without the a_w
 *    term that would otherwise dominate it;
 *  - inner_vjp with any subset of NULL outputs.
 *
 * FD: unit directions (coordinate vectors, or Gaussian vectors normalised to
 * 2-norm 1) and step h = 1e-5, the eps^(1/3) balance for O(1) parameters
 * (truncation ~h^2, rounding ~eps/h, both ~1e-11). Tanh nets are checked on
 * every component; ReLU nets on a stratified sample of components (with the
 * step divided by 10 when a hidden pre-activation changes sign between
 * p - h e_i and p + h e_i, skipped and counted if it still does at 1e-8) and
 * along random directions (redrawn when a sign changes): a central difference
 * across a ReLU kink is wrong by O(1), inside one activation pattern it is
 * exact up to the error terms above. */
#include "inner.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mlp.h"
#include "rng.h"
#include "vec.h"

#define FD_H 1e-5
#define REL_TOL 1e-6
#define LR 0.01
#define MOMENTUM 0.9
#define REF_MAXW 128
#define REF_MAXN 16
#define TINY 1e-300
#define EPS 0x1.0p-52

typedef struct {
    const char *name;
    size_t nwidths;
    size_t widths[5];
    mlp_act act;
    mlp_loss loss;
    size_t batch;
} netspec;

static const netspec NET_RELU = {.name = "1-100-100-100-1 relu mse",
                                 .nwidths = 5,
                                 .widths = {1, 100, 100, 100, 1},
                                 .act = MLP_ACT_RELU,
                                 .loss = MLP_LOSS_MSE,
                                 .batch = 10};
static const netspec NET_TANH = {.name = "20-32-32-5 tanh xent",
                                 .nwidths = 4,
                                 .widths = {20, 32, 32, 5},
                                 .act = MLP_ACT_TANH,
                                 .loss = MLP_LOSS_XENT,
                                 .batch = 16};

/* State vector z = (w, v, lam): the variables of S. */
typedef struct {
    const netspec *ns;
    size_t k;
    mlp_t *m;
    mlp_feat_t *f; /* feature cache used by the FD evaluations */
    inner_cfg cfg;
    size_t nl, nw, nz; /* n_lam, n_w, 2 n_w + n_lam */
    size_t n;          /* batch rows */
    double *z;         /* (w, v, lam) at the check point */
    double *zz;        /* perturbed state */
    double *x, *y;     /* batch */
    double *a_w, *a_v; /* cotangent (unit 2-norm each) */
    double *w2, *v2;   /* inner_step outputs */
    double *scr;       /* n_w scratch for inner_step */
    double *pfull;     /* (lam, w) for the naive forward */
    size_t npat;
    unsigned char *pat0, *patt;
    size_t kink_w, kink_b; /* ReLU: z-indices of W[KINK_UNIT][0] and b[KINK_UNIT], layer 0 */
} inst;

/* Planted kink (ReLU nets), as in test_mlp_fd: layer-0 unit KINK_UNIT has, for
 * batch row 0, the pre-activation KINK_Z, so that the FD along its bias must
 * be retried at a smaller step on every run. */
#define KINK_UNIT 7
#define KINK_Z 2e-6

static double *dalloc(size_t n) {
    double *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return v;
}

static void fill_nan(size_t n, double *x) {
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

/* Signs of the hidden pre-activations of the naive forward at parameters p
 * (layout of mlp.h: per layer W (out, in) row-major then b). Only the sign
 * pattern is needed here; test_mlp_fd checks the loss itself. */
static void ref_pattern(const netspec *ns, const double *p, const double *x, size_t n,
                        unsigned char *pat) {
    double a[REF_MAXN * REF_MAXW], zb[REF_MAXN * REF_MAXW];
    size_t L = ns->nwidths - 1, off = 0, poff = 0;
    if (n > REF_MAXN) exit(3);
    memcpy(a, x, n * ns->widths[0] * sizeof *a);
    for (size_t l = 0; l + 1 < L; l++) {
        size_t in = ns->widths[l], out = ns->widths[l + 1];
        const double *W = p + off, *b = W + out * in;
        off += out * in + out;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < out; j++) {
                double s = b[j];
                for (size_t q = 0; q < in; q++) s += W[j * in + q] * a[i * in + q];
                zb[i * out + j] = s;
            }
        for (size_t t = 0; t < n * out; t++) {
            pat[poff + t] = (unsigned char)(zb[t] > 0.0);
            a[t] = zb[t] > 0.0 ? zb[t] : 0.0;
        }
        poff += n * out;
    }
}

static void inst_init(inst *I, const netspec *ns, size_t k, uint64_t seed) {
    memset(I, 0, sizeof *I);
    I->ns = ns;
    I->k = k;
    I->n = ns->batch;
    I->cfg.lr = LR;
    I->cfg.momentum = MOMENTUM;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_new(ns->nwidths, ns->widths, ns->act, ns->loss, k, ns->batch, &I->m, &err) != HD_OK ||
        mlp_feat_new(I->m, I->n, &I->f, &err) != HD_OK) {
        fprintf(stderr, "setup %s k=%zu failed: %s\n", ns->name, k, err.msg);
        exit(2);
    }
    I->nl = mlp_n_lam(I->m);
    I->nw = mlp_n_w(I->m);
    I->nz = 2 * I->nw + I->nl;
    I->z = dalloc(I->nz);
    I->zz = dalloc(I->nz);
    size_t in = ns->widths[0], out = ns->widths[ns->nwidths - 1];
    I->x = dalloc(I->n * in);
    I->y = dalloc(I->n * out);
    I->a_w = dalloc(I->nw);
    I->a_v = dalloc(I->nw);
    I->w2 = dalloc(I->nw);
    I->v2 = dalloc(I->nw);
    I->scr = dalloc(I->nw);
    I->pfull = dalloc(I->nl + I->nw);

    rng_t r;
    rng_seed(&r, seed, k, 0x1a, 0);
    /* Parameters in the PyTorch-init range, into (lam, w) = pfull. */
    size_t off = 0;
    for (size_t l = 0; l + 1 < ns->nwidths; l++) {
        size_t li = ns->widths[l], lo = ns->widths[l + 1];
        double bd = 1.0 / sqrt((double)li);
        for (size_t t = 0; t < lo * (li + 1); t++) I->pfull[off + t] = rng_range(&r, -bd, bd);
        off += lo * (li + 1);
    }
    if (ns->loss == MLP_LOSS_MSE) {
        double A = rng_range(&r, 0.1, 5.0), ph = rng_range(&r, 0.0, M_PI);
        for (size_t i = 0; i < I->n; i++) {
            I->x[i] = rng_range(&r, -5.0, 5.0);
            I->y[i] = A * sin(I->x[i] + ph);
        }
    } else {
        for (size_t i = 0; i < I->n; i++) {
            for (size_t q = 0; q < in; q++) I->x[i * in + q] = rng_normal(&r);
            size_t c = (size_t)rng_below(&r, out);
            for (size_t j = 0; j < out; j++) I->y[i * out + j] = (j == c) ? 1.0 : 0.0;
        }
    }
    if (ns->act == MLP_ACT_RELU) {
        size_t li = ns->widths[0], lo = ns->widths[1];
        double zk = 0.0;
        for (size_t q = 0; q < li; q++) zk += I->pfull[KINK_UNIT * li + q] * I->x[q];
        I->pfull[lo * li + KINK_UNIT] = KINK_Z - zk;
        /* layer 0 lives in lam (z offset 2 n_w) when k >= 1, else in w */
        size_t base = k ? 2 * I->nw : 0;
        I->kink_w = base + KINK_UNIT * li;
        I->kink_b = base + lo * li + KINK_UNIT;
    }
    memcpy(I->z, I->pfull + I->nl, I->nw * sizeof *I->z);                      /* w */
    for (size_t i = 0; i < I->nw; i++) I->z[I->nw + i] = 0.1 * rng_normal(&r); /* v */
    if (I->nl) memcpy(I->z + 2 * I->nw, I->pfull, I->nl * sizeof *I->z);       /* lam */
    for (size_t i = 0; i < I->nw; i++) {
        I->a_w[i] = rng_normal(&r);
        I->a_v[i] = rng_normal(&r);
    }
    vec_scale(I->nw, I->a_w, 1.0 / vec_nrm2(I->nw, I->a_w));
    vec_scale(I->nw, I->a_v, 1.0 / vec_nrm2(I->nw, I->a_v));
    I->npat = 0;
    for (size_t l = 1; l + 1 < ns->nwidths; l++) I->npat += I->n * ns->widths[l];
    I->pat0 = malloc(I->npat ? I->npat : 1);
    I->patt = malloc(I->npat ? I->npat : 1);
    if (!I->pat0 || !I->patt) exit(2);
    if (ns->act == MLP_ACT_RELU) ref_pattern(ns, I->pfull, I->x, I->n, I->pat0);
}

static void inst_free(inst *I) {
    mlp_feat_free(I->f);
    mlp_free(I->m);
    free(I->z);
    free(I->zz);
    free(I->x);
    free(I->y);
    free(I->a_w);
    free(I->a_v);
    free(I->w2);
    free(I->v2);
    free(I->scr);
    free(I->pfull);
    free(I->pat0);
    free(I->patt);
}

static const double *zw(const inst *I, const double *z) {
    (void)I;
    return z;
}
static const double *zv(const inst *I, const double *z) { return z + I->nw; }
static const double *zl(const inst *I, const double *z) { return z + 2 * I->nw; }

/* S(z) and S'(z) (see the file comment). Recomputes the features at lam. */
static void eval_s(inst *I, const double *z, double *s, double *sp) {
    mlp_feat_compute(I->m, I->f, zl(I, z), I->x, I->n);
    inner_step(I->m, I->f, &I->cfg, zl(I, z), zw(I, z), zv(I, z), I->y, I->w2, I->v2, I->scr);
    double aw_w2 = 0.0, aw_w = 0.0, av_v2 = 0.0;
    for (size_t i = 0; i < I->nw; i++) {
        aw_w2 += I->a_w[i] * I->w2[i];
        aw_w += I->a_w[i] * (I->w2[i] - zw(I, z)[i]);
        av_v2 += I->a_v[i] * I->v2[i];
    }
    *s = aw_w2 + av_v2;
    *sp = aw_w + av_v2;
}

/* Number of hidden ReLU sign changes at z +- h d (d NULL: coordinate ci). */
static size_t flips(inst *I, const double *d, size_t ci, double h) {
    if (I->ns->act != MLP_ACT_RELU) return 0;
    size_t nf = 0, nl = I->nl, nw = I->nw;
    for (int s = -1; s <= 1; s += 2) {
        for (size_t i = 0; i < I->nz; i++) I->zz[i] = I->z[i];
        if (d)
            for (size_t i = 0; i < I->nz; i++) I->zz[i] += (double)s * h * d[i];
        else
            I->zz[ci] += (double)s * h;
        if (nl) memcpy(I->pfull, zl(I, I->zz), nl * sizeof *I->pfull);
        memcpy(I->pfull + nl, zw(I, I->zz), nw * sizeof *I->pfull);
        ref_pattern(I->ns, I->pfull, I->x, I->n, I->patt);
        for (size_t t = 0; t < I->npat; t++) nf += (I->patt[t] != I->pat0[t]);
    }
    return nf;
}

static double rel_err(size_t n, const double *fd, const double *ex) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (fd[i] - ex[i]) * (fd[i] - ex[i]);
        den += ex[i] * ex[i];
    }
    return sqrt(num) / fmax(sqrt(den), TINY);
}

/* Exact derivative vectors at z: e = (a_w', a_v', a_lam) = grad S and
 * ep = (a_w' - a_w, a_v', a_lam) = grad S'. Outputs are pre-filled with NaN
 * so that an output that is accumulated into instead of written shows up. */
static void exact_vjp(inst *I, double *e, double *ep) {
    size_t nw = I->nw;
    double *scratch = dalloc(2 * nw);
    fill_nan(I->nz, e);
    mlp_feat_compute(I->m, I->f, zl(I, I->z), I->x, I->n);
    inner_vjp(I->m, I->f, &I->cfg, zl(I, I->z), zw(I, I->z), I->y, I->a_w, I->a_v, e, e + nw,
              e + 2 * nw, scratch);
    memcpy(ep, e, I->nz * sizeof *e);
    for (size_t i = 0; i < nw; i++) ep[i] = e[i] - I->a_w[i];
    free(scratch);
}

/* ---------------------------------------------------------------------- */

static void check_step_formula(inst *I) {
    size_t nw = I->nw;
    const double *lam = zl(I, I->z), *w = zw(I, I->z), *v = zv(I, I->z);
    double *g = dalloc(nw), *w2 = dalloc(nw), *v2 = dalloc(nw), *scr = dalloc(nw), *wa = dalloc(nw),
           *va = dalloc(nw), *scr2 = dalloc(nw);
    mlp_feat_compute(I->m, I->f, lam, I->x, I->n);
    double lg = mlp_grad_f(I->m, I->f, lam, w, I->y, NULL, g);
    fill_nan(nw, w2);
    fill_nan(nw, v2);
    double ls = inner_step(I->m, I->f, &I->cfg, lam, w, v, I->y, w2, v2, scr);
    CHECK_NEAR(ls, lg, 1e-13 * fabs(lg));
    double lf = mlp_forward_f(I->m, I->f, w, I->y, NULL);
    CHECK_NEAR(ls, lf, 1e-13 * fabs(lf));
    /* scratch receives the gradient */
    CHECK_MSG(vec_max_rel_diff(nw, scr, g) <= 1e-13, "%s k=%zu: step scratch != gradient (%g)",
              I->ns->name, I->k, vec_max_rel_diff(nw, scr, g));
    /* v' = mu v + g; w' = w - eta v': each element is 2-3 rounded operations;
     * allow 4 ulps of the operand magnitudes. */
    size_t bad = 0;
    for (size_t i = 0; i < nw; i++) {
        double vn = MOMENTUM * v[i] + g[i];
        double wn = w[i] - LR * vn;
        double tv = 4.0 * EPS * (fabs(MOMENTUM * v[i]) + fabs(g[i]));
        double tw = 4.0 * EPS * (fabs(w[i]) + LR * (fabs(MOMENTUM * v[i]) + fabs(g[i])));
        if (!(fabs(v2[i] - vn) <= tv) || !(fabs(w2[i] - wn) <= tw)) bad++;
    }
    CHECK_MSG(bad == 0, "%s k=%zu: %zu elements of inner_step off the formula", I->ns->name, I->k,
              bad);
    /* In place: w_out == w, v_out == v. */
    memcpy(wa, w, nw * sizeof *wa);
    memcpy(va, v, nw * sizeof *va);
    double la = inner_step(I->m, I->f, &I->cfg, lam, wa, va, I->y, wa, va, scr2);
    CHECK(la == ls);
    CHECK_MSG(vec_max_rel_diff(nw, wa, w2) == 0.0 && vec_max_rel_diff(nw, va, v2) == 0.0,
              "%s k=%zu: aliased inner_step differs", I->ns->name, I->k);
    free(g);
    free(w2);
    free(v2);
    free(scr);
    free(wa);
    free(va);
    free(scr2);
}

/* inner_vjp against the formula with one mlp_hvp_f; and NULL outputs. */
static void check_vjp_formula_and_nulls(inst *I) {
    size_t nw = I->nw, nl = I->nl;
    const double *lam = zl(I, I->z), *w = zw(I, I->z);
    double *c = dalloc(nw), *hl = dalloc(nl), *hw = dalloc(nw), *ow = dalloc(nw), *ov = dalloc(nw),
           *ol = dalloc(nl), *scratch = dalloc(2 * nw), *ow2 = dalloc(nw), *ov2 = dalloc(nw),
           *ol2 = dalloc(nl);
    mlp_feat_compute(I->m, I->f, lam, I->x, I->n);
    for (size_t i = 0; i < nw; i++) c[i] = I->a_v[i] - LR * I->a_w[i];
    mlp_hvp_f(I->m, I->f, lam, w, I->y, NULL, c, hl, hw, NULL);
    fill_nan(nw, ow);
    fill_nan(nw, ov);
    fill_nan(nl, ol);
    inner_vjp(I->m, I->f, &I->cfg, lam, w, I->y, I->a_w, I->a_v, ow, ov, ol, scratch);
    /* a_w' = a_w + H_ww c, a_v' = mu c, a_lam = H_lw c: the same products in
     * a possibly different order, so 1e-13 relative (max-norm). */
    double *ref = dalloc(nw);
    for (size_t i = 0; i < nw; i++) ref[i] = I->a_w[i] + hw[i];
    double ew = vec_max_rel_diff(nw, ow, ref);
    for (size_t i = 0; i < nw; i++) ref[i] = MOMENTUM * c[i];
    double ev = vec_max_rel_diff(nw, ov, ref);
    double el = nl ? vec_max_rel_diff(nl, ol, hl) : 0.0;
    CHECK_MSG(ew <= 1e-13, "%s k=%zu: a_w' vs a_w + H_ww c: %g", I->ns->name, I->k, ew);
    CHECK_MSG(ev <= 1e-13, "%s k=%zu: a_v' vs mu c: %g", I->ns->name, I->k, ev);
    CHECK_MSG(el <= 1e-13, "%s k=%zu: a_lam vs H_lw c: %g", I->ns->name, I->k, el);
    CHECK(vec_all_finite(nw, ow) && vec_all_finite(nw, ov) && vec_all_finite(nl, ol));

    /* Every subset of NULL outputs: the others are unchanged (1e-13: the lam
     * block of the HVP may be skipped, which must not change h_w). */
    int ok = 1;
    for (int mask = 0; mask < 8; mask++) {
        double *pw = (mask & 1) ? ow2 : NULL, *pv = (mask & 2) ? ov2 : NULL,
               *pl = (mask & 4) ? ol2 : NULL;
        fill_nan(nw, ow2);
        fill_nan(nw, ov2);
        fill_nan(nl, ol2);
        double *scr = dalloc(2 * nw); /* exact size: ASan checks the 2 n_w bound */
        inner_vjp(I->m, I->f, &I->cfg, lam, w, I->y, I->a_w, I->a_v, pw, pv, pl, scr);
        free(scr);
        if (pw && !(vec_max_rel_diff(nw, ow2, ow) <= 1e-13)) ok = 0;
        if (pv && !(vec_max_rel_diff(nw, ov2, ov) <= 1e-13)) ok = 0;
        if (pl && nl && !(vec_max_rel_diff(nl, ol2, ol) <= 1e-13)) ok = 0;
        CHECK_MSG(ok, "%s k=%zu: inner_vjp with NULL mask %d differs", I->ns->name, I->k, mask);
        if (!ok) break;
    }
    /* k = 0: out_lam NULL and a zero-length out_lam are both fine (above). */
    free(c);
    free(hl);
    free(hw);
    free(ow);
    free(ov);
    free(ol);
    free(scratch);
    free(ow2);
    free(ov2);
    free(ol2);
    free(ref);
}

/* Component-wise FD of S and S'. idx lists the components of z to check. */
static void fd_components(inst *I, const size_t *idx, size_t ni, const double *e, const double *ep,
                          const char *label) {
    double *fd = dalloc(ni), *fdp = dalloc(ni), *ex = dalloc(ni), *exp_ = dalloc(ni);
    int *tag = malloc((ni ? ni : 1) * sizeof *tag); /* block of each checked entry */
    if (!tag) exit(2);
    /* Per-block reference magnitude for the per-component tolerance. */
    double emax[3] = {0, 0, 0};
    size_t blk_lo[4] = {0, I->nw, 2 * I->nw, I->nz};
    for (int b = 0; b < 3; b++)
        for (size_t i = blk_lo[b]; i < blk_lo[b + 1]; i++) emax[b] = fmax(emax[b], fabs(e[i]));
    size_t nk = 0, skipped = 0, shrunk = 0, bad = 0;
    for (size_t j = 0; j < ni; j++) {
        size_t c = idx[j];
        int b = c < I->nw ? 0 : (c < 2 * I->nw ? 1 : 2);
        double h = FD_H;
        if (b != 1) { /* v does not enter the gradient: no kink along v */
            while (flips(I, NULL, c, h) && h > 1.5e-8) {
                h /= 10.0;
                shrunk++;
            }
            if (flips(I, NULL, c, h)) {
                skipped++;
                continue;
            }
        }
        double sp, spp, sm, smp;
        memcpy(I->zz, I->z, I->nz * sizeof *I->zz);
        I->zz[c] = I->z[c] + h;
        eval_s(I, I->zz, &sp, &spp);
        I->zz[c] = I->z[c] - h;
        eval_s(I, I->zz, &sm, &smp);
        fd[nk] = (sp - sm) / (2.0 * h);
        fdp[nk] = (spp - smp) / (2.0 * h);
        ex[nk] = e[c];
        exp_[nk] = ep[c];
        tag[nk] = b;
        /* relative 1e-6 with the magnitude floored at the block's largest
         * entry (FD noise is absolute; see test_mlp_fd). */
        if (fabs(fd[nk] - ex[nk]) > REL_TOL * (fabs(fd[nk]) + emax[b])) {
            if (bad < 10)
                fprintf(stderr, "  %s k=%zu %s comp %zu (block %d): exact %.12g fd %.12g\n",
                        I->ns->name, I->k, label, c, b, ex[nk], fd[nk]);
            bad++;
        }
        nk++;
    }
    CHECK_MSG(bad == 0, "%s k=%zu %s: %zu of %zu VJP components off", I->ns->name, I->k, label, bad,
              nk);
    CHECK_MSG(skipped * 100 <= ni, "%s k=%zu: %zu of %zu skipped for ReLU kinks", I->ns->name, I->k,
              skipped, ni);
    const char *bn[3] = {"a_w'", "a_v'", "a_lam"};
    printf("  VJP components (%s, %zu checked, h shrunk %zu, skipped %zu):", label, nk, shrunk,
           skipped);
    for (int b = 0; b < 3; b++) {
        double n1 = 0.0, d1 = 0.0, n2 = 0.0, d2 = 0.0;
        size_t cnt = 0;
        for (size_t j = 0; j < nk; j++) {
            if (tag[j] != b) continue;
            cnt++;
            n1 += (fd[j] - ex[j]) * (fd[j] - ex[j]);
            d1 += ex[j] * ex[j];
            n2 += (fdp[j] - exp_[j]) * (fdp[j] - exp_[j]);
            d2 += exp_[j] * exp_[j];
        }
        if (!cnt) continue;
        double r1 = sqrt(n1) / fmax(sqrt(d1), TINY), r2 = sqrt(n2) / fmax(sqrt(d2), TINY);
        CHECK_MSG(r1 <= REL_TOL, "%s k=%zu %s: %s FD rel err %g", I->ns->name, I->k, label, bn[b],
                  r1);
        CHECK_MSG(r2 <= REL_TOL, "%s k=%zu %s: %s (S') FD rel err %g", I->ns->name, I->k, label,
                  b == 0 ? "H_ww c" : bn[b], r2);
        printf(" %s %.1e", bn[b], r1);
        if (b == 0) printf(" (H_ww c %.1e)", r2);
    }
    double rall = rel_err(nk, fd, ex);
    CHECK_MSG(rall <= REL_TOL, "%s k=%zu %s: whole-vector FD rel err %g", I->ns->name, I->k, label,
              rall);
    printf(" all %.1e\n", rall);
    free(fd);
    free(fdp);
    free(ex);
    free(exp_);
    free(tag);
}

static void check_vjp_components(inst *I, rng_t *r, const double *e, const double *ep) {
    size_t *idx = malloc(I->nz * sizeof *idx), ni = 0;
    if (!idx) exit(2);
    size_t lo[3] = {0, I->nw, 2 * I->nw}, sz[3] = {I->nw, I->nw, I->nl};
    for (int b = 0; b < 3; b++) {
        /* tanh: everything; ReLU: up to 150 components spread over the block */
        size_t cnt = (I->ns->act == MLP_ACT_TANH || sz[b] <= 150) ? sz[b] : 150;
        for (size_t j = 0; j < cnt; j++)
            idx[ni++] = lo[b] + (j * sz[b]) / cnt + (size_t)rng_below(r, sz[b] / cnt);
    }
    if (I->ns->act == MLP_ACT_RELU) {
        idx[ni++] = I->kink_w;
        idx[ni++] = I->kink_b;
        CHECK_MSG(flips(I, NULL, I->kink_b, FD_H) > 0, "%s k=%zu: planted kink not detected",
                  I->ns->name, I->k);
    }
    fd_components(I, idx, ni, e, ep, ni == I->nz ? "all" : "sample");
    free(idx);
}

/* Directional FD along random unit directions supported on a union of blocks
 * (bit 0 w, bit 1 v, bit 2 lam). */
static void check_vjp_directions(inst *I, rng_t *r, const double *e, const double *ep) {
    enum { ND = 12, MAX_REDRAW = 100 };
    const int fams[4] = {1, 2, 4, 7};
    const char *fname[4] = {"w", "v", "lam", "all"};
    double *d = dalloc(I->nz);
    size_t lo[3] = {0, I->nw, 2 * I->nw}, hi[3] = {I->nw, 2 * I->nw, I->nz};
    int redraws = 0;
    printf("  VJP directions:");
    for (int fi = 0; fi < 4; fi++) {
        if (fams[fi] == 4 && I->nl == 0) continue;
        double fd[ND], ex[ND], fdp[ND], exq[ND];
        for (int j = 0; j < ND; j++) {
            do {
                vec_zero(I->nz, d);
                for (int b = 0; b < 3; b++)
                    if (fams[fi] & (1 << b))
                        for (size_t i = lo[b]; i < hi[b]; i++) d[i] = rng_normal(r);
                vec_scale(I->nz, d, 1.0 / vec_nrm2(I->nz, d));
            } while (flips(I, d, 0, FD_H) && ++redraws < MAX_REDRAW);
            double sp, spp, sm, smp;
            for (size_t i = 0; i < I->nz; i++) I->zz[i] = I->z[i] + FD_H * d[i];
            eval_s(I, I->zz, &sp, &spp);
            for (size_t i = 0; i < I->nz; i++) I->zz[i] = I->z[i] - FD_H * d[i];
            eval_s(I, I->zz, &sm, &smp);
            fd[j] = (sp - sm) / (2.0 * FD_H);
            fdp[j] = (spp - smp) / (2.0 * FD_H);
            ex[j] = vec_dot(I->nz, e, d);
            exq[j] = vec_dot(I->nz, ep, d);
        }
        double r1 = rel_err(ND, fd, ex), r2 = rel_err(ND, fdp, exq);
        CHECK_MSG(r1 <= REL_TOL, "%s k=%zu: VJP directional (%s) FD rel err %g", I->ns->name, I->k,
                  fname[fi], r1);
        CHECK_MSG(r2 <= REL_TOL, "%s k=%zu: VJP directional S' (%s) FD rel err %g", I->ns->name,
                  I->k, fname[fi], r2);
        printf(" %s %.1e/%.1e", fname[fi], r1, r2);
    }
    CHECK_MSG(redraws < MAX_REDRAW, "%s k=%zu: too many ReLU kinks", I->ns->name, I->k);
    printf(" (S/S', %d dirs each, redrawn %d)\n", ND, redraws);
    free(d);
}

static void run_net(const netspec *ns, const size_t *ks, size_t nks, uint64_t seed) {
    for (size_t t = 0; t < nks; t++) {
        inst I;
        inst_init(&I, ns, ks[t], seed);
        printf("%s, hyper_layers %zu (n_lam %zu, n_w %zu), lr %g, momentum %g\n", ns->name, I.k,
               I.nl, I.nw, LR, MOMENTUM);
        rng_t r;
        rng_seed(&r, seed, ks[t], 0xfd, 0);
        check_step_formula(&I);
        check_vjp_formula_and_nulls(&I);
        double *e = dalloc(I.nz), *ep = dalloc(I.nz);
        exact_vjp(&I, e, ep);
        CHECK(vec_all_finite(I.nz, e));
        check_vjp_components(&I, &r, e, ep);
        check_vjp_directions(&I, &r, e, ep);
        free(e);
        free(ep);
        inst_free(&I);
    }
}

int main(void) {
    const size_t k_relu[3] = {0, 1, 3};
    const size_t k_tanh[3] = {0, 1, 2}; /* 3 layers: k = 3 would leave no w */
    run_net(&NET_RELU, k_relu, 3, 3003);
    run_net(&NET_TANH, k_tanh, 3, 4004);
    printf("FD step h = %g along unit directions, tolerance %g relative\n", FD_H, REL_TOL);
    return check_finish("test_inner_vjp");
}
