/* Finite-difference and reference checks of common/mlp.h (ALGORITHM.md section
 * 2: "the HVP must agree with central finite differences of the gradient to
 * about 1e-6 relative error in float64").
 *
 * Networks: 1-100-100-100-1 ReLU + MSE (batch 10, x ~ U(-5,5), y = A sin(x+p),
 * the reference task of section 8) with hyper_layers k = 0, 1, 3, and
 * 20-32-32-5 tanh + softmax cross-entropy (batch 16, one-hot targets) with
 * k = 0, 1, 2 (it has 3 layers and at least one must stay in w, so k = 3 is
 * not a valid configuration there).
 *
 * Checked, each with its tolerance stated where it is checked:
 *  - the loss against an independent naive forward written here (this also
 *    pins down the parameter layout of mlp.h: per layer W (out,in) row-major
 *    then b; lam = first k layers, then w);
 *  - g_lam and g_w against central FD of the loss: component-wise (all
 *    components of the tanh net, a stratified sample of the ReLU net) and
 *    along random directions (full, lam-only, w-only);
 *  - the HVP (h_lam, h_w) against central FD of the gradient along
 *    (c_lam, c_w), with c_lam == NULL, c_w == 0, and h_lam == NULL variants;
 *  - g_w returned by the HVP equals mlp_grad's g_w; u.(Hv) == v.(Hu);
 *  - the mlp_feat_* path is bit-identical to the _x conveniences;
 *  - the split passes (mlp_upper_grad/hvp + mlp_lower_backward) agree with
 *    the whole-batch products;
 *  - mlp_new argument validation, accessors, mlp_init_params.
 *
 * FD step. All FD directions are unit vectors (a coordinate vector, or a
 * random Gaussian vector normalised to 2-norm 1) and the step is
 * h = FD_H = 1e-5. Parameters are O(0.1..1) (PyTorch init, |p| <= 1), so this
 * is the usual eps^(1/3) ~ 6e-6 balance of the two error terms of a central
 * difference: truncation h^2/6 |f'''| ~ 2e-11 |f'''| and rounding
 * ~eps |f| / h ~ 2e-11 |f|, both several decades below the 1e-6 tolerance.
 *
 * ReLU kinks. A central difference across a kink is wrong by O(jump), which
 * would break a 1e-6 tolerance. Inside one activation pattern the ReLU net is
 * a polynomial in the parameters, so FD is exact up to the error terms above.
 * Every ReLU FD evaluation therefore recomputes, with the naive forward, the
 * sign of every hidden pre-activation at p + h d and p - h d and compares it
 * with the pattern at p. A directional check whose direction flips a sign is
 * redrawn (bounded number of times); a component-wise check retries with h
 * divided by 10 (a kink at distance delta < h is avoided by any h < delta) and
 * is skipped, and counted, if it still flips at h = 1e-8. The tolerance is
 * never changed. */
#include "mlp.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"
#include "vec.h"

#define FD_H 1e-5    /* FD step along unit directions (see the file comment) */
#define REL_TOL 1e-6 /* FD relative error bound (ALGORITHM.md section 2) */
#define SYM_TOL 1e-10
#define REF_MAXW 128 /* widest layer the naive forward handles */
#define REF_MAXN 16  /* largest batch the naive forward handles */
#define TINY 1e-300

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

/* One network instance: the parameters are the full vector p = (lam, w), so
 * lam = p and w = p + nl; p is never NULL even when nl == 0. */
typedef struct {
    const netspec *ns;
    size_t k; /* hyper_layers */
    mlp_t *m;
    size_t nl, nw, np;     /* n_lam, n_w, nl + nw */
    size_t n;              /* batch rows */
    double *p;             /* parameters (np) */
    double *x, *y;         /* batch: (n, in), (n, out) */
    size_t npat;           /* hidden pre-activations in the batch */
    unsigned char *pat0;   /* ReLU pattern at p (npat) */
    unsigned char *patt;   /* scratch pattern (npat) */
    double *pp;            /* scratch parameters (np) */
    size_t kink_w, kink_b; /* ReLU: indices in p of W[KINK_UNIT][0] and b[KINK_UNIT], layer 0 */
} inst;

/* Planted kink (ReLU nets): layer-0 unit KINK_UNIT gets, for batch row 0, the
 * pre-activation KINK_Z, so that the coordinate FD of its bias flips the sign
 * at h = 1e-5 and must be retried at a smaller step; this exercises the kink
 * handling on every run instead of relying on chance. */
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

static size_t n_params(const netspec *ns, size_t from, size_t to) {
    size_t s = 0;
    for (size_t l = from; l < to; l++) s += ns->widths[l + 1] * (ns->widths[l] + 1);
    return s;
}

/* Naive forward in the layout of mlp.h; returns the loss, writes the hidden
 * ReLU/tanh pre-activation signs to pat (if non-NULL) and the outputs to fout
 * (if non-NULL). An independent reference, deliberately written without BLAS. */
static double ref_forward(const netspec *ns, const double *p, const double *x, const double *y,
                          size_t n, unsigned char *pat, double *fout) {
    double a[REF_MAXN * REF_MAXW], z[REF_MAXN * REF_MAXW];
    size_t L = ns->nwidths - 1, off = 0, poff = 0;
    if (n > REF_MAXN) exit(3);
    memcpy(a, x, n * ns->widths[0] * sizeof *a);
    for (size_t l = 0; l < L; l++) {
        size_t in = ns->widths[l], out = ns->widths[l + 1];
        const double *W = p + off, *b = W + out * in;
        off += out * in + out;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < out; j++) {
                double s = b[j];
                for (size_t q = 0; q < in; q++) s += W[j * in + q] * a[i * in + q];
                z[i * out + j] = s;
            }
        if (l + 1 < L) {
            for (size_t t = 0; t < n * out; t++) {
                if (pat) pat[poff + t] = (unsigned char)(z[t] > 0.0);
                a[t] = ns->act == MLP_ACT_RELU ? (z[t] > 0.0 ? z[t] : 0.0) : tanh(z[t]);
            }
            poff += n * out;
        }
    }
    size_t out = ns->widths[L];
    if (fout) memcpy(fout, z, n * out * sizeof *z);
    double loss = 0.0;
    if (ns->loss == MLP_LOSS_MSE) {
        for (size_t t = 0; t < n * out; t++) loss += (z[t] - y[t]) * (z[t] - y[t]);
        return loss / (double)(n * out);
    }
    for (size_t i = 0; i < n; i++) {
        const double *f = z + i * out;
        double mx = f[0], se = 0.0;
        for (size_t j = 1; j < out; j++) mx = f[j] > mx ? f[j] : mx;
        for (size_t j = 0; j < out; j++) se += exp(f[j] - mx);
        double lse = mx + log(se);
        for (size_t j = 0; j < out; j++) loss -= y[i * out + j] * (f[j] - lse);
    }
    return loss / (double)n;
}

