/* SQLite store (store.h). All SQL of the server is in this file. Statements
 * are prepared once per connection and reused; tensors are bound as BLOBs of
 * host-order doubles (the build refuses big-endian hosts below). */
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "migrations.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "store.c stores doubles as little-endian BLOBs; big-endian hosts are not supported"
#endif

enum {
    S_RUN_INSERT,
    S_RUN_HOT,
    S_RUN_HOT_UPD,
    S_RUN_HOT_PHI,
    S_RUN_STATE,
    S_LAM_PUT,
    S_LAM_PRUNE,
    S_POST_PUT,
    S_POSTS_DEL,
    S_FINAL_PUT,
    S_FINALS_DEL,
    S_IDEM_PUT,
    S_IDEM_PRUNE,
    S_SAMPLES_PUT,
    S_METRICS_PUT,
    S_WORKER_PUT,
    S_LEASE_PUT,
    S_POSTS_PRUNE,
    S_ALOG_CLEAR,
    S_IDEM_STEPS_PUT,
    S_IDEM_STEPS_PRUNE,
    S_COUNT
};

/* async_log keys: id = run * 2^20 + version mod STORE_ALOG_RING
 * (schema/002_async_log.sql). */
#define ALOG_SHIFT 20
#define ALOG_RUN_MAX ((int64_t)1 << (62 - ALOG_SHIFT))

static const char *const stmt_sql[S_COUNT] = {
    [S_RUN_INSERT] = "INSERT INTO runs (id, created_at, spec, worker_token, n_lam, n_w) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_RUN_HOT] = "INSERT OR REPLACE INTO run_lam (run, lam, opt_m, opt_v) VALUES (?1, ?3, ?4, ?5)",
    /* Same-size rewrite in place (no page freed or allocated), as for the
     * async log; the INSERT above only creates the row. */
    [S_RUN_HOT_UPD] = "UPDATE run_lam SET lam = ?3, opt_m = ?4, opt_v = ?5 WHERE run = ?1",
    [S_RUN_HOT_PHI] = "INSERT OR REPLACE INTO run_phi (run, phi) VALUES (?1, ?2)",
    [S_RUN_STATE] = "INSERT OR REPLACE INTO run_state (run, state, updated_at) VALUES (?1, ?2, ?3)",
    [S_LAM_PUT] = "INSERT OR REPLACE INTO lam_hist (run, version, lam) VALUES (?1, ?2, ?3)",
    [S_LAM_PRUNE] = "DELETE FROM lam_hist WHERE run = ?1 AND version < ?2",
    [S_POST_PUT] =
        "INSERT OR REPLACE INTO posts (run, episode, t, first_slot, k, version, lease, data) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_POSTS_DEL] = "DELETE FROM posts WHERE run = ?1 AND episode = ?2 AND t = ?3",
    [S_FINAL_PUT] = "INSERT OR REPLACE INTO finals (run, episode, slot, w) VALUES (?1, ?2, ?3, ?4)",
    [S_FINALS_DEL] = "DELETE FROM finals WHERE run = ?1 AND episode <= ?2",
    [S_IDEM_PUT] = "INSERT OR REPLACE INTO idem (run, episode, kind, key, status, lease, body) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_IDEM_PRUNE] = "DELETE FROM idem WHERE run = ?1 AND episode < ?2",
    [S_SAMPLES_PUT] = "INSERT OR REPLACE INTO samples (run, episode, slot, x, y) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)",
    [S_METRICS_PUT] = "INSERT OR REPLACE INTO metrics (run, episode, row) VALUES (?1, ?2, ?3)",
    [S_WORKER_PUT] = "INSERT OR REPLACE INTO workers (run, worker_id, row) VALUES (?1, ?2, ?3)",
    [S_LEASE_PUT] = "INSERT OR REPLACE INTO leases (run, lease_id, row) VALUES (?1, ?2, ?3)",
    [S_POSTS_PRUNE] = "DELETE FROM posts WHERE run = ?1 AND version <= ?2",
    /* A rowid range: no index, no scan of other runs' rows. */
    [S_ALOG_CLEAR] = "DELETE FROM async_log WHERE id >= ?1 AND id <= ?2",
    [S_IDEM_STEPS_PUT] =
        "INSERT INTO idem_steps (run, episode, lease, steps) VALUES (?1, ?2, ?3, ?4)",
    [S_IDEM_STEPS_PRUNE] = "DELETE FROM idem_steps WHERE run = ?1 AND episode < ?2",
};

