/* The SQLite store: every SQL statement of the server lives in store.c
 * (STYLE C1). The engine never calls SQL; it produces plain-data store_op
 * records and hot-state snapshots that the committer thread hands to
 * store_batch_commit, one transaction per group commit. At start the loaders
 * read everything back so that the engine can rebuild its in-memory state.
 *
 * Durability: WAL journal, page_size 65536 (set before the first table is
 * created), synchronous NORMAL by default (an acknowledged commit survives a
 * crash or SIGKILL of the process; FULL also survives power loss, at about a
 * quarter of the throughput for large rows) - see store_open and
 * docs/STORAGE.md (what is written per commit).
 *
 * Thread-safety: a store_t is used by one thread at a time (the caller
 * serialises: loads run at start before the committer starts, then only the
 * committer writes). store_ready() and store_checkpoint() may be called from
 * any thread; the store runs one thread of its own (WAL checkpoints). */
#ifndef HD_SERVER_STORE_H
#define HD_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct store store_t;

/* Idempotency record kinds (the idem.kind column). */
enum {
    STORE_IDEM_STEP = 1,
    STORE_IDEM_SAMPLES = 2,
    STORE_IDEM_FINAL = 3,
    STORE_IDEM_COMPLETE = 4,
    STORE_IDEM_RELEASE = 5
};

typedef enum {
    STORE_OP_NOOP = 0,       /* nothing (carries a waiter only) */
    STORE_OP_RUN_INSERT,     /* i[0]=n_lam i[1]=n_w, d[0]=created_at, text=spec, key=token */
    STORE_OP_LAM_HIST_PUT,   /* i[0]=version, data=lam */
    STORE_OP_LAM_HIST_PRUNE, /* delete versions < i[0] */
    STORE_OP_POST_PUT, /* i[0]=episode i[1]=t i[2]=first_slot i[3]=k i[4]=version key=lease data */
    STORE_OP_POSTS_DELETE,  /* i[0]=episode i[1]=t */
    STORE_OP_FINAL_PUT,     /* i[0]=episode i[1]=slot data=w */
    STORE_OP_FINALS_DELETE, /* i[0]=episode */
    STORE_OP_IDEM_PUT,      /* i[0]=episode i[1]=kind i[2]=key i[3]=status key=lease text=body */
    STORE_OP_IDEM_PRUNE,    /* delete records (idem and idem_steps) of episodes < i[0] */
    STORE_OP_SAMPLES_PUT,   /* i[0]=episode i[1]=slot data=x data2=y */
    STORE_OP_METRICS_PUT,   /* i[0]=episode text=row JSON */
    STORE_OP_WORKER_PUT,    /* key=worker_id text=row JSON */
    STORE_OP_LEASE_PUT,     /* key=lease_id text=row JSON */
    STORE_OP_POSTS_PRUNE,   /* async: delete posts and async_log rows with version <= i[0] (lam
                                stored up to there) */
    STORE_OP_ALOG_CLEAR,    /* delete the run's async log (the run finished) */
    STORE_OP_IDEM_STEPS_PUT /* async step answers of one lease: i[0]=episode key=lease,
                                raw = pairs of int64 (t, lam_version) */
} store_op_kind;

/* Slots of a run's async_log ring, which servers before the post log
 * (postlog.h) wrote: its rows are still replayed at start (STORE_T_ALOG)
 * and deleted when the run finishes (STORE_OP_ALOG_CLEAR). */
#define STORE_ALOG_RING 512

/* One write. All pointers are owned by the op (freed by store_op_free). */
typedef struct store_op {
    struct store_op *next; /* singly linked batch list */
    store_op_kind kind;
    int64_t run;   /* run id */
    int64_t i[6];  /* kind-specific integers (see store_op_kind) */
    double d[1];   /* kind-specific reals */
    char *key;     /* owned text key or NULL */
    char *text;    /* owned text or NULL */
    double *data;  /* owned tensor or NULL */
    size_t n;      /* elements in data */
    double *data2; /* owned second tensor or NULL */
    uint8_t *raw;  /* owned raw bytes stored instead of data (POST_PUT), or NULL */
    size_t raw_len;
    size_t n2;    /* elements in data2 */
    void *cookie; /* caller's (committer's) field; the store ignores it */
} store_op;