static void make_batch(const netspec *ns, rng_t *r, size_t n, double *x, double *y) {
    size_t in = ns->widths[0], out = ns->widths[ns->nwidths - 1];
    if (ns->loss == MLP_LOSS_MSE) {
        /* sinusoid task: y = A sin(x + phase) */
        double A = rng_range(r, 0.1, 5.0), ph = rng_range(r, 0.0, M_PI);
        for (size_t i = 0; i < n; i++) {
            for (size_t q = 0; q < in; q++) x[i * in + q] = rng_range(r, -5.0, 5.0);
            for (size_t j = 0; j < out; j++) y[i * out + j] = A * sin(x[i * in] + ph + (double)j);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            for (size_t q = 0; q < in; q++) x[i * in + q] = rng_normal(r);
            size_t c = (size_t)rng_below(r, out);
            for (size_t j = 0; j < out; j++) y[i * out + j] = (j == c) ? 1.0 : 0.0;
        }
    }
}

/* Random parameters in the PyTorch-init range, drawn here (not with
 * mlp_init_params) so that every k sees the same full vector p. */
static void make_params(const netspec *ns, rng_t *r, double *p) {
    size_t off = 0;
    for (size_t l = 0; l + 1 < ns->nwidths; l++) {
        size_t in = ns->widths[l], out = ns->widths[l + 1];
        double bd = 1.0 / sqrt((double)in);
        for (size_t t = 0; t < out * (in + 1); t++) p[off + t] = rng_range(r, -bd, bd);
        off += out * (in + 1);
    }
}

static void inst_init(inst *I, const netspec *ns, size_t k, uint64_t seed) {
    memset(I, 0, sizeof *I);
    I->ns = ns;
    I->k = k;
    I->n = ns->batch;
    hd_err err;
    hd_err_clear(&err);
    hd_rc rc = mlp_new(ns->nwidths, ns->widths, ns->act, ns->loss, k, ns->batch, &I->m, &err);
    if (rc != HD_OK) {
        fprintf(stderr, "mlp_new(%s, k=%zu) failed: %s %s\n", ns->name, k, hd_rc_name(rc), err.msg);
        exit(2);
    }
    I->nl = mlp_n_lam(I->m);
    I->nw = mlp_n_w(I->m);
    I->np = I->nl + I->nw;
    CHECK_EQ_INT(I->nl, n_params(ns, 0, k));
    CHECK_EQ_INT(I->nw, n_params(ns, k, ns->nwidths - 1));
    I->p = dalloc(I->np);
    I->pp = dalloc(I->np);
    size_t in = ns->widths[0], out = ns->widths[ns->nwidths - 1];
    I->x = dalloc(I->n * in);
    I->y = dalloc(I->n * out);
    rng_t r;
    rng_seed(&r, seed, 0x5eed, 0, 0); /* independent of k */
    make_params(ns, &r, I->p);
    make_batch(ns, &r, I->n, I->x, I->y);
    if (ns->act == MLP_ACT_RELU) {
        size_t kin = ns->widths[0], kout = ns->widths[1];
        I->kink_w = KINK_UNIT * kin;
        I->kink_b = kout * kin + KINK_UNIT;
        double z = 0.0;
        for (size_t q = 0; q < kin; q++) z += I->p[KINK_UNIT * kin + q] * I->x[q];
        I->p[I->kink_b] = KINK_Z - z;
    }
    I->npat = 0;
    for (size_t l = 1; l + 1 < ns->nwidths; l++) I->npat += I->n * ns->widths[l];
    I->pat0 = malloc(I->npat);
    I->patt = malloc(I->npat);
    if (!I->pat0 || !I->patt) exit(2);
    ref_forward(ns, I->p, I->x, I->y, I->n, I->pat0, NULL);
}

static void inst_free(inst *I) {
    mlp_free(I->m);
    free(I->p);
    free(I->pp);
    free(I->x);
    free(I->y);
    free(I->pat0);
    free(I->patt);
}

static double loss_at(inst *I, const double *p) {
    return mlp_loss_x(I->m, p, p + I->nl, I->x, I->y, I->n);
}

static double grad_at(inst *I, const double *p, double *g) {
    return mlp_grad_x(I->m, p, p + I->nl, I->x, I->y, I->n, g, g + I->nl);
}

/* I->pp = p + t d */
static void shift(inst *I, double t, const double *d) {
    for (size_t i = 0; i < I->np; i++) I->pp[i] = I->p[i] + t * d[i];
}

/* Number of hidden ReLU pre-activations whose sign at p + s h d or p - s h d
 * differs from p. Always 0 for tanh (no kinks). d may be NULL with a
 * coordinate index ci to mean the unit vector e_ci. */
static size_t flips(inst *I, const double *d, size_t ci, double h) {
    if (I->ns->act != MLP_ACT_RELU) return 0;
    size_t nf = 0;
    for (int s = -1; s <= 1; s += 2) {
        if (d)
            shift(I, (double)s * h, d);
        else {
            memcpy(I->pp, I->p, I->np * sizeof *I->pp);
            I->pp[ci] += (double)s * h;
        }
        ref_forward(I->ns, I->pp, I->x, I->y, I->n, I->patt, NULL);
        for (size_t t = 0; t < I->npat; t++) nf += (I->patt[t] != I->pat0[t]);
    }
    return nf;
}

/* Gaussian direction supported on [lo, hi) of the full vector, unit 2-norm. */
static void rand_dir(rng_t *r, size_t np, size_t lo, size_t hi, double *d) {
    vec_zero(np, d);
    for (size_t i = lo; i < hi; i++) d[i] = rng_normal(r);
    double nr = vec_nrm2(np, d);
    if (nr > 0.0) vec_scale(np, d, 1.0 / nr);
}