static const char *const load_sql[] = {
    [STORE_T_RUNS] =
        "SELECT r.id, r.n_lam, r.n_w, r.created_at, r.spec, r.worker_token, s.state, "
        "l.lam, l.opt_m, l.opt_v, p.phi FROM runs r LEFT JOIN run_state s ON s.run = r.id "
        "LEFT JOIN run_lam l ON l.run = r.id LEFT JOIN run_phi p ON p.run = r.id ORDER BY r.id",
    [STORE_T_LAM_HIST] = "SELECT version, lam FROM lam_hist WHERE run = ?1 ORDER BY version",
    [STORE_T_POSTS] = "SELECT episode, t, first_slot, k, version, lease, data FROM posts "
                      "WHERE run = ?1 ORDER BY version, episode, t, first_slot",
    [STORE_T_FINALS] = "SELECT episode, slot, w FROM finals WHERE run = ?1 ORDER BY episode, slot",
    [STORE_T_IDEM] = "SELECT episode, kind, key, status, lease, body FROM idem WHERE run = ?1 "
                     "ORDER BY rowid",
    [STORE_T_SAMPLES] =
        "SELECT episode, slot, x, y FROM samples WHERE run = ?1 ORDER BY episode, slot",
    [STORE_T_METRICS] = "SELECT episode, row FROM metrics WHERE run = ?1 ORDER BY episode",
    [STORE_T_WORKERS] = "SELECT worker_id, row FROM workers WHERE run = ?1 ORDER BY rowid",
    [STORE_T_LEASES] = "SELECT lease_id, row FROM leases WHERE run = ?1 ORDER BY rowid",
    [STORE_T_ALOG] =
        "SELECT episode, t, first_slot, k, version, used_version, lease, data FROM async_log "
        "WHERE id >= ?1 AND id <= ?2 ORDER BY version",
    [STORE_T_IDEM_STEPS] =
        "SELECT episode, lease, steps FROM idem_steps WHERE run = ?1 ORDER BY rowid",
};

/* WAL checkpoints (docs/STORAGE.md). The WAL hook (run by the writer after
 * each commit) wakes the checkpointer thread once the WAL holds
 * CKPT_KICK_FRAMES frames: a small WAL is checkpointed often, in the
 * background, and restarts from its beginning, so that the writer appends
 * into pages the page cache holds already (an 82 KB write into new file
 * pages costs ~160 us, into cached ones ~10 us). Measured: 1565 -> 2044
 * posts/s with 4 clients when checkpoints ran every 20 ms instead of 200 ms.
 * Past CKPT_FALLBACK_FRAMES the writer checkpoints itself (what
 * wal_autocheckpoint did, which a WAL hook replaces). */
#define CKPT_KICK_FRAMES 64       /* 4 MiB of 64 KiB frames */
#define CKPT_FALLBACK_FRAMES 4096 /* 256 MiB */
#define CKPT_GAP_NS 10000000L     /* at most one background checkpoint per 10 ms */

struct store {
    sqlite3 *db;   /* the writer connection */
    sqlite3 *ckpt; /* a second connection for WAL checkpoints (checkpointer thread) */
    pthread_t ckpt_thread;
    int ckpt_started;        /* 1 while the checkpointer thread runs */
    pthread_mutex_t ckpt_mu; /* guards ckpt_wanted, ckpt_stop */
    pthread_cond_t ckpt_cv;
    int ckpt_wanted;           /* a checkpoint was asked for */
    int ckpt_stop;             /* the thread must return */
    sqlite3_stmt *st[S_COUNT]; /* prepared write statements */
    int schema_version;        /* highest applied migration */
    int sync_full;             /* synchronous=FULL for every commit */
    atomic_int ready;          /* 1 once migrations are applied */
};

store_op *store_op_new(store_op_kind kind, int64_t run) {
    store_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->kind = kind;
    op->run = run;
    return op;
}

void store_op_free(store_op *op) {
    if (!op) return;
    free(op->key);
    free(op->text);
    free(op->data);
    free(op->data2);
    free(op->raw);
    free(op);
}