/* The hot state of one run, written once per commit (UPDATE runs). */
typedef struct {
    int64_t run;
    char *state_json; /* owned engine snapshot, or NULL when the state row is unchanged */
    double *lam;      /* owned n_lam doubles, or NULL when lam and the optimiser state are
                             unchanged (only state_json is written) */
    size_t n_lam;
    double *opt_m, *opt_v; /* owned n_lam doubles each, or NULL (SGD) */
    double *phi;           /* owned n_w doubles, or NULL when phi is unchanged */
    size_t n_w;
} store_hot;

/* A new zeroed op (NULL on allocation failure). */
store_op *store_op_new(store_op_kind kind, int64_t run);
/* Free an op and what it owns; NULL allowed. Does not follow next. */
void store_op_free(store_op *op);
/* Release the buffers of a hot snapshot (the struct itself is the caller's). */
void store_hot_clear(store_hot *h);

/* Open (creating if needed) the database at path (borrowed): page_size 65536
 * for a new file, WAL, synchronous FULL when sync_full is nonzero else NORMAL,
 * busy timeout, foreign pragmas, then every embedded migration not yet
 * applied, each in its own transaction. Returns HD_OK, HD_EDB or HD_ENOMEM;
 * *out is owned (store_close). */
hd_rc store_open(const char *path, int sync_full, store_t **out, hd_err *err);
/* Ask the store's checkpointer thread for a PASSIVE checkpoint of the WAL
 * (on a second connection of its own: never blocks the committer) and
 * return at once. The store also asks by itself after commits once the WAL
 * holds 4 MiB. Thread-safe. */
void store_checkpoint(store_t *st);
/* Close; NULL allowed. Checkpoints the WAL. */
void store_close(store_t *st);
/* 1 when the database is open and all migrations are applied. Thread-safe. */
int store_ready(const store_t *st);
/* Highest applied migration version. */
int store_schema_version(const store_t *st);

/* Write the ops (in list order) and the hot snapshots in ONE transaction.
 * durable: the transaction is on disk when this returns, whatever the
 * synchronous mode (FULL for this commit: the engine retires post log files
 * only once the lam snapshot that covers them is on disk). On failure
 * everything is rolled back. Returns HD_OK or HD_EDB. */
hd_rc store_batch_commit(store_t *st, const store_op *ops, const store_hot *hots, size_t n_hots,
                         int durable, hd_err *err);

/* ---- loading at start ----------------------------------------------------- */

typedef enum {
    STORE_T_RUNS = 0,  /* i: id n_lam n_w; d: created_at; t1 spec t2 token t3 state;
                         b1 lam b2 opt_m b3 opt_v b4 phi */
    STORE_T_LAM_HIST,  /* i: version; b1 lam */
    STORE_T_POSTS,     /* i: episode t first_slot k version; t1 lease; b1 data (float64, or
                         float32 when written from raw f4 bytes); ordered by version */
    STORE_T_FINALS,    /* i: episode slot; b1 w */
    STORE_T_IDEM,      /* i: episode kind key status; t1 lease t2 body */
    STORE_T_SAMPLES,   /* i: episode slot; b1 x b2 y */
    STORE_T_METRICS,   /* i: episode; t1 row */
    STORE_T_WORKERS,   /* t1 worker_id t2 row */
    STORE_T_LEASES,    /* t1 lease_id t2 row */
    STORE_T_ALOG,      /* async post log: i: episode t first_slot k version used; t1 lease;
                         b1 data (float32 when the run's wire dtype is f4, else float64);
                         ordered by version; rows older than the stored lam are still
                         there (ring slots not overwritten yet): skip them */
    STORE_T_IDEM_STEPS /* i: episode; t1 lease; b1 pairs of int64 (t, lam_version) */
} store_table;

/* One row as seen by a loader callback; every pointer is borrowed and valid
 * only during the call. Blobs are raw bytes (b?_len bytes, possibly
 * unaligned: copy them). */
typedef struct {
    int64_t i[6];
    double d;
    const char *t1, *t2, *t3;
    const void *b1, *b2, *b3, *b4;
    size_t b1_len, b2_len, b3_len, b4_len;
} store_row;

typedef hd_rc (*store_row_cb)(void *ctx, const store_row *row, hd_err *err);

/* Call cb for every row of table tbl belonging to run (ignored for
 * STORE_T_RUNS, which lists all runs by id), in key order. Stops at the first
 * callback error and returns it; HD_EDB on SQL errors. */
hd_rc store_load(store_t *st, store_table tbl, int64_t run, store_row_cb cb, void *ctx,
                 hd_err *err);

#endif
