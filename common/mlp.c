/* MLP forward, gradient and Pearlmutter R-operator HVP (ALGORITHM.md section
 * 2), float64, row-major activations (n, width), every product a CBLAS call.
 *
 * Layers are indexed l = 1..L by their output: Z_l = A_{l-1} W_l^T + b_l,
 * A_l = act(Z_l) for l < L, A_L = Z_L. A_0 = x. Layers 1..k hold lam. The
 * R-operator of a quantity q along direction d = (c_lam, c_w) is written Rq:
 *   RZ_l = RA_{l-1} W_l^T + A_{l-1} V_l^T + u_l,   RA_l = act'(Z_l) RZ_l
 *   RdZ_L = R(dL/df),  RdW_l = RdZ_l^T A_{l-1} + dZ_l^T RA_{l-1}
 *   RdA_{l-1} = RdZ_l W_l + dZ_l V_l
 *   RdZ_{l-1} = RdA_{l-1} act'(Z_{l-1}) + dA_{l-1} act''(Z_{l-1}) RZ_{l-1}
 * where (V_l, u_l) is the direction's part for layer l. With no lam part the
 * R-quantities vanish below layer k+1, so the lam layers cost one backward. */
#include "mlp.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct mlp {
    size_t L;                          /* number of linear layers, >= 1 */
    size_t k;                          /* hyper layers, 0 <= k < L */
    size_t widths[MLP_MAX_LAYERS + 1]; /* widths[0] input .. widths[L] output */
    size_t off[MLP_MAX_LAYERS + 1];    /* offset of layer l+1's params in lam||w */
    size_t max_batch;                  /* rows per call */
    size_t max_width;                  /* max of widths */
    mlp_act act;
    mlp_loss loss;
    double *Z[MLP_MAX_LAYERS + 1];  /* pre-activations of layers 1..L (upper ones used) */
    double *A[MLP_MAX_LAYERS + 1];  /* activations of layers 1..L */
    double *RZ[MLP_MAX_LAYERS + 1]; /* R-forward pre-activations */
    double *RA[MLP_MAX_LAYERS + 1]; /* R-forward activations */
    double *buf[4];                 /* backward buffers, 2 x max_batch x max_width each */
    double *ones;                   /* max_batch ones, for bias sums */
    double *rowtmp;                 /* max_batch scratch (softmax) */
    mlp_feat_t *own;                /* cache used by the _x conveniences */
};

struct mlp_feat {
    size_t max_n;                  /* rows it can hold */
    size_t n;                      /* rows currently cached */
    size_t k;                      /* layers cached (the hyper layers) */
    const double *x;               /* borrowed input rows (n, widths[0]) */
    double *Z[MLP_MAX_LAYERS + 1]; /* layers 1..k */
    double *A[MLP_MAX_LAYERS + 1]; /* layers 1..k */
};

/* Parameters of layer l (1-based) inside lam or w. */
static const double *layer_params(const mlp_t *m, size_t l, const double *lam, const double *w) {
    if (l <= m->k) return lam + m->off[l - 1];
    return w + (m->off[l - 1] - m->off[m->k]);
}
static double *layer_out(const mlp_t *m, size_t l, double *lam, double *w) {
    if (l <= m->k) return lam + m->off[l - 1];
    return w + (m->off[l - 1] - m->off[m->k]);
}