static double rel_err(size_t n, const double *fd, const double *ex) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (fd[i] - ex[i]) * (fd[i] - ex[i]);
        den += ex[i] * ex[i];
    }
    return sqrt(num) / fmax(sqrt(den), TINY);
}

/* ---------------------------------------------------------------------- */

static void check_reference_loss(inst *I) {
    size_t out = I->ns->widths[I->ns->nwidths - 1];
    double *fo = dalloc(I->n * out), *fr = dalloc(I->n * out);
    double lr = ref_forward(I->ns, I->p, I->x, I->y, I->n, NULL, fr);
    double li = loss_at(I, I->p);
    /* Same sums in a different order (BLAS): 1e-12 relative is ~1e4 eps. */
    CHECK_NEAR(li, lr, 1e-12 * fabs(lr));
    mlp_feat_t *f = NULL;
    hd_err err;
    hd_err_clear(&err);
    CHECK(mlp_feat_new(I->m, I->n, &f, &err) == HD_OK);
    if (f) {
        mlp_feat_compute(I->m, f, I->p, I->x, I->n);
        double lf = mlp_forward_f(I->m, f, I->p + I->nl, I->y, fo);
        CHECK_NEAR(lf, lr, 1e-12 * fabs(lr));
        double fmax_ = 0.0;
        for (size_t t = 0; t < I->n * out; t++) fmax_ = fmax(fmax_, fabs(fr[t]));
        double md = 0.0;
        for (size_t t = 0; t < I->n * out; t++) md = fmax(md, fabs(fo[t] - fr[t]));
        CHECK_MSG(md <= 1e-12 * fmax(fmax_, 1.0), "%s k=%zu outputs max diff %g", I->ns->name, I->k,
                  md);
        /* A smaller batch than max_batch through the conveniences. */
        size_t n3 = 3;
        double l3 = mlp_loss_x(I->m, I->p, I->p + I->nl, I->x, I->y, n3);
        double r3 = ref_forward(I->ns, I->p, I->x, I->y, n3, NULL, NULL);
        CHECK_NEAR(l3, r3, 1e-12 * fabs(r3));
        mlp_feat_free(f);
    }
    free(fo);
    free(fr);
}

/* Component-wise gradient check. tanh: every component. ReLU: for each layer
 * up to 40 weight and 40 bias components (all of them if fewer), spread over
 * the block with a random offset. */
static void check_grad_components(inst *I, rng_t *r) {
    double *g = dalloc(I->np), *gn = dalloc(I->np);
    double loss = grad_at(I, I->p, g);
    CHECK_NEAR(loss, loss_at(I, I->p), 1e-13 * fabs(loss));
    /* g_lam == NULL must give the same g_w (the lam backward is skipped). */
    double l2 = mlp_grad_x(I->m, I->p, I->p + I->nl, I->x, I->y, I->n, NULL, gn + I->nl);
    CHECK_NEAR(l2, loss, 1e-13 * fabs(loss));
    CHECK_MSG(vec_max_rel_diff(I->nw, gn + I->nl, g + I->nl) <= 1e-13,
              "g_w with g_lam NULL differs: %g", vec_max_rel_diff(I->nw, gn + I->nl, g + I->nl));

    size_t *idx = malloc(I->np * sizeof *idx), ni = 0;
    if (!idx) exit(2);
    if (I->ns->act == MLP_ACT_TANH) {
        for (size_t i = 0; i < I->np; i++) idx[ni++] = i;
    } else {
        size_t off = 0;
        for (size_t l = 0; l + 1 < I->ns->nwidths; l++) {
            size_t in = I->ns->widths[l], out = I->ns->widths[l + 1];
            size_t blk[2][2] = {{off, out * in}, {off + out * in, out}};
            for (int b = 0; b < 2; b++) {
                size_t start = blk[b][0], size = blk[b][1];
                size_t cnt = size < 40 ? size : 40;
                for (size_t j = 0; j < cnt; j++)
                    idx[ni++] = start + (j * size) / cnt + (size_t)rng_below(r, size / cnt);
            }
            off += out * (in + 1);
        }
        idx[ni++] = I->kink_w;
        idx[ni++] = I->kink_b;
        /* The detector is not vacuous: it sees the planted kink. */
        CHECK_MSG(flips(I, NULL, I->kink_b, FD_H) > 0, "%s: planted kink not detected",
                  I->ns->name);
    }
    double *fd = dalloc(ni), *ex = dalloc(ni);
    double gmax = 0.0;
    for (size_t i = 0; i < I->np; i++) gmax = fmax(gmax, fabs(g[i]));
    size_t shrunk = 0, skipped = 0, bad = 0, nk = 0;
    double worst = 0.0;
    for (size_t j = 0; j < ni; j++) {
        size_t c = idx[j];
        double h = FD_H;
        while (flips(I, NULL, c, h) && h > 1e-8 * 1.5) {
            h /= 10.0;
            shrunk++;
        }
        if (flips(I, NULL, c, h)) {
            skipped++;
            continue;
        }
        memcpy(I->pp, I->p, I->np * sizeof *I->pp);
        I->pp[c] = I->p[c] + h;
        double lp = loss_at(I, I->pp);
        I->pp[c] = I->p[c] - h;
        double lm = loss_at(I, I->pp);
        fd[nk] = (lp - lm) / (2.0 * h);
        ex[nk] = g[c];
        /* Per component: relative 1e-6, with the reference magnitude floored
         * at the largest gradient entry, since FD noise is absolute (the same
         * eps|L|/h for every component) and a component 1e6 times smaller than
         * the largest cannot be resolved relative to itself. */
        double tol = REL_TOL * (fabs(fd[nk]) + gmax);
        double e = fabs(fd[nk] - ex[nk]);
        worst = fmax(worst, e / (fabs(fd[nk]) + gmax));
        if (e > tol) {
            if (bad < 10)
                fprintf(stderr, "  %s k=%zu grad comp %zu (%s): exact %.12g fd %.12g\n",
                        I->ns->name, I->k, c, c < I->nl ? "lam" : "w", ex[nk], fd[nk]);
            bad++;
        }
        nk++;
    }
    CHECK_MSG(bad == 0, "%s k=%zu: %zu of %zu gradient components off", I->ns->name, I->k, bad, nk);
    double re = rel_err(nk, fd, ex);
    CHECK_MSG(re <= REL_TOL, "%s k=%zu: gradient FD relative error %g over %zu components",
              I->ns->name, I->k, re, nk);
    /* Kinks closer than 1e-8 to a sampled point are rare (a few in 1e4). */
    CHECK_MSG(skipped * 100 <= ni, "%s k=%zu: %zu of %zu components skipped for ReLU kinks",
              I->ns->name, I->k, skipped, ni);
    printf("  grad components: %zu checked (%s), rel err %.2e, worst comp %.2e, h shrunk %zu, "
           "skipped %zu\n",
           nk, ni == I->np ? "all" : "stratified sample", re, worst, shrunk, skipped);
    free(idx);
    free(fd);
    free(ex);
    free(g);
    free(gn);
}

