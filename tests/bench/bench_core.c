/* Micro-benchmark of the numerical core (common/mlp.h, common/inner.h):
 * microseconds per forward, gradient, Hessian-vector product (ALGORITHM.md
 * section 2) and Phi VJP, on the reference 1-100-100-100-1 ReLU MSE network
 * (hyper_layers 3, batch 10: the sinusoid task of section 8) and on a
 * 784-256-256-10 ReLU softmax network (hyper_layers 1, batch 128: MNIST
 * size). Single-threaded OpenBLAS, as the worker runs it.
 *
 * Each figure is the median over samples of one call (or of a group of calls
 * timed together when one call is shorter than 20 us, to keep the clock
 * overhead out), with samples collected until 0.2 s have been spent on the
 * measurement (and at least 25 samples). Times come from
 * clock_gettime(CLOCK_MONOTONIC). */
#include <cblas.h> /* also declares openblas_set_num_threads(int) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inner.h"
#include "mlp.h"
#include "rng.h"

#define MIN_SECONDS 0.2
#define MIN_SAMPLES 25
#define MAX_SAMPLES 65536
#define GROUP_MIN_US 20.0

typedef struct {
    mlp_t *m;
    mlp_feat_t *f; /* features of x at lam */
    inner_cfg cfg;
    size_t n, nl, nw;
    double *lam, *w, *x, *y, *v;
    double *c_lam, *c_w; /* HVP direction */
    double *g_lam, *g_w, *h_lam, *h_w;
    double *a_w, *a_v, *o_w, *o_v, *o_lam, *scratch2, *w_out, *v_out, *scratch1;
    /* plain dgemm operands */
    size_t gm, gn, gk;
    double *ga, *gb, *gc;
} bench_t;

static volatile double sink; /* keeps results alive */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef double (*op_fn)(bench_t *b);

/* Median microseconds per call of fn. */
static double time_op(op_fn fn, bench_t *b, size_t *nsamples) {
    static double samples[MAX_SAMPLES];
    for (int i = 0; i < 3; i++) sink += fn(b); /* warm caches and pages */
    double t0 = now_s(), t;
    size_t cal = 0;
    do {
        sink += fn(b);
        cal++;
    } while ((t = now_s()) - t0 < 0.01);
    double per = (t - t0) / (double)cal;
    size_t group = per * 1e6 >= GROUP_MIN_US ? 1 : (size_t)ceil(GROUP_MIN_US / (per * 1e6));
    size_t ns = 0;
    double start = now_s(), spent = 0.0;
    while ((spent < MIN_SECONDS || ns < MIN_SAMPLES) && ns < MAX_SAMPLES) {
        double s0 = now_s();
        for (size_t g = 0; g < group; g++) sink += fn(b);
        double s1 = now_s();
        samples[ns++] = (s1 - s0) / (double)group;
        spent = s1 - start;
    }
    qsort(samples, ns, sizeof samples[0], cmp_double);
    double med = ns % 2 ? samples[ns / 2] : 0.5 * (samples[ns / 2 - 1] + samples[ns / 2]);
    *nsamples = ns * group;
    return med * 1e6;
}

/* ---- the operations ---- */