hd_rc mlp_new(size_t nwidths, const size_t *widths, mlp_act act, mlp_loss loss, size_t hyper_layers,
              size_t max_batch, mlp_t **out, hd_err *err) {
    if (nwidths < 2 || nwidths > MLP_MAX_LAYERS + 1)
        return hd_err_set(err, HD_EINVAL, "model.layers: need 2 to %d widths, got %zu",
                          MLP_MAX_LAYERS + 1, nwidths);
    if (hyper_layers >= nwidths - 1)
        return hd_err_set(err, HD_EINVAL,
                          "model.hyper_layers: %zu leaves no inner layer (network has %zu layers)",
                          hyper_layers, nwidths - 1);
    if (act != MLP_ACT_RELU && act != MLP_ACT_TANH)
        return hd_err_set(err, HD_EINVAL, "model.activation: unknown");
    if (loss != MLP_LOSS_MSE && loss != MLP_LOSS_XENT)
        return hd_err_set(err, HD_EINVAL, "model.loss: unknown");
    if (max_batch < 1 || max_batch > (1u << 24))
        return hd_err_set(err, HD_EINVAL, "batch size %zu out of range", max_batch);
    mlp_t *m = calloc(1, sizeof *m);
    if (!m) return hd_err_set(err, HD_ENOMEM, "mlp_new: out of memory");
    m->L = nwidths - 1;
    m->k = hyper_layers;
    m->act = act;
    m->loss = loss;
    m->max_batch = max_batch;
    size_t total = 0;
    for (size_t i = 0; i < nwidths; i++) {
        if (widths[i] < 1 || widths[i] > (1u << 20)) {
            free(m);
            return hd_err_set(err, HD_EINVAL, "model.layers[%zu]: width %zu out of range", i,
                              widths[i]);
        }
        m->widths[i] = widths[i];
        if (widths[i] > m->max_width) m->max_width = widths[i];
    }
    for (size_t l = 1; l <= m->L; l++) {
        m->off[l - 1] = total;
        total += widths[l] * widths[l - 1] + widths[l];
    }
    m->off[m->L] = total;
    size_t big = max_batch * m->max_width;
    int fail = 0;
    for (size_t l = 1; l <= m->L; l++) {
        size_t sz = max_batch * widths[l];
        m->Z[l] = malloc(sz * sizeof(double));
        m->A[l] = malloc(sz * sizeof(double));
        m->RZ[l] = malloc(sz * sizeof(double));
        m->RA[l] = malloc(sz * sizeof(double));
        fail |= !m->Z[l] || !m->A[l] || !m->RZ[l] || !m->RA[l];
    }
    for (int i = 0; i < 4; i++) fail |= !(m->buf[i] = malloc(2 * big * sizeof(double)));
    m->ones = malloc(max_batch * sizeof(double));
    m->rowtmp = malloc(max_batch * sizeof(double));
    fail |= !m->ones || !m->rowtmp;
    if (fail || mlp_feat_new(m, max_batch, &m->own, err) != HD_OK) {
        mlp_free(m);
        return hd_err_set(err, HD_ENOMEM, "mlp_new: out of memory");
    }
    for (size_t i = 0; i < max_batch; i++) m->ones[i] = 1.0;
    *out = m;
    return HD_OK;
}

void mlp_free(mlp_t *m) {
    if (!m) return;
    for (size_t l = 1; l <= m->L; l++) {
        free(m->Z[l]);
        free(m->A[l]);
        free(m->RZ[l]);
        free(m->RA[l]);
    }
    for (int i = 0; i < 4; i++) free(m->buf[i]);
    free(m->ones);
    free(m->rowtmp);
    mlp_feat_free(m->own);
    free(m);
}

size_t mlp_n_lam(const mlp_t *m) { return m->off[m->k]; }
size_t mlp_n_w(const mlp_t *m) { return m->off[m->L] - m->off[m->k]; }
size_t mlp_n_layers(const mlp_t *m) { return m->L; }
size_t mlp_hyper_layers(const mlp_t *m) { return m->k; }
size_t mlp_in_dim(const mlp_t *m) { return m->widths[0]; }
size_t mlp_out_dim(const mlp_t *m) { return m->widths[m->L]; }
size_t mlp_max_batch(const mlp_t *m) { return m->max_batch; }
size_t mlp_width(const mlp_t *m, size_t i) { return i <= m->L ? m->widths[i] : 0; }
mlp_act mlp_activation(const mlp_t *m) { return m->act; }
mlp_loss mlp_loss_kind(const mlp_t *m) { return m->loss; }

double mlp_forward_macs(const mlp_t *m, size_t n) {
    double macs = 0.0;
    for (size_t l = 1; l <= m->L; l++)
        macs += (double)n * (double)m->widths[l] * (double)m->widths[l - 1];
    return macs;
}