/* Directional checks: fd = (L(p+hd) - L(p-hd)) / 2h vs g.d for nd random unit
 * directions of each family (full, lam-only, w-only); the relative error is
 * taken over the vector of the nd directional derivatives. */
static void check_grad_directions(inst *I, rng_t *r) {
    enum { ND = 12, MAX_REDRAW = 100 };
    double *g = dalloc(I->np), *d = dalloc(I->np);
    grad_at(I, I->p, g);
    const char *fam[3] = {"full", "lam", "w"};
    size_t lo[3] = {0, 0, I->nl}, hi[3] = {I->np, I->nl, I->np};
    for (int fi = 0; fi < 3; fi++) {
        if (lo[fi] == hi[fi]) continue; /* no lam when k = 0 */
        double fd[ND], ex[ND];
        int redraws = 0;
        for (int j = 0; j < ND; j++) {
            do rand_dir(r, I->np, lo[fi], hi[fi], d);
            while (flips(I, d, 0, FD_H) && ++redraws < MAX_REDRAW);
            shift(I, FD_H, d);
            double lp = loss_at(I, I->pp);
            shift(I, -FD_H, d);
            double lm = loss_at(I, I->pp);
            fd[j] = (lp - lm) / (2.0 * FD_H);
            ex[j] = vec_dot(I->np, g, d);
        }
        CHECK_MSG(redraws < MAX_REDRAW, "%s k=%zu: too many ReLU kinks", I->ns->name, I->k);
        double re = rel_err(ND, fd, ex);
        CHECK_MSG(re <= REL_TOL, "%s k=%zu: directional (%s) gradient FD rel err %g", I->ns->name,
                  I->k, fam[fi], re);
        printf("  grad directions %-4s: %d dirs, rel err %.2e (redrawn %d)\n", fam[fi], ND, re,
               redraws);
    }
    free(g);
    free(d);
}

/* HVP vs FD of the gradient along d = (c_lam or 0, c_w). */
static double hvp_case(inst *I, const double *c_lam, const double *c_w, int with_hlam,
                       const double *d, double *h, double *fd, double *gp, double *gm) {
    vec_zero(I->np, h);
    mlp_hvp_x(I->m, I->p, I->p + I->nl, I->x, I->y, I->n, c_lam, c_w, with_hlam ? h : NULL,
              h + I->nl);
    shift(I, FD_H, d);
    grad_at(I, I->pp, gp);
    shift(I, -FD_H, d);
    grad_at(I, I->pp, gm);
    for (size_t i = 0; i < I->np; i++) fd[i] = (gp[i] - gm[i]) / (2.0 * FD_H);
    if (with_hlam) return rel_err(I->np, fd, h);
    return rel_err(I->nw, fd + I->nl, h + I->nl);
}

static void check_hvp(inst *I, rng_t *r) {
    enum { NDIR = 3, MAX_REDRAW = 100 };
    size_t np = I->np, nl = I->nl;
    double *d = dalloc(np), *h = dalloc(np), *fd = dalloc(np), *gp = dalloc(np), *gm = dalloc(np),
           *h2 = dalloc(np), *zero = dalloc(np), *g = dalloc(np), *gw = dalloc(I->nw);
    /* families: 0 full (c_lam, c_w); 1 c_lam NULL; 2 c_w = 0 (c_lam only) */
    const char *fam[3] = {"full", "c_lam=NULL", "c_w=0"};
    size_t lo[3] = {0, nl, 0}, hi[3] = {np, np, nl};
    double worst = 0.0;
    int redraws = 0;
    for (int fi = 0; fi < 3; fi++) {
        if (lo[fi] == hi[fi]) continue; /* k = 0: no lam direction */
        for (int j = 0; j < NDIR; j++) {
            do rand_dir(r, np, lo[fi], hi[fi], d);
            while (flips(I, d, 0, FD_H) && ++redraws < MAX_REDRAW);
            const double *c_lam = fi == 1 ? NULL : d;
            const double *c_w = fi == 2 ? zero : d + nl;
            for (int wl = 1; wl >= 0; wl--) {
                double re = hvp_case(I, c_lam, c_w, wl, d, h, fd, gp, gm);
                worst = fmax(worst, re);
                CHECK_MSG(re <= REL_TOL, "%s k=%zu: HVP (%s, h_lam %s, dir %d) FD rel err %g",
                          I->ns->name, I->k, fam[fi], wl ? "on" : "NULL", j, re);
                if (wl) memcpy(h2, h, np * sizeof *h);
            }
            /* h_w with h_lam NULL is the same as with h_lam (h holds the
             * h_lam == NULL result now). */
            CHECK_MSG(vec_max_rel_diff(I->nw, h + nl, h2 + nl) <= 1e-13,
                      "%s k=%zu: h_w depends on h_lam NULL (%s)", I->ns->name, I->k, fam[fi]);
            if (fi == 1 && nl) {
                /* c_lam NULL == c_lam all zeros */
                mlp_hvp_x(I->m, I->p, I->p + nl, I->x, I->y, I->n, zero, d + nl, h, h + nl);
                CHECK_MSG(vec_max_rel_diff(np, h, h2) <= 1e-13,
                          "%s k=%zu: c_lam NULL differs from c_lam = 0 by %g", I->ns->name, I->k,
                          vec_max_rel_diff(np, h, h2));
            }
        }
    }
    CHECK_MSG(redraws < MAX_REDRAW, "%s k=%zu: too many ReLU kinks", I->ns->name, I->k);
    /* Zero direction (c_lam NULL, c_w = 0) gives exactly zero. */
    for (size_t i = 0; i < np; i++) h[i] = 1.0;
    mlp_hvp_x(I->m, I->p, I->p + nl, I->x, I->y, I->n, NULL, zero, h, h + nl);
    CHECK_MSG(vec_nrm2(np, h) == 0.0, "%s k=%zu: HVP of the zero direction has norm %g",
              I->ns->name, I->k, vec_nrm2(np, h));

    /* The g_w (and loss) returned by the HVP equal mlp_grad's. */
    double lg = grad_at(I, I->p, g);
    mlp_feat_t *f = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(I->m, I->n, &f, &err) == HD_OK) {
        mlp_feat_compute(I->m, f, I->p, I->x, I->n);
        rand_dir(r, np, 0, np, d);
        for (int variant = 0; variant < 2; variant++) {
            const double *c_lam = variant ? NULL : d;
            double lh = mlp_hvp_f(I->m, f, I->p, I->p + nl, I->y, c_lam, d + nl, h, h + nl, gw);
            CHECK_NEAR(lh, lg, 1e-13 * fabs(lg));
            double md = vec_max_rel_diff(I->nw, gw, g + nl);
            CHECK_MSG(md <= 1e-13, "%s k=%zu: HVP g_w vs mlp_grad g_w max rel diff %g", I->ns->name,
                      I->k, md);
            if (variant == 0)
                printf("  HVP g_w vs grad g_w: %s\n", memcmp(gw, g + nl, I->nw * sizeof *gw)
                                                          ? "equal to 1e-13, not bitwise"
                                                          : "bit-identical");
        }
        mlp_feat_free(f);
    } else {
        CHECK(!"mlp_feat_new failed");
    }
    printf("  HVP vs FD of gradient: worst rel err %.2e over %s (redrawn %d)\n", worst,
           nl ? "3 families x 3 dirs x h_lam on/NULL" : "w dirs", redraws);
    free(d);
    free(h);
    free(fd);
    free(gp);
    free(gm);
    free(h2);
    free(zero);
    free(g);
    free(gw);
}

