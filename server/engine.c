/* The run engine (engine.h): schedule of a run, sync barrier / async apply,
 * LinearEstimation pooling, Reptile, evaluation jobs, leases, idempotency
 * and the group-commit queue. ALGORITHM.md sections 3-7 give the maths; the
 * protocol is in schema/openapi.yaml. */
#include "engine.h"

#include <cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define ENGINE_X86 1
#else
#define ENGINE_X86 0
#endif

#include "hmap.h"
#include "jsonutil.h"
#include "linest.h"
#include "log.h"
#include "method.h"
#include "mlp.h"
#include "npy.h"
#include "outer.h"
#include "postlog.h"
#include "spec.h"
#include "srvutil.h"
#include "vec.h"

#define ID_HEX 16 /* random bytes of a lease or worker id */
#define ID_LEN (2 * ID_HEX + 1)
#define TOKEN_BYTES 32
#define EVAL_JOB_MAX 100 /* tasks per evaluation job */
#define NAME_MAX_LEN 64
/* Async: store lam/opt (and rotate the post log) at least every N updates
 * or S seconds. A snapshot costs 3 x n_lam doubles (lam, Adam m and v: 490
 * KB for the sinusoid lam, ~6 posts' worth) in SQLite; 256 keeps that near
 * 2% of the log writes while a post log file stays small (256 posts, ~21
 * MB), so that a retired file is reused with its pages still cached. */
#define ENGINE_SNAP_UPDATES 256
#define ENGINE_SNAP_SECONDS 2.0
/* Group commit: the committer waits at most this long for step requests
 * that are already inside the engine (decoding, applying), so that they
 * share its commit instead of waiting for a whole commit more. */
#define ENGINE_GATHER_SECONDS 300e-6

typedef enum { RS_RUNNING = 0, RS_PAUSED, RS_COMPLETED, RS_FAILED, RS_CANCELLED } rstate;
static const char *const rstate_names[] = {"running", "paused", "completed", "failed", "cancelled"};
typedef enum { PH_ESTIMATE = 0, PH_TRAIN, PH_EVAL, PH_DONE } rphase;
static const char *const phase_names[] = {"estimate", "train", "eval", "done"};
typedef enum { LK_TRAIN = 0, LK_ESTIMATE, LK_EVAL } lkind;
static const char *const lkind_names[] = {"train", "estimate", "eval"};
typedef enum { LS_ACTIVE = 0, LS_EXPIRED, LS_RELEASED, LS_COMPLETED, LS_ENDED } lstate;
static const char *const lstate_names[] = {"active", "expired", "released", "completed", "ended"};

typedef struct lease {
    char id[ID_LEN];
    struct engine_run *run;
    char worker[ID_LEN];
    lkind kind;
    int episode; /* episode the lease belongs to */
    int *slots;  /* owned, nslots entries (train / estimate) */
    int nslots;
    int resume_step; /* steps already counted for these slots */
    int job;         /* eval job index, -1 otherwise */
    lstate state;
    double deadline;     /* monotonic seconds */
    int64_t lam_version; /* as granted (V0 for sync train) */
    int64_t phi_version;
    double theta;
    double granted_at; /* unix seconds */
} lease_t;

typedef struct {
    lease_t *lease; /* owner or NULL (queued) */
    int done;       /* train: last inner step whose hypergradient was counted */
    int final;      /* train: w_T received */
    int sampled;    /* estimate: samples received */
} slot_t;

typedef struct {
    int first_slot;
    int k;
    char lease[ID_LEN];
    int64_t version;
    double *g; /* owned n_lam */
} pend_t;

typedef struct {
    int stream; /* TASK_STREAM_VAL or TASK_STREAM_TEST */
    int first, count;
    lease_t *lease; /* owner or NULL */
    int done;
    double loss_sum;
    long cnt;
    long blowups;
} job_t;

typedef struct {
    int episode;
    double theta;    /* fitted theta, NAN until fitted */
    double **x, **y; /* B arrays (owned) of n[b] samples */
    int *n;          /* -1 until the slot's samples arrived */
} round_t;

typedef struct {
    int ended;     /* training of the episode finished */
    double tl_sum; /* sum of per-slot train losses */
    long tl_n;
    double hg_sum; /* sum of reported hypergradient norms */
    long hg_n;
    long blowups, skipped;
    int has_val, has_test;
    double val_loss, test_loss;
    double theta;
    long vjps;      /* cumulative at the end of the episode */
    double seconds; /* since run creation at the end of the episode */
    int64_t lam_version;
} mrow_t;

typedef struct {
    char id[ID_LEN];
    char name[NAME_MAX_LEN + 1];
    int shard, shards;
    double created_at;
    double last_seen; /* unix seconds */
} worker_t;

typedef struct {
    int64_t version;
    double *lam; /* owned */
} hist_t;

typedef struct {
    int status;
    int episode;
    char *body; /* owned reply */
} idem_t;

typedef struct waiter {
    int done;
    hd_rc rc;
} waiter_t;

/* An async post that is in the post log but whose idempotency answer is
 * not stored yet: it is written (STORE_OP_IDEM_STEPS_PUT) in the commit that
 * stores lam (docs/STORAGE.md). */
typedef struct {
    char lease[ID_LEN];
    int episode;
    int64_t t;       /* inner step (the idempotency key) */
    int64_t version; /* lam version the post produced (its answer) */
} alog_t;

struct engine_run {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* publication of lam/phi versions */
    engine_t *eng;
    int64_t id;
    double created_at;
    char token[2 * TOKEN_BYTES + 1];
    run_spec spec;
    char *spec_json; /* canonical */
    int T, B, M;
    size_t n_lam, n_w;
    int lease_seconds;
    rstate state;
    rphase phase;
    char error[256];
    int episode;   /* current episode 1..M */
    int open_step; /* sync: next posting step to complete, T+1 when none */
    int64_t v0;    /* lam version at the start of the episode's training */
    int64_t lam_version, phi_version;
    double theta;
    double *lam, *phi; /* hot copies */
    outer_state opt;
    slot_t *slots; /* B */
    pend_t *pend;  /* B */
    int npend, pend_k;
    double **finals; /* B */
    round_t *rounds;
    int nrounds, caprounds;
    job_t *jobs;
    int njobs;
    int eval_episode;
    mrow_t *mrows; /* episode-1 indexed, nmrows allocated */
    int nmrows;
    lease_t **leases;
    int nleases, capleases;
    worker_t *workers;
    int nworkers, capworkers;
    hmap_t *idem;
    hist_t *hist;
    int nhist, caphist;
    long vjps;
    long posts; /* accepted step posts */
    long st_n, st_max, st_refused;
    double st_sum;
    double meta_val_loss, meta_test_loss;
    int has_meta_val, has_meta_test;
    /* publication (committed state) */
    int64_t pub_lam_version, pub_phi_version;
    blob_t *pub_lam, *pub_phi;
    double *pub_lam_vec; /* committed lam not encoded yet (owned), or NULL: see pub_lam_blob */
    int pub_lam_live;    /* 1: the published lam is r->lam itself (async, every logged post is
                            durable at once): pub_lam_blob encodes it */
    /* commit queue */
    store_op *ops_head, *ops_tail;
    int queued;
    int lam_dirty, phi_dirty;
    int state_dirty; /* the run_state row must be written at the next commit (async
                              posts alone leave it clean: a restart rebuilds their counters
                              from the post log) */
    alog_t *alog;    /* async posts logged whose idem rows are not written yet (owned) */
    int nalog, capalog;
    int64_t alog_flushed; /* async: idem rows are written for every post up to this version */
    int alog_cleared;     /* async: the finished run's legacy async_log ring was deleted */
    int64_t blob_version; /* lam version of the stored lam/opt blobs */
    long blob_opt_step;   /* optimiser step of the stored blobs */
    double blob_time;     /* monotonic time of the last lam snapshot */
    postlog_t *plog;      /* async: the post log since the stored lam (owned), else NULL */
    struct engine_run *next_dirty;
};

struct engine {
    engine_cfg cfg;
    pthread_mutex_t mu; /* runs table, lease index */
    engine_run **runs;  /* index id-1 */
    int nruns, capruns;
    hmap_t *lease_index; /* lease id -> lease_t */
    pthread_mutex_t qmu; /* dirty list */
    pthread_cond_t qcv;
    engine_run *dirty_head, *dirty_tail;
    int stop_committer;
    pthread_mutex_t cmu; /* commit completion */
    pthread_cond_t ccv;
    volatile int shutting_down;
    atomic_int inflight;  /* step requests between their start and their enqueue (gather) */
    atomic_int gathering; /* 1 while the committer waits for inflight to reach 0 */
};

/* ---- small helpers -------------------------------------------------------- */

static void add_exact(cJSON *o, const char *name, double d) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", d);
    cJSON_AddStringToObject(o, name, buf);
}

static double get_exact(const cJSON *o, const char *name, double def) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (cJSON_IsString(it) && it->valuestring) return strtod(it->valuestring, NULL);
    if (cJSON_IsNumber(it)) return it->valuedouble;
    return def;
}

static int64_t get_i64(const cJSON *o, const char *name, int64_t def) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsNumber(it) ? (int64_t)it->valuedouble : def;
}

static const char *get_str(const cJSON *o, const char *name) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int name_index(const char *const *names, int n, const char *s) {
    for (int i = 0; i < n; i++)
        if (s && strcmp(names[i], s) == 0) return i;
    return -1;
}

static double *dup_vec(const double *x, size_t n) {
    double *d = malloc((n ? n : 1) * sizeof *d);
    if (d && n) memcpy(d, x, n * sizeof *d);
    return d;
}

static int first_post_step(const engine_run *r, int after) {
    for (int t = after + 1; t <= r->T; t++)
        if (method_posts_at(&r->spec.method, t, r->T)) return t;
    return r->T + 1;
}

static int last_post_step(const engine_run *r) {
    for (int t = r->T; t >= 1; t--)
        if (method_posts_at(&r->spec.method, t, r->T)) return t;
    return 0;
}

static int is_sync(const engine_run *r) { return r->spec.mode == SPEC_MODE_SYNC; }

static int run_finished(const engine_run *r) {
    return r->state == RS_COMPLETED || r->state == RS_FAILED || r->state == RS_CANCELLED;
}

/* ---- commit queue --------------------------------------------------------- */

/* Append op to the run's pending writes (run lock held). On allocation
 * failure of the op the caller has already failed. state: the change also
 * needs the run_state row written at the commit (everything except an async
 * post, whose durable record is its post log record). */
static void enqueue_op(engine_run *r, store_op *op, int state) {
    engine_t *e = r->eng;
    if (state) r->state_dirty = 1;
    if (op) {
        if (r->ops_tail)
            r->ops_tail->next = op;
        else
            r->ops_head = op;
        r->ops_tail = op;
    }
    if (!r->queued) {
        r->queued = 1;
        pthread_mutex_lock(&e->qmu);
        r->next_dirty = NULL;
        if (e->dirty_tail)
            e->dirty_tail->next_dirty = r;
        else
            e->dirty_head = r;
        e->dirty_tail = r;
        pthread_cond_signal(&e->qcv);
        pthread_mutex_unlock(&e->qmu);
    }
}

static void enqueue(engine_run *r, store_op *op) { enqueue_op(r, op, 1); }

/* Queue a marker that wakes w once everything queued so far is committed
 * (state: as enqueue_op). */
static hd_rc submit_op(engine_run *r, waiter_t *w, int state, hd_err *err) {
    store_op *op = store_op_new(STORE_OP_NOOP, r->id);
    if (!op) return hd_err_set(err, HD_ENOMEM, "out of memory");
    w->done = 0;
    w->rc = HD_OK;
    op->cookie = w;
    enqueue_op(r, op, state);
    return HD_OK;
}

static hd_rc submit(engine_run *r, waiter_t *w, hd_err *err) { return submit_op(r, w, 1, err); }

static hd_rc wait_commit(engine_t *e, waiter_t *w, hd_err *err) {
    pthread_mutex_lock(&e->cmu);
    while (!w->done) pthread_cond_wait(&e->ccv, &e->cmu);
    pthread_mutex_unlock(&e->cmu);
    if (w->rc != HD_OK) return hd_err_set(err, w->rc, "commit failed");
    return HD_OK;
}

static store_op *op_text(store_op_kind kind, engine_run *r, const char *key, char *text) {
    store_op *op = store_op_new(kind, r->id);
    if (!op) {
        free(text);
        return NULL;
    }
    op->key = key ? strdup(key) : NULL;
    op->text = text;
    return op;
}

static store_op *op_ints(store_op_kind kind, engine_run *r, int64_t a, int64_t b) {
    store_op *op = store_op_new(kind, r->id);
    if (op) {
        op->i[0] = a;
        op->i[1] = b;
    }
    return op;
}

/* ---- JSON rows ------------------------------------------------------------ */

static cJSON *lease_to_json(const engine_run *r, const lease_t *l, int for_client) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "lease_id", l->id);
    cJSON_AddStringToObject(o, for_client ? "worker_id" : "worker", l->worker);
    cJSON_AddStringToObject(o, "kind", lkind_names[l->kind]);
    cJSON_AddNumberToObject(o, "episode", l->episode);
    cJSON *sl = cJSON_AddArrayToObject(o, "slots");
    for (int i = 0; sl && i < l->nslots; i++)
        cJSON_AddItemToArray(sl, cJSON_CreateNumber(l->slots[i]));
    cJSON_AddNumberToObject(o, "resume_step", l->resume_step);
    cJSON_AddNumberToObject(o, "lam_version", (double)l->lam_version);
    cJSON_AddNumberToObject(o, "phi_version", (double)l->phi_version);
    if (for_client) {
        cJSON_AddNumberToObject(o, "theta", l->theta);
        cJSON_AddStringToObject(o, "state", lstate_names[l->state]);
        double left = l->deadline - srvutil_mono();
        if (l->state == LS_ACTIVE) cJSON_AddNumberToObject(o, "expires_in", left > 0 ? left : 0);
    } else {
        add_exact(o, "theta", l->theta);
        cJSON_AddStringToObject(o, "state", lstate_names[l->state]);
        cJSON_AddNumberToObject(o, "job", l->job);
        add_exact(o, "granted_at", l->granted_at);
    }
    if (l->kind == LK_EVAL && l->job >= 0 && l->job < r->njobs) {
        const job_t *j = &r->jobs[l->job];
        cJSON *ev = cJSON_AddObjectToObject(o, "eval");
        if (ev) {
            cJSON_AddStringToObject(ev, "stream", j->stream == TASK_STREAM_TEST ? "test" : "val");
            cJSON_AddNumberToObject(ev, "first_task", j->first);
            cJSON_AddNumberToObject(ev, "count", j->count);
        }
    }
    return o;
}

static store_op *lease_op(engine_run *r, const lease_t *l) {
    return op_text(STORE_OP_LEASE_PUT, r, l->id, jsonutil_print_free(lease_to_json(r, l, 0)));
}

static cJSON *mrow_to_json(const mrow_t *m, int episode, int exact) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "episode", episode);
    if (exact) {
        cJSON_AddNumberToObject(o, "ended", m->ended);
        add_exact(o, "tl_sum", m->tl_sum);
        cJSON_AddNumberToObject(o, "tl_n", (double)m->tl_n);
        add_exact(o, "hg_sum", m->hg_sum);
        cJSON_AddNumberToObject(o, "hg_n", (double)m->hg_n);
        if (m->has_val) add_exact(o, "val_loss", m->val_loss);
        if (m->has_test) add_exact(o, "test_loss", m->test_loss);
        add_exact(o, "theta", m->theta);
        add_exact(o, "seconds", m->seconds);
    } else {
        if (m->tl_n)
            cJSON_AddNumberToObject(o, "train_loss", m->tl_sum / (double)m->tl_n);
        else
            cJSON_AddNullToObject(o, "train_loss");
        if (m->has_val) cJSON_AddNumberToObject(o, "val_loss", m->val_loss);
        if (m->hg_n)
            cJSON_AddNumberToObject(o, "hypergrad_norm", m->hg_sum / (double)m->hg_n);
        else
            cJSON_AddNullToObject(o, "hypergrad_norm");
        cJSON_AddNumberToObject(o, "theta", m->theta);
        cJSON_AddNumberToObject(o, "seconds", m->seconds);
        if (m->has_test) cJSON_AddNumberToObject(o, "meta_test_loss", m->test_loss);
    }
    cJSON_AddNumberToObject(o, "vjps", (double)m->vjps);
    cJSON_AddNumberToObject(o, "blowups", (double)m->blowups);
    cJSON_AddNumberToObject(o, "skipped_steps", (double)m->skipped);
    cJSON_AddNumberToObject(o, "lam_version", (double)m->lam_version);
    return o;
}

static mrow_t *mrow(engine_run *r, int episode) {
    if (episode < 1) return NULL;
    if (episode > r->nmrows) {
        int n = r->nmrows ? r->nmrows : 16;
        while (n < episode) n *= 2;
        mrow_t *nm = realloc(r->mrows, (size_t)n * sizeof *nm);
        if (!nm) return NULL;
        memset(nm + r->nmrows, 0, (size_t)(n - r->nmrows) * sizeof *nm);
        r->mrows = nm;
        r->nmrows = n;
    }
    return &r->mrows[episode - 1];
}

static void metrics_put(engine_run *r, int episode) {
    mrow_t *m = mrow(r, episode);
    if (!m) return;
    store_op *op =
        op_text(STORE_OP_METRICS_PUT, r, NULL, jsonutil_print_free(mrow_to_json(m, episode, 1)));
    if (op) op->i[0] = episode;
    enqueue(r, op);
}