void mlp_init_params(const mlp_t *m, uint64_t seed, double *lam, double *w) {
    /* splitmix-style stream per layer so that the values of one layer do not
     * depend on the widths of the others. */
    for (size_t l = 1; l <= m->L; l++) {
        double *p = layer_out(m, l, lam, w);
        size_t fan_in = m->widths[l - 1], nout = m->widths[l];
        double bound = 1.0 / sqrt((double)fan_in);
        uint64_t x =
            seed * 0x9e3779b97f4a7c15ULL + l * 0xd1b54a32d192ed03ULL + 0x632be59bd9b4e019ULL;
        size_t cnt = nout * fan_in + nout;
        for (size_t i = 0; i < cnt; i++) {
            uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
            z ^= z >> 31;
            double u = (double)(z >> 11) * 0x1.0p-53;
            p[i] = (2.0 * u - 1.0) * bound;
        }
    }
}

hd_rc mlp_feat_new(const mlp_t *m, size_t max_n, mlp_feat_t **out, hd_err *err) {
    mlp_feat_t *f = calloc(1, sizeof *f);
    if (!f) return hd_err_set(err, HD_ENOMEM, "mlp_feat_new: out of memory");
    f->max_n = max_n;
    f->k = m->k;
    for (size_t l = 1; l <= m->k; l++) {
        f->Z[l] = malloc(max_n * m->widths[l] * sizeof(double));
        f->A[l] = malloc(max_n * m->widths[l] * sizeof(double));
        if (!f->Z[l] || !f->A[l]) {
            mlp_feat_free(f);
            return hd_err_set(err, HD_ENOMEM, "mlp_feat_new: out of memory");
        }
    }
    *out = f;
    return HD_OK;
}

void mlp_feat_free(mlp_feat_t *f) {
    if (!f) return;
    for (size_t l = 1; l <= f->k; l++) {
        free(f->Z[l]);
        free(f->A[l]);
    }
    free(f);
}

size_t mlp_feat_rows(const mlp_feat_t *f) { return f->n; }

/* act'(z) given z and a = act(z). */
static inline double act_d1(mlp_act act, double z, double a) {
    if (act == MLP_ACT_RELU) return z > 0.0 ? 1.0 : 0.0;
    return 1.0 - a * a;
}
/* act''(z) given a = act(z). */
static inline double act_d2(mlp_act act, double a) {
    if (act == MLP_ACT_RELU) return 0.0;
    return -2.0 * a * (1.0 - a * a);
}

/* Z = A_prev W^T + b, then A = act(Z) unless last layer. */
static void layer_forward(const mlp_t *m, size_t l, size_t n, const double *Aprev, const double *P,
                          double *Z, double *A) {
    size_t in = m->widths[l - 1], o = m->widths[l];
    const double *W = P, *b = P + o * in;
    for (size_t i = 0; i < n; i++) memcpy(Z + i * o, b, o * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)o, (int)in, 1.0, Aprev,
                (int)in, W, (int)in, 1.0, Z, (int)o);
    if (l == m->L) return;
    size_t cnt = n * o;
    if (m->act == MLP_ACT_RELU)
        for (size_t i = 0; i < cnt; i++) A[i] = Z[i] > 0.0 ? Z[i] : 0.0;
    else
        for (size_t i = 0; i < cnt; i++) A[i] = tanh(Z[i]);
}

void mlp_feat_compute(const mlp_t *m, mlp_feat_t *f, const double *lam, const double *x, size_t n) {
    HD_ASSERT(n <= f->max_n && n <= m->max_batch && f->k == m->k);
    f->n = n;
    f->x = x;
    const double *prev = x;
    for (size_t l = 1; l <= m->k; l++) {
        layer_forward(m, l, n, prev, layer_params(m, l, lam, NULL), f->Z[l], f->A[l]);
        prev = f->A[l];
    }
}