void store_hot_clear(store_hot *h) {
    free(h->state_json);
    free(h->lam);
    free(h->opt_m);
    free(h->opt_v);
    free(h->phi);
    memset(h, 0, sizeof *h);
}

static double now_unix(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

static hd_rc db_fail(store_t *st, hd_err *err, const char *what) {
    return hd_err_set(err, HD_EDB, "%s: %s (sqlite %d)", what, sqlite3_errmsg(st->db),
                      sqlite3_extended_errcode(st->db));
}

static hd_rc exec_sql(store_t *st, const char *sql, const char *what, hd_err *err) {
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        hd_err_set(err, HD_EDB, "%s: %s", what, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return HD_EDB;
    }
    return HD_OK;
}

static hd_rc apply_migrations(store_t *st, hd_err *err) {
    hd_rc rc =
        exec_sql(st,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at REAL NOT NULL)",
                 "create schema_migrations", err);
    if (rc != HD_OK) return rc;
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1,
                           &q, NULL) != SQLITE_OK)
        return db_fail(st, err, "read schema version");
    int have = 0;
    if (sqlite3_step(q) == SQLITE_ROW) have = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    for (size_t i = 0; i < store_migrations_count; i++) {
        const store_migration *m = &store_migrations[i];
        if (m->version <= have) continue;
        if ((rc = exec_sql(st, "BEGIN IMMEDIATE", "begin migration", err)) != HD_OK) return rc;
        char what[128];
        snprintf(what, sizeof what, "migration %s", m->name);
        if ((rc = exec_sql(st, m->sql, what, err)) != HD_OK) goto rollback;
        if (sqlite3_prepare_v2(st->db,
                               "INSERT INTO schema_migrations (version, name, applied_at) "
                               "VALUES (?1, ?2, ?3)",
                               -1, &q, NULL) != SQLITE_OK) {
            rc = db_fail(st, err, "record migration");
            goto rollback;
        }
        sqlite3_bind_int(q, 1, m->version);
        sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
        sqlite3_bind_double(q, 3, now_unix());
        int s = sqlite3_step(q);
        sqlite3_finalize(q);
        if (s != SQLITE_DONE) {
            rc = db_fail(st, err, "record migration");
            goto rollback;
        }
        if ((rc = exec_sql(st, "COMMIT", "commit migration", err)) != HD_OK) goto rollback;
        have = m->version;
        continue;
    rollback:
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    st->schema_version = have;
    return HD_OK;
}

static void ckpt_kick(store_t *st) {
    pthread_mutex_lock(&st->ckpt_mu);
    st->ckpt_wanted = 1;
    pthread_cond_signal(&st->ckpt_cv);
    pthread_mutex_unlock(&st->ckpt_mu);
}

static int on_wal(void *ctx, sqlite3 *db, const char *name, int frames) {
    store_t *st = ctx;
    if (frames >= CKPT_FALLBACK_FRAMES)
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    else if (frames >= CKPT_KICK_FRAMES)
        ckpt_kick(st);
    return SQLITE_OK;
}

