/* Outer optimisers for lam (Adam, plain SGD) and the Reptile update of phi
 * (ALGORITHM.md sections 3.7 and 6). The optimiser state is plain data so
 * that the server can store it and restore it bit for bit. */
#ifndef HD_OUTER_H
#define HD_OUTER_H

#include <stddef.h>

#include "err.h"

typedef enum { OUTER_ADAM = 0, OUTER_SGD = 1 } outer_kind;

typedef struct {
    outer_kind kind;
    double lr;    /* learning rate > 0 */
    double beta1; /* Adam first-moment decay, default 0.9 */
    double beta2; /* Adam second-moment decay, default 0.999 */
    double eps;   /* Adam epsilon, default 1e-8 */
} outer_cfg;

typedef struct {
    size_t n;  /* number of hyperparameters */
    long step; /* updates applied so far */
    double *m; /* Adam first moment (n), owned; NULL for SGD */
    double *v; /* Adam second moment (n), owned; NULL for SGD */
} outer_state;

/* Defaults: Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-8. */
void outer_cfg_default(outer_cfg *c);
/* Parse "adam" or "sgd"; returns 0 on success, -1 if unknown. */
int outer_kind_parse(const char *s, outer_kind *out);
const char *outer_kind_name(outer_kind k);

/* Allocate zeroed state for n parameters. Returns HD_OK or HD_ENOMEM. */
hd_rc outer_state_init(outer_state *st, const outer_cfg *c, size_t n, hd_err *err);
/* Release the state's buffers; safe on a zeroed or cleared state. */
void outer_state_clear(outer_state *st);

/* One update of lam with hypergradient g (n = st->n). Deterministic. */
void outer_apply(const outer_cfg *c, outer_state *st, double *lam, const double *g);

/* Scale g in place so that its norm is at most max_norm (> 0); returns the
 * norm before clipping. */
double outer_clip(size_t n, double *g, double max_norm);

/* Reptile: phi <- phi - lr * (phi - mean_w). */
void outer_reptile(size_t n, double *phi, double lr, const double *mean_w);

#endif