/* Pointer tables for a call: lam layers from the cache, the rest from m. */
typedef struct {
    const double *A[MLP_MAX_LAYERS + 1];
    const double *Z[MLP_MAX_LAYERS + 1];
    size_t n;
} acts_t;

static void acts_bind(const mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, acts_t *a) {
    HD_ASSERT(r0 + n <= f->n && n <= m->max_batch);
    a->n = n;
    a->A[0] = f->x + r0 * m->widths[0];
    a->Z[0] = NULL;
    for (size_t l = 1; l <= m->L; l++) {
        a->A[l] = l <= m->k ? f->A[l] + r0 * m->widths[l] : m->A[l];
        a->Z[l] = l <= m->k ? f->Z[l] + r0 * m->widths[l] : m->Z[l];
    }
    a->A[m->L] = a->Z[m->L];
}

/* Forward through the w layers; returns the loss and writes dL/df into G. */
static double upper_forward(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t rows, const double *w,
                            const double *y, acts_t *a, double *G) {
    acts_bind(m, f, r0, rows, a);
    size_t n = a->n;
    for (size_t l = m->k + 1; l <= m->L; l++)
        layer_forward(m, l, n, a->A[l - 1], layer_params(m, l, NULL, w), m->Z[l], m->A[l]);
    const double *F = m->Z[m->L];
    size_t o = m->widths[m->L];
    double loss = 0.0;
    if (m->loss == MLP_LOSS_MSE) {
        double scale = 1.0 / ((double)n * (double)o);
        for (size_t i = 0; i < n * o; i++) {
            double d = F[i] - y[i];
            loss += d * d;
            if (G) G[i] = 2.0 * d * scale;
        }
        return loss * scale;
    }
    /* softmax cross-entropy; G temporarily holds probabilities. */
    for (size_t i = 0; i < n; i++) {
        const double *z = F + i * o, *t = y + i * o;
        double mx = z[0];
        for (size_t j = 1; j < o; j++) mx = fmax(mx, z[j]);
        double se = 0.0;
        for (size_t j = 0; j < o; j++) se += exp(z[j] - mx);
        double lse = mx + log(se), sy = 0.0;
        for (size_t j = 0; j < o; j++) {
            loss -= t[j] * (z[j] - lse);
            sy += t[j];
        }
        m->rowtmp[i] = sy;
        if (G)
            for (size_t j = 0; j < o; j++) G[i * o + j] = (exp(z[j] - lse) * sy - t[j]) / (double)n;
    }
    return loss / (double)n;
}

double mlp_forward_f(mlp_t *m, const mlp_feat_t *f, const double *w, const double *y, double *out) {
    acts_t a;
    double loss = upper_forward(m, f, 0, f->n, w, y, &a, NULL);
    if (out) memcpy(out, m->Z[m->L], a.n * m->widths[m->L] * sizeof(double));
    return loss;
}

/* dW_l = dZ^T A_prev (+beta), and unless weights_only db_l = colsum dZ. */
static void layer_param_grad_w(const mlp_t *m, size_t l, size_t n, const double *dZ,
                               const double *Aprev, double *g, double beta, int weights_only) {
    size_t in = m->widths[l - 1], o = m->widths[l];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)o, (int)in, (int)n, 1.0, dZ, (int)o,
                Aprev, (int)in, beta, g, (int)in);
    if (weights_only) return;
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)o, 1.0, dZ, (int)o, m->ones, 1, beta,
                g + o * in, 1);
}

static void layer_param_grad(const mlp_t *m, size_t l, size_t n, const double *dZ,
                             const double *Aprev, double *g, double beta) {
    layer_param_grad_w(m, l, n, dZ, Aprev, g, beta, 0);
}

/* dA_prev = dZ W (+beta). */
static void layer_input_grad(const mlp_t *m, size_t l, size_t n, const double *dZ, const double *P,
                             double *dA, double beta) {
    size_t in = m->widths[l - 1], o = m->widths[l];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)in, (int)o, 1.0, dZ, (int)o,
                P, (int)in, beta, dA, (int)in);
}

