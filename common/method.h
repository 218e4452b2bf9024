/* Hypergradient method settings and the VJP cost table (ALGORITHM.md
 * section 5). Plain data shared by the local runner, the worker and the
 * server. */
#ifndef HD_METHOD_H
#define HD_METHOD_H

typedef enum {
    METHOD_FO = 0,       /* first-order: gFO_t only */
    METHOD_ONESTEP,      /* gFO_t + alpha_t B(s_{t-1}) */
    METHOD_HYPERDISTILL, /* section 3 */
    METHOD_DRMAD,        /* offline, interpolated trajectory, at t = T */
    METHOD_RMD,          /* offline, exact reverse mode, at t = T */
    METHOD_NEUMANN,      /* IFT with N Neumann terms over the last K steps */
    METHOD_COUNT
} method_kind;

typedef struct {
    method_kind kind;
    double gamma;          /* hyperdistill decay, [0, 1) */
    int pi_unit;           /* hyperdistill pi_mode: 0 fitted, 1 unit */
    int estimation_period; /* hyperdistill: estimate theta on episodes 1, 1+P, ...; 0 never */
    double theta_init;     /* theta before the first estimation (default 1) */
    int neumann_n;         /* Neumann terms N >= 0 */
    int neumann_k;         /* last K steps, 1 <= K <= T */
    double neumann_lr;     /* eta_N > 0; 0 means the inner learning rate */
} method_cfg;

/* Defaults: hyperdistill, gamma 0.99, fitted pi, period 50, theta 1, N 3, K 5. */
void method_cfg_default(method_cfg *c);
/* "fo", "onestep", ... ; NULL-safe: unknown kinds give "unknown". */
const char *method_name(method_kind k);
/* Returns 0 and sets *out, or -1 if the name is unknown. */
int method_parse(const char *s, method_kind *out);
/* 1 if the method produces a hypergradient at inner step t (1..T). */
int method_posts_at(const method_cfg *c, int t, int T);
/* Number of steps of an episode that produce a hypergradient. */
int method_posts_per_episode(const method_cfg *c, int T);
/* 1 if episode m (1-based) is a LinearEstimation episode. */
int method_is_estimation_episode(const method_cfg *c, int m);
/* VJPs (Hessian-vector products) of one training episode (section 5 table;
 * estimation episodes add method_estimation_vjps). */
long method_vjps_per_episode(const method_cfg *c, int T);
/* VJPs of one LinearEstimation run of T steps: T DrMAD reverse VJPs plus T
 * distilled VJPs. */
long method_estimation_vjps(int T);

#endif
