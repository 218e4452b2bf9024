/* The single-process run (`hdworker --local`): M episodes of a meta-batch of
 * B tasks, synchronous, exactly the schedule of ALGORITHM.md section 7 that
 * a distributed sync run must reproduce. Also the evaluation loop shared by
 * the worker daemon's evaluation jobs. */
#ifndef HD_RUNNER_H
#define HD_RUNNER_H

#include <stdio.h>

#include "episode.h"
#include "spec.h"

typedef struct {
    const char *out_dir; /* write metrics.jsonl, samples.jsonl, *.npy, summary.json; NULL: none */
    const double *lam_init; /* warm start for lam (n_lam), NULL: initialise from the seed */
    const double *phi_init; /* warm start for phi (n_w), NULL: initialise from the seed */
    int progress;           /* 0 silent, 1 one-line terminal display, 2 one log line per episode */
    int refit_theta;        /* hyperdistill: fit theta again with the final lam (reported only) */
    int skip_test;          /* 1: skip the meta-test evaluation */
} runner_opts;

typedef struct {
    int failed;              /* 1 if the run stopped on a non-finite hypergradient */
    char reason[160];        /* why it failed */
    int episodes_done;       /* completed episodes */
    double train_loss;       /* mean query loss at w_T of the last episode's slots */
    double meta_val_loss;    /* final meta-validation loss (NAN if not run) */
    double meta_test_loss;   /* meta-test loss (NAN if not run) */
    double theta;            /* theta in use at the end */
    double theta_refit;      /* theta fitted with the final lam (NAN if not asked) */
    long vjps_total;         /* VJPs of meta-training, estimation included */
    double vjps_per_episode; /* vjps_total / (episodes * B): per task, as in the section 5 table */
    double seconds_train; /* wall seconds of meta-training (estimation included, evaluation not) */
    double seconds_per_episode;
    int blowups; /* (episode, slot) pairs whose query loss exceeded robust.blowup_loss or was not finite */
    int skipped_steps; /* steps skipped by the non-finite guard */
    size_t n_lam, n_w;
    double *lam; /* final lam (owned) */
    double *phi; /* final phi (owned) */
} runner_result;

/* Run a whole run in this process. Returns HD_OK (also when the run failed
 * numerically: see res->failed), HD_EINVAL, HD_ENOMEM or HD_EIO. */
hd_rc runner_local(const run_spec *spec, const runner_opts *opts, runner_result *res, hd_err *err);
void runner_result_clear(runner_result *res);

/* Mean query loss over tasks [first, first+count) of a stream, each trained
 * for T steps from phi with lam fixed; *blowups (may be NULL) counts tasks
 * whose loss is above spec->blowup_loss or not finite. Uses e's buffers; t
 * is a task allocated for the spec. Returns the sum of the losses through
 * *sum when non-NULL. */
double runner_eval(const run_spec *spec, episode_t *e, task_t *t, const double *lam,
                   const double *phi, task_stream stream, int first, int count, int *blowups,
                   double *sum);

#endif