/* Gradient over rows [r0, r0+n). With dtop (g_lam NULL, k >= 1) the
 * cotangent of the top lam layer's activations A_k is written to dtop. */
static double grad_core(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n_rows, const double *lam,
                        const double *w, const double *y, double *g_lam, double *g_w,
                        double *dtop) {
    acts_t a;
    double *dZ = m->buf[0], *dA = m->buf[1];
    double loss = upper_forward(m, f, r0, n_rows, w, y, &a, dZ);
    size_t n = a.n, lo = g_lam ? 1 : m->k + 1;
    for (size_t l = m->L; l >= lo; l--) {
        layer_param_grad(m, l, n, dZ, a.A[l - 1], layer_out(m, l, g_lam, g_w), 0.0);
        if (l == lo) {
            if (dtop) layer_input_grad(m, l, n, dZ, layer_params(m, l, lam, w), dtop, 0.0);
            break;
        }
        layer_input_grad(m, l, n, dZ, layer_params(m, l, lam, w), dA, 0.0);
        const double *Zp = a.Z[l - 1], *Ap = a.A[l - 1];
        size_t cnt = n * m->widths[l - 1];
        for (size_t i = 0; i < cnt; i++) dA[i] *= act_d1(m->act, Zp[i], Ap[i]);
        double *t = dZ;
        dZ = dA;
        dA = t;
    }
    return loss;
}

double mlp_grad_f(mlp_t *m, const mlp_feat_t *f, const double *lam, const double *w,
                  const double *y, double *g_lam, double *g_w) {
    return grad_core(m, f, 0, f->n, lam, w, y, g_lam, g_w, NULL);
}

/* HVP over rows [r0, r0+n). With Rdtop (h_lam and c_lam NULL, k >= 1) the
 * R-cotangent of A_k is written to Rdtop: the lam block is then
 * mlp_lower_backward(Rdtop). */
