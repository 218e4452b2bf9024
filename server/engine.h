/* The run engine: the in-memory state of every run and its schedule
 * (episodes, LinearEstimation rounds, the sync barrier or async apply of
 * hypergradients, Reptile, evaluation jobs, leases, idempotency). No SQL and
 * no HTTP here: changes are described as store_op records plus a hot-state
 * snapshot per run, which the committer (engine_commit_loop, one thread)
 * writes in one transaction per group commit; a request that changed
 * something returns only after the commit that holds its change (every
 * acknowledged write is durable). Readers see lam/phi versions only once
 * they are committed.
 *
 * Threading: every function is thread-safe. Each run has its own mutex; the
 * engine mutex guards the run table and the lease index; the committer has
 * its own queue. Lock order: run -> engine -> queue; never the reverse.
 *
 * Functions that answer a request return hd_rc plus, on success, a
 * malloc'd JSON reply owned by the caller. */
#ifndef HD_SERVER_ENGINE_H
#define HD_SERVER_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "err.h"
#include "store.h"

typedef struct engine engine_t;
typedef struct engine_run engine_run;

typedef struct {
    int default_lease_seconds; /* for specs without lease_seconds */
    int max_wait;              /* longest long poll, seconds */
    const char *db_path;       /* the database file (borrowed, outlives the engine): async
                                  runs keep their post logs beside it (postlog.h) */
    int sync_full;             /* --sync full: a post log is fdatasynced before the ack */
} engine_cfg;

/* New empty engine (cfg copied). Returns HD_OK or HD_ENOMEM. */
hd_rc engine_new(const engine_cfg *cfg, engine_t **out, hd_err *err);
/* Free everything; the committer must have stopped. NULL allowed. */
void engine_free(engine_t *e);
/* Rebuild every run from the store (before the committer starts): hot
 * state, lam history, pending posts, finals, samples, metrics, workers,
 * leases (active leases get a fresh deadline) and idempotency records. */
hd_rc engine_load(engine_t *e, store_t *st, hd_err *err);
/* Number of runs and of unfinished runs. */
void engine_counts(engine_t *e, int *runs, int *active);

/* The committer: loops until engine_stop_committer, writing each batch with
 * store_batch_commit and then waking the requests it held. A failed commit
 * is retried; if it keeps failing the process exits (the in-memory state is
 * ahead of the store, and a restart rebuilds it from the store). */
void engine_commit_loop(engine_t *e, store_t *st);
/* Ask the committer to finish what is queued and return. */
void engine_stop_committer(engine_t *e);
/* Shutdown: long polls return at once; no new long polls wait. */
void engine_shutdown(engine_t *e);
/* Expire leases whose deadline passed (call a few times per second). */
void engine_tick(engine_t *e);

/* ---- runs (admin) --------------------------------------------------------- */
/* Create a run from a spec JSON (as spec_parse accepts). Reply:
 * {"id": n, "worker_token": "..."}. HD_EFORMAT/HD_EINVAL for a bad spec. */
hd_rc engine_run_create(engine_t *e, const char *spec_json, size_t len, char **reply, hd_err *err);
/* Run by id, or NULL. Runs live as long as the engine. */
engine_run *engine_run_find(engine_t *e, int64_t id);
int64_t engine_run_id(const engine_run *r);
/* 1 if token is this run's worker token (constant time). */
int engine_run_token_ok(engine_run *r, const char *token);
/* 1 if token is the worker token of any run. */
int engine_token_known(engine_t *e, const char *token);
char *engine_run_json(engine_t *e, engine_run *r);
char *engine_runs_json(engine_t *e);
/* action: "pause", "resume" or "cancel". HD_ECONFLICT when not allowed. */
hd_rc engine_run_control(engine_t *e, engine_run *r, const char *action, char **reply, hd_err *err);
char *engine_metrics_json(engine_t *e, engine_run *r);
char *engine_metrics_csv(engine_t *e, engine_run *r);
char *engine_samples_json(engine_t *e, engine_run *r);

/* ---- tensors -------------------------------------------------------------- */
typedef struct {
    int64_t version; /* >= 0: exactly this version (?version=), else -1 */
    int64_t after;   /* >= 0: answer only a version > after (If-None-Match / ?after=), else -1 */
    double wait;     /* seconds to wait for version/after (0 = do not wait) */
} engine_tensor_query;

typedef struct {
    int status;      /* 200, or 304 (not modified) */
    blob_t *npy;     /* 200: the .npy image (caller owns the reference) */
    int64_t version; /* version sent or current */
} engine_tensor_reply;

