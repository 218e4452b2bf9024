/* One task's episode under a hypergradient method (ALGORITHM.md sections 3,
 * 4 and 5): the inner trajectory s_0 .. s_T from s_0 = (phi, 0), and at each
 * step the hypergradient the method contributes for this task. The local
 * runner, the worker daemon and the probe all drive episodes through this
 * interface, so a distributed run computes exactly what a local run does.
 *
 * Use: episode_new once per slot, then for every episode episode_begin and
 * T calls of episode_step (one per inner step, each with the lam current at
 * that step). Scratch memory is allocated by episode_new and reused: the
 * step loop never allocates. An episode borrows the network (mlp_t) it was
 * created with; episodes that share a network must not run concurrently. */
#ifndef HD_EPISODE_H
#define HD_EPISODE_H

#include <stddef.h>

#include "err.h"
#include "inner.h"
#include "linest.h"
#include "method.h"
#include "mlp.h"

typedef struct episode episode_t;

typedef struct {
    double train_loss; /* L_train(w_{t-1}, lam; D_t) (support loss before the step) */
    double val_loss;   /* L_val(w_t, lam; D_val) (query loss after the step); set on posting
                        * steps and at t = T, 0 on other steps */
    double grad_norm;  /* ||g|| when a hypergradient was written, else 0 */
    double vnorm;      /* hyperdistill with pi_mode unit: ||v_t||; 0 otherwise (fitted mode
                        * folds theta S_t into one stacked backward and never forms v_t) */
    long vjps;         /* VJPs spent by this call */
    int posted;        /* 1 if g was written */
    int nonfinite;     /* 1 if the step produced NaN/Inf (state or losses) */
} episode_info;

/* Create an episode runner for T steps, support and query sets of n_s and n_q
 * rows (n_s + n_q <= mlp_max_batch(m): the two sets are stacked). Borrows m, ic and mc (they must
 * outlive the episode). Returns HD_OK, HD_EINVAL or HD_ENOMEM. */
hd_rc episode_new(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                  size_t n_q, episode_t **out, hd_err *err);

/* The same for K tasks (slots) run together: their rows are stacked, so that
 * every lower-layer product (features, the lam-layer backward) is one
 * product over all K tasks, and a step writes the SUM of the K tasks'
 * hypergradients. Needs K * (n_s + n_q) <= mlp_max_batch(m). episode_new is
 * this with K = 1; the single-task functions below act on slot 0. */
hd_rc episode_new_batch(mlp_t *m, const inner_cfg *ic, const method_cfg *mc, int T, size_t n_s,
                        size_t n_q, int K, episode_t **out, hd_err *err);
int episode_slots(const episode_t *e);
/* Start slot k (0 <= k < K) at s_0 = (phi, 0) on its task; every slot must be
 * begun before the first step. Borrows the arrays until the next begin. */
void episode_begin_slot(episode_t *e, int k, const double *phi, const double *xs, const double *ys,
                        const double *xq, const double *yq);
/* One inner step of every slot; g (n_lam) receives the sum over the K slots
 * when the method posts at this step. info (K entries, may be NULL) gets each
 * slot's losses, VJPs and non-finite flag; posted and grad_norm (of the sum)
 * are the same in every entry. Same contract as episode_step otherwise. */
hd_rc episode_step_batch(episode_t *e, const double *lam, double theta, int replay, double *g,
                         episode_info *info);
const double *episode_w_slot(const episode_t *e, int k);
/* LinearEstimation of every slot (lam fixed): x and y hold K * T samples,
 * slot-major; sums (K entries, may be NULL) receive each slot's sums; *vjps
 * the total. Slots whose trajectory blew up get NaN samples and no sums, and
 * the call returns HD_ENONFINITE after finishing the other slots. */
hd_rc episode_estimate_batch(episode_t *e, const double *lam, double gamma, double *x, double *y,
                             linest_sums *sums, long *vjps, hd_err *err);
/* Evaluation of n <= K tasks at once (see episode_eval): loss[i] for task i. */
void episode_eval_batch(episode_t *e, const double *lam, const double *phi, int n,
                        const double *const *xs, const double *const *ys, const double *const *xq,
                        const double *const *yq, double *loss);
void episode_free(episode_t *e);

/* Guard (robust.skip_nonfinite, robust.guard_loss): when an inner step
 * produces a non-finite loss or state (skip_nonfinite), or a support loss
 * after the step above max_loss (max_loss > 0), the step is skipped (the
 * state stays at s_{t-1}), and a posting step writes a zero hypergradient with
 * info->nonfinite = 1, so that the meta-batch still has B contributions. Off
 * by default. */
void episode_set_guard(episode_t *e, int skip_nonfinite, double max_loss);

/* Start an episode at s_0 = (phi, 0) on a task. Borrows the four arrays until
 * the next episode_begin. */
void episode_begin(episode_t *e, const double *phi, const double *xs, const double *ys,
                   const double *xq, const double *yq);

/* Steps done so far (0 .. T). */
int episode_t_done(const episode_t *e);

/* Run inner step t = episode_t_done() + 1 with hyperparameters lam and the
 * current theta. When the method produces a hypergradient at t
 * (method_posts_at), writes it to g (n_lam) and sets info->posted; g is
 * untouched otherwise. `replay` != 0 runs the inner step only (no
 * hypergradient, no VJP), to rebuild a trajectory after a lease moved to
 * another worker; offline methods still record the trajectory. info may be
 * NULL. Returns HD_OK or HD_ECONFLICT when the episode is already done. */
hd_rc episode_step(episode_t *e, const double *lam, double theta, int replay, double *g,
                   episode_info *info);

/* Current weights w_t and momentum v_t (n_w each). */
const double *episode_w(const episode_t *e);
const double *episode_v(const episode_t *e);
/* Query loss L_val(w_t, lam) of the current state. */
double episode_val_loss(episode_t *e, const double *lam);

/* LinearEstimation (Algorithm 4) on the episode's task with lam fixed: runs
 * the forward trajectory from s_0, then the reverse DrMAD pass with the
 * distilled VJPs, and writes the T samples: x[s-1], y[s-1] for horizon
 * s = 1..T. Leaves the episode ready for a fresh episode_begin (it resets the
 * state to s_0). Adds the samples to sums when non-NULL. Returns the VJPs
 * spent through *vjps. HD_ENONFINITE if the trajectory blew up (no sample
 * written). */
hd_rc episode_estimate(episode_t *e, const double *lam, double gamma, double *x, double *y,
                       linest_sums *sums, long *vjps, hd_err *err);

/* Evaluation: T inner steps from s_0 = (phi, 0) with lam fixed, then the
 * query loss at w_T. Uses the episode's buffers (call between episodes). */
double episode_eval(episode_t *e, const double *lam, const double *phi, const double *xs,
                    const double *ys, const double *xq, const double *yq);

#endif