static double hvp_core(mlp_t *m, const mlp_feat_t *f, size_t r0_rows, size_t n_rows,
                       const double *lam, const double *w, const double *y, const double *c_lam,
                       const double *c_w, double *h_lam, double *h_w, double *g_w, double *Rdtop) {
    acts_t a;
    /* buf[0] holds [RdZ; dZ] of the output layer: n rows each. */
    double *RdZ = m->buf[0], *dZ = m->buf[0] + n_rows * m->widths[m->L];
    double loss = upper_forward(m, f, r0_rows, n_rows, w, y, &a, dZ);
    size_t n = a.n, L = m->L, k = m->k;

    /* R-forward. Layers below `r0` have zero R-quantities. */
    size_t r0 = c_lam ? 1 : k + 1;
    const double *RAprev = NULL; /* NULL = zero */
    for (size_t l = r0; l <= L; l++) {
        size_t in = m->widths[l - 1], o = m->widths[l];
        const double *D = layer_params(m, l, c_lam, c_w); /* direction (V_l, u_l) */
        double *RZl = m->RZ[l];
        for (size_t i = 0; i < n; i++) memcpy(RZl + i * o, D + o * in, o * sizeof(double));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)o, (int)in, 1.0,
                    a.A[l - 1], (int)in, D, (int)in, 1.0, RZl, (int)o);
        if (RAprev)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)o, (int)in, 1.0,
                        RAprev, (int)in, layer_params(m, l, lam, w), (int)in, 1.0, RZl, (int)o);
        if (l < L) {
            size_t cnt = n * o;
            const double *Zl = a.Z[l], *Al = a.A[l];
            for (size_t i = 0; i < cnt; i++) m->RA[l][i] = act_d1(m->act, Zl[i], Al[i]) * RZl[i];
            RAprev = m->RA[l];
        }
    }

    /* R of the output gradient. */
    size_t o = m->widths[L];
    const double *RF = m->RZ[L];
    if (m->loss == MLP_LOSS_MSE) {
        double scale = 2.0 / ((double)n * (double)o);
        for (size_t i = 0; i < n * o; i++) RdZ[i] = scale * RF[i];
    } else {
        /* dZ holds (p*sy - t)/n; recover p from the logits. */
        const double *F = m->Z[L];
        for (size_t i = 0; i < n; i++) {
            const double *z = F + i * o, *rz = RF + i * o;
            double mx = z[0];
            for (size_t j = 1; j < o; j++) mx = fmax(mx, z[j]);
            double se = 0.0;
            for (size_t j = 0; j < o; j++) se += exp(z[j] - mx);
            double lse = mx + log(se), prz = 0.0;
            for (size_t j = 0; j < o; j++) prz += exp(z[j] - lse) * rz[j];
            double sy = m->rowtmp[i];
            for (size_t j = 0; j < o; j++)
                RdZ[i * o + j] = sy * exp(z[j] - lse) * (rz[j] - prz) / (double)n;
        }
    }

    /* Backward and R-backward together, on stacked rows: P holds [RdZ; dZ]
     * (2n x o), so that [RdZ; dZ] W is one product giving RdZ W and dZ W, and
     * RdW = [RdZ; dZ]^T [A; RA] is one product over 2n rows. Below r0 the
     * R-quantities of the forward pass are zero, so only RdZ travels on. */
    size_t lo = h_lam ? 1 : k + 1;
    double *Pb = RdZ, *Qb = m->buf[1], *Sb = m->buf[2];
    for (size_t l = L; l >= lo; l--) {
        size_t in = m->widths[l - 1], ol = m->widths[l];
        double *RdZl = Pb, *dZl = Pb + n * ol;
        const double *Aprev = a.A[l - 1];
        int rprev = (l - 1 >= r0) && (l - 1 >= 1); /* RA_{l-1} nonzero */
        double *H = layer_out(m, l, h_lam, h_w);
        if (rprev) {
            memcpy(Sb, Aprev, n * in * sizeof(double));
            memcpy(Sb + n * in, m->RA[l - 1], n * in * sizeof(double));
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ol, (int)in, (int)(2 * n),
                        1.0, Pb, (int)ol, Sb, (int)in, 0.0, H, (int)in);
        } else {
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ol, (int)in, (int)n, 1.0,
                        RdZl, (int)ol, Aprev, (int)in, 0.0, H, (int)in);
        }
        cblas_dgemv(CblasRowMajor, CblasTrans, (int)n, (int)ol, 1.0, RdZl, (int)ol, m->ones, 1, 0.0,
                    H + ol * in, 1);
        if (g_w && l > k) layer_param_grad(m, l, n, dZl, Aprev, layer_out(m, l, NULL, g_w), 0.0);
        const double *W = layer_params(m, l, lam, w);
        if (l == lo) {
            if (Rdtop) {
                /* RdA_k = RdZ W + dZ V (layer k+1 always carries the direction). */
                layer_input_grad(m, l, n, RdZl, W, Rdtop, 0.0);
                layer_input_grad(m, l, n, dZl, layer_params(m, l, c_lam, c_w), Rdtop, 1.0);
            }
            break;
        }
        int has_dir = l >= r0;                                /* V_l nonzero */
        int need_plain = (l - 1 >= r0) || (g_w && l - 1 > k); /* dZ_{l-1} needed below */
        /* [RdA; dA] = [RdZ; dZ] W, then RdA += dZ V */
        layer_input_grad(m, l, need_plain ? 2 * n : n, Pb, W, Qb, 0.0);
        double *RdAl = Qb, *dAl = Qb + n * in;
        if (has_dir) layer_input_grad(m, l, n, dZl, layer_params(m, l, c_lam, c_w), RdAl, 1.0);
        size_t cnt = n * in;
        const double *Zp = a.Z[l - 1], *Ap = a.A[l - 1];
        if (need_plain && l - 1 >= r0) {
            const double *RZp = m->RZ[l - 1];
            for (size_t i = 0; i < cnt; i++)
                RdAl[i] = RdAl[i] * act_d1(m->act, Zp[i], Ap[i]) +
                          dAl[i] * act_d2(m->act, Ap[i]) * RZp[i];
        } else {
            for (size_t i = 0; i < cnt; i++) RdAl[i] *= act_d1(m->act, Zp[i], Ap[i]);
        }
        if (need_plain)
            for (size_t i = 0; i < cnt; i++) dAl[i] *= act_d1(m->act, Zp[i], Ap[i]);
        double *t = Pb;
        Pb = Qb;
        Qb = t;
    }
    /* g_w for w layers below lo cannot happen: lo <= k + 1. */
    return loss;
}