static double op_forward_x(bench_t *b) { return mlp_loss_x(b->m, b->lam, b->w, b->x, b->y, b->n); }
static double op_forward_f(bench_t *b) { return mlp_forward_f(b->m, b->f, b->w, b->y, NULL); }
static double op_feat(bench_t *b) {
    mlp_feat_compute(b->m, b->f, b->lam, b->x, b->n);
    return 0.0;
}
static double op_grad_x(bench_t *b) {
    return mlp_grad_x(b->m, b->lam, b->w, b->x, b->y, b->n, b->g_lam, b->g_w);
}
static double op_grad_f_w(bench_t *b) {
    return mlp_grad_f(b->m, b->f, b->lam, b->w, b->y, NULL, b->g_w);
}
static double op_hvp_f_wdir(bench_t *b) {
    return mlp_hvp_f(b->m, b->f, b->lam, b->w, b->y, NULL, b->c_w, b->h_lam, b->h_w, NULL);
}
static double op_hvp_x_full(bench_t *b) {
    return mlp_hvp_x(b->m, b->lam, b->w, b->x, b->y, b->n, b->c_lam, b->c_w, b->h_lam, b->h_w);
}
static double op_step(bench_t *b) {
    return inner_step(b->m, b->f, &b->cfg, b->lam, b->w, b->v, b->y, b->w_out, b->v_out,
                      b->scratch1);
}
static double op_vjp(bench_t *b) {
    inner_vjp(b->m, b->f, &b->cfg, b->lam, b->w, b->y, b->a_w, b->a_v, b->o_w, b->o_v, b->o_lam,
              b->scratch2);
    return b->o_w[0];
}
static double op_dgemm(bench_t *b) {
    /* C (m x n) = A (m x k) B^T with B (n x k): the layout of a forward layer. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b->gm, (int)b->gn, (int)b->gk, 1.0,
                b->ga, (int)b->gk, b->gb, (int)b->gk, 0.0, b->gc, (int)b->gn);
    return b->gc[0];
}

static double *dalloc(size_t n) {
    double *p = calloc(n ? n : 1, sizeof *p);
    if (!p) {
        fprintf(stderr, "bench_core: out of memory\n");
        exit(2);
    }
    return p;
}

static void fill_normal(rng_t *r, size_t n, double *x, double s) {
    for (size_t i = 0; i < n; i++) x[i] = s * rng_normal(r);
}

static int bench_init(bench_t *b, size_t nwidths, const size_t *widths, mlp_loss loss, size_t k,
                      size_t n, uint64_t seed) {
    memset(b, 0, sizeof *b);
    hd_err err;
    hd_err_clear(&err);
    if (mlp_new(nwidths, widths, MLP_ACT_RELU, loss, k, n, &b->m, &err) != HD_OK ||
        mlp_feat_new(b->m, n, &b->f, &err) != HD_OK) {
        fprintf(stderr, "bench_core: setup failed: %s\n", err.msg);
        return -1;
    }
    b->n = n;
    b->nl = mlp_n_lam(b->m);
    b->nw = mlp_n_w(b->m);
    b->cfg.lr = 0.01;
    b->cfg.momentum = 0.9;
    size_t in = widths[0], out = widths[nwidths - 1];
    b->lam = dalloc(b->nl);
    b->w = dalloc(b->nw);
    b->x = dalloc(n * in);
    b->y = dalloc(n * out);
    b->v = dalloc(b->nw);
    b->c_lam = dalloc(b->nl);
    b->c_w = dalloc(b->nw);
    b->g_lam = dalloc(b->nl);
    b->g_w = dalloc(b->nw);
    b->h_lam = dalloc(b->nl);
    b->h_w = dalloc(b->nw);
    b->a_w = dalloc(b->nw);
    b->a_v = dalloc(b->nw);
    b->o_w = dalloc(b->nw);
    b->o_v = dalloc(b->nw);
    b->o_lam = dalloc(b->nl);
    b->scratch2 = dalloc(2 * b->nw);
    b->w_out = dalloc(b->nw);
    b->v_out = dalloc(b->nw);
    b->scratch1 = dalloc(b->nw);
    rng_t r;
    rng_seed(&r, seed, 0, 0, 0);
    mlp_init_params(b->m, seed, b->nl ? b->lam : NULL, b->w);
    if (loss == MLP_LOSS_MSE) {
        double A = rng_range(&r, 0.1, 5.0), ph = rng_range(&r, 0.0, 3.14159);
        for (size_t i = 0; i < n; i++) {
            b->x[i * in] = rng_range(&r, -5.0, 5.0);
            for (size_t j = 0; j < out; j++) b->y[i * out + j] = A * sin(b->x[i * in] + ph);
        }
    } else {
        fill_normal(&r, n * in, b->x, 1.0);
        for (size_t i = 0; i < n; i++) b->y[i * out + rng_below(&r, out)] = 1.0;
    }
    fill_normal(&r, b->nw, b->v, 0.01);
    fill_normal(&r, b->nl, b->c_lam, 1.0);
    fill_normal(&r, b->nw, b->c_w, 1.0);
    fill_normal(&r, b->nw, b->a_w, 1.0);
    fill_normal(&r, b->nw, b->a_v, 1.0);
    mlp_feat_compute(b->m, b->f, b->lam, b->x, n);
    return 0;
}

static void bench_free(bench_t *b) {
    mlp_feat_free(b->f);
    mlp_free(b->m);
    double *bufs[] = {b->lam,   b->w,     b->x,        b->y,     b->v,     b->c_lam,   b->c_w,
                      b->g_lam, b->g_w,   b->h_lam,    b->h_w,   b->a_w,   b->a_v,     b->o_w,
                      b->o_v,   b->o_lam, b->scratch2, b->w_out, b->v_out, b->scratch1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

typedef struct {
    const char *label;
    op_fn fn;
} op_row;

enum { R_FWD_X, R_FWD_F, R_FEAT, R_GRAD_X, R_GRAD_F, R_HVP_W, R_HVP_FULL, R_STEP, R_VJP, R_N };

static const op_row rows[R_N] = {
    {"forward, from x (loss_x)", op_forward_x},
    {"forward, w layers on cached feats (forward_f)", op_forward_f},
    {"lam-layer features (feat_compute)", op_feat},
    {"gradient full g_lam+g_w, from x (grad_x)", op_grad_x},
    {"gradient g_w only, cached feats (grad_f)", op_grad_f_w},
    {"HVP w-direction, c_lam NULL, h_lam+h_w (hvp_f)", op_hvp_f_wdir},
    {"HVP full direction, h_lam+h_w, from x (hvp_x)", op_hvp_x_full},
    {"Phi step (inner_step, cached feats)", op_step},
    {"Phi VJP, all outputs (inner_vjp, cached feats)", op_vjp},
};

static void run_network(const char *name, size_t nwidths, const size_t *widths, mlp_loss loss,
                        size_t k, size_t n, double *t_out) {
    bench_t b;
    if (bench_init(&b, nwidths, widths, loss, k, n, 12345) != 0) exit(1);
    printf("\n%s, hyper_layers %zu, batch %zu (n_lam %zu, n_w %zu, %.3g forward MACs)\n", name, k,
           n, b.nl, b.nw, mlp_forward_macs(b.m, n));
    printf("  %-50s %12s %10s\n", "operation", "us/call", "calls");
    for (int i = 0; i < R_N; i++) {
        size_t calls = 0;
        t_out[i] = time_op(rows[i].fn, &b, &calls);
        printf("  %-50s %12.2f %10zu\n", rows[i].label, t_out[i], calls);
    }
    /* HVP/grad: full-direction HVP from x over full gradient from x (both
     * blocks, both including the lam-layer features). */
    printf("HVP/grad %.2f\n", t_out[R_HVP_FULL] / t_out[R_GRAD_X]);
    printf("  (w-direction HVP / g_w-only gradient on cached features: %.2f; "
           "VJP / inner step: %.2f)\n",
           t_out[R_HVP_W] / t_out[R_GRAD_F], t_out[R_VJP] / t_out[R_STEP]);
    bench_free(&b);
}