static char *state_json(const engine_run *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "state", rstate_names[r->state]);
    cJSON_AddStringToObject(o, "phase", phase_names[r->phase]);
    cJSON_AddStringToObject(o, "error", r->error);
    cJSON_AddNumberToObject(o, "episode", r->episode);
    cJSON_AddNumberToObject(o, "open_step", r->open_step);
    cJSON_AddNumberToObject(o, "v0", (double)r->v0);
    cJSON_AddNumberToObject(o, "lam_version", (double)r->lam_version);
    cJSON_AddNumberToObject(o, "phi_version", (double)r->phi_version);
    cJSON_AddNumberToObject(o, "opt_step", (double)r->opt.step);
    cJSON_AddNumberToObject(o, "blob_version", (double)r->blob_version);
    cJSON_AddNumberToObject(o, "blob_opt_step", (double)r->blob_opt_step);
    cJSON_AddNumberToObject(o, "alog_flushed", (double)r->alog_flushed);
    add_exact(o, "theta", r->theta);
    cJSON_AddNumberToObject(o, "vjps", (double)r->vjps);
    cJSON_AddNumberToObject(o, "posts", (double)r->posts);
    cJSON_AddNumberToObject(o, "st_n", (double)r->st_n);
    cJSON_AddNumberToObject(o, "st_max", (double)r->st_max);
    cJSON_AddNumberToObject(o, "st_refused", (double)r->st_refused);
    add_exact(o, "st_sum", r->st_sum);
    if (r->has_meta_val) add_exact(o, "meta_val_loss", r->meta_val_loss);
    if (r->has_meta_test) add_exact(o, "meta_test_loss", r->meta_test_loss);
    cJSON *sl = cJSON_AddArrayToObject(o, "slots");
    for (int b = 0; sl && b < r->B; b++) {
        cJSON *s = cJSON_CreateObject();
        if (!s) break;
        if (r->slots[b].lease) cJSON_AddStringToObject(s, "lease", r->slots[b].lease->id);
        cJSON_AddNumberToObject(s, "done", r->slots[b].done);
        cJSON_AddNumberToObject(s, "final", r->slots[b].final);
        cJSON_AddNumberToObject(s, "sampled", r->slots[b].sampled);
        cJSON_AddItemToArray(sl, s);
    }
    cJSON_AddNumberToObject(o, "eval_episode", r->eval_episode);
    cJSON *jb = cJSON_AddArrayToObject(o, "jobs");
    for (int i = 0; jb && i < r->njobs; i++) {
        const job_t *j = &r->jobs[i];
        cJSON *s = cJSON_CreateObject();
        if (!s) break;
        cJSON_AddNumberToObject(s, "stream", j->stream);
        cJSON_AddNumberToObject(s, "first", j->first);
        cJSON_AddNumberToObject(s, "count", j->count);
        if (j->lease) cJSON_AddStringToObject(s, "lease", j->lease->id);
        cJSON_AddNumberToObject(s, "done", j->done);
        add_exact(s, "loss_sum", j->loss_sum);
        cJSON_AddNumberToObject(s, "cnt", (double)j->cnt);
        cJSON_AddNumberToObject(s, "blowups", (double)j->blowups);
        cJSON_AddItemToArray(jb, s);
    }
    cJSON *rt = cJSON_AddArrayToObject(o, "round_thetas");
    for (int i = 0; rt && i < r->nrounds; i++) {
        cJSON *s = cJSON_CreateObject();
        if (!s) break;
        cJSON_AddNumberToObject(s, "episode", r->rounds[i].episode);
        add_exact(s, "theta", r->rounds[i].theta);
        cJSON_AddItemToArray(rt, s);
    }
    return jsonutil_print_free(o);
}

/* ---- run lifecycle -------------------------------------------------------- */

static void fail_run(engine_run *r, const char *msg) {
    r->state_dirty = 1;
    r->state = RS_FAILED;
    r->phase = PH_DONE;
    snprintf(r->error, sizeof r->error, "%s", msg);
    HD_LOG_ERROR("run failed run=%lld msg=\"%s\"", (long long)r->id, msg);
}

static hd_rc hist_push(engine_run *r, int64_t version, const double *lam) {
    if (r->nhist == r->caphist) {
        int n = r->caphist ? r->caphist * 2 : 16;
        hist_t *nh = realloc(r->hist, (size_t)n * sizeof *nh);
        if (!nh) return HD_ENOMEM;
        r->hist = nh;
        r->caphist = n;
    }
    double *c = dup_vec(lam, r->n_lam);
    if (!c) return HD_ENOMEM;
    r->hist[r->nhist].version = version;
    r->hist[r->nhist].lam = c;
    r->nhist++;
    return HD_OK;
}

static void hist_prune(engine_run *r, int64_t keep_from) {
    int j = 0;
    for (int i = 0; i < r->nhist; i++) {
        if (r->hist[i].version < keep_from)
            free(r->hist[i].lam);
        else
            r->hist[j++] = r->hist[i];
    }
    r->nhist = j;
}

static const double *hist_get(const engine_run *r, int64_t version) {
    for (int i = r->nhist - 1; i >= 0; i--)
        if (r->hist[i].version == version) return r->hist[i].lam;
    return NULL;
}

static round_t *round_cur(engine_run *r) {
    if (r->nrounds && r->rounds[r->nrounds - 1].episode == r->episode)
        return &r->rounds[r->nrounds - 1];
    return NULL;
}

static round_t *round_new(engine_run *r, int episode) {
    if (r->nrounds == r->caprounds) {
        int n = r->caprounds ? r->caprounds * 2 : 4;
        round_t *nr = realloc(r->rounds, (size_t)n * sizeof *nr);
        if (!nr) return NULL;
        r->rounds = nr;
        r->caprounds = n;
    }
    round_t *rd = &r->rounds[r->nrounds];
    memset(rd, 0, sizeof *rd);
    rd->episode = episode;
    rd->theta = (double)NAN;
    rd->x = calloc((size_t)r->B, sizeof *rd->x);
    rd->y = calloc((size_t)r->B, sizeof *rd->y);
    rd->n = malloc((size_t)r->B * sizeof *rd->n);
    if (!rd->x || !rd->y || !rd->n) {
        free(rd->x);
        free(rd->y);
        free(rd->n);
        return NULL;
    }
    for (int b = 0; b < r->B; b++) rd->n[b] = -1;
    r->nrounds++;
    return rd;
}

static void slots_reset(engine_run *r) {
    for (int b = 0; b < r->B; b++) memset(&r->slots[b], 0, sizeof r->slots[b]);
}

static void pend_clear(engine_run *r) {
    for (int i = 0; i < r->npend; i++) free(r->pend[i].g);
    r->npend = 0;
    r->pend_k = 0;
}

static void finals_clear(engine_run *r) {
    for (int b = 0; b < r->B; b++) {
        free(r->finals[b]);
        r->finals[b] = NULL;
    }
}

static void begin_training(engine_run *r) {
    r->phase = PH_TRAIN;
    slots_reset(r);
    pend_clear(r);
    r->open_step = first_post_step(r, 0);
    r->v0 = r->lam_version;
}

/* Start episode m (run lock held). */
static void begin_episode(engine_run *r, int m) {
    r->episode = m;
    finals_clear(r);
    enqueue(r, op_ints(STORE_OP_FINALS_DELETE, r, m - 1, 0));
    if (m > 2) enqueue(r, op_ints(STORE_OP_IDEM_PRUNE, r, m - 1, 0));
    if (m > 2) {
        /* Idempotency answers of episodes before m-1 are dropped. */
        size_t pos = 0;
        const char *k;
        void *v;
        char **dead = NULL;
        size_t nd = 0, capd = 0;
        while (hmap_next(r->idem, &pos, &k, &v)) {
            idem_t *it = v;
            if (it->episode >= m - 1) continue;
            if (nd == capd) {
                size_t nc = capd ? capd * 2 : 64;
                char **nn = realloc(dead, nc * sizeof *nn);
                if (!nn) break;
                dead = nn;
                capd = nc;
            }
            dead[nd++] = strdup(k);
        }
        for (size_t i = 0; i < nd; i++) {
            if (!dead[i]) continue;
            idem_t *it = hmap_del(r->idem, dead[i]);
            if (it) free(it->body);
            free(it);
            free(dead[i]);
        }
        free(dead);
    }
    mrow_t *mr = mrow(r, m);
    if (mr) memset(mr, 0, sizeof *mr);
    if (method_is_estimation_episode(&r->spec.method, m)) {
        r->phase = PH_ESTIMATE;
        slots_reset(r);
        pend_clear(r);
        r->v0 = r->lam_version;
        r->open_step = first_post_step(r, 0);
        if (!round_cur(r)) round_new(r, m);
    } else {
        begin_training(r);
    }
    if (is_sync(r)) {
        hist_prune(r, r->v0);
        enqueue(r, op_ints(STORE_OP_LAM_HIST_PRUNE, r, r->v0, 0));
        if (!hist_get(r, r->v0)) {
            hist_push(r, r->v0, r->lam);
            store_op *op = op_ints(STORE_OP_LAM_HIST_PUT, r, r->v0, 0);
            if (op) {
                op->data = dup_vec(r->lam, r->n_lam);
                op->n = r->n_lam;
            }
            enqueue(r, op);
        }
    }
    HD_LOG_INFO("episode begins run=%lld episode=%d phase=%s lam_version=%lld", (long long)r->id, m,
                phase_names[r->phase], (long long)r->lam_version);
}

static void make_jobs(engine_run *r, int with_val, int with_test) {
    free(r->jobs);
    r->jobs = NULL;
    r->njobs = 0;
    int nval = with_val ? r->spec.meta_val_tasks : 0,
        ntest = with_test ? r->spec.meta_test_tasks : 0;
    int n = (nval + EVAL_JOB_MAX - 1) / EVAL_JOB_MAX + (ntest + EVAL_JOB_MAX - 1) / EVAL_JOB_MAX;
    if (n == 0) return;
    r->jobs = calloc((size_t)n, sizeof *r->jobs);
    if (!r->jobs) return;
    for (int s = 0; s < 2; s++) {
        int total = s == 0 ? nval : ntest;
        for (int first = 0; first < total; first += EVAL_JOB_MAX) {
            job_t *j = &r->jobs[r->njobs++];
            j->stream = s == 0 ? TASK_STREAM_VAL : TASK_STREAM_TEST;
            j->first = first;
            j->count = total - first < EVAL_JOB_MAX ? total - first : EVAL_JOB_MAX;
        }
    }
}

static void after_episode(engine_run *r);
static void alog_checkpoint(engine_run *r);

/* All evaluation jobs are in: record the losses and move on. */
static void finish_eval(engine_run *r) {
    double sv = 0, st = 0;
    long nv = 0, nt = 0, bl = 0;
    for (int i = 0; i < r->njobs; i++) {
        job_t *j = &r->jobs[i];
        if (j->stream == TASK_STREAM_VAL) {
            sv += j->loss_sum;
            nv += j->cnt;
        } else {
            st += j->loss_sum;
            nt += j->cnt;
        }
        bl += j->blowups;
    }
    mrow_t *m = mrow(r, r->eval_episode);
    if (m) {
        if (nv) {
            m->has_val = 1;
            m->val_loss = sv / (double)nv;
            r->has_meta_val = 1;
            r->meta_val_loss = m->val_loss;
        }
        if (nt) {
            m->has_test = 1;
            m->test_loss = st / (double)nt;
            r->has_meta_test = 1;
            r->meta_test_loss = m->test_loss;
        }
        (void)bl;
        metrics_put(r, r->eval_episode);
    }
    free(r->jobs);
    r->jobs = NULL;
    r->njobs = 0;
    if (r->eval_episode >= r->M) {
        r->state = RS_COMPLETED;
        r->phase = PH_DONE;
        HD_LOG_INFO("run completed run=%lld meta_val_loss=%g meta_test_loss=%g", (long long)r->id,
                    r->has_meta_val ? r->meta_val_loss : (double)NAN,
                    r->has_meta_test ? r->meta_test_loss : (double)NAN);
    } else {
        begin_episode(r, r->eval_episode + 1);
    }
}

/* Training of the current episode finished (Reptile done). */
static void after_episode(engine_run *r) {
    int m = r->episode;
    int last = m >= r->M;
    int interval = r->spec.eval_interval;
    int with_val = (last || (interval > 0 && m % interval == 0)) && r->spec.meta_val_tasks > 0;
    int with_test = last && r->spec.meta_test_tasks > 0;
    if (with_val || with_test) {
        make_jobs(r, with_val, with_test);
        if (r->njobs > 0) {
            r->phase = PH_EVAL;
            r->eval_episode = m;
            slots_reset(r);
            return;
        }
    }
    if (last) {
        r->state = RS_COMPLETED;
        r->phase = PH_DONE;
        HD_LOG_INFO("run completed run=%lld", (long long)r->id);
    } else {
        begin_episode(r, m + 1);
    }
}

/* Every final w_T of the episode is in: Reptile (mean in slot order). */
static void finish_training(engine_run *r) {
    double *mean = calloc(r->n_w ? r->n_w : 1, sizeof *mean);
    if (!mean) {
        fail_run(r, "out of memory in Reptile");
        return;
    }
    for (int b = 0; b < r->B; b++) vec_axpy(r->n_w, mean, 1.0, r->finals[b]);
    vec_scale(r->n_w, mean, 1.0 / (double)r->B);
    outer_reptile(r->n_w, r->phi, r->spec.reptile_lr, mean);
    free(mean);
    if (!vec_all_finite(r->n_w, r->phi)) {
        fail_run(r, "phi became non-finite after Reptile");
        return;
    }
    r->phi_version++;
    r->phi_dirty = 1;
    if (!is_sync(r)) alog_checkpoint(r);
    r->vjps += (long)r->B * method_vjps_per_episode(&r->spec.method, r->T);
    mrow_t *m = mrow(r, r->episode);
    if (m) {
        m->ended = 1;
        m->theta = r->theta;
        m->vjps = r->vjps;
        m->seconds = srvutil_unix() - r->created_at;
        m->lam_version = r->lam_version;
        metrics_put(r, r->episode);
    }
    HD_LOG_INFO("episode done run=%lld episode=%d phi_version=%lld lam_version=%lld",
                (long long)r->id, r->episode, (long long)r->phi_version, (long long)r->lam_version);
    after_episode(r);
}

/* Every slot of the estimation round is in: pooled fit (slot order). */
static void finish_estimation(engine_run *r) {
    round_t *rd = round_cur(r);
    linest_sums tot;
    linest_init(&tot);
    for (int b = 0; rd && b < r->B; b++) {
        linest_sums s;
        linest_init(&s);
        for (int i = 0; i < rd->n[b]; i++) linest_add(&s, rd->x[b][i], rd->y[b][i]);
        linest_merge(&tot, &s);
    }
    double th;
    if (linest_fit(&tot, &th) == 0) r->theta = th;
    if (rd) rd->theta = r->theta;
    r->vjps += (long)r->B * method_estimation_vjps(r->T);
    HD_LOG_INFO("estimation done run=%lld episode=%d theta=%.17g samples=%ld", (long long)r->id,
                r->episode, r->theta, tot.n);
    begin_training(r);
}

/* ---- leases --------------------------------------------------------------- */

/* Return the lease's unfinished slots / job to the queue (run lock held). */
static void lease_drop(engine_run *r, lease_t *l, lstate st) {
    l->state = st;
    if (l->kind == LK_EVAL) {
        if (l->job >= 0 && l->job < r->njobs && r->jobs[l->job].lease == l)
            r->jobs[l->job].lease = NULL;
    } else if (l->episode == r->episode) {
        for (int i = 0; i < l->nslots; i++) {
            slot_t *s = &r->slots[l->slots[i]];
            if (s->lease == l) s->lease = NULL;
        }
    }
    enqueue(r, lease_op(r, l));
}

static void expire_leases(engine_run *r, double now) {
    for (int i = 0; i < r->nleases; i++) {
        lease_t *l = r->leases[i];
        if (l->state == LS_ACTIVE && now > l->deadline) {
            HD_LOG_INFO("lease expired run=%lld lease=%s kind=%s", (long long)r->id, l->id,
                        lkind_names[l->kind]);
            lease_drop(r, l, LS_EXPIRED);
        }
    }
}

void engine_tick(engine_t *e) {
    double now = srvutil_mono();
    pthread_mutex_lock(&e->mu);
    int n = e->nruns;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&e->mu);
        engine_run *r = e->runs[i];
        pthread_mutex_unlock(&e->mu);
        pthread_mutex_lock(&r->mu);
        expire_leases(r, now);
        pthread_mutex_unlock(&r->mu);
    }
}

/* Find an active or ended lease and lock its run. Returns the lease with
 * the run locked, or NULL (err set) with nothing locked. */
static lease_t *lease_lock(engine_t *e, const char *id, hd_err *err) {
    pthread_mutex_lock(&e->mu);
    lease_t *l = id ? hmap_get(e->lease_index, id) : NULL;
    pthread_mutex_unlock(&e->mu);
    if (!l) {
        hd_err_set(err, HD_ENOTFOUND, "no such lease");
        return NULL;
    }
    pthread_mutex_lock(&l->run->mu);
    expire_leases(l->run, srvutil_mono());
    return l;
}

static hd_rc lease_active(const engine_run *r, const lease_t *l, hd_err *err) {
    if (run_finished(r))
        return hd_err_set(err, HD_EGONE, "run %lld is %s", (long long)r->id,
                          rstate_names[r->state]);
    if (l->state != LS_ACTIVE)
        return hd_err_set(err, HD_EGONE, "lease %s is %s", l->id, lstate_names[l->state]);
    return HD_OK;
}

static hd_rc idem_key(char *buf, size_t cap, const char *lease, int kind, int64_t key) {
    snprintf(buf, cap, "%s/%d/%lld", lease, kind, (long long)key);
    return HD_OK;
}

/* Record the answer to (lease, kind, key) in memory only (replacing an
 * older one). Returns HD_OK or HD_ENOMEM. */
static hd_rc idem_remember(engine_run *r, const char *lease, int episode, int kind, int64_t key,
                           const char *body) {
    char k[96];
    idem_key(k, sizeof k, lease, kind, key);
    idem_t *it = calloc(1, sizeof *it);
    if (!it) return HD_ENOMEM;
    it->status = 200;
    it->episode = episode;
    it->body = strdup(body);
    idem_t *old = hmap_get(r->idem, k);
    if (!it->body || hmap_put(r->idem, k, it) != HD_OK) {
        free(it->body);
        free(it);
        return HD_ENOMEM;
    }
    if (old) {
        free(old->body);
        free(old);
    }
    return HD_OK;
}