/* Symmetry of the (lam, w) Hessian: u.(Hv) == v.(Hu). The exact products
 * agree to rounding, so 1e-10 relative to max(|u.Hv|, |v.Hu|). */
static void check_symmetry(inst *I, rng_t *r) {
    size_t np = I->np, nl = I->nl;
    double *u = dalloc(np), *v = dalloc(np), *hu = dalloc(np), *hv = dalloc(np);
    /* pairs: full/full, w-only/lam-only (the off-diagonal blocks) */
    for (int pair = 0; pair < 3; pair++) {
        if (pair > 0 && nl == 0) break;
        if (pair == 0) {
            rand_dir(r, np, 0, np, u);
            rand_dir(r, np, 0, np, v);
        } else if (pair == 1) {
            rand_dir(r, np, nl, np, u);
            rand_dir(r, np, 0, nl, v);
        } else {
            rand_dir(r, np, 0, nl, u);
            rand_dir(r, np, 0, nl, v);
        }
        mlp_hvp_x(I->m, I->p, I->p + nl, I->x, I->y, I->n, u, u + nl, hu, hu + nl);
        mlp_hvp_x(I->m, I->p, I->p + nl, I->x, I->y, I->n, v, v + nl, hv, hv + nl);
        double a = vec_dot(np, u, hv), b = vec_dot(np, v, hu);
        double re = fabs(a - b) / fmax(fmax(fabs(a), fabs(b)), TINY);
        CHECK_MSG(re <= SYM_TOL, "%s k=%zu pair %d: u.Hv = %.17g, v.Hu = %.17g (rel %g)",
                  I->ns->name, I->k, pair, a, b, re);
        printf("  symmetry pair %d: u.Hv = %+.6e, rel diff %.1e\n", pair, a, re);
    }
    free(u);
    free(v);
    free(hu);
    free(hv);
}

static int same_bits(size_t n, const double *a, const double *b) {
    return n == 0 || memcmp(a, b, n * sizeof *a) == 0;
}

/* The mlp_feat_* path is bit-identical to the _x conveniences, whatever other
 * caches exist, and for a row count below max_n. */
static void check_feat_identity(inst *I, rng_t *r) {
    size_t np = I->np, nl = I->nl, nw = I->nw;
    size_t in = I->ns->widths[0], out = I->ns->widths[I->ns->nwidths - 1];
    double *g1 = dalloc(np), *g2 = dalloc(np), *h1 = dalloc(np), *h2 = dalloc(np), *c = dalloc(np),
           *o1 = dalloc(I->n * out), *p2 = dalloc(np), *x2 = dalloc(I->n * in),
           *y2 = dalloc(I->n * out);
    rand_dir(r, np, 0, np, c);
    make_params(I->ns, r, p2);
    make_batch(I->ns, r, I->n, x2, y2);
    mlp_feat_t *f = NULL, *fo = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(I->m, I->n, &f, &err) != HD_OK ||
        mlp_feat_new(I->m, I->n, &fo, &err) != HD_OK) {
        CHECK(!"mlp_feat_new failed");
        goto out;
    }
    size_t rows[2] = {I->n, I->n - 3};
    for (int ri = 0; ri < 2; ri++) {
        size_t n = rows[ri];
        mlp_feat_compute(I->m, f, I->p, I->x, n);
        CHECK_EQ_INT(mlp_feat_rows(f), n);
        /* Another cache at other (lam, x), and the network's own cache used
         * in between, must not disturb f. */
        mlp_feat_compute(I->m, fo, p2, x2, I->n);
        (void)mlp_loss_x(I->m, p2, p2 + nl, x2, y2, I->n);

        double lx = mlp_loss_x(I->m, I->p, I->p + nl, I->x, I->y, n);
        double lf = mlp_forward_f(I->m, f, I->p + nl, I->y, NULL);
        double lo = mlp_forward_f(I->m, f, I->p + nl, I->y, o1);
        CHECK(same_bits(1, &lx, &lf));
        CHECK(same_bits(1, &lx, &lo));

        double gx = mlp_grad_x(I->m, I->p, I->p + nl, I->x, I->y, n, g1, g1 + nl);
        double gf = mlp_grad_f(I->m, f, I->p, I->p + nl, I->y, g2, g2 + nl);
        CHECK(same_bits(1, &gx, &gf));
        CHECK_MSG(same_bits(np, g1, g2), "%s k=%zu n=%zu: grad_f != grad_x", I->ns->name, I->k, n);
        gx = mlp_grad_x(I->m, I->p, I->p + nl, I->x, I->y, n, NULL, g1 + nl);
        gf = mlp_grad_f(I->m, f, I->p, I->p + nl, I->y, NULL, g2 + nl);
        CHECK(same_bits(1, &gx, &gf));
        CHECK(same_bits(nw, g1 + nl, g2 + nl));

        for (int cl = 0; cl < 2; cl++) {
            const double *c_lam = cl ? NULL : c;
            double hx = mlp_hvp_x(I->m, I->p, I->p + nl, I->x, I->y, n, c_lam, c + nl, h1, h1 + nl);
            double hf = mlp_hvp_f(I->m, f, I->p, I->p + nl, I->y, c_lam, c + nl, h2, h2 + nl, NULL);
            CHECK(same_bits(1, &hx, &hf));
            CHECK_MSG(same_bits(np, h1, h2), "%s k=%zu n=%zu c_lam %s: hvp_f != hvp_x", I->ns->name,
                      I->k, n, cl ? "NULL" : "set");
        }
        /* The other cache still gives its own results after all this. */
        double l_other = mlp_forward_f(I->m, fo, p2 + nl, y2, NULL);
        double l_ref = mlp_loss_x(I->m, p2, p2 + nl, x2, y2, I->n);
        CHECK(same_bits(1, &l_other, &l_ref));
    }