int main(void) {
    openblas_set_num_threads(1);
    printf("bench_core: median us per call, >= %.1f s and >= %d samples per row, "
           "OpenBLAS 1 thread\n",
           MIN_SECONDS, MIN_SAMPLES);

    const size_t small[5] = {1, 100, 100, 100, 1};
    double ts[R_N];
    run_network("1-100-100-100-1 relu mse", 5, small, MLP_LOSS_MSE, 3, 10, ts);

    const size_t big[4] = {784, 256, 256, 10};
    const size_t nb = 128;
    double tb[R_N];
    run_network("784-256-256-10 relu xent", 4, big, MLP_LOSS_XENT, 1, nb, tb);

    /* FLOP counts of the large network's full gradient (grad_x). macs = the
     * forward multiply-adds (sum over layers of n*in*out). Forward: 2*macs.
     * Backward: the weight gradients dW_l = dZ^T A_(l-1) cost 2*macs_l each,
     * the input gradients dA_(l-1) = dZ W cost 2*macs_l each for l >= 2; the
     * first layer's input gradient is never formed (x is not differentiated),
     * so "counted" = 6*macs - 2*macs_1. The simple rule 6*macs (forward
     * 2*macs, backward 4*macs) is printed too. Bias, activation and loss
     * work is not counted. */
    double macs = 0.0;
    for (size_t l = 0; l + 1 < 4; l++) macs += (double)nb * (double)big[l] * (double)big[l + 1];
    double macs1 = (double)nb * (double)big[0] * (double)big[1];
    double fl_simple = 6.0 * macs, fl_exact = 6.0 * macs - 2.0 * macs1;
    double t_grad = tb[R_GRAD_X] * 1e-6;

    bench_t g;
    memset(&g, 0, sizeof g);
    g.gm = nb;
    g.gn = big[1];
    g.gk = big[0];
    g.ga = dalloc(g.gm * g.gk);
    g.gb = dalloc(g.gn * g.gk);
    g.gc = dalloc(g.gm * g.gn);
    rng_t r;
    rng_seed(&r, 99, 0, 0, 0);
    fill_normal(&r, g.gm * g.gk, g.ga, 1.0);
    fill_normal(&r, g.gn * g.gk, g.gb, 1.0);
    size_t calls = 0;
    double t_gemm = time_op(op_dgemm, &g, &calls) * 1e-6;
    double fl_gemm = 2.0 * (double)g.gm * (double)g.gn * (double)g.gk;

    printf("\n784-256-256-10 gradient (grad_x, g_lam+g_w), batch %zu:\n", nb);
    printf("  gradient GFLOP/s %.2f (counting 6*macs - 2*macs_1 = %.4g FLOP: fwd 2*macs, bwd "
           "4*macs less the unformed layer-1 input gradient)\n",
           fl_exact / t_grad * 1e-9, fl_exact);
    printf("  gradient GFLOP/s %.2f (counting 6*macs = %.4g FLOP: fwd 2*macs, bwd 4*macs)\n",
           fl_simple / t_grad * 1e-9, fl_simple);
    printf("  forward  GFLOP/s %.2f (2*macs = %.4g FLOP)\n",
           2.0 * macs / (tb[R_FWD_X] * 1e-6) * 1e-9, 2.0 * macs);
    printf("  cblas_dgemm %zux%zu by %zux%zu (row-major, B transposed as in a layer): %.2f us, "
           "GFLOP/s %.2f (%zu calls)\n",
           g.gm, g.gk, g.gk, g.gn, t_gemm * 1e6, fl_gemm / t_gemm * 1e-9, calls);
    printf("  gradient efficiency vs plain dgemm: %.0f%%\n",
           100.0 * (fl_exact / t_grad) / (fl_gemm / t_gemm));
    free(g.ga);
    free(g.gb);
    free(g.gc);
    return 0;
}