static void *ckpt_main(void *arg) {
    store_t *st = arg;
    pthread_mutex_lock(&st->ckpt_mu);
    for (;;) {
        while (!st->ckpt_wanted && !st->ckpt_stop) pthread_cond_wait(&st->ckpt_cv, &st->ckpt_mu);
        if (st->ckpt_stop) break;
        st->ckpt_wanted = 0;
        pthread_mutex_unlock(&st->ckpt_mu);
        /* PASSIVE: never waits for the writer; copies what is committed. */
        sqlite3_wal_checkpoint_v2(st->ckpt, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        struct timespec gap = {0, CKPT_GAP_NS};
        nanosleep(&gap, NULL);
        pthread_mutex_lock(&st->ckpt_mu);
    }
    pthread_mutex_unlock(&st->ckpt_mu);
    return NULL;
}

hd_rc store_open(const char *path, int sync_full, store_t **out, hd_err *err) {
    store_t *st = calloc(1, sizeof *st);
    if (!st) return hd_err_set(err, HD_ENOMEM, "store: out of memory");
    pthread_mutex_init(&st->ckpt_mu, NULL);
    pthread_cond_init(&st->ckpt_cv, NULL);
    st->sync_full = sync_full;
    hd_rc rc;
    int src = sqlite3_open_v2(
        path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (src != SQLITE_OK) {
        rc = hd_err_set(err, HD_EDB, "open %s: %s", path,
                        st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* page_size only takes effect before the first table exists (a new file);
     * on an existing database it is a no-op. Must precede journal_mode=WAL. */
    if ((rc = exec_sql(st, "PRAGMA page_size=65536", "page_size", err)) != HD_OK) goto fail;
    if ((rc = exec_sql(st, "PRAGMA journal_mode=WAL", "journal_mode", err)) != HD_OK) goto fail;
    if ((rc = exec_sql(st, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                       "synchronous", err)) != HD_OK)
        goto fail;
    /* The committer does not checkpoint (a checkpoint with its fsync would
     * stall every waiting request): the checkpointer thread does, on its own
     * connection (see on_wal; the WAL hook registered below replaces this
     * setting, which only applies until then). */
    if ((rc = exec_sql(st, "PRAGMA wal_autocheckpoint=4096", "wal_autocheckpoint", err)) != HD_OK)
        goto fail;
    if ((rc = exec_sql(st, "PRAGMA cache_size=-65536", "cache_size", err)) != HD_OK) goto fail;
    /* Debian builds SQLite with SECURE_DELETE: freed pages (every pruned
     * post) would be overwritten with zeros, doubling the writes. */
    if ((rc = exec_sql(st, "PRAGMA secure_delete=OFF", "secure_delete", err)) != HD_OK) goto fail;
    if ((rc = apply_migrations(st, err)) != HD_OK) goto fail;
    for (int i = 0; i < S_COUNT; i++) {
        if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i],
                               NULL) != SQLITE_OK) {
            rc = db_fail(st, err, "prepare");
            goto fail;
        }
    }
    if (sqlite3_open_v2(path, &st->ckpt, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        rc = hd_err_set(err, HD_EDB, "open %s (checkpointer): %s", path, sqlite3_errmsg(st->ckpt));
        goto fail;
    }
    sqlite3_busy_timeout(st->ckpt, 100);
    sqlite3_exec(st->ckpt, sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 NULL, NULL, NULL);
    if (pthread_create(&st->ckpt_thread, NULL, ckpt_main, st) != 0) {
        rc = hd_err_set(err, HD_ENOMEM, "store: cannot start the checkpointer thread");
        goto fail;
    }
    st->ckpt_started = 1;
    sqlite3_wal_hook(st->db, on_wal, st);
    atomic_store(&st->ready, 1);
    *out = st;
    return HD_OK;
fail:
    store_close(st);
    return rc;
}

void store_checkpoint(store_t *st) {
    if (!st || !st->ckpt_started) return;
    ckpt_kick(st);
}

void store_close(store_t *st) {
    if (!st) return;
    if (st->ckpt_started) {
        pthread_mutex_lock(&st->ckpt_mu);
        st->ckpt_stop = 1;
        pthread_cond_signal(&st->ckpt_cv);
        pthread_mutex_unlock(&st->ckpt_mu);
        pthread_join(st->ckpt_thread, NULL);
    }
    if (st->db) sqlite3_wal_hook(st->db, NULL, NULL);
    if (st->ckpt) sqlite3_close(st->ckpt);
    for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(st->st[i]);
    if (st->db) {
        sqlite3_wal_checkpoint_v2(st->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        sqlite3_close(st->db);
    }
    pthread_mutex_destroy(&st->ckpt_mu);
    pthread_cond_destroy(&st->ckpt_cv);
    free(st);
}

int store_ready(const store_t *st) { return st && atomic_load(&st->ready); }

int store_schema_version(const store_t *st) { return st ? st->schema_version : 0; }

/* Bind a tensor; NULL data binds SQL NULL. */
static int bind_vec(sqlite3_stmt *s, int idx, const double *d, size_t n) {
    if (!d) return sqlite3_bind_null(s, idx);
    return sqlite3_bind_blob64(s, idx, d, (sqlite3_uint64)n * sizeof(double), SQLITE_STATIC);
}

static int bind_text(sqlite3_stmt *s, int idx, const char *t) {
    if (!t) return sqlite3_bind_null(s, idx);
    return sqlite3_bind_text(s, idx, t, -1, SQLITE_STATIC);
}

static hd_rc run_stmt(store_t *st, sqlite3_stmt *s, const char *what, hd_err *err) {
    int r = sqlite3_step(s);
    hd_rc rc = HD_OK;
    if (r != SQLITE_DONE) rc = db_fail(st, err, what);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc;
}

static hd_rc write_op(store_t *st, const store_op *op, hd_err *err) {
    sqlite3_stmt *s;
    switch (op->kind) {
    case STORE_OP_NOOP:
        return HD_OK;
    case STORE_OP_RUN_INSERT:
        s = st->st[S_RUN_INSERT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_double(s, 2, op->d[0]);
        bind_text(s, 3, op->text);
        bind_text(s, 4, op->key);
        sqlite3_bind_int64(s, 5, op->i[0]);
        sqlite3_bind_int64(s, 6, op->i[1]);
        return run_stmt(st, s, "insert run", err);
    case STORE_OP_LAM_HIST_PUT:
        s = st->st[S_LAM_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        bind_vec(s, 3, op->data, op->n);
        return run_stmt(st, s, "insert lam version", err);
    case STORE_OP_LAM_HIST_PRUNE:
        s = st->st[S_LAM_PRUNE];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        return run_stmt(st, s, "prune lam versions", err);
    case STORE_OP_POST_PUT:
        s = st->st[S_POST_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        for (int k = 0; k < 5; k++) sqlite3_bind_int64(s, 2 + k, op->i[k]);
        bind_text(s, 7, op->key);
        if (op->raw)
            sqlite3_bind_blob64(s, 8, op->raw, (sqlite3_uint64)op->raw_len, SQLITE_STATIC);
        else
            bind_vec(s, 8, op->data, op->n);
        return run_stmt(st, s, "insert post", err);
    case STORE_OP_POSTS_PRUNE:
        s = st->st[S_POSTS_PRUNE];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        return run_stmt(st, s, "prune posts", err);
    case STORE_OP_ALOG_CLEAR:
        if (op->run < 0 || op->run > ALOG_RUN_MAX)
            return hd_err_set(err, HD_EDB, "clear async log: run %lld out of range",
                              (long long)op->run);
        s = st->st[S_ALOG_CLEAR];
        sqlite3_bind_int64(s, 1, op->run << ALOG_SHIFT);
        sqlite3_bind_int64(s, 2, (op->run << ALOG_SHIFT) + STORE_ALOG_RING - 1);
        return run_stmt(st, s, "clear async log", err);
    case STORE_OP_POSTS_DELETE:
        s = st->st[S_POSTS_DEL];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        sqlite3_bind_int64(s, 3, op->i[1]);
        return run_stmt(st, s, "delete posts", err);
    case STORE_OP_FINAL_PUT:
        s = st->st[S_FINAL_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        sqlite3_bind_int64(s, 3, op->i[1]);
        bind_vec(s, 4, op->data, op->n);
        return run_stmt(st, s, "insert final", err);
    case STORE_OP_FINALS_DELETE:
        s = st->st[S_FINALS_DEL];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        return run_stmt(st, s, "delete finals", err);
    case STORE_OP_IDEM_PUT:
        s = st->st[S_IDEM_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        for (int k = 0; k < 4; k++) sqlite3_bind_int64(s, 2 + k, op->i[k]);
        bind_text(s, 6, op->key);
        bind_text(s, 7, op->text);
        return run_stmt(st, s, "insert idempotency record", err);
    case STORE_OP_IDEM_STEPS_PUT:
        s = st->st[S_IDEM_STEPS_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        bind_text(s, 3, op->key);
        sqlite3_bind_blob64(s, 4, op->raw, (sqlite3_uint64)op->raw_len, SQLITE_STATIC);
        return run_stmt(st, s, "insert step answers", err);
    case STORE_OP_IDEM_PRUNE: {
        s = st->st[S_IDEM_STEPS_PRUNE];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        hd_rc rc = run_stmt(st, s, "prune step answers", err);
        if (rc != HD_OK) return rc;
        s = st->st[S_IDEM_PRUNE];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        return run_stmt(st, s, "prune idempotency records", err);
    }
    case STORE_OP_SAMPLES_PUT:
        s = st->st[S_SAMPLES_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        sqlite3_bind_int64(s, 3, op->i[1]);
        /* An empty sample list (a blown-up estimation) is an empty BLOB. */
        if (op->data)
            bind_vec(s, 4, op->data, op->n);
        else
            sqlite3_bind_zeroblob(s, 4, 0);
        if (op->data2)
            bind_vec(s, 5, op->data2, op->n2);
        else
            sqlite3_bind_zeroblob(s, 5, 0);
        return run_stmt(st, s, "insert samples", err);
    case STORE_OP_METRICS_PUT:
        s = st->st[S_METRICS_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        sqlite3_bind_int64(s, 2, op->i[0]);
        bind_text(s, 3, op->text);
        return run_stmt(st, s, "insert metrics", err);
    case STORE_OP_WORKER_PUT:
        s = st->st[S_WORKER_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        bind_text(s, 2, op->key);
        bind_text(s, 3, op->text);
        return run_stmt(st, s, "insert worker", err);
    case STORE_OP_LEASE_PUT:
        s = st->st[S_LEASE_PUT];
        sqlite3_bind_int64(s, 1, op->run);
        bind_text(s, 2, op->key);
        bind_text(s, 3, op->text);
        return run_stmt(st, s, "insert lease", err);
    }
    return hd_err_set(err, HD_EINTERNAL, "store: unknown op kind %d", (int)op->kind);
}

static hd_rc write_hot(store_t *st, const store_hot *h, hd_err *err) {
    sqlite3_stmt *s;
    hd_rc rc = HD_OK;
    if (h->state_json) {
        s = st->st[S_RUN_STATE];
        sqlite3_bind_int64(s, 1, h->run);
        bind_text(s, 2, h->state_json);
        sqlite3_bind_double(s, 3, now_unix());
        rc = run_stmt(st, s, "update run state", err);
    }
    for (int pass = 0; rc == HD_OK && h->lam && pass < 2; pass++) {
        s = st->st[pass ? S_RUN_HOT : S_RUN_HOT_UPD];
        sqlite3_bind_int64(s, 1, h->run);
        bind_vec(s, 3, h->lam, h->n_lam);
        bind_vec(s, 4, h->opt_m, h->n_lam);
        bind_vec(s, 5, h->opt_v, h->n_lam);
        rc = run_stmt(st, s, "update run lam", err);
        if (rc == HD_OK && sqlite3_changes(st->db) > 0) break;
    }
    if (rc == HD_OK && h->phi) {
        s = st->st[S_RUN_HOT_PHI];
        sqlite3_bind_int64(s, 1, h->run);
        bind_vec(s, 2, h->phi, h->n_w);
        rc = run_stmt(st, s, "update run phi", err);
    }
    return rc;
}

hd_rc store_batch_commit(store_t *st, const store_op *ops, const store_hot *hots, size_t n_hots,
                         int durable, hd_err *err) {
    hd_rc rc;
    if (durable && !st->sync_full) {
        if ((rc = exec_sql(st, "PRAGMA synchronous=FULL", "synchronous", err)) != HD_OK) return rc;
        rc = store_batch_commit(st, ops, hots, n_hots, 0, err);
        hd_err e2;
        hd_err_clear(&e2);
        if (exec_sql(st, "PRAGMA synchronous=NORMAL", "synchronous", &e2) != HD_OK && rc == HD_OK) {
            *err = e2;
            rc = e2.code;
        }
        return rc;
    }
    rc = exec_sql(st, "BEGIN IMMEDIATE", "begin", err);
    if (rc != HD_OK) return rc;
    for (const store_op *op = ops; op; op = op->next)
        if ((rc = write_op(st, op, err)) != HD_OK) goto rollback;
    for (size_t i = 0; i < n_hots; i++)
        if ((rc = write_hot(st, &hots[i], err)) != HD_OK) goto rollback;
    if ((rc = exec_sql(st, "COMMIT", "commit", err)) == HD_OK) return HD_OK;
rollback:
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static const char *col_text(sqlite3_stmt *q, int c) {
    return (const char *)sqlite3_column_text(q, c);
}

static void col_blob(sqlite3_stmt *q, int c, const void **p, size_t *n) {
    *p = sqlite3_column_blob(q, c);
    *n = (size_t)sqlite3_column_bytes(q, c);
}

hd_rc store_load(store_t *st, store_table tbl, int64_t run, store_row_cb cb, void *ctx,
                 hd_err *err) {
    if ((int)tbl < 0 || tbl > STORE_T_IDEM_STEPS)
        return hd_err_set(err, HD_EINVAL, "store_load: bad table %d", (int)tbl);
    if (tbl == STORE_T_ALOG && (run < 0 || run > ALOG_RUN_MAX))
        return hd_err_set(err, HD_EINVAL, "store_load: run %lld out of range", (long long)run);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(st->db, load_sql[tbl], -1, &q, NULL) != SQLITE_OK)
        return db_fail(st, err, "prepare load");
    if (tbl == STORE_T_ALOG) {
        sqlite3_bind_int64(q, 1, run << ALOG_SHIFT);
        sqlite3_bind_int64(q, 2, (run << ALOG_SHIFT) + STORE_ALOG_RING - 1);
    } else if (tbl != STORE_T_RUNS) {
        sqlite3_bind_int64(q, 1, run);
    }
    hd_rc rc = HD_OK;
    int r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        store_row row;
        memset(&row, 0, sizeof row);
        switch (tbl) {
        case STORE_T_RUNS:
            for (int k = 0; k < 3; k++) row.i[k] = sqlite3_column_int64(q, k);
            row.d = sqlite3_column_double(q, 3);
            row.t1 = col_text(q, 4);
            row.t2 = col_text(q, 5);
            row.t3 = col_text(q, 6);
            col_blob(q, 7, &row.b1, &row.b1_len);
            col_blob(q, 8, &row.b2, &row.b2_len);
            col_blob(q, 9, &row.b3, &row.b3_len);
            col_blob(q, 10, &row.b4, &row.b4_len);
            break;
        case STORE_T_LAM_HIST:
            row.i[0] = sqlite3_column_int64(q, 0);
            col_blob(q, 1, &row.b1, &row.b1_len);
            break;
        case STORE_T_POSTS:
            for (int k = 0; k < 5; k++) row.i[k] = sqlite3_column_int64(q, k);
            row.t1 = col_text(q, 5);
            col_blob(q, 6, &row.b1, &row.b1_len);
            break;
        case STORE_T_FINALS:
            row.i[0] = sqlite3_column_int64(q, 0);
            row.i[1] = sqlite3_column_int64(q, 1);
            col_blob(q, 2, &row.b1, &row.b1_len);
            break;
        case STORE_T_IDEM:
            for (int k = 0; k < 4; k++) row.i[k] = sqlite3_column_int64(q, k);
            row.t1 = col_text(q, 4);
            row.t2 = col_text(q, 5);
            break;
        case STORE_T_SAMPLES:
            row.i[0] = sqlite3_column_int64(q, 0);
            row.i[1] = sqlite3_column_int64(q, 1);
            col_blob(q, 2, &row.b1, &row.b1_len);
            col_blob(q, 3, &row.b2, &row.b2_len);
            break;
        case STORE_T_METRICS:
            row.i[0] = sqlite3_column_int64(q, 0);
            row.t1 = col_text(q, 1);
            break;
        case STORE_T_WORKERS:
        case STORE_T_LEASES:
            row.t1 = col_text(q, 0);
            row.t2 = col_text(q, 1);
            break;
        case STORE_T_ALOG:
            for (int k = 0; k < 6; k++) row.i[k] = sqlite3_column_int64(q, k);
            row.t1 = col_text(q, 6);
            col_blob(q, 7, &row.b1, &row.b1_len);
            break;
        case STORE_T_IDEM_STEPS:
            row.i[0] = sqlite3_column_int64(q, 0);
            row.t1 = col_text(q, 1);
            col_blob(q, 2, &row.b1, &row.b1_len);
            break;
        }
        if ((rc = cb(ctx, &row, err)) != HD_OK) break;
    }
    if (rc == HD_OK && r != SQLITE_DONE) rc = db_fail(st, err, "load");
    sqlite3_finalize(q);
    return rc;
}