out:
    mlp_feat_free(f);
    mlp_feat_free(fo);
    free(g1);
    free(g2);
    free(h1);
    free(h2);
    free(c);
    free(o1);
    free(p2);
    free(x2);
    free(y2);
}

/* Split passes (mlp_upper_grad, mlp_upper_hvp, mlp_lower_backward) against the
 * whole-batch products, which the FD checks above validate: over the full
 * row range they must give the same loss, g_w, g_lam, h_w and H_lw c_w (1e-13
 * relative, max-norm: the same products, possibly summed in another order).
 * mlp_lower_backward must be linear in its cotangent. Row sub-ranges: the
 * header does not say which rows of y are read nor how a range's loss is
 * normalised; as implemented, y points at the range's own first row and the
 * loss (hence every cotangent) is the mean over the range's rows, so the
 * whole-batch quantities are the row-weighted means of the ranges'. */
static void check_split_passes(inst *I, rng_t *r) {
    size_t np = I->np, nl = I->nl, nw = I->nw, n = I->n;
    size_t wk = I->ns->widths[I->k], out = I->ns->widths[I->ns->nwidths - 1];
    const double *lam = I->p, *w = I->p + nl;
    double *gref = dalloc(np), *href = dalloc(np), *cw = dalloc(nw), *gw = dalloc(nw),
           *gl = dalloc(nl), *dtop = dalloc(n * wk), *d2 = dalloc(n * wk), *gl2 = dalloc(nl),
           *gl3 = dalloc(nl), *gwa = dalloc(nw), *gwb = dalloc(nw), *gla = dalloc(nl),
           *glb = dalloc(nl), *mix = dalloc(np);
    mlp_feat_t *f = NULL;
    hd_err err;
    hd_err_clear(&err);
    if (mlp_feat_new(I->m, n, &f, &err) != HD_OK) {
        CHECK(!"mlp_feat_new failed");
        goto out;
    }
    mlp_feat_compute(I->m, f, lam, I->x, n);
    for (size_t i = 0; i < nw; i++) cw[i] = rng_normal(r);
    double lref = mlp_grad_f(I->m, f, lam, w, I->y, gref, gref + nl);
    mlp_hvp_f(I->m, f, lam, w, I->y, NULL, cw, href, href + nl, NULL);

    /* g_w alone (dtop NULL, allowed for every k) */
    double l0 = mlp_upper_grad(I->m, f, 0, n, lam, w, I->y, gw, NULL);
    CHECK_NEAR(l0, lref, 1e-13 * fabs(lref));
    CHECK_MSG(vec_max_rel_diff(nw, gw, gref + nl) <= 1e-13, "%s k=%zu: upper_grad g_w %g",
              I->ns->name, I->k, vec_max_rel_diff(nw, gw, gref + nl));
    double lh = mlp_upper_hvp(I->m, f, 0, n, lam, w, I->y, cw, gw, NULL);
    CHECK_NEAR(lh, lref, 1e-13 * fabs(lref));
    CHECK_MSG(vec_max_rel_diff(nw, gw, href + nl) <= 1e-13, "%s k=%zu: upper_hvp h_w %g",
              I->ns->name, I->k, vec_max_rel_diff(nw, gw, href + nl));
    if (nl == 0) goto out;

    /* g_lam = lower_backward(dtop), H_lw c_w = lower_backward(Rdtop) */
    mlp_upper_grad(I->m, f, 0, n, lam, w, I->y, gw, dtop);
    mlp_lower_backward(I->m, f, 0, n, lam, dtop, gl);
    CHECK_MSG(vec_max_rel_diff(nw, gw, gref + nl) <= 1e-13, "%s k=%zu: upper_grad g_w (dtop)",
              I->ns->name, I->k);
    CHECK_MSG(vec_max_rel_diff(nl, gl, gref) <= 1e-13, "%s k=%zu: lower_backward g_lam %g",
              I->ns->name, I->k, vec_max_rel_diff(nl, gl, gref));
    mlp_upper_hvp(I->m, f, 0, n, lam, w, I->y, cw, gw, dtop);
    mlp_lower_backward(I->m, f, 0, n, lam, dtop, gl);
    CHECK_MSG(vec_max_rel_diff(nw, gw, href + nl) <= 1e-13, "%s k=%zu: upper_hvp h_w (Rdtop)",
              I->ns->name, I->k);
    CHECK_MSG(vec_max_rel_diff(nl, gl, href) <= 1e-13, "%s k=%zu: lower_backward H_lw c %g",
              I->ns->name, I->k, vec_max_rel_diff(nl, gl, href));

    /* linearity in the cotangent */
    for (size_t i = 0; i < n * wk; i++) {
        dtop[i] = rng_normal(r);
        d2[i] = rng_normal(r);
    }
    mlp_lower_backward(I->m, f, 0, n, lam, dtop, gl);
    mlp_lower_backward(I->m, f, 0, n, lam, d2, gl2);
    for (size_t i = 0; i < n * wk; i++) d2[i] += dtop[i];
    mlp_lower_backward(I->m, f, 0, n, lam, d2, gl3);
    for (size_t i = 0; i < nl; i++) gl[i] += gl2[i];
    CHECK_MSG(vec_max_rel_diff(nl, gl, gl3) <= 1e-12, "%s k=%zu: lower_backward not linear %g",
              I->ns->name, I->k, vec_max_rel_diff(nl, gl, gl3));

    /* two row ranges [0, n1) and [n1, n) */
    size_t n1 = n / 2 - 1, n2 = n - n1;
    double la = mlp_upper_grad(I->m, f, 0, n1, lam, w, I->y, gwa, dtop);
    mlp_lower_backward(I->m, f, 0, n1, lam, dtop, gla);
    double lb = mlp_upper_grad(I->m, f, n1, n2, lam, w, I->y + n1 * out, gwb, dtop);
    mlp_lower_backward(I->m, f, n1, n2, lam, dtop, glb);
    double a = (double)n1 / (double)n, b = (double)n2 / (double)n;
    CHECK_NEAR(a * la + b * lb, lref, 1e-12 * fabs(lref));
    vec_lincomb(nl, mix, a, gla, b, glb);
    vec_lincomb(nw, mix + nl, a, gwa, b, gwb);
    CHECK_MSG(vec_max_rel_diff(np, mix, gref) <= 1e-12,
              "%s k=%zu: row-range gradients do not combine to the batch gradient (%g)",
              I->ns->name, I->k, vec_max_rel_diff(np, mix, gref));
    la = mlp_upper_hvp(I->m, f, 0, n1, lam, w, I->y, cw, gwa, dtop);
    mlp_lower_backward(I->m, f, 0, n1, lam, dtop, gla);
    lb = mlp_upper_hvp(I->m, f, n1, n2, lam, w, I->y + n1 * out, cw, gwb, dtop);
    mlp_lower_backward(I->m, f, n1, n2, lam, dtop, glb);
    vec_lincomb(nl, mix, a, gla, b, glb);
    vec_lincomb(nw, mix + nl, a, gwa, b, gwb);
    CHECK_MSG(vec_max_rel_diff(np, mix, href) <= 1e-12,
              "%s k=%zu: row-range HVPs do not combine to the batch HVP (%g)", I->ns->name, I->k,
              vec_max_rel_diff(np, mix, href));
out:
    mlp_feat_free(f);
    free(gref);
    free(href);
    free(cw);
    free(gw);
    free(gl);
    free(dtop);
    free(d2);
    free(gl2);
    free(gl3);
    free(gwa);
    free(gwb);
    free(gla);
    free(glb);
    free(mix);
}