/* which: 0 = lam (/hyper), 1 = phi (/init). HD_EGONE when the asked version
 * is no longer kept, HD_ENOTFOUND when it is not reached (after any wait). */
hd_rc engine_tensor_get(engine_t *e, engine_run *r, int which, const engine_tensor_query *q,
                        engine_tensor_reply *out, hd_err *err);

/* ---- workers and leases (worker token) ------------------------------------ */
hd_rc engine_worker_register(engine_t *e, engine_run *r, const char *body, size_t len, char **reply,
                             hd_err *err);
/* *reply NULL with HD_OK means "nothing to do now" (204). HD_EGONE when the
 * run is finished. */
hd_rc engine_lease_acquire(engine_t *e, engine_run *r, const char *body, size_t len, char **reply,
                           hd_err *err);
/* The run that owns lease id, or NULL. */
engine_run *engine_lease_run(engine_t *e, const char *lease_id);
/* Largest body a lease endpoint accepts: what = "steps", "final", "json". */
size_t engine_lease_body_limit(engine_t *e, const char *lease_id, const char *what);
hd_rc engine_lease_heartbeat(engine_t *e, const char *lease_id, char **reply, hd_err *err);
/* t: inner step; k: slots summed in the post (-1: the lease's count);
 * version: lam version used. */
hd_rc engine_lease_step(engine_t *e, const char *lease_id, int64_t t, int64_t k, int64_t version,
                        const uint8_t *npy, size_t len, char **reply, hd_err *err);
hd_rc engine_lease_samples(engine_t *e, const char *lease_id, const char *body, size_t len,
                           char **reply, hd_err *err);
hd_rc engine_lease_final(engine_t *e, const char *lease_id, int64_t slot, const uint8_t *npy,
                         size_t len, char **reply, hd_err *err);
hd_rc engine_lease_complete(engine_t *e, const char *lease_id, const char *body, size_t len,
                            char **reply, hd_err *err);
hd_rc engine_lease_release(engine_t *e, const char *lease_id, char **reply, hd_err *err);

/* ---- observation (events.c, metrics.c; read-only) -------------------------- */
/* Metrics of one episode as the engine holds them now. */
typedef struct {
    int episode;       /* 1..M */
    int ended;         /* 1 once training of the episode finished (Reptile applied) */
    long train_n;      /* per-slot train losses reported so far */
    double train_loss; /* their mean; valid when train_n > 0 */
    long hg_n;         /* outer updates applied during the episode */
    double hg_sum;     /* sum of their (clipped) hypergradient norms */
    int has_val, has_test;
    double val_loss, test_loss; /* meta-validation / meta-test loss after the episode */
    double theta;               /* theta at the end of the episode */
    double seconds;             /* since run creation at the end of the episode */
    int64_t lam_version;        /* at the end of the episode */
} engine_obs_row;

/* Scalars of one run. Strings are static (never freed). */
typedef struct {
    int64_t id;
    const char *state;     /* running, paused, completed, failed, cancelled */
    const char *phase;     /* estimate, train, eval, done */
    int finished;          /* 1: completed, failed or cancelled */
    int sync;              /* 1: sync mode, 0: async */
    int episode, episodes; /* current episode 1..M, and M */
    int step, steps;       /* sync train: open (next) posting step, else 0; and T */
    int applied_step;      /* sync: posting step of the last outer update of the episode, else 0 */
    int meta_batch;        /* B */
    int64_t lam_version;   /* published (committed) lam version */
    int64_t lam_version_head; /* in memory (may lead the published one by one commit) */
    int64_t phi_version;      /* published */
    int64_t outer_steps;      /* outer optimiser steps applied */
    double theta;             /* current theta */
    int rounds;               /* estimation rounds with a fitted theta */
    long posts;               /* accepted step posts */
    long stale_refused;       /* async posts refused as too stale */
    int has_meta_val, has_meta_test;
    double meta_val_loss, meta_test_loss;
    int workers;       /* registered workers */
    int leases;        /* active, unexpired leases */
    double created_at; /* unix seconds */
} engine_obs;

/* Fill *out with the scalars of run r and rows[0..) with the metrics of
 * episodes first, first+1, ... (at most max_rows, up to the current episode
 * or M). Returns the number of rows filled. Takes the run lock once; no
 * allocation. Thread-safe. */
int engine_run_observe(engine_t *e, engine_run *r, int first, engine_obs_row *rows, int max_rows,
                       engine_obs *out);

#endif