static store_op *idem_op(engine_run *r, const char *lease, int episode, int kind, int64_t key,
                         const char *body) {
    store_op *op = op_text(STORE_OP_IDEM_PUT, r, lease, strdup(body));
    if (op) {
        op->i[0] = episode;
        op->i[1] = kind;
        op->i[2] = key;
        op->i[3] = 200;
        if (!op->key || !op->text) {
            store_op_free(op);
            op = NULL;
        }
    }
    return op;
}

/* Record the answer to (lease, kind, key) and queue its durable copy. */
static void idem_put(engine_run *r, const lease_t *l, int kind, int64_t key, const char *body) {
    if (idem_remember(r, l->id, l->episode, kind, key, body) != HD_OK) return;
    enqueue(r, idem_op(r, l->id, l->episode, kind, key, body));
}

/* The answer to an accepted step post. */
static void step_body(char *buf, size_t cap, int64_t version) {
    snprintf(buf, cap, "{\"accepted\":true,\"lam_version\":%lld}", (long long)version);
}

/* Async: note a logged post whose idempotency row is written at the next
 * alog_checkpoint. Returns HD_OK or HD_ENOMEM. */
static hd_rc alog_note(engine_run *r, const char *lease, int episode, int64_t t, int64_t version) {
    if (r->nalog == r->capalog) {
        int n = r->capalog ? r->capalog * 2 : 256;
        alog_t *na = realloc(r->alog, (size_t)n * sizeof *na);
        if (!na) return HD_ENOMEM;
        r->alog = na;
        r->capalog = n;
    }
    alog_t *a = &r->alog[r->nalog++];
    snprintf(a->lease, sizeof a->lease, "%s", lease);
    a->episode = episode;
    a->t = t;
    a->version = version;
    return HD_OK;
}

/* Async: store lam and the optimiser state at the next commit and drop the
 * logged posts they contain, writing the idempotency rows of those posts in
 * the same transaction (run lock held). If an op cannot be allocated the log
 * is kept (pruned at the next snapshot) so that no post loses its record. */
static void alog_checkpoint(engine_run *r) {
    r->lam_dirty = 1;
    store_op *head = NULL, *tail = NULL;
    int ok = 1;
    /* One idem_steps row per (lease, episode) with all its answers: one
     * insert instead of one per post (three b-trees each). */
    unsigned char *done = calloc((size_t)(r->nalog ? r->nalog : 1), 1);
    if (!done) ok = 0;
    for (int i = 0; i < r->nalog && ok; i++) {
        if (done[i]) continue;
        const alog_t *a = &r->alog[i];
        int cnt = 0;
        for (int j = i; j < r->nalog; j++)
            cnt += !done[j] && r->alog[j].episode == a->episode &&
                   strcmp(r->alog[j].lease, a->lease) == 0;
        store_op *op = store_op_new(STORE_OP_IDEM_STEPS_PUT, r->id);
        int64_t *pairs = op ? malloc((size_t)cnt * 2 * sizeof *pairs) : NULL;
        if (op) op->key = strdup(a->lease);
        if (!op || !pairs || !op->key) {
            free(pairs);
            store_op_free(op);
            ok = 0;
            break;
        }
        int k = 0;
        for (int j = i; j < r->nalog; j++) {
            if (done[j] || r->alog[j].episode != a->episode ||
                strcmp(r->alog[j].lease, a->lease) != 0)
                continue;
            done[j] = 1;
            pairs[2 * k] = r->alog[j].t;
            pairs[2 * k + 1] = r->alog[j].version;
            k++;
        }
        op->i[0] = a->episode;
        op->raw = (uint8_t *)pairs;
        op->raw_len = (size_t)cnt * 2 * sizeof *pairs;
        if (tail)
            tail->next = op;
        else
            head = op;
        tail = op;
    }
    free(done);
    /* POSTS_PRUNE drops the rows an older server logged in posts; the post
     * log is rotated by the snapshot itself (snapshot()). */
    store_op *prune = ok ? op_ints(STORE_OP_POSTS_PRUNE, r, r->lam_version, 0) : NULL;
    if (!prune) {
        while (head) {
            store_op *n = head->next;
            store_op_free(head);
            head = n;
        }
        return;
    }
    for (store_op *op = head, *n; op; op = n) {
        n = op->next;
        op->next = NULL;
        enqueue(r, op);
    }
    enqueue(r, prune);
    r->nalog = 0;
    r->alog_flushed = r->lam_version;
}

static const idem_t *idem_get(engine_run *r, const char *lease, int kind, int64_t key) {
    char k[96];
    idem_key(k, sizeof k, lease, kind, key);
    return hmap_get(r->idem, k);
}

/* ---- publication ---------------------------------------------------------- */

static blob_t *encode(const engine_run *r, const double *x, size_t n) {
    uint8_t *buf = NULL;
    size_t len = 0;
    size_t shape[1] = {n};
    if (npy_encode(r->spec.wire_f32 ? NPY_F32 : NPY_F64, 1, shape, x, &buf, &len, NULL) != HD_OK)
        return NULL;
    return blob_wrap(buf, len);
}

/* The published lam as .npy (run lock held). The committer publishes the
 * doubles and the first GET encodes them: an async run commits a lam
 * version per group commit, and encoding each one (30 us for 20,400
 * values) on the committer's critical path was wasted when nobody pulled
 * it. NULL when out of memory. */
static blob_t *pub_lam_blob(engine_run *r) {
    if (!r->pub_lam && r->pub_lam_live) return r->pub_lam = encode(r, r->lam, r->n_lam);
    if (!r->pub_lam && r->pub_lam_vec) {
        r->pub_lam = encode(r, r->pub_lam_vec, r->n_lam);
        if (r->pub_lam) {
            free(r->pub_lam_vec);
            r->pub_lam_vec = NULL;
        }
    }
    return r->pub_lam;
}

/* ---- runs ----------------------------------------------------------------- */