/* The full gradient and HVP are functions of the full vector p = (lam, w)
 * only, whatever the split k: compare every k with the first one. */
static void check_across_k(inst *I, const double *g0, const double *h0, const double *d) {
    double *g = dalloc(I->np), *h = dalloc(I->np);
    grad_at(I, I->p, g);
    mlp_hvp_x(I->m, I->p, I->p + I->nl, I->x, I->y, I->n, d, d + I->nl, h, h + I->nl);
    double eg = vec_max_rel_diff(I->np, g, g0), eh = vec_max_rel_diff(I->np, h, h0);
    CHECK_MSG(eg <= 1e-12, "%s k=%zu: full gradient differs from k=0 by %g", I->ns->name, I->k, eg);
    CHECK_MSG(eh <= 1e-12, "%s k=%zu: full HVP differs from k=0 by %g", I->ns->name, I->k, eh);
    free(g);
    free(h);
}

static void run_net(const netspec *ns, const size_t *ks, size_t nks, uint64_t seed) {
    double *g0 = NULL, *h0 = NULL, *d0 = NULL;
    for (size_t t = 0; t < nks; t++) {
        inst I;
        inst_init(&I, ns, ks[t], seed);
        printf("%s, hyper_layers %zu (n_lam %zu, n_w %zu)\n", ns->name, I.k, I.nl, I.nw);
        rng_t r;
        rng_seed(&r, seed, ks[t], 0xd1, 0);
        check_reference_loss(&I);
        check_grad_components(&I, &r);
        check_grad_directions(&I, &r);
        check_hvp(&I, &r);
        check_symmetry(&I, &r);
        check_feat_identity(&I, &r);
        check_split_passes(&I, &r);
        if (t == 0) {
            g0 = dalloc(I.np);
            h0 = dalloc(I.np);
            d0 = dalloc(I.np);
            rand_dir(&r, I.np, 0, I.np, d0);
            grad_at(&I, I.p, g0);
            mlp_hvp_x(I.m, I.p, I.p + I.nl, I.x, I.y, I.n, d0, d0 + I.nl, h0, h0 + I.nl);
        } else {
            check_across_k(&I, g0, h0, d0);
        }
        inst_free(&I);
    }
    free(g0);
    free(h0);
    free(d0);
}

/* ---------------------------------------------------------------------- */