double mlp_hvp_f(mlp_t *m, const mlp_feat_t *f, const double *lam, const double *w, const double *y,
                 const double *c_lam, const double *c_w, double *h_lam, double *h_w, double *g_w) {
    return hvp_core(m, f, 0, f->n, lam, w, y, c_lam, c_w, h_lam, h_w, g_w, NULL);
}

double mlp_upper_loss(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *w,
                      const double *y) {
    acts_t a;
    return upper_forward(m, f, r0, n, w, y, &a, NULL);
}

double mlp_upper_grad(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                      const double *w, const double *y, double *g_w, double *dtop) {
    HD_ASSERT(!dtop || m->k >= 1);
    return grad_core(m, f, r0, n, lam, w, y, NULL, g_w, dtop);
}

double mlp_upper_hvp(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                     const double *w, const double *y, const double *c_w, double *h_w,
                     double *Rdtop) {
    HD_ASSERT(!Rdtop || m->k >= 1);
    return hvp_core(m, f, r0, n, lam, w, y, NULL, c_w, NULL, h_w, NULL, Rdtop);
}

void mlp_lower_backward(mlp_t *m, const mlp_feat_t *f, size_t r0, size_t n, const double *lam,
                        const double *dtop, double *g_lam) {
    size_t k = m->k;
    HD_ASSERT(k >= 1 && r0 + n <= f->n && n <= m->max_batch);
    double *dZ = m->buf[0], *dA = m->buf[1];
    /* dZ_k = dtop * act'(Z_k) */
    size_t cnt = n * m->widths[k];
    const double *Zk = f->Z[k] + r0 * m->widths[k], *Ak = f->A[k] + r0 * m->widths[k];
    for (size_t i = 0; i < cnt; i++) dZ[i] = dtop[i] * act_d1(m->act, Zk[i], Ak[i]);
    for (size_t l = k; l >= 1; l--) {
        const double *Aprev =
            l == 1 ? f->x + r0 * m->widths[0] : f->A[l - 1] + r0 * m->widths[l - 1];
        layer_param_grad(m, l, n, dZ, Aprev, layer_out(m, l, g_lam, NULL), 0.0);
        if (l == 1) break;
        layer_input_grad(m, l, n, dZ, layer_params(m, l, lam, NULL), dA, 0.0);
        size_t c2 = n * m->widths[l - 1];
        const double *Zp = f->Z[l - 1] + r0 * m->widths[l - 1],
                     *Ap = f->A[l - 1] + r0 * m->widths[l - 1];
        for (size_t i = 0; i < c2; i++) dA[i] *= act_d1(m->act, Zp[i], Ap[i]);
        double *t = dZ;
        dZ = dA;
        dA = t;
    }
}

double mlp_loss_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                  size_t n) {
    mlp_feat_compute(m, m->own, lam, x, n);
    return mlp_forward_f(m, m->own, w, y, NULL);
}

double mlp_grad_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                  size_t n, double *g_lam, double *g_w) {
    mlp_feat_compute(m, m->own, lam, x, n);
    return mlp_grad_f(m, m->own, lam, w, y, g_lam, g_w);
}

double mlp_hvp_x(mlp_t *m, const double *lam, const double *w, const double *x, const double *y,
                 size_t n, const double *c_lam, const double *c_w, double *h_lam, double *h_w) {
    mlp_feat_compute(m, m->own, lam, x, n);
    return mlp_hvp_f(m, m->own, lam, w, y, c_lam, c_w, h_lam, h_w, NULL);
}