static void run_free(engine_run *r) {
    if (!r) return;
    free(r->spec_json);
    free(r->lam);
    free(r->phi);
    outer_state_clear(&r->opt);
    free(r->slots);
    pend_clear(r);
    free(r->pend);
    if (r->finals) finals_clear(r);
    free(r->finals);
    for (int i = 0; i < r->nrounds; i++) {
        for (int b = 0; b < r->B; b++) {
            free(r->rounds[i].x[b]);
            free(r->rounds[i].y[b]);
        }
        free(r->rounds[i].x);
        free(r->rounds[i].y);
        free(r->rounds[i].n);
    }
    free(r->rounds);
    free(r->jobs);
    free(r->mrows);
    for (int i = 0; i < r->nleases; i++) {
        free(r->leases[i]->slots);
        free(r->leases[i]);
    }
    free(r->leases);
    free(r->workers);
    if (r->idem) {
        size_t pos = 0;
        const char *k;
        void *v;
        while (hmap_next(r->idem, &pos, &k, &v)) {
            idem_t *it = v;
            free(it->body);
            free(it);
        }
        hmap_free(r->idem);
    }
    hist_prune(r, INT64_MAX);
    free(r->hist);
    free(r->alog);
    postlog_free(r->plog);
    blob_unref(r->pub_lam);
    blob_unref(r->pub_phi);
    free(r->pub_lam_vec);
    for (store_op *op = r->ops_head; op;) {
        store_op *n = op->next;
        store_op_free(op);
        op = n;
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* Allocate a run for spec (model sizes computed). lam/phi zeroed. */
static hd_rc run_alloc(engine_t *e, const run_spec *spec, engine_run **out, hd_err *err) {
    mlp_t *model = NULL;
    hd_rc rc = spec_model_new(spec, 1, &model, err);
    if (rc != HD_OK) return rc;
    engine_run *r = calloc(1, sizeof *r);
    if (!r) {
        mlp_free(model);
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->eng = e;
    r->spec = *spec;
    r->T = spec->steps;
    r->B = spec->meta_batch;
    r->M = spec->episodes;
    r->n_lam = mlp_n_lam(model);
    r->n_w = mlp_n_w(model);
    r->lease_seconds = spec->lease_seconds;
    r->theta = spec->method.theta_init;
    r->spec_json = spec_to_json(spec);
    r->lam = calloc(r->n_lam ? r->n_lam : 1, sizeof(double));
    r->phi = calloc(r->n_w ? r->n_w : 1, sizeof(double));
    r->slots = calloc((size_t)r->B, sizeof *r->slots);
    r->pend = calloc((size_t)r->B, sizeof *r->pend);
    r->finals = calloc((size_t)r->B, sizeof *r->finals);
    r->idem = hmap_new();
    if (!r->spec_json || !r->lam || !r->phi || !r->slots || !r->pend || !r->finals || !r->idem ||
        outer_state_init(&r->opt, &spec->outer, r->n_lam, err) != HD_OK) {
        mlp_free(model);
        run_free(r);
        return hd_err_set(err, HD_ENOMEM, "out of memory for a run with %zu hyperparameters",
                          r->n_lam);
    }
    mlp_init_params(model, spec->seed, r->n_lam ? r->lam : NULL, r->phi);
    mlp_free(model);
    *out = r;
    return HD_OK;
}

static hd_rc run_register(engine_t *e, engine_run *r, hd_err *err) {
    pthread_mutex_lock(&e->mu);
    if (r->id == 0) r->id = e->nruns + 1;
    if (r->id != e->nruns + 1) {
        pthread_mutex_unlock(&e->mu);
        return hd_err_set(err, HD_EDB, "run ids are not dense (%lld after %d)", (long long)r->id,
                          e->nruns);
    }
    if (e->nruns == e->capruns) {
        int n = e->capruns ? e->capruns * 2 : 16;
        engine_run **nr = realloc(e->runs, (size_t)n * sizeof *nr);
        if (!nr) {
            pthread_mutex_unlock(&e->mu);
            return hd_err_set(err, HD_ENOMEM, "out of memory");
        }
        e->runs = nr;
        e->capruns = n;
    }
    e->runs[e->nruns++] = r;
    pthread_mutex_unlock(&e->mu);
    return HD_OK;
}

hd_rc engine_run_create(engine_t *e, const char *json, size_t len, char **reply, hd_err *err) {
    run_spec spec;
    hd_rc rc = spec_parse(json, len, &spec, err);
    if (rc != HD_OK) return rc;
    /* The server's default lease lifetime applies when the spec has none. */
    cJSON *raw = cJSON_ParseWithLength(json, len);
    if (raw && !cJSON_GetObjectItemCaseSensitive(raw, "lease_seconds"))
        spec.lease_seconds = e->cfg.default_lease_seconds;
    cJSON_Delete(raw);
    engine_run *r = NULL;
    if ((rc = run_alloc(e, &spec, &r, err)) != HD_OK) return rc;
    if ((rc = srvutil_random_hex(r->token, TOKEN_BYTES, err)) != HD_OK) {
        run_free(r);
        return rc;
    }
    r->created_at = srvutil_unix();
    if ((rc = run_register(e, r, err)) != HD_OK) {
        run_free(r);
        return rc;
    }
    waiter_t w;
    pthread_mutex_lock(&r->mu);
    store_op *op = store_op_new(STORE_OP_RUN_INSERT, r->id);
    if (op) {
        op->i[0] = (int64_t)r->n_lam;
        op->i[1] = (int64_t)r->n_w;
        op->d[0] = r->created_at;
        op->text = strdup(r->spec_json);
        op->key = strdup(r->token);
    }
    enqueue(r, op);
    r->state = RS_RUNNING;
    begin_episode(r, 1);
    r->lam_dirty = r->phi_dirty = 1;
    rc = submit(r, &w, err);
    pthread_mutex_unlock(&r->mu);
    if (rc == HD_OK) rc = wait_commit(e, &w, err);
    if (rc != HD_OK) return rc;
    HD_LOG_INFO("run created run=%lld method=%s mode=%s n_lam=%zu n_w=%zu B=%d T=%d M=%d",
                (long long)r->id, method_name(spec.method.kind), is_sync(r) ? "sync" : "async",
                r->n_lam, r->n_w, r->B, r->T, r->M);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddNumberToObject(o, "id", (double)r->id);
        cJSON_AddStringToObject(o, "worker_token", r->token);
    }
    *reply = jsonutil_print_free(o);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

engine_run *engine_run_find(engine_t *e, int64_t id) {
    engine_run *r = NULL;
    pthread_mutex_lock(&e->mu);
    if (id >= 1 && id <= e->nruns) r = e->runs[id - 1];
    pthread_mutex_unlock(&e->mu);
    return r;
}

int64_t engine_run_id(const engine_run *r) { return r->id; }

int engine_run_token_ok(engine_run *r, const char *token) {
    return srvutil_token_eq(r->token, token);
}

int engine_token_known(engine_t *e, const char *token) {
    int known = 0;
    pthread_mutex_lock(&e->mu);
    for (int i = 0; i < e->nruns; i++) known |= srvutil_token_eq(e->runs[i]->token, token);
    pthread_mutex_unlock(&e->mu);
    return known;
}

void engine_counts(engine_t *e, int *runs, int *active) {
    pthread_mutex_lock(&e->mu);
    int n = e->nruns;
    pthread_mutex_unlock(&e->mu);
    int a = 0;
    for (int i = 0; i < n; i++) {
        engine_run *r = engine_run_find(e, i + 1);
        pthread_mutex_lock(&r->mu);
        a += !run_finished(r);
        pthread_mutex_unlock(&r->mu);
    }
    *runs = n;
    *active = a;
}

static cJSON *run_summary(engine_run *r, int full) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    double now = srvutil_mono();
    cJSON_AddNumberToObject(o, "id", (double)r->id);
    cJSON_AddStringToObject(o, "state", rstate_names[r->state]);
    cJSON_AddStringToObject(o, "phase", phase_names[r->phase]);
    if (r->error[0]) cJSON_AddStringToObject(o, "error", r->error);
    cJSON_AddStringToObject(o, "method", method_name(r->spec.method.kind));
    cJSON_AddStringToObject(o, "mode", is_sync(r) ? "sync" : "async");
    cJSON_AddNumberToObject(o, "episode", r->episode);
    cJSON_AddNumberToObject(o, "episodes", r->M);
    cJSON_AddNumberToObject(o, "step", r->phase == PH_TRAIN && is_sync(r) ? r->open_step : 0);
    cJSON_AddNumberToObject(o, "steps", r->T);
    cJSON_AddNumberToObject(o, "meta_batch", r->B);
    cJSON_AddNumberToObject(o, "outer_steps", (double)r->opt.step);
    cJSON_AddNumberToObject(o, "lam_version", (double)r->pub_lam_version);
    cJSON_AddNumberToObject(o, "phi_version", (double)r->pub_phi_version);
    cJSON_AddNumberToObject(o, "episode_lam_version", (double)r->v0);
    cJSON_AddNumberToObject(o, "theta", r->theta);
    cJSON_AddNumberToObject(o, "n_lam", (double)r->n_lam);
    cJSON_AddNumberToObject(o, "n_w", (double)r->n_w);
    cJSON_AddNumberToObject(o, "vjps", (double)r->vjps);
    cJSON_AddNumberToObject(o, "created_at", r->created_at);
    if (r->has_meta_val) cJSON_AddNumberToObject(o, "meta_val_loss", r->meta_val_loss);
    if (r->has_meta_test) cJSON_AddNumberToObject(o, "meta_test_loss", r->meta_test_loss);
    if (!full) return o;
    int last = 0;
    for (int m = r->nmrows; m >= 1; m--)
        if (r->mrows[m - 1].ended) {
            last = m;
            break;
        }
    if (last)
        cJSON_AddItemToObject(o, "last_metrics", mrow_to_json(&r->mrows[last - 1], last, 0));
    else
        cJSON_AddNullToObject(o, "last_metrics");
    cJSON *st = cJSON_AddObjectToObject(o, "staleness");
    if (st) {
        cJSON_AddNumberToObject(st, "count", (double)r->st_n);
        cJSON_AddNumberToObject(st, "mean", r->st_n ? r->st_sum / (double)r->st_n : 0.0);
        cJSON_AddNumberToObject(st, "max", (double)r->st_max);
        cJSON_AddNumberToObject(st, "refused", (double)r->st_refused);
    }
    cJSON_AddNumberToObject(o, "posts", (double)r->posts);
    cJSON *sl = cJSON_AddArrayToObject(o, "slots");
    for (int b = 0; sl && b < r->B; b++) {
        cJSON *s = cJSON_CreateObject();
        if (!s) break;
        cJSON_AddNumberToObject(s, "slot", b);
        if (r->slots[b].lease)
            cJSON_AddStringToObject(s, "lease_id", r->slots[b].lease->id);
        else
            cJSON_AddNullToObject(s, "lease_id");
        cJSON_AddNumberToObject(s, "done", r->slots[b].done);
        cJSON_AddBoolToObject(s, "final", r->slots[b].final);
        cJSON_AddBoolToObject(s, "sampled", r->slots[b].sampled);
        cJSON_AddItemToArray(sl, s);
    }
    cJSON *ws = cJSON_AddArrayToObject(o, "workers");
    double unow = srvutil_unix();
    for (int i = 0; ws && i < r->nworkers; i++) {
        const worker_t *w = &r->workers[i];
        cJSON *s = cJSON_CreateObject();
        if (!s) break;
        cJSON_AddStringToObject(s, "worker_id", w->id);
        cJSON_AddStringToObject(s, "name", w->name);
        cJSON_AddNumberToObject(s, "shard", w->shard);
        cJSON_AddNumberToObject(s, "shards", w->shards);
        cJSON_AddNumberToObject(s, "last_seen_seconds_ago", unow - w->last_seen);
        cJSON_AddItemToArray(ws, s);
    }
    cJSON *ls = cJSON_AddArrayToObject(o, "leases");
    for (int i = 0; ls && i < r->nleases; i++) {
        const lease_t *l = r->leases[i];
        if (l->state != LS_ACTIVE || l->deadline < now) continue;
        cJSON_AddItemToArray(ls, lease_to_json(r, l, 1));
    }
    cJSON *sp = cJSON_Parse(r->spec_json);
    if (sp) cJSON_AddItemToObject(o, "spec", sp);
    return o;
}

char *engine_run_json(engine_t *e, engine_run *r) {
    (void)e;
    pthread_mutex_lock(&r->mu);
    char *s = jsonutil_print_free(run_summary(r, 1));
    pthread_mutex_unlock(&r->mu);
    return s;
}

char *engine_runs_json(engine_t *e) {
    pthread_mutex_lock(&e->mu);
    int n = e->nruns;
    pthread_mutex_unlock(&e->mu);
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = root ? cJSON_AddArrayToObject(root, "runs") : NULL;
    for (int i = 0; arr && i < n; i++) {
        engine_run *r = engine_run_find(e, i + 1);
        pthread_mutex_lock(&r->mu);
        cJSON_AddItemToArray(arr, run_summary(r, 0));
        pthread_mutex_unlock(&r->mu);
    }
    return jsonutil_print_free(root);
}

hd_rc engine_run_control(engine_t *e, engine_run *r, const char *action, char **reply,
                         hd_err *err) {
    waiter_t w;
    hd_rc rc = HD_OK;
    pthread_mutex_lock(&r->mu);
    if (run_finished(r)) {
        rc = hd_err_set(err, HD_ECONFLICT, "run %lld is already %s", (long long)r->id,
                        rstate_names[r->state]);
    } else if (strcmp(action, "pause") == 0) {
        r->state = RS_PAUSED;
    } else if (strcmp(action, "resume") == 0) {
        r->state = RS_RUNNING;
    } else if (strcmp(action, "cancel") == 0) {
        r->state = RS_CANCELLED;
        r->phase = PH_DONE;
        for (int i = 0; i < r->nleases; i++)
            if (r->leases[i]->state == LS_ACTIVE) lease_drop(r, r->leases[i], LS_ENDED);
    } else {
        rc =
            hd_err_set(err, HD_ENOTFOUND, "unknown action '%.32s' (pause, resume, cancel)", action);
    }
    if (rc == HD_OK) rc = submit(r, &w, err);
    const char *st = rstate_names[r->state];
    pthread_mutex_unlock(&r->mu);
    if (rc == HD_OK) rc = wait_commit(e, &w, err);
    if (rc != HD_OK) return rc;
    HD_LOG_INFO("run control run=%lld action=%s state=%s", (long long)r->id, action, st);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddNumberToObject(o, "id", (double)r->id);
        cJSON_AddStringToObject(o, "state", st);
    }
    *reply = jsonutil_print_free(o);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

char *engine_metrics_json(engine_t *e, engine_run *r) {
    (void)e;
    pthread_mutex_lock(&r->mu);
    cJSON *arr = cJSON_CreateArray();
    for (int m = 1; arr && m <= r->nmrows && m <= r->M; m++)
        if (r->mrows[m - 1].ended) cJSON_AddItemToArray(arr, mrow_to_json(&r->mrows[m - 1], m, 0));
    pthread_mutex_unlock(&r->mu);
    return jsonutil_print_free(arr);
}

static void csv_num(char *buf, size_t cap, double d, int have) {
    if (have && isfinite(d))
        snprintf(buf, cap, "%.17g", d);
    else
        buf[0] = 0;
}

char *engine_metrics_csv(engine_t *e, engine_run *r) {
    (void)e;
    pthread_mutex_lock(&r->mu);
    size_t cap = 256 + (size_t)r->nmrows * 256, len = 0;
    char *out = malloc(cap);
    if (out) {
        len = (size_t)snprintf(
            out, cap,
            "episode,train_loss,val_loss,meta_test_loss,hypergrad_norm,theta,vjps,seconds,"
            "blowups,skipped_steps,lam_version\n");
        for (int m = 1; m <= r->nmrows && m <= r->M; m++) {
            const mrow_t *x = &r->mrows[m - 1];
            if (!x->ended) continue;
            char a[40], b[40], c[40], d[40];
            csv_num(a, sizeof a, x->tl_n ? x->tl_sum / (double)x->tl_n : 0, x->tl_n > 0);
            csv_num(b, sizeof b, x->val_loss, x->has_val);
            csv_num(c, sizeof c, x->test_loss, x->has_test);
            csv_num(d, sizeof d, x->hg_n ? x->hg_sum / (double)x->hg_n : 0, x->hg_n > 0);
            len += (size_t)snprintf(
                out + len, cap - len, "%d,%s,%s,%s,%s,%.17g,%ld,%.6f,%ld,%ld,%lld\n", m, a, b, c, d,
                x->theta, x->vjps, x->seconds, x->blowups, x->skipped, (long long)x->lam_version);
            if (len >= cap) break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return out;
}

char *engine_samples_json(engine_t *e, engine_run *r) {
    (void)e;
    pthread_mutex_lock(&r->mu);
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < r->nrounds; i++) {
        const round_t *rd = &r->rounds[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddNumberToObject(o, "episode", rd->episode);
        if (isfinite(rd->theta))
            cJSON_AddNumberToObject(o, "theta", rd->theta);
        else
            cJSON_AddNullToObject(o, "theta");
        cJSON *ss = cJSON_AddArrayToObject(o, "samples");
        for (int b = 0; ss && b < r->B; b++) {
            for (int k = 0; k < rd->n[b]; k++) {
                cJSON *s = cJSON_CreateObject();
                if (!s) break;
                cJSON_AddNumberToObject(s, "slot", b);
                cJSON_AddNumberToObject(s, "s", k + 1);
                cJSON_AddNumberToObject(s, "x", rd->x[b][k]);
                cJSON_AddNumberToObject(s, "y", rd->y[b][k]);
                cJSON_AddItemToArray(ss, s);
            }
        }
        cJSON_AddItemToArray(arr, o);
    }
    pthread_mutex_unlock(&r->mu);
    return jsonutil_print_free(arr);
}

/* ---- tensors -------------------------------------------------------------- */

hd_rc engine_tensor_get(engine_t *e, engine_run *r, int which, const engine_tensor_query *q,
                        engine_tensor_reply *out, hd_err *err) {
    double wait = q->wait;
    if (wait > e->cfg.max_wait) wait = e->cfg.max_wait;
    double deadline = srvutil_mono() + wait;
    hd_rc rc = HD_OK;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        int64_t cur = which ? r->pub_phi_version : r->pub_lam_version;
        int ready;
        if (q->version >= 0)
            ready = q->version <= cur;
        else if (q->after >= 0)
            ready = cur > q->after;
        else
            ready = 1;
        if (ready || wait <= 0 || e->shutting_down || run_finished(r)) {
            out->version = cur;
            if (q->version >= 0) {
                if (q->version > cur) {
                    rc = hd_err_set(err, HD_ENOTFOUND,
                                    "%s version %lld not reached yet (current %lld)",
                                    which ? "phi" : "lam", (long long)q->version, (long long)cur);
                } else if (q->version == cur) {
                    out->status = 200;
                    out->npy = blob_ref(which ? r->pub_phi : pub_lam_blob(r));
                } else {
                    const double *h = which ? NULL : hist_get(r, q->version);
                    if (!h) {
                        rc = hd_err_set(
                            err, HD_EGONE, "%s version %lld is no longer kept (current %lld)",
                            which ? "phi" : "lam", (long long)q->version, (long long)cur);
                    } else {
                        out->status = 200;
                        out->version = q->version;
                        out->npy = encode(r, h, r->n_lam);
                        if (!out->npy) rc = hd_err_set(err, HD_ENOMEM, "out of memory");
                    }
                }
            } else if (q->after >= 0 && cur <= q->after) {
                out->status = 304;
                out->npy = NULL;
            } else {
                out->status = 200;
                out->npy = blob_ref(which ? r->pub_phi : pub_lam_blob(r));
            }
            if (rc == HD_OK && out->status == 200 && !out->npy)
                rc = hd_err_set(err, HD_EBUSY, "no committed version yet");
            break;
        }
        double left = deadline - srvutil_mono();
        if (left <= 0) {
            wait = 0;
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double abs_t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + left;
        ts.tv_sec = (time_t)abs_t;
        ts.tv_nsec = (long)((abs_t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (srvutil_mono() >= deadline) wait = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* ---- workers -------------------------------------------------------------- */

static cJSON *worker_to_json(const worker_t *w) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "worker_id", w->id);
    cJSON_AddStringToObject(o, "name", w->name);
    cJSON_AddNumberToObject(o, "shard", w->shard);
    cJSON_AddNumberToObject(o, "shards", w->shards);
    add_exact(o, "created_at", w->created_at);
    return o;
}

static hd_rc worker_add(engine_run *r, const worker_t *w) {
    if (r->nworkers == r->capworkers) {
        int n = r->capworkers ? r->capworkers * 2 : 8;
        worker_t *nw = realloc(r->workers, (size_t)n * sizeof *nw);
        if (!nw) return HD_ENOMEM;
        r->workers = nw;
        r->capworkers = n;
    }
    r->workers[r->nworkers++] = *w;
    return HD_OK;
}

static worker_t *worker_find(engine_run *r, const char *id) {
    for (int i = 0; id && i < r->nworkers; i++)
        if (strcmp(r->workers[i].id, id) == 0) return &r->workers[i];
    return NULL;
}

hd_rc engine_worker_register(engine_t *e, engine_run *r, const char *body, size_t len, char **reply,
                             hd_err *err) {
    static const char *const keys[] = {"name", "shard", "shards", NULL};
    cJSON *j = NULL;
    hd_rc rc = jsonutil_parse_object(body, len, &j, err);
    if (rc != HD_OK) return rc;
    const char *name = NULL;
    int64_t shard = 0, shards = 1;
    if ((rc = jsonutil_check_keys(j, keys, err)) != HD_OK ||
        (rc = jsonutil_str(j, "name", 0, NAME_MAX_LEN, &name, err)) != HD_OK ||
        (rc = jsonutil_int(j, "shards", 0, 1, 1, 1 << 20, &shards, err)) != HD_OK ||
        (rc = jsonutil_int(j, "shard", 0, 0, 0, 1 << 20, &shard, err)) != HD_OK) {
        cJSON_Delete(j);
        return rc;
    }
    worker_t w;
    memset(&w, 0, sizeof w);
    snprintf(w.name, sizeof w.name, "%s", name ? name : "");
    cJSON_Delete(j);
    if (shard >= shards)
        return hd_err_set(err, HD_EINVAL, "shard: must be < shards (%lld)", (long long)shards);
    if (shards > 1 && shards != r->spec.shards)
        return hd_err_set(err, HD_EINVAL, "shards: must be 1 or the run's spec.shards (%d)",
                          r->spec.shards);
    w.shard = (int)shard;
    w.shards = (int)shards;
    w.created_at = w.last_seen = srvutil_unix();
    if ((rc = srvutil_random_hex(w.id, ID_HEX, err)) != HD_OK) return rc;
    waiter_t wt;
    pthread_mutex_lock(&r->mu);
    if (run_finished(r)) {
        rc = hd_err_set(err, HD_EGONE, "run %lld is %s", (long long)r->id, rstate_names[r->state]);
    } else if (worker_add(r, &w) != HD_OK) {
        rc = hd_err_set(err, HD_ENOMEM, "out of memory");
    } else {
        enqueue(r, op_text(STORE_OP_WORKER_PUT, r, w.id, jsonutil_print_free(worker_to_json(&w))));
        rc = submit(r, &wt, err);
    }
    pthread_mutex_unlock(&r->mu);
    if (rc == HD_OK) rc = wait_commit(e, &wt, err);
    if (rc != HD_OK) return rc;
    HD_LOG_INFO("worker registered run=%lld worker=%s name=%s shard=%d/%d", (long long)r->id, w.id,
                w.name, w.shard, w.shards);
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddStringToObject(o, "worker_id", w.id);
    *reply = jsonutil_print_free(o);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

/* ---- lease grant ---------------------------------------------------------- */

static int slot_ok(const worker_t *w, int b) { return w->shards <= 1 || b % w->shards == w->shard; }

static lease_t *lease_new(engine_run *r, const worker_t *w, lkind kind, hd_err *err) {
    lease_t *l = calloc(1, sizeof *l);
    if (!l) {
        hd_err_set(err, HD_ENOMEM, "out of memory");
        return NULL;
    }
    if (srvutil_random_hex(l->id, ID_HEX, err) != HD_OK) {
        free(l);
        return NULL;
    }
    l->run = r;
    snprintf(l->worker, sizeof l->worker, "%s", w->id);
    l->kind = kind;
    l->episode = r->episode;
    l->job = -1;
    l->state = LS_ACTIVE;
    l->deadline = srvutil_mono() + r->lease_seconds;
    l->granted_at = srvutil_unix();
    l->theta = r->theta;
    l->phi_version = r->phi_version;
    l->lam_version = kind == LK_TRAIN && is_sync(r) ? r->v0 : r->lam_version;
    return l;
}

static hd_rc lease_index(engine_t *e, engine_run *r, lease_t *l, hd_err *err) {
    if (r->nleases == r->capleases) {
        int n = r->capleases ? r->capleases * 2 : 16;
        lease_t **nl = realloc(r->leases, (size_t)n * sizeof *nl);
        if (!nl) return hd_err_set(err, HD_ENOMEM, "out of memory");
        r->leases = nl;
        r->capleases = n;
    }
    pthread_mutex_lock(&e->mu);
    hd_rc rc = hmap_put(e->lease_index, l->id, l);
    pthread_mutex_unlock(&e->mu);
    if (rc != HD_OK) return hd_err_set(err, HD_ENOMEM, "out of memory");
    r->leases[r->nleases++] = l;
    return HD_OK;
}

hd_rc engine_lease_acquire(engine_t *e, engine_run *r, const char *body, size_t len, char **reply,
                           hd_err *err) {
    static const char *const keys[] = {"worker_id", "max_slots", NULL};
    cJSON *j = NULL;
    hd_rc rc = jsonutil_parse_object(body, len, &j, err);
    if (rc != HD_OK) return rc;
    const char *wid = NULL;
    int64_t max_slots = 1;
    char widbuf[ID_LEN] = "";
    if ((rc = jsonutil_check_keys(j, keys, err)) == HD_OK &&
        (rc = jsonutil_str(j, "worker_id", 1, ID_LEN - 1, &wid, err)) == HD_OK &&
        (rc = jsonutil_int(j, "max_slots", 0, 1, 1, SPEC_MAX_META_BATCH, &max_slots, err)) == HD_OK)
        snprintf(widbuf, sizeof widbuf, "%s", wid);
    cJSON_Delete(j);
    if (rc != HD_OK) return rc;
    *reply = NULL;
    waiter_t wt;
    lease_t *l = NULL;
    pthread_mutex_lock(&r->mu);
    expire_leases(r, srvutil_mono());
    worker_t *w = worker_find(r, widbuf);
    if (!w) {
        rc = hd_err_set(err, HD_ENOTFOUND, "worker_id: no such worker in run %lld",
                        (long long)r->id);
        goto out;
    }
    w->last_seen = srvutil_unix();
    if (run_finished(r)) {
        rc = hd_err_set(err, HD_EGONE, "run %lld is %s", (long long)r->id, rstate_names[r->state]);
        goto out;
    }
    if (r->state == RS_PAUSED) goto out;
    if (r->phase == PH_EVAL) {
        int jb = -1;
        for (int i = 0; i < r->njobs; i++)
            if (!r->jobs[i].done && !r->jobs[i].lease) {
                jb = i;
                break;
            }
        if (jb < 0) goto out;
        if (!(l = lease_new(r, w, LK_EVAL, err))) goto fail;
        l->job = jb;
        l->episode = r->eval_episode;
        r->jobs[jb].lease = l;
    } else if (r->phase == PH_ESTIMATE || r->phase == PH_TRAIN) {
        int est = r->phase == PH_ESTIMATE;
        int *pick = malloc((size_t)max_slots * sizeof *pick);
        if (!pick) {
            rc = hd_err_set(err, HD_ENOMEM, "out of memory");
            goto out;
        }
        int n = 0, resume = -1;
        for (int b = 0; b < r->B && n < max_slots; b++) {
            slot_t *s = &r->slots[b];
            if (s->lease || !slot_ok(w, b)) continue;
            if (est ? s->sampled : s->final) continue;
            if (!est && resume >= 0 && s->done != resume) continue;
            if (!est) resume = s->done;
            pick[n++] = b;
        }
        if (n == 0) {
            free(pick);
            goto out;
        }
        if (!(l = lease_new(r, w, est ? LK_ESTIMATE : LK_TRAIN, err))) {
            free(pick);
            goto fail;
        }
        l->slots = pick;
        l->nslots = n;
        l->resume_step = est ? 0 : resume;
        for (int i = 0; i < n; i++) r->slots[pick[i]].lease = l;
    } else {
        goto out;
    }
    if (lease_index(e, r, l, err) != HD_OK) goto fail;
    enqueue(r, lease_op(r, l));
    if ((rc = submit(r, &wt, err)) != HD_OK) goto out;
    *reply = jsonutil_print_free(lease_to_json(r, l, 1));
    if (*reply) {
        /* Add the run facts a worker needs next to the lease. */
        cJSON *o = cJSON_Parse(*reply);
        if (o) {
            cJSON_DeleteItemFromObjectCaseSensitive(o, "state");
            cJSON_AddNumberToObject(o, "lease_seconds", r->lease_seconds);
            cJSON_AddNumberToObject(o, "steps", r->T);
            cJSON_AddNumberToObject(o, "meta_batch", r->B);
            cJSON_AddStringToObject(o, "mode", is_sync(r) ? "sync" : "async");
            cJSON_AddStringToObject(o, "wire_dtype", r->spec.wire_f32 ? "f4" : "f8");
            cJSON_AddNumberToObject(o, "n_lam", (double)r->n_lam);
            cJSON_AddNumberToObject(o, "n_w", (double)r->n_w);
            free(*reply);
            *reply = jsonutil_print_free(o);
        }
    }
    HD_LOG_INFO("lease granted run=%lld lease=%s kind=%s episode=%d slots=%d resume=%d worker=%s",
                (long long)r->id, l->id, lkind_names[l->kind], l->episode, l->nslots,
                l->resume_step, w->id);
    pthread_mutex_unlock(&r->mu);
    rc = wait_commit(e, &wt, err);
    if (rc == HD_OK && !*reply) rc = hd_err_set(err, HD_ENOMEM, "out of memory");
    if (rc != HD_OK) {
        free(*reply);
        *reply = NULL;
    }
    return rc;
fail:
    if (l) {
        if (l->kind == LK_EVAL) r->jobs[l->job].lease = NULL;
        for (int i = 0; i < l->nslots; i++) r->slots[l->slots[i]].lease = NULL;
        free(l->slots);
        free(l);
    }
    rc = err && err->code ? err->code : HD_ENOMEM;
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

engine_run *engine_lease_run(engine_t *e, const char *lease_id) {
    pthread_mutex_lock(&e->mu);
    lease_t *l = lease_id ? hmap_get(e->lease_index, lease_id) : NULL;
    pthread_mutex_unlock(&e->mu);
    return l ? l->run : NULL;
}

size_t engine_lease_body_limit(engine_t *e, const char *lease_id, const char *what) {
    engine_run *r = engine_lease_run(e, lease_id);
    if (!r) return 1 << 16;
    size_t n = strcmp(what, "steps") == 0 ? r->n_lam : strcmp(what, "final") == 0 ? r->n_w : 0;
    if (n == 0) return (size_t)(1 << 16) + (size_t)r->T * 64; /* JSON bodies */
    size_t shape[1] = {n};
    return npy_header_size(r->spec.wire_f32 ? NPY_F32 : NPY_F64, 1, shape) + 64 + n * 8;
}

hd_rc engine_lease_heartbeat(engine_t *e, const char *lease_id, char **reply, hd_err *err) {
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) return err->code;
    engine_run *r = l->run;
    hd_rc rc = lease_active(r, l, err);
    double left = 0;
    if (rc == HD_OK) {
        l->deadline = srvutil_mono() + r->lease_seconds;
        left = r->lease_seconds;
        worker_t *w = worker_find(r, l->worker);
        if (w) w->last_seen = srvutil_unix();
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != HD_OK) return rc;
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddNumberToObject(o, "expires_in", left);
    *reply = jsonutil_print_free(o);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

static int cmp_pend(const void *a, const void *b) {
    const pend_t *x = a, *y = b;
    return (x->first_slot > y->first_slot) - (x->first_slot < y->first_slot);
}

/* 1 when every x[i] is finite. x * 0 is +-0 for a finite x and NaN for an
 * infinity or a NaN: one OR over the bit patterns, no branch per element
 * (vec_all_finite took ~15 us for 20,400 values under the run lock). */
#if ENGINE_X86
/* all_finite and async_decode_f4, 4 lanes: elements [0, returned index)
 * are done; their bits are ORed into *acc (x * 0, as below). */
__attribute__((target("avx"))) static size_t finite_avx(size_t n, const double *x, uint64_t *acc) {
    const __m256d zero = _mm256_setzero_pd();
    __m256d a = zero;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) a = _mm256_or_pd(a, _mm256_mul_pd(_mm256_loadu_pd(x + i), zero));
    uint64_t lanes[4];
    _mm256_storeu_pd((double *)lanes, a);
    *acc |= lanes[0] | lanes[1] | lanes[2] | lanes[3];
    return i;
}

/* g[i] = (double)f[i] * inv_b, bits of (double)f[i] * 0 ORed into *acc,
 * squares of g summed into ss[0..4) by lane. */
__attribute__((target("avx"))) static size_t
decode_f4_avx(size_t n, const uint8_t *src, double inv_b, double *g, uint64_t *acc, double *ss) {
    const __m256d zero = _mm256_setzero_pd(), vb = _mm256_set1_pd(inv_b);
    __m256d a = zero, s2 = _mm256_loadu_pd(ss);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_cvtps_pd(_mm_loadu_ps((const float *)(const void *)(src + 4 * i)));
        a = _mm256_or_pd(a, _mm256_mul_pd(d, zero));
        d = _mm256_mul_pd(d, vb);
        _mm256_storeu_pd(g + i, d);
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(d, d));
    }
    uint64_t lanes[4];
    _mm256_storeu_pd((double *)lanes, a);
    *acc |= lanes[0] | lanes[1] | lanes[2] | lanes[3];
    _mm256_storeu_pd(ss, s2);
    return i;
}
#endif

static int all_finite(size_t n, const double *x) {
    uint64_t acc = 0;
    size_t i = 0;
#if ENGINE_X86
    if (__builtin_cpu_supports("avx")) i = finite_avx(n, x, &acc);
#endif
    for (; i < n; i++) {
        double z = x[i] * 0.0;
        uint64_t b;
        memcpy(&b, &z, sizeof b);
        acc |= b;
    }
    const uint64_t exp_mask = 0x7ff0000000000000u;
    return (acc & exp_mask) != exp_mask;
}

/* Mean over the meta-batch and clip of an async post, done before the run
 * lock (B and the clip norm never change); returns the norm that
 * apply_update adds to the episode's metrics. g is finite (the decoder
 * refuses NaN and Inf), and so it stays: both steps only shrink it. */
static double async_prepare(const engine_run *r, double *g) {
    vec_scale(r->n_lam, g, 1.0 / (double)r->B);
    if (r->spec.clip_norm > 0.0) outer_clip(r->n_lam, g, r->spec.clip_norm);
    return vec_nrm2(r->n_lam, g);
}

/* The common case of an async post, float32 on the wire, in one pass over
 * the body instead of four (decode, finiteness check, mean, norm: ~60 us
 * of the ~100 us a post cost the server besides HTTP): g[i] = (double)f[i]
 * / B exactly as npy_decode_into then vec_scale compute it. Returns 1 with
 * *raw, *raw_len (the float32 values inside the body) and *gnorm set, or 0
 * when the body is not a valid finite post of this run, which the general
 * path then decodes again to report the precise error. */
static int async_decode_f4(const engine_run *r, const uint8_t *npy, size_t len, double *g,
                           const uint8_t **raw, size_t *raw_len, double *gnorm) {
    npy_header h;
    hd_err e;
    hd_err_clear(&e);
    if (npy_parse_header(npy, len, r->n_lam, 1, &h, &e) != HD_OK || h.dtype != NPY_F32 ||
        h.ndim != 1 || h.shape[0] != r->n_lam)
        return 0;
    const uint8_t *src = npy + h.data_offset;
    const double inv_b = 1.0 / (double)r->B;
    uint64_t acc = 0;
    double ss[4] = {0.0, 0.0, 0.0, 0.0};
    size_t n = r->n_lam, i = 0;
#if ENGINE_X86
    if (__builtin_cpu_supports("avx")) i = decode_f4_avx(n, src, inv_b, g, &acc, ss);
#endif
    for (; i + 4 <= n; i += 4) {
        float f[4];
        memcpy(f, src + i * sizeof(float), sizeof f);
        for (int k = 0; k < 4; k++) {
            double d = (double)f[k];
            double z = d * 0.0;
            uint64_t b;
            memcpy(&b, &z, sizeof b);
            acc |= b;
            d *= inv_b;
            g[i + (size_t)k] = d;
            ss[k] += d * d;
        }
    }
    for (; i < n; i++) {
        float f;
        memcpy(&f, src + i * sizeof f, sizeof f);
        double d = (double)f;
        double z = d * 0.0;
        uint64_t b;
        memcpy(&b, &z, sizeof b);
        acc |= b;
        d *= inv_b;
        g[i] = d;
        ss[0] += d * d;
    }
    const uint64_t exp_mask = 0x7ff0000000000000u;
    if ((acc & exp_mask) == exp_mask) return 0;
    *raw = src;
    *raw_len = n * sizeof(float);
    if (r->spec.clip_norm > 0.0) {
        outer_clip(n, g, r->spec.clip_norm);
        *gnorm = vec_nrm2(n, g);
    } else {
        /* Only the episode's mean norm (metrics) uses it: a plain sum of
         * squares (no overflow: |g| <= FLT_MAX). */
        *gnorm = sqrt((ss[0] + ss[1]) + (ss[2] + ss[3]));
    }
    return 1;
}

/* Apply hypergradient g (already averaged) to lam; returns 0, or -1 when
 * the run failed on a non-finite result. gnorm < 0: g is checked and
 * clipped here; else async_prepare did both and returned gnorm. */
static int apply_update(engine_run *r, double *g, double gnorm) {
    if (gnorm < 0.0) {
        if (!all_finite(r->n_lam, g)) {
            fail_run(r, "non-finite hypergradient");
            return -1;
        }
        if (r->spec.clip_norm > 0.0) outer_clip(r->n_lam, g, r->spec.clip_norm);
        gnorm = vec_nrm2(r->n_lam, g);
    }
    mrow_t *m = mrow(r, r->episode);
    if (m) {
        m->hg_sum += gnorm;
        m->hg_n++;
    }
    outer_apply(&r->spec.outer, &r->opt, r->lam, g);
    if (!all_finite(r->n_lam, r->lam)) {
        fail_run(r, "lam became non-finite");
        return -1;
    }
    r->lam_version++;
    /* Sync: lam is stored with every update (once per barrier). Async
     * posts are logged and lam is stored every ENGINE_SNAP_* (see step). */
    if (is_sync(r)) r->lam_dirty = 1;
    return 0;
}

/* Decode a step body for run r without its lock (n_lam, the mode and the
 * wire dtype never change): the run lock then only covers the update. *g
 * gets n_lam doubles; for an async run *raw points at the values as
 * received inside the body (borrowed: the post log stores them, float32 for
 * an f4 run, and replays them exactly) and *crc gets their CRC. On failure
 * the error goes to derr and is reported by the caller at the point where
 * the checks under the lock would have decoded. */
static hd_rc step_decode(const engine_run *r, const uint8_t *npy, size_t len, double **g,
                         const uint8_t **raw, size_t *raw_len, uint32_t crc[3], double *gnorm,
                         hd_err *derr) {
    *g = malloc((r->n_lam ? r->n_lam : 1) * sizeof **g);
    if (!*g) return hd_err_set(derr, HD_ENOMEM, "out of memory");
    if (!is_sync(r) && r->spec.wire_f32 && async_decode_f4(r, npy, len, *g, raw, raw_len, gnorm)) {
        postlog_data_crc(*raw, *raw_len, crc);
        return HD_OK;
    }
    size_t shape[1] = {r->n_lam};
    npy_dtype dt;
    hd_rc rc = npy_decode_into(npy, len, &dt, 1, shape, 1, *g, derr);
    if (rc != HD_OK) return rc;
    if ((dt == NPY_F32) != (r->spec.wire_f32 != 0))
        return hd_err_set(derr, HD_EINVAL, "dtype %s: this run's wire dtype is %s",
                          dt == NPY_F32 ? "<f4" : "<f8", r->spec.wire_f32 ? "<f4" : "<f8");
    if (!is_sync(r)) {
        npy_header h;
        if ((rc = npy_parse_header(npy, len, r->n_lam, 1, &h, derr)) != HD_OK) return rc;
        *raw = npy + h.data_offset;
        *raw_len = len - h.data_offset;
        postlog_data_crc(*raw, *raw_len, crc);
        *gnorm = async_prepare(r, *g);
    }
    return HD_OK;
}

/* A step request leaves the in-flight count (it queued its change or
 * failed): the committer may be waiting for the count to reach zero. */
static void gather_leave(engine_t *e) {
    /* Only a gathering committer is woken: async posts that queue nothing
     * would otherwise wake it once per post for nothing. Sequentially
     * consistent atomics: either the committer sees inflight at 0 before
     * it waits, or this sees gathering set. */
    if (atomic_fetch_sub(&e->inflight, 1) == 1 && atomic_load(&e->gathering)) {
        pthread_mutex_lock(&e->qmu);
        pthread_cond_signal(&e->qcv);
        pthread_mutex_unlock(&e->qmu);
    }
}

/* engine_lease_step without the in-flight bookkeeping: sets *left once it
 * called gather_leave (before waiting for its commit). */
static hd_rc lease_step(engine_t *e, const char *lease_id, int64_t t, int64_t k, int64_t version,
                        const uint8_t *npy, size_t len, int *left, char **reply, hd_err *err) {
    double *g = NULL;
    const uint8_t *raw = NULL; /* async: the post as received, inside npy */
    size_t raw_len = 0;
    uint32_t crc[3] = {0, 0, 0};
    double gnorm = -1.0; /* async: set by step_decode (async_prepare) */
    hd_err derr;
    hd_err_clear(&derr);
    hd_rc drc = HD_EINTERNAL;
    engine_run *r0 = engine_lease_run(e, lease_id);
    if (r0) drc = step_decode(r0, npy, len, &g, &raw, &raw_len, crc, &gnorm, &derr);
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) {
        free(g);
        return err->code;
    }
    engine_run *r = l->run;
    hd_rc rc = HD_OK;
    waiter_t wt;
    int logged = 0;    /* async: the post is in the post log */
    int must_wait = 1; /* the answer waits for a commit (async: see below) */
    const idem_t *prev = idem_get(r, l->id, STORE_IDEM_STEP, t);
    if (prev) {
        *reply = strdup(prev->body);
        pthread_mutex_unlock(&r->mu);
        free(g);
        return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    if ((rc = lease_active(r, l, err)) != HD_OK) goto out;
    if (l->kind != LK_TRAIN) {
        rc = hd_err_set(err, HD_ECONFLICT, "lease %s is a %s lease: it posts no steps", l->id,
                        lkind_names[l->kind]);
        goto out;
    }
    if (t < 1 || t > r->T || !method_posts_at(&r->spec.method, (int)t, r->T)) {
        rc = hd_err_set(err, HD_EINVAL, "t=%lld: not a posting step of this method (T=%d)",
                        (long long)t, r->T);
        goto out;
    }
    if (k >= 0 && k != l->nslots) {
        rc = hd_err_set(err, HD_EINVAL, "slots=%lld: the lease holds %d slots", (long long)k,
                        l->nslots);
        goto out;
    }
    for (int i = 0; i < l->nslots; i++) {
        if (r->slots[l->slots[i]].done >= t) {
            rc = hd_err_set(err, HD_ECONFLICT, "step %lld of slot %d was already counted",
                            (long long)t, l->slots[i]);
            goto out;
        }
    }
    if (is_sync(r)) {
        if (t != r->open_step) {
            rc = hd_err_set(err, HD_ECONFLICT, "step %lld is not open: the open step is %d",
                            (long long)t, r->open_step);
            goto out;
        }
        if (version != r->lam_version) {
            rc = hd_err_set(err, HD_ECONFLICT, "version=%lld: step %lld must use lam version %lld",
                            (long long)version, (long long)t, (long long)r->lam_version);
            goto out;
        }
    } else {
        if (version > r->lam_version || version < 0) {
            rc = hd_err_set(err, HD_EINVAL, "version=%lld: the newest lam version is %lld",
                            (long long)version, (long long)r->lam_version);
            goto out;
        }
        int64_t stale = r->lam_version - version;
        if (stale > r->spec.max_staleness) {
            r->st_refused++;
            rc = hd_err_set(err, HD_ECONFLICT,
                            "stale gradient: computed with version %lld, current %lld "
                            "(staleness %lld > max_staleness %d)",
                            (long long)version, (long long)r->lam_version, (long long)stale,
                            r->spec.max_staleness);
            goto out;
        }
    }
    if (r != r0 || drc != HD_OK) {
        if (r != r0)
            rc = hd_err_set(err, HD_EINTERNAL, "lease %s changed runs", l->id);
        else if (err)
            *err = derr;
        if (r == r0) rc = drc;
        goto out;
    }
    if (!is_sync(r)) {
        /* The durable record of the post: its post log record, written
         * before anything changes (docs/STORAGE.md). The ack below is sent
         * after this write returned, so an acknowledged record is complete. */
        if (!r->plog) {
            /* A run created by this process: no file of an older database
             * with the same run id may be replayed later. */
            if ((rc = postlog_new(e->cfg.db_path, r->id, e->cfg.sync_full, &r->plog, err)) !=
                    HD_OK ||
                (rc = postlog_purge(r->plog, err)) != HD_OK) {
                postlog_free(r->plog);
                r->plog = NULL;
                goto out;
            }
        }
        postlog_rec pr = {.episode = r->episode,
                          .t = t,
                          .first_slot = l->slots[0],
                          .k = l->nslots,
                          .version = r->lam_version + 1,
                          .used = version,
                          .lease = l->id,
                          .data = raw,
                          .len = raw_len};
        memcpy(pr.data_crc, crc, sizeof pr.data_crc);
        if ((rc = postlog_append(r->plog, &pr, err)) != HD_OK) {
            HD_LOG_ERROR("post log append failed run=%lld msg=\"%s\"", (long long)r->id,
                         err ? err->msg : "");
            rc = hd_err_set(err, HD_EBUSY, "the post could not be logged, retry");
            goto out;
        }
        logged = 1;
    }
    l->deadline = srvutil_mono() + r->lease_seconds;
    for (int i = 0; i < l->nslots; i++) r->slots[l->slots[i]].done = (int)t;
    r->posts++;
    if (is_sync(r)) {
        pend_t *p = &r->pend[r->npend++];
        p->first_slot = l->slots[0];
        p->k = l->nslots;
        snprintf(p->lease, sizeof p->lease, "%s", l->id);
        p->version = version;
        p->g = g;
        g = NULL;
        r->pend_k += l->nslots;
        if (r->pend_k < r->B) {
            store_op *op = store_op_new(STORE_OP_POST_PUT, r->id);
            if (op) {
                op->i[0] = r->episode;
                op->i[1] = t;
                op->i[2] = p->first_slot;
                op->i[3] = p->k;
                op->i[4] = version;
                op->key = strdup(l->id);
                op->data = dup_vec(p->g, r->n_lam);
                op->n = r->n_lam;
            }
            enqueue(r, op);
        } else {
            /* Barrier reached: sum in order of first slot, mean, clip, apply. */
            qsort(r->pend, (size_t)r->npend, sizeof *r->pend, cmp_pend);
            double *sum = r->pend[0].g;
            for (int i = 1; i < r->npend; i++) vec_axpy(r->n_lam, sum, 1.0, r->pend[i].g);
            vec_scale(r->n_lam, sum, 1.0 / (double)r->B);
            int ok = apply_update(r, sum, -1.0) == 0;
            pend_clear(r);
            enqueue(r, op_ints(STORE_OP_POSTS_DELETE, r, r->episode, t));
            if (ok) {
                r->open_step = first_post_step(r, (int)t);
                hist_push(r, r->lam_version, r->lam);
                store_op *op = op_ints(STORE_OP_LAM_HIST_PUT, r, r->lam_version, 0);
                if (op) {
                    op->data = dup_vec(r->lam, r->n_lam);
                    op->n = r->n_lam;
                }
                enqueue(r, op);
            }
        }
    } else {
        logged = 0; /* from here on the record stands, or is undone below */
        must_wait = 0;
        int64_t stale = r->lam_version - version;
        r->st_n++;
        r->st_sum += (double)stale;
        if (stale > r->st_max) r->st_max = stale;
        /* The post is in the post log (written above) so that a restart
         * replays it on the last stored lam: durable with ~the body's size,
         * no SQLite write; its idempotency row and the run state are
         * written only when lam is stored (alog_checkpoint). */
        if (apply_update(r, g, gnorm) != 0) {
            /* The run failed (state written); the post changed nothing. */
            postlog_unappend(r->plog);
            enqueue(r, NULL);
            must_wait = 1;
        } else {
            int noted = alog_note(r, l->id, l->episode, t, r->lam_version) == HD_OK;
            if (!noted) {
                /* No room to defer it: write the idempotency row now. */
                char ib[128];
                step_body(ib, sizeof ib, r->lam_version);
                enqueue(r, idem_op(r, l->id, l->episode, STORE_IDEM_STEP, t, ib));
                must_wait = 1;
            }
            if (!noted || r->lam_version - r->blob_version >= ENGINE_SNAP_UPDATES ||
                srvutil_mono() - r->blob_time >= ENGINE_SNAP_SECONDS)
                alog_checkpoint(r);
            if (!e->cfg.sync_full) {
                /* Durable now (in the page cache, as a WAL commit with
                 * synchronous=NORMAL): publish at once, without a commit. */
                blob_unref(r->pub_lam);
                r->pub_lam = NULL;
                free(r->pub_lam_vec);
                r->pub_lam_vec = NULL;
                r->pub_lam_live = 1;
                r->pub_lam_version = r->lam_version;
                pthread_cond_broadcast(&r->cv);
            } else {
                /* --sync full: the committer fdatasyncs the log, then
                 * publishes and wakes this request. */
                must_wait = 1;
            }
        }
    }
    char body[128];
    step_body(body, sizeof body, r->lam_version);
    int sync = is_sync(r);
    if (sync)
        idem_put(r, l, STORE_IDEM_STEP, t, body);
    else
        idem_remember(r, l->id, l->episode, STORE_IDEM_STEP, t, body);
    if (must_wait && (rc = submit_op(r, &wt, sync, err)) != HD_OK) goto out;
    pthread_mutex_unlock(&r->mu);
    free(g);
    gather_leave(e);
    *left = 1;
    if (must_wait && (rc = wait_commit(e, &wt, err)) != HD_OK) return rc;
    *reply = strdup(body);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
out:
    if (logged) postlog_unappend(r->plog);
    pthread_mutex_unlock(&r->mu);
    free(g);
    return rc;
}

hd_rc engine_lease_step(engine_t *e, const char *lease_id, int64_t t, int64_t k, int64_t version,
                        const uint8_t *npy, size_t len, char **reply, hd_err *err) {
    atomic_fetch_add(&e->inflight, 1);
    int left = 0;
    hd_rc rc = lease_step(e, lease_id, t, k, version, npy, len, &left, reply, err);
    if (!left) gather_leave(e);
    return rc;
}

/* Index of slot b in lease l, or -1. */
static int lease_slot_pos(const lease_t *l, int64_t b) {
    for (int i = 0; i < l->nslots; i++)
        if (l->slots[i] == b) return i;
    return -1;
}

hd_rc engine_lease_samples(engine_t *e, const char *lease_id, const char *body, size_t len,
                           char **reply, hd_err *err) {
    static const char *const keys[] = {"slot", "x", "y", NULL};
    cJSON *j = NULL;
    hd_rc rc = jsonutil_parse_object(body, len, &j, err);
    if (rc != HD_OK) return rc;
    int64_t slot = -1;
    double *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    if ((rc = jsonutil_check_keys(j, keys, err)) == HD_OK &&
        (rc = jsonutil_int(j, "slot", 1, 0, 0, SPEC_MAX_META_BATCH, &slot, err)) == HD_OK &&
        (rc = jsonutil_num_array(j, "x", SPEC_MAX_STEPS, &x, &nx, err)) == HD_OK)
        rc = jsonutil_num_array(j, "y", SPEC_MAX_STEPS, &y, &ny, err);
    cJSON_Delete(j);
    if (rc != HD_OK) {
        free(x);
        return rc;
    }
    waiter_t wt;
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) {
        free(x);
        free(y);
        return err->code;
    }
    engine_run *r = l->run;
    const idem_t *prev = idem_get(r, l->id, STORE_IDEM_SAMPLES, slot);
    if (prev) {
        *reply = strdup(prev->body);
        pthread_mutex_unlock(&r->mu);
        free(x);
        free(y);
        return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    round_t *rd = round_cur(r);
    if ((rc = lease_active(r, l, err)) != HD_OK) goto out;
    if (l->kind != LK_ESTIMATE || r->phase != PH_ESTIMATE || !rd) {
        rc = hd_err_set(err, HD_ECONFLICT, "lease %s is not an estimation lease of the open round",
                        l->id);
        goto out;
    }
    if (lease_slot_pos(l, slot) < 0) {
        rc = hd_err_set(err, HD_EINVAL, "slot %lld is not in lease %s", (long long)slot, l->id);
        goto out;
    }
    if (nx != ny || (nx != 0 && nx != (size_t)r->T)) {
        rc = hd_err_set(err, HD_EINVAL,
                        "x and y must both hold T=%d numbers (or both be empty for a "
                        "blown-up slot); got %zu and %zu",
                        r->T, nx, ny);
        goto out;
    }
    if (r->slots[slot].sampled) {
        rc = hd_err_set(err, HD_ECONFLICT, "samples of slot %lld are already in", (long long)slot);
        goto out;
    }
    l->deadline = srvutil_mono() + r->lease_seconds;
    r->slots[slot].sampled = 1;
    rd->n[slot] = (int)nx;
    store_op *op = store_op_new(STORE_OP_SAMPLES_PUT, r->id);
    if (op) {
        op->i[0] = r->episode;
        op->i[1] = slot;
        op->data = nx ? dup_vec(x, nx) : NULL;
        op->n = nx;
        op->data2 = ny ? dup_vec(y, ny) : NULL;
        op->n2 = ny;
    }
    enqueue(r, op);
    rd->x[slot] = x;
    rd->y[slot] = y;
    x = y = NULL;
    int all = 1;
    for (int b = 0; b < r->B; b++) all &= r->slots[b].sampled;
    if (all) finish_estimation(r);
    char out_body[128];
    snprintf(out_body, sizeof out_body, "{\"accepted\":true,\"theta\":%.17g,\"phase\":\"%s\"}",
             r->theta, phase_names[r->phase]);
    idem_put(r, l, STORE_IDEM_SAMPLES, slot, out_body);
    if ((rc = submit(r, &wt, err)) != HD_OK) goto out;
    pthread_mutex_unlock(&r->mu);
    if ((rc = wait_commit(e, &wt, err)) != HD_OK) return rc;
    *reply = strdup(out_body);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
out:
    pthread_mutex_unlock(&r->mu);
    free(x);
    free(y);
    return rc;
}

hd_rc engine_lease_final(engine_t *e, const char *lease_id, int64_t slot, const uint8_t *npy,
                         size_t len, char **reply, hd_err *err) {
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) return err->code;
    engine_run *r = l->run;
    hd_rc rc;
    double *w = NULL;
    waiter_t wt;
    const idem_t *prev = idem_get(r, l->id, STORE_IDEM_FINAL, slot);
    if (prev) {
        *reply = strdup(prev->body);
        pthread_mutex_unlock(&r->mu);
        return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    if ((rc = lease_active(r, l, err)) != HD_OK) goto out;
    if (l->kind != LK_TRAIN || l->episode != r->episode || r->phase != PH_TRAIN) {
        rc = hd_err_set(err, HD_ECONFLICT, "lease %s is not a training lease of the open episode",
                        l->id);
        goto out;
    }
    if (lease_slot_pos(l, slot) < 0) {
        rc = hd_err_set(err, HD_EINVAL, "slot=%lld is not in lease %s", (long long)slot, l->id);
        goto out;
    }
    slot_t *s = &r->slots[slot];
    if (s->final) {
        rc = hd_err_set(err, HD_ECONFLICT, "the final weights of slot %lld are already in",
                        (long long)slot);
        goto out;
    }
    int lastp = last_post_step(r);
    if (s->done < lastp) {
        rc = hd_err_set(err, HD_ECONFLICT,
                        "slot %lld has posted steps up to %d; the method posts up to step %d "
                        "before the final weights",
                        (long long)slot, s->done, lastp);
        goto out;
    }
    w = malloc((r->n_w ? r->n_w : 1) * sizeof *w);
    if (!w) {
        rc = hd_err_set(err, HD_ENOMEM, "out of memory");
        goto out;
    }
    size_t shape[1] = {r->n_w};
    npy_dtype dt;
    if ((rc = npy_decode_into(npy, len, &dt, 1, shape, 1, w, err)) != HD_OK) goto out;
    if ((dt == NPY_F32) != (r->spec.wire_f32 != 0)) {
        rc = hd_err_set(err, HD_EINVAL, "dtype %s: this run's wire dtype is %s",
                        dt == NPY_F32 ? "<f4" : "<f8", r->spec.wire_f32 ? "<f4" : "<f8");
        goto out;
    }
    l->deadline = srvutil_mono() + r->lease_seconds;
    s->final = 1;
    r->finals[slot] = w;
    store_op *op = op_ints(STORE_OP_FINAL_PUT, r, r->episode, slot);
    if (op) {
        op->data = dup_vec(w, r->n_w);
        op->n = r->n_w;
    }
    enqueue(r, op);
    w = NULL;
    int all = 1;
    for (int b = 0; b < r->B; b++) all &= r->slots[b].final;
    if (all) finish_training(r);
    char body[160];
    snprintf(body, sizeof body,
             "{\"accepted\":true,\"phi_version\":%lld,\"episode\":%d,\"phase\":\"%s\"}",
             (long long)r->phi_version, r->episode, phase_names[r->phase]);
    idem_put(r, l, STORE_IDEM_FINAL, slot, body);
    if ((rc = submit(r, &wt, err)) != HD_OK) goto out;
    pthread_mutex_unlock(&r->mu);
    if ((rc = wait_commit(e, &wt, err)) != HD_OK) return rc;
    *reply = strdup(body);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
out:
    pthread_mutex_unlock(&r->mu);
    free(w);
    return rc;
}

hd_rc engine_lease_complete(engine_t *e, const char *lease_id, const char *body, size_t len,
                            char **reply, hd_err *err) {
    static const char *const keys[] = {"metrics", NULL};
    static const char *const tkeys[] = {"train_loss", "hypergrad_norm", "blowups", "skipped_steps",
                                        NULL};
    static const char *const ekeys[] = {"loss_sum", "count", "blowups", NULL};
    cJSON *j = NULL;
    hd_rc rc = jsonutil_parse_object(body, len, &j, err);
    if (rc != HD_OK) return rc;
    double *tl = NULL, *hg = NULL;
    size_t ntl = 0, nhg = 0;
    int64_t blowups = 0, skipped = 0, count = 0;
    double loss_sum = 0;
    waiter_t wt;
    const cJSON *m = NULL;
    if ((rc = jsonutil_check_keys(j, keys, err)) != HD_OK) {
        cJSON_Delete(j);
        return rc;
    }
    m = cJSON_GetObjectItemCaseSensitive(j, "metrics");
    if (m && !cJSON_IsObject(m)) {
        cJSON_Delete(j);
        return hd_err_set(err, HD_EINVAL, "metrics: must be an object");
    }
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) {
        cJSON_Delete(j);
        return err->code;
    }
    engine_run *r = l->run;
    const idem_t *prev = idem_get(r, l->id, STORE_IDEM_COMPLETE, 0);
    if (prev) {
        *reply = strdup(prev->body);
        pthread_mutex_unlock(&r->mu);
        cJSON_Delete(j);
        return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    /* A lease may complete after its run finished (its last final ended the
     * run): only the lease's own state matters here. */
    if (l->state != LS_ACTIVE) {
        rc = hd_err_set(err, HD_EGONE, "lease %s is %s", l->id, lstate_names[l->state]);
        goto out;
    }
    if (l->kind == LK_TRAIN) {
        if (m &&
            ((rc = jsonutil_check_keys(m, tkeys, err)) != HD_OK ||
             (rc = jsonutil_int(m, "blowups", 0, 0, 0, INT32_MAX, &blowups, err)) != HD_OK ||
             (rc = jsonutil_int(m, "skipped_steps", 0, 0, 0, INT32_MAX, &skipped, err)) != HD_OK))
            goto out;
        if (m && cJSON_GetObjectItemCaseSensitive(m, "train_loss") &&
            (rc = jsonutil_num_array(m, "train_loss", (size_t)l->nslots, &tl, &ntl, err)) != HD_OK)
            goto out;
        if (m && cJSON_GetObjectItemCaseSensitive(m, "hypergrad_norm") &&
            (rc = jsonutil_num_array(m, "hypergrad_norm", SPEC_MAX_STEPS, &hg, &nhg, err)) != HD_OK)
            goto out;
        for (int i = 0; i < l->nslots; i++) {
            int b = l->slots[i];
            int fin = l->episode == r->episode && r->phase == PH_TRAIN ? r->slots[b].final : 1;
            if (!fin) {
                rc = hd_err_set(err, HD_ECONFLICT, "slot %d of lease %s has no final weights yet",
                                b, l->id);
                goto out;
            }
        }
        mrow_t *mr = mrow(r, l->episode);
        if (mr) {
            for (size_t i = 0; i < ntl; i++) {
                mr->tl_sum += tl[i];
                mr->tl_n++;
            }
            mr->blowups += blowups;
            mr->skipped += skipped;
            metrics_put(r, l->episode);
        }
    } else if (l->kind == LK_EVAL) {
        if (!m) {
            rc = hd_err_set(err, HD_EINVAL, "metrics: required for an evaluation lease");
            goto out;
        }
        job_t *jb = &r->jobs[l->job];
        if ((rc = jsonutil_check_keys(m, ekeys, err)) != HD_OK ||
            (rc = jsonutil_num(m, "loss_sum", 1, 0, &loss_sum, err)) != HD_OK ||
            (rc = jsonutil_int(m, "count", 1, 0, 0, INT32_MAX, &count, err)) != HD_OK ||
            (rc = jsonutil_int(m, "blowups", 0, 0, 0, INT32_MAX, &blowups, err)) != HD_OK)
            goto out;
        if (count != jb->count) {
            rc = hd_err_set(err, HD_EINVAL, "metrics.count: the job has %d tasks", jb->count);
            goto out;
        }
        jb->done = 1;
        jb->loss_sum = loss_sum;
        jb->cnt = count;
        jb->blowups = blowups;
        jb->lease = NULL;
    } else {
        for (int i = 0; i < l->nslots; i++)
            if (l->episode == r->episode && r->phase == PH_ESTIMATE &&
                !r->slots[l->slots[i]].sampled) {
                rc = hd_err_set(err, HD_ECONFLICT, "slot %d of lease %s has no samples yet",
                                l->slots[i], l->id);
                goto out;
            }
    }
    l->state = LS_COMPLETED;
    enqueue(r, lease_op(r, l));
    if (l->kind == LK_EVAL) {
        int all = 1;
        for (int i = 0; i < r->njobs; i++) all &= r->jobs[i].done;
        if (all) finish_eval(r);
    }
    char out_body[96];
    snprintf(out_body, sizeof out_body, "{\"accepted\":true,\"state\":\"%s\"}",
             rstate_names[r->state]);
    idem_put(r, l, STORE_IDEM_COMPLETE, 0, out_body);
    if ((rc = submit(r, &wt, err)) != HD_OK) goto out;
    pthread_mutex_unlock(&r->mu);
    cJSON_Delete(j);
    free(tl);
    free(hg);
    if ((rc = wait_commit(e, &wt, err)) != HD_OK) return rc;
    *reply = strdup(out_body);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
out:
    pthread_mutex_unlock(&r->mu);
    cJSON_Delete(j);
    free(tl);
    free(hg);
    return rc;
}

hd_rc engine_lease_release(engine_t *e, const char *lease_id, char **reply, hd_err *err) {
    lease_t *l = lease_lock(e, lease_id, err);
    if (!l) return err->code;
    engine_run *r = l->run;
    hd_rc rc = HD_OK;
    waiter_t wt;
    static const char ok[] = "{\"released\":true}";
    if (l->state == LS_RELEASED || l->state == LS_COMPLETED) {
        pthread_mutex_unlock(&r->mu);
        *reply = strdup(ok);
        return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    if ((rc = lease_active(r, l, err)) != HD_OK) goto out;
    lease_drop(r, l, LS_RELEASED);
    if ((rc = submit(r, &wt, err)) != HD_OK) goto out;
    pthread_mutex_unlock(&r->mu);
    if ((rc = wait_commit(e, &wt, err)) != HD_OK) return rc;
    HD_LOG_INFO("lease released run=%lld lease=%s", (long long)r->id, l->id);
    *reply = strdup(ok);
    return *reply ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
out:
    pthread_mutex_unlock(&r->mu);
    return rc;
}

/* ---- the committer -------------------------------------------------------- */

typedef struct {
    engine_run *r;
    int want_state;                   /* the snapshot must carry the state row */
    int64_t lam_version, phi_version; /* versions in the snapshot (-1 = unchanged) */
    double *lam_copy;                 /* lam to publish when it is not in the hot row */
    int64_t plog_gen; /* post log generations <= this are covered by the stored lam (-1: none) */
    int plog_final;   /* the run finished: its post log is deleted after the commit */
    int sync_fd;      /* --sync full: post log file to fdatasync before the commit, or -1 */
    int sync_dir;     /* ... and its directory too */
} pubrec;

static void snapshot(engine_run *r, store_hot *h, pubrec *p) {
    memset(h, 0, sizeof *h);
    h->run = r->id;
    p->plog_gen = -1;
    p->sync_fd = -1;
    /* Before a rotation: the posts waiting for this commit are in the
     * current file (--sync full). Without --sync full the log is synced
     * only before a state row that counts posts after the stored lam (a
     * lease, a final...): on a power loss that row must not survive
     * without the records it counts. */
    int force =
        !r->lam_dirty && (r->state_dirty || r->phi_dirty) && r->lam_version > r->blob_version;
    if (r->plog) p->sync_fd = postlog_take_sync(r->plog, force, &p->sync_dir);
    if (r->lam_dirty) {
        r->blob_version = r->lam_version;
        r->blob_opt_step = r->opt.step;
        r->blob_time = srvutil_mono();
        /* Every logged post is in this lam: new posts go to a new file. */
        if (r->plog) {
            p->plog_gen = postlog_rotate(r->plog);
            p->plog_final = run_finished(r);
        }
    }
    /* The state row is rewritten only when something other than async
     * posts changed (blob_version is in it, so also when lam is stored). */
    p->want_state = r->state_dirty || r->lam_dirty || r->phi_dirty;
    if (p->want_state) h->state_json = state_json(r);
    r->state_dirty = 0;
    p->r = r;
    p->lam_version = p->phi_version = -1;
    if (r->lam_dirty) {
        h->n_lam = r->n_lam;
        h->lam = dup_vec(r->lam, r->n_lam);
        if (r->opt.m) {
            h->opt_m = dup_vec(r->opt.m, r->n_lam);
            h->opt_v = dup_vec(r->opt.v, r->n_lam);
        }
        p->lam_version = r->lam_version;
        r->lam_dirty = 0;
    } else if (r->lam_version > r->pub_lam_version) {
        /* Async: lam moved but is not stored this time (its posts are):
         * publish a copy without writing it. */
        p->lam_copy = dup_vec(r->lam, r->n_lam);
        p->lam_version = p->lam_copy ? r->lam_version : -1;
    }
    if (r->phi_dirty) {
        h->n_w = r->n_w;
        h->phi = dup_vec(r->phi, r->n_w);
        p->phi_version = r->phi_version;
        r->phi_dirty = 0;
    }
}

static int snapshot_ok(const engine_run *r, const store_hot *h, const pubrec *p) {
    if (p->want_state && !h->state_json) return 0;
    if (h->n_lam && (!h->lam || (r->opt.m && (!h->opt_m || !h->opt_v)))) return 0;
    if (h->n_w && !h->phi) return 0;
    return 1;
}

void engine_commit_loop(engine_t *e, store_t *st) {
    for (;;) {
        pthread_mutex_lock(&e->qmu);
        while (!e->dirty_head && !e->stop_committer) pthread_cond_wait(&e->qcv, &e->qmu);
        if (e->dirty_head) atomic_store(&e->gathering, 1);
        if (e->dirty_head && atomic_load(&e->inflight) > 0) {
            /* Gather: step requests already in the engine join this commit
             * (bounded wait; gather_leave signals when the count is 0). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)(ENGINE_GATHER_SECONDS * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            while (atomic_load(&e->inflight) > 0 && !e->stop_committer)
                if (pthread_cond_timedwait(&e->qcv, &e->qmu, &ts) != 0) break;
        }
        atomic_store(&e->gathering, 0);
        engine_run *list = e->dirty_head;
        e->dirty_head = e->dirty_tail = NULL;
        pthread_mutex_unlock(&e->qmu);
        if (!list) break;
        size_t n = 0;
        for (engine_run *r = list; r; r = r->next_dirty) n++;
        store_hot *hots = calloc(n, sizeof *hots);
        pubrec *pubs = calloc(n, sizeof *pubs);
        if (!hots || !pubs) {
            HD_LOG_ERROR(
                "committer: out of memory; exiting so that a restart recovers from the store");
            _exit(70);
        }
        store_op *head = NULL, *tail = NULL;
        size_t i = 0;
        for (engine_run *r = list, *next; r; r = next, i++) {
            pthread_mutex_lock(&r->mu);
            next = r->next_dirty;
            if (!is_sync(r) && run_finished(r) && !r->alog_cleared) {
                /* The log of a finished run is dead once lam is stored (in
                 * this same transaction: snapshot() below): free its ring. */
                store_op *op = store_op_new(STORE_OP_ALOG_CLEAR, r->id);
                if (op) {
                    r->lam_dirty = 1;
                    if (r->ops_tail)
                        r->ops_tail->next = op;
                    else
                        r->ops_head = op;
                    r->ops_tail = op;
                    r->alog_cleared = 1;
                }
            }
            if (r->ops_head) {
                if (tail)
                    tail->next = r->ops_head;
                else
                    head = r->ops_head;
                tail = r->ops_tail;
            }
            r->ops_head = r->ops_tail = NULL;
            r->queued = 0;
            r->next_dirty = NULL;
            snapshot(r, &hots[i], &pubs[i]);
            int ok = snapshot_ok(r, &hots[i], &pubs[i]);
            pthread_mutex_unlock(&r->mu);
            if (!ok) {
                HD_LOG_ERROR("committer: out of memory taking a snapshot; exiting");
                _exit(70);
            }
        }
        hd_rc rc = HD_EDB;
        hd_err err;
        double tc0 = srvutil_mono();
        /* --sync full: the logged posts of this batch reach the disk first. */
        for (i = 0; i < n; i++) {
            if (pubs[i].sync_fd < 0 && !pubs[i].sync_dir) continue;
            hd_err_clear(&err);
            if (postlog_fsync(pubs[i].r->plog, pubs[i].sync_fd, pubs[i].sync_dir, &err) != HD_OK) {
                /* The posts may be lost on a power loss: none is acknowledged. */
                HD_LOG_ERROR("committer: %s; exiting so that a restart recovers", err.msg);
                _exit(70);
            }
        }
        /* Nothing for SQLite (posts of an async run only wait for their
         * publication or fsync): no transaction. */
        int need_sql = 0;
        for (store_op *op = head; op && !need_sql; op = op->next)
            need_sql = op->kind != STORE_OP_NOOP;
        for (i = 0; i < n && !need_sql; i++)
            need_sql = hots[i].state_json || hots[i].lam || hots[i].phi;
        if (!need_sql) rc = HD_OK;
        /* A commit that covers post log files is on disk before they are
         * retired (deleted or reused) below. */
        int durable = 0;
        for (i = 0; i < n; i++) durable |= pubs[i].plog_gen >= 0 || pubs[i].plog_final;
        for (int attempt = 0; attempt < 5 && rc != HD_OK; attempt++) {
            hd_err_clear(&err);
            rc = store_batch_commit(st, head, hots, n, durable, &err);
            if (rc != HD_OK) {
                HD_LOG_ERROR("commit failed attempt=%d msg=\"%s\"", attempt + 1, err.msg);
                usleep(100000u << attempt);
            }
        }
        if (rc != HD_OK) {
            /* The in-memory state is ahead of the store and nothing of this
             * batch was acknowledged: stop, and let a restart rebuild. */
            HD_LOG_ERROR("committer: giving up; exiting so that a restart recovers from the store");
            _exit(70);
        }
        size_t nops = 0;
        for (store_op *op = head; op; op = op->next) nops++;
        HD_LOG_DEBUG("commit runs=%zu ops=%zu us=%.0f", n, nops, (srvutil_mono() - tc0) * 1e6);
        for (i = 0; i < n; i++) {
            engine_run *r = pubs[i].r;
            /* lam is published as doubles (encoded by the first GET). */
            double *lv = NULL;
            if (pubs[i].lam_version >= 0) {
                if (hots[i].lam) {
                    lv = hots[i].lam; /* written already: take it */
                    hots[i].lam = NULL;
                } else {
                    lv = pubs[i].lam_copy;
                    pubs[i].lam_copy = NULL;
                }
            }
            free(pubs[i].lam_copy);
            blob_t *bp = pubs[i].phi_version >= 0 ? encode(r, hots[i].phi, hots[i].n_w) : NULL;
            pthread_mutex_lock(&r->mu);
            if (lv && pubs[i].lam_version >= r->pub_lam_version && !r->pub_lam_live) {
                blob_unref(r->pub_lam);
                r->pub_lam = NULL;
                free(r->pub_lam_vec);
                r->pub_lam_vec = lv;
                r->pub_lam_version = pubs[i].lam_version;
                lv = NULL;
            }
            /* The stored lam covers these post log files now. */
            if (r->plog && (pubs[i].plog_gen >= 0 || pubs[i].plog_final))
                postlog_retire(r->plog, pubs[i].plog_final ? INT64_MAX : pubs[i].plog_gen,
                               !pubs[i].plog_final);
            if (bp && pubs[i].phi_version >= r->pub_phi_version) {
                blob_unref(r->pub_phi);
                r->pub_phi = bp;
                r->pub_phi_version = pubs[i].phi_version;
                bp = NULL;
            }
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            free(lv);
            blob_unref(bp);
            store_hot_clear(&hots[i]);
        }
        pthread_mutex_lock(&e->cmu);
        for (store_op *op = head; op; op = op->next)
            if (op->cookie) ((waiter_t *)op->cookie)->done = 1;
        pthread_cond_broadcast(&e->ccv);
        pthread_mutex_unlock(&e->cmu);
        for (store_op *op = head; op;) {
            store_op *nx = op->next;
            store_op_free(op);
            op = nx;
        }
        free(hots);
        free(pubs);
    }
}

void engine_stop_committer(engine_t *e) {
    pthread_mutex_lock(&e->qmu);
    e->stop_committer = 1;
    pthread_cond_broadcast(&e->qcv);
    pthread_mutex_unlock(&e->qmu);
}

void engine_shutdown(engine_t *e) {
    e->shutting_down = 1;
    pthread_mutex_lock(&e->mu);
    int n = e->nruns;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < n; i++) {
        engine_run *r = engine_run_find(e, i + 1);
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

hd_rc engine_new(const engine_cfg *cfg, engine_t **out, hd_err *err) {
    engine_t *e = calloc(1, sizeof *e);
    if (!e) return hd_err_set(err, HD_ENOMEM, "out of memory");
    e->cfg = *cfg;
    atomic_init(&e->inflight, 0);
    atomic_init(&e->gathering, 0);
    e->lease_index = hmap_new();
    if (!e->lease_index) {
        free(e);
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->qmu, NULL);
    pthread_cond_init(&e->qcv, NULL);
    pthread_mutex_init(&e->cmu, NULL);
    pthread_cond_init(&e->ccv, NULL);
    *out = e;
    return HD_OK;
}

void engine_free(engine_t *e) {
    if (!e) return;
    for (int i = 0; i < e->nruns; i++) run_free(e->runs[i]);
    free(e->runs);
    hmap_free(e->lease_index);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->qmu);
    pthread_cond_destroy(&e->qcv);
    pthread_mutex_destroy(&e->cmu);
    pthread_cond_destroy(&e->ccv);
    free(e);
}

/* ---- loading -------------------------------------------------------------- */

static hd_rc blob_vec(const void *b, size_t blen, double *out, size_t n, const char *what,
                      int64_t run, hd_err *err) {
    if (blen != n * sizeof(double))
        return hd_err_set(err, HD_EDB, "run %lld: %s holds %zu bytes, expected %zu", (long long)run,
                          what, blen, n * sizeof(double));
    if (n) memcpy(out, b, blen);
    return HD_OK;
}

static double *blob_dup(const void *b, size_t blen) {
    size_t n = blen / sizeof(double);
    double *d = malloc((n ? n : 1) * sizeof *d);
    if (d && n) memcpy(d, b, n * sizeof *d);
    return d;
}

static lease_t *run_lease_by_id(engine_t *e, const char *id) {
    if (!id) return NULL;
    return hmap_get(e->lease_index, id);
}

static hd_rc load_worker(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    cJSON *j = cJSON_Parse(row->t2 ? row->t2 : "");
    if (!j) return hd_err_set(err, HD_EDB, "run %lld: bad worker row", (long long)r->id);
    worker_t w;
    memset(&w, 0, sizeof w);
    snprintf(w.id, sizeof w.id, "%s", row->t1 ? row->t1 : "");
    const char *nm = get_str(j, "name");
    snprintf(w.name, sizeof w.name, "%s", nm ? nm : "");
    w.shard = (int)get_i64(j, "shard", 0);
    w.shards = (int)get_i64(j, "shards", 1);
    w.created_at = w.last_seen = get_exact(j, "created_at", 0);
    cJSON_Delete(j);
    return worker_add(r, &w) == HD_OK ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

static hd_rc load_lease(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    cJSON *j = cJSON_Parse(row->t2 ? row->t2 : "");
    if (!j) return hd_err_set(err, HD_EDB, "run %lld: bad lease row", (long long)r->id);
    lease_t *l = calloc(1, sizeof *l);
    hd_rc rc = HD_OK;
    if (!l) {
        cJSON_Delete(j);
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    snprintf(l->id, sizeof l->id, "%s", row->t1 ? row->t1 : "");
    l->run = r;
    const char *wk = get_str(j, "worker");
    snprintf(l->worker, sizeof l->worker, "%s", wk ? wk : "");
    int k = name_index(lkind_names, 3, get_str(j, "kind"));
    int s = name_index(lstate_names, 5, get_str(j, "state"));
    l->kind = k < 0 ? LK_TRAIN : (lkind)k;
    l->state = s < 0 ? LS_ENDED : (lstate)s;
    l->episode = (int)get_i64(j, "episode", 0);
    l->resume_step = (int)get_i64(j, "resume_step", 0);
    l->job = (int)get_i64(j, "job", -1);
    l->lam_version = get_i64(j, "lam_version", 0);
    l->phi_version = get_i64(j, "phi_version", 0);
    l->theta = get_exact(j, "theta", 1.0);
    l->granted_at = get_exact(j, "granted_at", 0);
    /* A restarted server keeps active leases with a fresh deadline. */
    l->deadline = srvutil_mono() + r->lease_seconds;
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(j, "slots");
    int n = cJSON_IsArray(sl) ? cJSON_GetArraySize(sl) : 0;
    if (n > 0) {
        l->slots = malloc((size_t)n * sizeof *l->slots);
        if (!l->slots) rc = hd_err_set(err, HD_ENOMEM, "out of memory");
        for (const cJSON *it = sl->child; l->slots && it; it = it->next) {
            int b = (int)it->valuedouble;
            if (b < 0 || b >= r->B) {
                rc = hd_err_set(err, HD_EDB, "lease %s: slot %d out of range", l->id, b);
                break;
            }
            l->slots[l->nslots++] = b;
        }
    }
    cJSON_Delete(j);
    if (rc == HD_OK) rc = lease_index(r->eng, r, l, err);
    if (rc != HD_OK) {
        free(l->slots);
        free(l);
    }
    return rc;
}

static hd_rc load_hist(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    if (row->b1_len != r->n_lam * sizeof(double))
        return hd_err_set(err, HD_EDB, "run %lld: lam version %lld has a bad size",
                          (long long)r->id, (long long)row->i[0]);
    double *tmp = blob_dup(row->b1, row->b1_len);
    if (!tmp) return hd_err_set(err, HD_ENOMEM, "out of memory");
    hd_rc rc = hist_push(r, row->i[0], tmp);
    free(tmp);
    return rc == HD_OK ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

/* Async: replay one logged post on the stored lam (posts come in version
 * order). r->lam_version counts up from blob_version during the replay. */
static hd_rc replay_post(engine_run *r, const store_row *row, hd_err *err) {
    if (row->i[4] <= r->lam_version) return HD_OK; /* already in the stored lam */
    if (row->i[4] != r->lam_version + 1)
        return hd_err_set(err, HD_EDB, "run %lld: logged post of version %lld follows %lld",
                          (long long)r->id, (long long)row->i[4], (long long)r->lam_version);
    double *g = malloc((r->n_lam ? r->n_lam : 1) * sizeof *g);
    if (!g) return hd_err_set(err, HD_ENOMEM, "out of memory");
    if (row->b1_len == r->n_lam * sizeof(float)) {
        const uint8_t *b = row->b1;
        for (size_t i = 0; i < r->n_lam; i++) {
            float f;
            memcpy(&f, b + i * sizeof f, sizeof f);
            g[i] = (double)f;
        }
    } else if (row->b1_len == r->n_lam * sizeof(double)) {
        memcpy(g, row->b1, row->b1_len);
    } else {
        free(g);
        return hd_err_set(err, HD_EDB, "run %lld: logged post has a bad size", (long long)r->id);
    }
    vec_scale(r->n_lam, g, 1.0 / (double)r->B);
    if (r->spec.clip_norm > 0.0) outer_clip(r->n_lam, g, r->spec.clip_norm);
    outer_apply(&r->spec.outer, &r->opt, r->lam, g);
    r->lam_version++;
    free(g);
    return HD_OK;
}

static hd_rc load_post(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    if (!is_sync(r)) return replay_post(r, row, err);
    if (row->i[0] != r->episode || row->i[1] != r->open_step || r->phase != PH_TRAIN) return HD_OK;
    if (row->b1_len != r->n_lam * sizeof(double) || r->npend >= r->B)
        return hd_err_set(err, HD_EDB, "run %lld: bad pending post", (long long)r->id);
    pend_t *p = &r->pend[r->npend];
    p->first_slot = (int)row->i[2];
    p->k = (int)row->i[3];
    p->version = row->i[4];
    snprintf(p->lease, sizeof p->lease, "%s", row->t1 ? row->t1 : "");
    p->g = blob_dup(row->b1, row->b1_len);
    if (!p->g) return hd_err_set(err, HD_ENOMEM, "out of memory");
    r->npend++;
    r->pend_k += p->k;
    return HD_OK;
}

typedef struct {
    engine_run *r;
    int64_t state_version; /* lam version the stored state row counts posts up to */
} alog_load_ctx;

/* Async: one record of the post log, or one row of the legacy async_log
 * ring (version order; dead records, older than the stored lam, may still
 * be there: a reused file, ring slots not overwritten). The post is applied when the stored
 * lam does not contain it yet; its counters (posts, staleness, slot
 * progress) when the stored state row does not count it yet; its
 * idempotency answer is rebuilt when its idem row is not stored yet, and
 * noted for the next alog_checkpoint, which writes it. */
static hd_rc load_alog(void *ctx, const store_row *row, hd_err *err) {
    alog_load_ctx *c = ctx;
    engine_run *r = c->r;
    hd_rc rc = replay_post(r, row, err);
    if (rc != HD_OK) return rc;
    int64_t v = row->i[4], t = row->i[1];
    const char *lease = row->t1 ? row->t1 : "";
    if (v > c->state_version) {
        int64_t stale = v - 1 - row->i[5];
        r->posts++;
        r->st_n++;
        r->st_sum += (double)stale;
        if (stale > r->st_max) r->st_max = stale;
        const lease_t *l = run_lease_by_id(r->eng, lease);
        if (l && l->run == r && l->episode == r->episode)
            for (int i = 0; i < l->nslots; i++) r->slots[l->slots[i]].done = (int)t;
    }
    if (v <= r->alog_flushed) return HD_OK; /* its idem row is stored */
    char body[128];
    step_body(body, sizeof body, v);
    if (idem_remember(r, lease, (int)row->i[0], STORE_IDEM_STEP, t, body) != HD_OK ||
        alog_note(r, lease, (int)row->i[0], t, v) != HD_OK)
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    return HD_OK;
}

static hd_rc load_final(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    if (row->i[0] != r->episode) return HD_OK;
    int b = (int)row->i[1];
    if (b < 0 || b >= r->B || row->b1_len != r->n_w * sizeof(double))
        return hd_err_set(err, HD_EDB, "run %lld: bad final row", (long long)r->id);
    free(r->finals[b]);
    r->finals[b] = blob_dup(row->b1, row->b1_len);
    return r->finals[b] ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

static hd_rc load_idem(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    char k[96];
    idem_key(k, sizeof k, row->t1 ? row->t1 : "", (int)row->i[1], row->i[2]);
    idem_t *it = calloc(1, sizeof *it);
    if (!it) return hd_err_set(err, HD_ENOMEM, "out of memory");
    it->status = (int)row->i[3];
    it->episode = (int)row->i[0];
    it->body = strdup(row->t2 ? row->t2 : "{}");
    idem_t *old = hmap_get(r->idem, k);
    if (!it->body || hmap_put(r->idem, k, it) != HD_OK) {
        free(it->body);
        free(it);
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    if (old) {
        free(old->body);
        free(old);
    }
    return HD_OK;
}

/* Async step answers stored in a batch (idem_steps): pairs (t, version). */
static hd_rc load_idem_steps(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    if (row->b1_len % (2 * sizeof(int64_t)) != 0)
        return hd_err_set(err, HD_EDB, "run %lld: bad step answers row", (long long)r->id);
    const uint8_t *b = row->b1;
    char body[128];
    for (size_t off = 0; off < row->b1_len; off += 2 * sizeof(int64_t)) {
        int64_t t, v;
        memcpy(&t, b + off, sizeof t);
        memcpy(&v, b + off + sizeof t, sizeof v);
        step_body(body, sizeof body, v);
        if (idem_remember(r, row->t1 ? row->t1 : "", (int)row->i[0], STORE_IDEM_STEP, t, body) !=
            HD_OK)
            return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    return HD_OK;
}

static hd_rc load_samples(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    int ep = (int)row->i[0], b = (int)row->i[1];
    if (b < 0 || b >= r->B || row->b1_len != row->b2_len)
        return hd_err_set(err, HD_EDB, "run %lld: bad samples row", (long long)r->id);
    round_t *rd = NULL;
    for (int i = 0; i < r->nrounds; i++)
        if (r->rounds[i].episode == ep) rd = &r->rounds[i];
    if (!rd && !(rd = round_new(r, ep))) return hd_err_set(err, HD_ENOMEM, "out of memory");
    free(rd->x[b]);
    free(rd->y[b]);
    rd->n[b] = (int)(row->b1_len / sizeof(double));
    rd->x[b] = blob_dup(row->b1, row->b1_len);
    rd->y[b] = blob_dup(row->b2, row->b2_len);
    return rd->x[b] && rd->y[b] ? HD_OK : hd_err_set(err, HD_ENOMEM, "out of memory");
}

static hd_rc load_metrics(void *ctx, const store_row *row, hd_err *err) {
    engine_run *r = ctx;
    mrow_t *m = mrow(r, (int)row->i[0]);
    cJSON *j = cJSON_Parse(row->t1 ? row->t1 : "");
    if (!m || !j) {
        cJSON_Delete(j);
        return hd_err_set(err, HD_EDB, "run %lld: bad metrics row", (long long)r->id);
    }
    m->ended = (int)get_i64(j, "ended", 0);
    m->tl_sum = get_exact(j, "tl_sum", 0);
    m->tl_n = (long)get_i64(j, "tl_n", 0);
    m->hg_sum = get_exact(j, "hg_sum", 0);
    m->hg_n = (long)get_i64(j, "hg_n", 0);
    m->has_val = cJSON_HasObjectItem(j, "val_loss");
    m->val_loss = get_exact(j, "val_loss", (double)NAN);
    m->has_test = cJSON_HasObjectItem(j, "test_loss");
    m->test_loss = get_exact(j, "test_loss", (double)NAN);
    m->theta = get_exact(j, "theta", (double)NAN);
    m->seconds = get_exact(j, "seconds", 0);
    m->vjps = (long)get_i64(j, "vjps", 0);
    m->blowups = (long)get_i64(j, "blowups", 0);
    m->skipped = (long)get_i64(j, "skipped_steps", 0);
    m->lam_version = get_i64(j, "lam_version", 0);
    cJSON_Delete(j);
    return HD_OK;
}

static hd_rc restore_state(engine_run *r, const char *text, hd_err *err) {
    cJSON *j = cJSON_Parse(text ? text : "");
    if (!j) return hd_err_set(err, HD_EDB, "run %lld: unreadable state", (long long)r->id);
    int s = name_index(rstate_names, 5, get_str(j, "state"));
    int p = name_index(phase_names, 4, get_str(j, "phase"));
    r->state = s < 0 ? RS_FAILED : (rstate)s;
    r->phase = p < 0 ? PH_DONE : (rphase)p;
    const char *er = get_str(j, "error");
    snprintf(r->error, sizeof r->error, "%s", er ? er : "");
    r->episode = (int)get_i64(j, "episode", 1);
    r->open_step = (int)get_i64(j, "open_step", 1);
    r->v0 = get_i64(j, "v0", 0);
    r->lam_version = get_i64(j, "lam_version", 0);
    r->phi_version = get_i64(j, "phi_version", 0);
    r->opt.step = (long)get_i64(j, "opt_step", 0);
    r->blob_version = get_i64(j, "blob_version", r->lam_version);
    r->blob_opt_step = (long)get_i64(j, "blob_opt_step", r->opt.step);
    r->alog_flushed = get_i64(j, "alog_flushed", r->blob_version);
    r->theta = get_exact(j, "theta", r->spec.method.theta_init);
    r->vjps = (long)get_i64(j, "vjps", 0);
    r->posts = (long)get_i64(j, "posts", 0);
    r->st_n = (long)get_i64(j, "st_n", 0);
    r->st_max = (long)get_i64(j, "st_max", 0);
    r->st_refused = (long)get_i64(j, "st_refused", 0);
    r->st_sum = get_exact(j, "st_sum", 0);
    r->has_meta_val = cJSON_HasObjectItem(j, "meta_val_loss");
    r->meta_val_loss = get_exact(j, "meta_val_loss", (double)NAN);
    r->has_meta_test = cJSON_HasObjectItem(j, "meta_test_loss");
    r->meta_test_loss = get_exact(j, "meta_test_loss", (double)NAN);
    r->eval_episode = (int)get_i64(j, "eval_episode", 0);
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(j, "slots");
    int b = 0;
    for (const cJSON *it = cJSON_IsArray(sl) ? sl->child : NULL; it && b < r->B;
         it = it->next, b++) {
        slot_t *x = &r->slots[b];
        x->lease = run_lease_by_id(r->eng, get_str(it, "lease"));
        if (x->lease && x->lease->state != LS_ACTIVE) x->lease = NULL;
        x->done = (int)get_i64(it, "done", 0);
        x->final = (int)get_i64(it, "final", 0);
        x->sampled = (int)get_i64(it, "sampled", 0);
    }
    const cJSON *jb = cJSON_GetObjectItemCaseSensitive(j, "jobs");
    int nj = cJSON_IsArray(jb) ? cJSON_GetArraySize(jb) : 0;
    if (nj > 0) {
        r->jobs = calloc((size_t)nj, sizeof *r->jobs);
        if (!r->jobs) {
            cJSON_Delete(j);
            return hd_err_set(err, HD_ENOMEM, "out of memory");
        }
        for (const cJSON *it = jb->child; it; it = it->next) {
            job_t *x = &r->jobs[r->njobs++];
            x->stream = (int)get_i64(it, "stream", TASK_STREAM_VAL);
            x->first = (int)get_i64(it, "first", 0);
            x->count = (int)get_i64(it, "count", 0);
            x->lease = run_lease_by_id(r->eng, get_str(it, "lease"));
            if (x->lease && x->lease->state != LS_ACTIVE) x->lease = NULL;
            x->done = (int)get_i64(it, "done", 0);
            x->loss_sum = get_exact(it, "loss_sum", 0);
            x->cnt = (long)get_i64(it, "cnt", 0);
            x->blowups = (long)get_i64(it, "blowups", 0);
        }
    }
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "round_thetas");
    for (const cJSON *it = cJSON_IsArray(rt) ? rt->child : NULL; it; it = it->next) {
        round_t *rd = round_new(r, (int)get_i64(it, "episode", 0));
        if (!rd) {
            cJSON_Delete(j);
            return hd_err_set(err, HD_ENOMEM, "out of memory");
        }
        rd->theta = get_exact(it, "theta", (double)NAN);
    }
    cJSON_Delete(j);
    return HD_OK;
}

typedef struct {
    engine_t *e;
    store_t *st;
} load_ctx;

static hd_rc load_run(void *ctx, const store_row *row, hd_err *err) {
    load_ctx *lc = ctx;
    engine_t *e = lc->e;
    run_spec spec;
    hd_rc rc = spec_parse(row->t1 ? row->t1 : "", row->t1 ? strlen(row->t1) : 0, &spec, err);
    if (rc != HD_OK) return rc;
    engine_run *r = NULL;
    if ((rc = run_alloc(e, &spec, &r, err)) != HD_OK) return rc;
    r->id = row->i[0];
    r->created_at = row->d;
    snprintf(r->token, sizeof r->token, "%s", row->t2 ? row->t2 : "");
    if ((size_t)row->i[1] != r->n_lam || (size_t)row->i[2] != r->n_w) {
        rc = hd_err_set(err, HD_EDB, "run %lld: stored sizes differ from the spec's model",
                        (long long)r->id);
        goto fail;
    }
    if ((rc = blob_vec(row->b1, row->b1_len, r->lam, r->n_lam, "lam", r->id, err)) != HD_OK)
        goto fail;
    if (r->opt.m) {
        if ((rc = blob_vec(row->b2, row->b2_len, r->opt.m, r->n_lam, "opt_m", r->id, err)) !=
                HD_OK ||
            (rc = blob_vec(row->b3, row->b3_len, r->opt.v, r->n_lam, "opt_v", r->id, err)) != HD_OK)
            goto fail;
    }
    if ((rc = blob_vec(row->b4, row->b4_len, r->phi, r->n_w, "phi", r->id, err)) != HD_OK)
        goto fail;
    /* Leases first: the state refers to them by id. */
    if ((rc = store_load(lc->st, STORE_T_LEASES, r->id, load_lease, r, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_WORKERS, r->id, load_worker, r, err)) != HD_OK ||
        (rc = restore_state(r, row->t3, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_LAM_HIST, r->id, load_hist, r, err)) != HD_OK)
        goto fail;
    int64_t want_version = r->lam_version;
    long want_step = r->opt.step;
    if (!is_sync(r)) {
        r->lam_version = r->blob_version;
        r->opt.step = r->blob_opt_step;
    }
    if ((rc = store_load(lc->st, STORE_T_POSTS, r->id, load_post, r, err)) != HD_OK) goto fail;
    if (!is_sync(r)) {
        alog_load_ctx ac = {r, want_version};
        if ((rc = store_load(lc->st, STORE_T_ALOG, r->id, load_alog, &ac, err)) != HD_OK ||
            (rc = postlog_new(e->cfg.db_path, r->id, e->cfg.sync_full, &r->plog, err)) != HD_OK)
            goto fail;
        /* A finished run's lam was stored with its final state: its post
         * log is dead (at most a post that failed the run is in it). */
        if (run_finished(r))
            rc = postlog_purge(r->plog, err);
        else
            rc = postlog_replay(r->plog, load_alog, &ac, err);
        if (rc != HD_OK) goto fail;
    }
    /* Async: the log may run ahead of the state row (posts alone do not
     * rewrite it), never behind; every update is one optimiser step. */
    if (r->lam_version < want_version ||
        r->lam_version - want_version != (int64_t)(r->opt.step - want_step)) {
        rc = hd_err_set(
            err, HD_EDB,
            "run %lld: replay reached lam version %lld (step %ld), the state says %lld (%ld)",
            (long long)r->id, (long long)r->lam_version, r->opt.step, (long long)want_version,
            want_step);
        goto fail;
    }
    r->blob_time = srvutil_mono();
    if ((rc = store_load(lc->st, STORE_T_FINALS, r->id, load_final, r, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_IDEM, r->id, load_idem, r, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_IDEM_STEPS, r->id, load_idem_steps, r, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_SAMPLES, r->id, load_samples, r, err)) != HD_OK ||
        (rc = store_load(lc->st, STORE_T_METRICS, r->id, load_metrics, r, err)) != HD_OK)
        goto fail;
    if (r->phase == PH_ESTIMATE && !round_cur(r) && !round_new(r, r->episode)) {
        rc = hd_err_set(err, HD_ENOMEM, "out of memory");
        goto fail;
    }
    r->pub_lam = encode(r, r->lam, r->n_lam);
    r->pub_phi = encode(r, r->phi, r->n_w);
    r->pub_lam_version = r->lam_version;
    r->pub_phi_version = r->phi_version;
    if (!r->pub_lam || !r->pub_phi) {
        rc = hd_err_set(err, HD_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = run_register(e, r, err)) != HD_OK) goto fail;
    HD_LOG_INFO("run restored run=%lld state=%s phase=%s episode=%d open_step=%d lam_version=%lld "
                "pending_posts=%d leases=%d",
                (long long)r->id, rstate_names[r->state], phase_names[r->phase], r->episode,
                r->open_step, (long long)r->lam_version, r->npend, r->nleases);
    return HD_OK;
fail:
    /* Drop the lease index entries that point into r. */
    for (int i = 0; i < r->nleases; i++) hmap_del(e->lease_index, r->leases[i]->id);
    run_free(r);
    return rc;
}

hd_rc engine_load(engine_t *e, store_t *st, hd_err *err) {
    load_ctx lc = {e, st};
    return store_load(st, STORE_T_RUNS, 0, load_run, &lc, err);
}

/* ---- observation (engine.h; read by events.c and metrics.c) --------------- */

int engine_run_observe(engine_t *e, engine_run *r, int first, engine_obs_row *rows, int max_rows,
                       engine_obs *out) {
    (void)e;
    pthread_mutex_lock(&r->mu);
    double now = srvutil_mono();
    memset(out, 0, sizeof *out);
    out->id = r->id;
    out->state = rstate_names[r->state];
    out->phase = phase_names[r->phase];
    out->finished = run_finished(r);
    out->sync = is_sync(r);
    out->episode = r->episode;
    out->episodes = r->M;
    out->steps = r->T;
    out->step = r->phase == PH_TRAIN && is_sync(r) ? r->open_step : 0;
    if (is_sync(r)) {
        int upto = r->phase == PH_TRAIN ? r->open_step : r->T + 1;
        for (int t = upto - 1; t >= 1 && r->phase != PH_ESTIMATE; t--)
            if (method_posts_at(&r->spec.method, t, r->T)) {
                out->applied_step = t;
                break;
            }
    }
    out->meta_batch = r->B;
    out->lam_version = r->pub_lam_version;
    out->lam_version_head = r->lam_version;
    out->phi_version = r->pub_phi_version;
    out->outer_steps = (int64_t)r->opt.step;
    out->theta = r->theta;
    for (int i = 0; i < r->nrounds; i++) out->rounds += isfinite(r->rounds[i].theta) != 0;
    out->posts = r->posts;
    out->stale_refused = r->st_refused;
    out->has_meta_val = r->has_meta_val;
    out->has_meta_test = r->has_meta_test;
    out->meta_val_loss = r->meta_val_loss;
    out->meta_test_loss = r->meta_test_loss;
    out->workers = r->nworkers;
    for (int i = 0; i < r->nleases; i++)
        out->leases += r->leases[i]->state == LS_ACTIVE && r->leases[i]->deadline >= now;
    out->created_at = r->created_at;
    int n = 0;
    for (int m = first < 1 ? 1 : first;
         n < max_rows && m <= r->nmrows && m <= r->M && m <= r->episode; m++) {
        const mrow_t *x = &r->mrows[m - 1];
        engine_obs_row *o = &rows[n++];
        o->episode = m;
        o->ended = x->ended;
        o->train_n = x->tl_n;
        o->train_loss = x->tl_n ? x->tl_sum / (double)x->tl_n : 0.0;
        o->hg_n = x->hg_n;
        o->hg_sum = x->hg_sum;
        o->has_val = x->has_val;
        o->has_test = x->has_test;
        o->val_loss = x->val_loss;
        o->test_loss = x->test_loss;
        o->theta = x->theta;
        o->seconds = x->seconds;
        o->lam_version = x->lam_version;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