static void check_new_and_accessors(void) {
    const size_t w5[5] = {1, 100, 100, 100, 1};
    mlp_t *m = NULL;
    hd_err err;
    hd_err_clear(&err);
    CHECK(mlp_new(5, w5, MLP_ACT_RELU, MLP_LOSS_MSE, 3, 10, &m, &err) == HD_OK);
    if (!m) return;
    CHECK_EQ_INT(mlp_n_layers(m), 4);
    CHECK_EQ_INT(mlp_hyper_layers(m), 3);
    CHECK_EQ_INT(mlp_n_lam(m), 200 + 10100 + 10100);
    CHECK_EQ_INT(mlp_n_w(m), 101);
    CHECK_EQ_INT(mlp_in_dim(m), 1);
    CHECK_EQ_INT(mlp_out_dim(m), 1);
    CHECK_EQ_INT(mlp_max_batch(m), 10);
    for (size_t i = 0; i < 5; i++) CHECK_EQ_INT(mlp_width(m, i), w5[i]);
    CHECK(mlp_activation(m) == MLP_ACT_RELU);
    CHECK(mlp_loss_kind(m) == MLP_LOSS_MSE);
    /* Multiply-adds of the weight products, possibly counting the bias adds. */
    double macs = mlp_forward_macs(m, 10), lo = 10.0 * (100 + 10000 + 10000 + 100),
           hi = 10.0 * (200 + 10100 + 10100 + 101);
    CHECK_MSG(macs >= lo && macs <= hi, "mlp_forward_macs = %g, expected in [%g, %g]", macs, lo,
              hi);
    mlp_free(m);
    mlp_free(NULL);

    const size_t w4[4] = {20, 32, 32, 5};
    m = NULL;
    CHECK(mlp_new(4, w4, MLP_ACT_TANH, MLP_LOSS_XENT, 0, 16, &m, &err) == HD_OK);
    if (m) {
        CHECK_EQ_INT(mlp_n_lam(m), 0);
        CHECK_EQ_INT(mlp_n_w(m), 672 + 1056 + 165);
        CHECK(mlp_activation(m) == MLP_ACT_TANH);
        CHECK(mlp_loss_kind(m) == MLP_LOSS_XENT);
        mlp_free(m);
    }

    /* Invalid arguments: HD_EINVAL, *out untouched, err filled. */
    const size_t w0[3] = {4, 0, 2};
    size_t wbig[MLP_MAX_LAYERS + 2];
    for (size_t i = 0; i < MLP_MAX_LAYERS + 2; i++) wbig[i] = 3;
    struct {
        size_t nw;
        const size_t *w;
        size_t k, batch;
        const char *what;
    } bad[] = {
        {1, w5, 0, 10, "one width"},
        {0, w5, 0, 10, "no widths"},
        {3, w0, 0, 10, "zero width"},
        {5, w5, 4, 10, "all layers hyper"},
        {5, w5, 7, 10, "hyper_layers > layers"},
        {5, w5, 1, 0, "max_batch 0"},
        {MLP_MAX_LAYERS + 2, wbig, 0, 4, "too many layers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mlp_t *mm = NULL;
        hd_err_clear(&err);
        hd_rc rc = mlp_new(bad[i].nw, bad[i].w, MLP_ACT_RELU, MLP_LOSS_MSE, bad[i].k, bad[i].batch,
                           &mm, &err);
        CHECK_MSG(rc == HD_EINVAL, "mlp_new(%s) returned %s", bad[i].what, hd_rc_name(rc));
        CHECK_MSG(mm == NULL, "mlp_new(%s) wrote *out", bad[i].what);
        CHECK_MSG(err.code == HD_EINVAL && err.msg[0] != '\0', "mlp_new(%s) err not set",
                  bad[i].what);
        mlp_free(mm);
    }
    /* The largest valid depth is accepted. */
    m = NULL;
    CHECK(mlp_new(MLP_MAX_LAYERS + 1, wbig, MLP_ACT_TANH, MLP_LOSS_MSE, MLP_MAX_LAYERS - 1, 2, &m,
                  &err) == HD_OK);
    mlp_free(m);
}

static void check_init(void) {
    const netspec *nets[2] = {&NET_RELU, &NET_TANH};
    for (int ni = 0; ni < 2; ni++) {
        const netspec *ns = nets[ni];
        for (size_t k = 0; k < 2; k++) {
            mlp_t *m = NULL;
            hd_err err;
            hd_err_clear(&err);
            if (mlp_new(ns->nwidths, ns->widths, ns->act, ns->loss, k, 4, &m, &err) != HD_OK) {
                CHECK(!"mlp_new");
                continue;
            }
            size_t nl = mlp_n_lam(m), nw = mlp_n_w(m), np = nl + nw;
            double *a = dalloc(np), *b = dalloc(np), *c = dalloc(np);
            /* lam may be NULL when there are no hyper layers */
            mlp_init_params(m, 7, nl ? a : NULL, a + nl);
            mlp_init_params(m, 7, nl ? b : NULL, b + nl);
            mlp_init_params(m, 8, nl ? c : NULL, c + nl);
            CHECK_MSG(same_bits(np, a, b), "%s k=%zu: init not deterministic", ns->name, k);
            size_t differ = 0;
            for (size_t i = 0; i < np; i++) differ += (a[i] != c[i]);
            CHECK_MSG(differ * 100 >= np * 99, "%s k=%zu: seeds 7 and 8 share %zu of %zu values",
                      ns->name, k, np - differ, np);
            /* Per layer and per block (W, b): within +-1/sqrt(fan_in), and
             * spread over the interval (blocks of >= 100 values reach 80% of
             * the bound and have mean |x| / bound near 1/2). */
            size_t off = 0;
            for (size_t l = 0; l + 1 < ns->nwidths; l++) {
                size_t in = ns->widths[l], out = ns->widths[l + 1];
                double bd = 1.0 / sqrt((double)in);
                size_t blk[2][2] = {{off, out * in}, {off + out * in, out}};
                for (int bi = 0; bi < 2; bi++) {
                    size_t st = blk[bi][0], sz = blk[bi][1], outside = 0;
                    double mx = 0.0, sa = 0.0;
                    for (size_t i = st; i < st + sz; i++) {
                        outside += (fabs(a[i]) > bd);
                        mx = fmax(mx, fabs(a[i]));
                        sa += fabs(a[i]);
                    }
                    CHECK_MSG(outside == 0, "%s layer %zu %s: %zu values beyond %g", ns->name, l,
                              bi ? "b" : "W", outside, bd);
                    if (sz >= 100) {
                        CHECK_MSG(mx >= 0.8 * bd, "%s layer %zu %s: max %g, bound %g", ns->name, l,
                                  bi ? "b" : "W", mx, bd);
                        /* mean of |U(-1,1)| is 1/2, sd 0.29/sqrt(sz) <= 0.029 */
                        CHECK_NEAR(sa / (double)sz / bd, 0.5, 6.0 * 0.29 / sqrt((double)sz));
                    }
                }
                off += out * (in + 1);
            }
            free(a);
            free(b);
            free(c);
            mlp_free(m);
        }
    }
}

int main(void) {
    check_new_and_accessors();
    check_init();
    const size_t k_relu[3] = {0, 1, 3};
    const size_t k_tanh[3] = {0, 1, 2}; /* 3 layers: k = 3 would leave no w */
    run_net(&NET_RELU, k_relu, 3, 1001);
    run_net(&NET_TANH, k_tanh, 3, 2002);
    printf("FD step h = %g along unit directions, tolerance %g relative\n", FD_H, REL_TOL);
    return check_finish("test_mlp_fd");
}
