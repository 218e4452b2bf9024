/* The worker daemon (issue: online loop over HTTP). One job at a time:
 *   train:    slots of episode m; at each inner step t fetch the lam version
 *             the schedule says (sync: V0 + posting steps before t; async: the
 *             newest), step every slot, post the sum of the slots'
 *             hypergradients; steps <= resume_step are replayed, not posted;
 *             then post each slot's w_T and complete with the metrics.
 *   estimate: LinearEstimation per slot with lam fixed; post the samples.
 *   eval:     mean query loss over a range of val/test tasks.
 * Heartbeats go out between steps while a lease is held. SIGTERM (or one
 * SIGINT) finishes the current step, releases the lease and exits 0; a
 * second SIGINT exits at once. */
#include "daemon.h"

#include <cJSON.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "episode.h"
#include "log.h"
#include "npy.h"
#include "runner.h"
#include "spec.h"
#include "vec.h"

/* The process-wide stop flag (STYLE C9): 1 after SIGTERM or the first SIGINT. */
static volatile sig_atomic_t stop_flag = 0;

static void on_signal(int sig) {
    if (sig == SIGINT && stop_flag) _exit(130);
    stop_flag = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define MAX_SLOTS 64

typedef struct {
    const wconfig *cfg;
    client_t *cl;
    long run;            /* current run id */
    char worker_id[128]; /* from registration */
    run_spec spec;       /* the run's spec */
    int have_spec;
    mlp_t *m;
    episode_t *aux; /* one-task episode for estimation and evaluation jobs */
    task_t tasks[MAX_SLOTS];
    size_t nl, nw;
    double *lam;      /* cached lam */
    long lam_version; /* version of lam, -1 = none */
    double *phi;
    long phi_version;
    double *g, *gsum;
    double *sx, *sy; /* estimation samples of one slot */
    /* current lease (estimate and eval jobs, and the first lease of a train group) */
    char lease[128];
    double lease_seconds;
    double last_hb;
    /* a sync train group: the leases of one episode run in lockstep */
    struct glease {
        char id[128];             /* lease id, "" once completed or lost */
        int slots[MAX_SLOTS];     /* task slots */
        int K;                    /* number of slots */
        int first;                /* index of its first slot in tasks[] */
        episode_t *ep[MAX_SLOTS]; /* batched episodes of up to d->chunk slots each */
        int nchunks;              /* episodes in ep[] */
        int resume;               /* steps already posted by an earlier lease */
        double last_hb;           /* last heartbeat (or accepted post) */
        double loss[MAX_SLOTS], gnorm[MAX_SLOTS];
        int nposted[MAX_SLOTS];
        int skipped; /* steps skipped by the guard */
    } group[MAX_SLOTS];
    int ngroup; /* leases in the group */
    int gslots; /* slots in the group (tasks[0 .. gslots-1]) */
    int chunk;  /* most slots per batched episode (bounded by memory) */
    /* progress and accounting */
    double t_wait;    /* seconds waiting for lam versions (the sync barrier) */
    double t_compute; /* seconds in episode computations */
    double t_post;    /* seconds posting hypergradients */
    long steps_done;  /* inner steps of training slots computed */
    long posts;
    double t_start;
    double last_val;
    int episode, step;
    int tty;
} daemon_t;

typedef enum { JOB_OK = 0, JOB_LOST, JOB_FATAL, JOB_STOPPED } job_rc;

/* ---- small JSON helpers ---- */

static double jnum(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void progress(daemon_t *d, int final) {
    if (!d->tty || !d->cfg->progress) return;
    double el = now_s() - d->t_start;
    fprintf(stderr, "\r%-78s\rrun %ld  episode %d  step %d  val %.4f  posts/s %.1f%s", "", d->run,
            d->episode, d->step, d->last_val, el > 0 ? (double)d->posts / el : 0.0,
            final ? "\n" : "");
}

/* ---- requests ---- */

/* A request whose non-2xx answer is a fatal or lost-lease condition for the
 * caller; returns the HTTP status (0 on network give-up). */
static long req(daemon_t *d, const char *method, const char *path, const char *ctype,
                const void *body, size_t len, const char *inm, double timeout, client_resp *r) {
    hd_err err = {0};
    if (client_request(d->cl, method, path, ctype, body, len, inm, timeout, r, &err) != HD_OK) {
        HD_LOG_ERROR("request failed method=%s path=%s error=\"%s\"", method, path, err.msg);
        return 0;
    }
    return r->status;
}

static long post_json(daemon_t *d, const char *path, cJSON *obj, client_resp *r) {
    char *txt = cJSON_PrintUnformatted(obj);
    if (!txt) return 0;
    long st = req(d, "POST", path, "application/json", txt, strlen(txt), NULL, 30.0, r);
    free(txt);
    return st;
}

static void heartbeat(daemon_t *d, int force) {
    if (!d->lease[0]) return;
    double now = now_s();
    if (!force && now - d->last_hb < d->lease_seconds / 3.0) return;
    char path[256];
    snprintf(path, sizeof path, "/v1/leases/%s/heartbeat", d->lease);
    client_resp r;
    long st = req(d, "POST", path, "application/json", "{}", 2, NULL, 15.0, &r);
    if (st == 200)
        d->last_hb = now;
    else
        HD_LOG_WARN("heartbeat refused lease=%s status=%ld error=%s", d->lease, st,
                    client_error_text(&r));
}

static void release_lease(daemon_t *d) {
    if (!d->lease[0]) return;
    char path[256];
    snprintf(path, sizeof path, "/v1/leases/%s/release", d->lease);
    client_resp r;
    long st = req(d, "POST", path, "application/json", "{}", 2, NULL, 15.0, &r);
    HD_LOG_INFO("lease released lease=%s status=%ld", d->lease, st);
    d->lease[0] = 0;
}

/* ---- the run's model and state ---- */

static void free_model(daemon_t *d) {
    episode_free(d->aux);
    d->aux = NULL;
    for (int i = 0; i < MAX_SLOTS; i++) task_clear(&d->tasks[i]);
    mlp_free(d->m);
    d->m = NULL;
    free(d->lam);
    free(d->phi);
    free(d->g);
    free(d->gsum);
    free(d->sx);
    free(d->sy);
    d->lam = d->phi = d->g = d->gsum = d->sx = d->sy = NULL;
    d->have_spec = 0;
}

/* Tasks for slots [0, n) of the run's spec. Returns 0 or -1. */
static int ensure_tasks(daemon_t *d, int n) {
    const run_spec *sp = &d->spec;
    hd_err err = {0};
    if (n > MAX_SLOTS) return -1;
    for (int i = 0; i < n; i++) {
        if (d->tasks[i].xs) continue;
        if (task_alloc(&d->tasks[i], sp->task.shots, sp->task.queries, sp->task.in_dim,
                       sp->task.out_dim, &err) != HD_OK) {
            HD_LOG_ERROR("task error=\"%s\"", err.msg);
            return -1;
        }
    }
    return 0;
}

/* GET /v1/runs/{id}: returns 0 and loads the spec, or the HTTP status. */
static long load_run(daemon_t *d, long run) {
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%ld", run);
    client_resp r;
    long st = req(d, "GET", path, NULL, NULL, 0, NULL, 30.0, &r);
    if (st != 200) return st ? st : -1;
    cJSON *root = cJSON_ParseWithLength((const char *)r.body, r.len);
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(root, "spec");
    if (!cJSON_IsObject(spec)) {
        HD_LOG_ERROR("run has no spec run=%ld", run);
        cJSON_Delete(root);
        return -1;
    }
    char *txt = cJSON_PrintUnformatted(spec);
    cJSON_Delete(root);
    hd_err err = {0};
    free_model(d);
    hd_rc rc = txt ? spec_parse(txt, strlen(txt), &d->spec, &err) : HD_ENOMEM;
    free(txt);
    if (rc != HD_OK) {
        HD_LOG_ERROR("run spec refused run=%ld error=\"%s\"", run, err.msg);
        return -1;
    }
    const run_spec *sp = &d->spec;
    /* Slots of a lease run as batched episodes of up to `chunk` tasks: their
     * lower-layer products are shared (episode.h). The bound keeps the
     * network's scratch under about 2048 stacked rows. */
    size_t rows = sp->task.shots + sp->task.queries;
    d->chunk = d->cfg->slots < 16 ? d->cfg->slots : 16;
    while (d->chunk > 1 && (size_t)d->chunk * rows > 2048) d->chunk--;
    if (spec_model_new(sp, (size_t)d->chunk * rows, &d->m, &err) != HD_OK) {
        HD_LOG_ERROR("model error=\"%s\"", err.msg);
        return -1;
    }
    d->nl = mlp_n_lam(d->m);
    d->nw = mlp_n_w(d->m);
    size_t nl = d->nl ? d->nl : 1;
    d->lam = calloc(nl, sizeof(double));
    d->g = calloc(nl, sizeof(double));
    d->gsum = calloc(nl, sizeof(double));
    d->phi = calloc(d->nw, sizeof(double));
    d->sx = calloc((size_t)sp->steps, sizeof(double));
    d->sy = calloc((size_t)sp->steps, sizeof(double));
    if (!d->lam || !d->g || !d->gsum || !d->phi || !d->sx || !d->sy) return -1;
    if (ensure_tasks(d, 1) != 0) return -1;
    if (episode_new(d->m, &d->spec.inner, &d->spec.method, sp->steps, sp->task.shots,
                    sp->task.queries, &d->aux, &err) != HD_OK) {
        HD_LOG_ERROR("episode error=\"%s\"", err.msg);
        return -1;
    }
    episode_set_guard(d->aux, sp->skip_nonfinite, sp->guard_loss);
    d->lam_version = d->phi_version = -1;
    d->have_spec = 1;
    d->run = run;
    return 0;
}

/* Fetch a tensor resource ("hyper" or "init") of exactly version `want`
 * (want < 0: the newest, conditional on what we hold). Long-polls while the
 * version does not exist yet, heartbeating between polls. */
static void heartbeat_group(daemon_t *d);

static job_rc fetch_tensor_once(daemon_t *d, const char *what, long want, double *dst, size_t n,
                                long *have, int wait_s, int *not_yet);

/* Fetch until the version is there. */
static job_rc fetch_tensor(daemon_t *d, const char *what, long want, double *dst, size_t n,
                           long *have) {
    for (;;) {
        int not_yet = 0;
        job_rc rc = fetch_tensor_once(d, what, want, dst, n, have, d->cfg->poll_wait, &not_yet);
        if (rc != JOB_OK || !not_yet) return rc;
        heartbeat(d, 0);
        heartbeat_group(d);
        if (stop_flag) return JOB_STOPPED;
    }
}

/* One long poll: JOB_OK with *not_yet set when the version does not exist
 * yet (the caller may do something else and poll again). */
static job_rc fetch_tensor_once(daemon_t *d, const char *what, long want, double *dst, size_t n,
                                long *have, int wait_s, int *not_yet) {
    char path[256];
    *not_yet = 0;
    for (;;) {
        if (want >= 0 && *have == want) return JOB_OK;
        if (want >= 0)
            snprintf(path, sizeof path, "/v1/runs/%ld/%s?version=%ld&wait=%d", d->run, what, want,
                     wait_s);
        else
            snprintf(path, sizeof path, "/v1/runs/%ld/%s", d->run, what);
        char inm[32];
        snprintf(inm, sizeof inm, "%ld", *have);
        client_resp r;
        long st = req(d, "GET", path, NULL, NULL, 0, *have >= 0 && want < 0 ? inm : NULL,
                      wait_s + 30.0, &r);
        if (st == 304 && want < 0) return JOB_OK;
        if (st == 200) {
            hd_err err = {0};
            size_t shape[1] = {n};
            npy_dtype dt;
            if (npy_decode_into(r.body, r.len, &dt, 1, shape, 1, dst, &err) != HD_OK) {
                HD_LOG_ERROR("bad tensor from server what=%s error=\"%s\"", what, err.msg);
                return JOB_FATAL;
            }
            char *end;
            long v = strtol(r.etag, &end, 10);
            if (end == r.etag) {
                HD_LOG_ERROR("tensor without version what=%s", what);
                return JOB_FATAL;
            }
            *have = v;
            if (want < 0 || v == want) return JOB_OK;
            continue;
        }
        if (st == 0) return JOB_FATAL;
        if (st == 404 && want >= 0 && strstr(client_error_text(&r), "not reached")) {
            *not_yet = 1;
            return JOB_OK;
        }
        if (st == 410 || st == 404 || st == 401 || st == 403) {
            HD_LOG_WARN("tensor unavailable what=%s version=%ld status=%ld error=%s", what, want,
                        st, client_error_text(&r));
            return JOB_LOST;
        }
        /* 204/304/408: not there yet. */
        *not_yet = 1;
        return JOB_OK;
    }
}

/* Response of a mutating lease request: 2xx ok, 409/410 lease lost. */
static job_rc check_post(daemon_t *d, long st, const client_resp *r, const char *what) {
    if (st >= 200 && st < 300) return JOB_OK;
    if (st == 0) return JOB_FATAL;
    if (st == 409 || st == 410) {
        HD_LOG_WARN("lease lost lease=%s during=%s status=%ld error=%s", d->lease, what, st,
                    client_error_text(r));
        d->lease[0] = 0;
        return JOB_LOST;
    }
    HD_LOG_ERROR("request refused lease=%s during=%s status=%ld error=%s", d->lease, what, st,
                 client_error_text(r));
    return JOB_LOST;
}

static job_rc post_tensor(daemon_t *d, const char *path, const double *v, size_t n,
                          const char *what) {
    uint8_t *buf = NULL;
    size_t len = 0;
    size_t shape[1] = {n};
    hd_err err = {0};
    if (npy_encode(d->spec.wire_f32 ? NPY_F32 : NPY_F64, 1, shape, v, &buf, &len, &err) != HD_OK) {
        HD_LOG_ERROR("encode failed error=\"%s\"", err.msg);
        return JOB_FATAL;
    }
    client_resp r;
    long st = req(d, "POST", path, "application/octet-stream", buf, len, NULL, 30.0, &r);
    free(buf);
    if (st >= 200 && st < 300) d->last_hb = now_s();
    return check_post(d, st, &r, what);
}

static job_rc complete(daemon_t *d, cJSON *metrics) {
    char path[256];
    snprintf(path, sizeof path, "/v1/leases/%s/complete", d->lease);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "metrics", metrics);
    client_resp r;
    long st = post_json(d, path, o, &r);
    cJSON_Delete(o);
    job_rc rc = check_post(d, st, &r, "complete");
    if (rc == JOB_OK) d->lease[0] = 0;
    return rc;
}

/* ---- jobs ---- */

/* Free the group's batched episodes and forget its leases. */
static void group_clear(daemon_t *d) {
    for (int g = 0; g < d->ngroup; g++) {
        for (int c = 0; c < d->group[g].nchunks; c++) episode_free(d->group[g].ep[c]);
        d->group[g].nchunks = 0;
    }
    d->ngroup = d->gslots = 0;
}

/* Release every live lease of the group (on SIGTERM). */
static void release_group(daemon_t *d) {
    char save[128];
    memcpy(save, d->lease, sizeof save);
    for (int g = 0; g < d->ngroup; g++) {
        if (!d->group[g].id[0]) continue;
        memcpy(d->lease, d->group[g].id, sizeof d->lease);
        release_lease(d);
        d->group[g].id[0] = 0;
    }
    memcpy(d->lease, save, sizeof save);
    group_clear(d);
}

static void heartbeat_group(daemon_t *d) {
    double now = now_s();
    for (int g = 0; g < d->ngroup; g++) {
        struct glease *L = &d->group[g];
        if (!L->id[0] || now - L->last_hb < d->lease_seconds / 3.0) continue;
        char path[256];
        snprintf(path, sizeof path, "/v1/leases/%s/heartbeat", L->id);
        client_resp r;
        long st = req(d, "POST", path, "application/json", "{}", 2, NULL, 15.0, &r);
        if (st == 200)
            L->last_hb = now;
        else if (st == 404 || st == 410) {
            HD_LOG_WARN("lease lost lease=%s during=heartbeat status=%ld", L->id, st);
            L->id[0] = 0;
        }
    }
}

/* Step every slot of one group lease at step t and post the sum. */
static job_rc group_step(daemon_t *d, struct glease *L, int t, double theta, long used) {
    const run_spec *sp = &d->spec;
    int T = sp->steps, replay = t <= L->resume;
    double t0 = now_s();
    episode_info info[MAX_SLOTS];
    int done = 0;
    for (int c = 0; c < L->nchunks; c++) {
        int kc = episode_slots(L->ep[c]);
        episode_step_batch(L->ep[c], d->lam, theta, replay, d->g, info + done);
        if (info[done].posted) {
            if (c == 0)
                vec_copy(d->nl, d->gsum, d->g);
            else
                vec_axpy(d->nl, d->gsum, 1.0, d->g);
        }
        done += kc;
    }
    for (int i = 0; i < L->K; i++) {
        if (info[i].nonfinite && (sp->skip_nonfinite || sp->guard_loss > 0.0)) L->skipped++;
        if (info[i].posted) {
            /* The norm of the lease's sum, per slot: what the server averages. */
            L->gnorm[i] += info[i].grad_norm / L->K;
            L->nposted[i]++;
        }
        if (t == T && !replay) {
            L->loss[i] = info[i].val_loss;
            d->last_val = info[i].val_loss;
        }
    }
    d->t_compute += now_s() - t0;
    d->steps_done += L->K;
    if (!method_posts_at(&sp->method, t, T) || replay) return JOB_OK;
    if (!vec_all_finite(d->nl, d->gsum)) {
        HD_LOG_ERROR(
            "non-finite hypergradient run=%ld step=%d lease=%s: releasing (robust.skip_nonfinite "
            "posts zeros instead)",
            d->run, t, L->id);
        return JOB_LOST;
    }
    char path[256];
    snprintf(path, sizeof path, "/v1/leases/%s/steps/%d?slots=%d&version=%ld", L->id, t, L->K,
             used);
    uint8_t *buf = NULL;
    size_t len = 0, shape[1] = {d->nl};
    hd_err err = {0};
    if (npy_encode(sp->wire_f32 ? NPY_F32 : NPY_F64, 1, shape, d->gsum, &buf, &len, &err) != HD_OK)
        return JOB_FATAL;
    client_resp r;
    double tp = now_s();
    long st = req(d, "POST", path, "application/octet-stream", buf, len, NULL, 30.0, &r);
    d->t_post += now_s() - tp;
    free(buf);
    if (st >= 200 && st < 300) {
        L->last_hb = now_s();
        d->posts++;
        return JOB_OK;
    }
    if (st == 0) return JOB_FATAL;
    HD_LOG_WARN("lease lost lease=%s during=step %d status=%ld error=%s", L->id, t, st,
                client_error_text(&r));
    return JOB_LOST;
}

/* Add a train lease to the group: its slots start from phi and catch up to
 * the group's completed steps `upto` (replaying what an earlier lease of the
 * same slots already posted, computing and posting the rest with the lam
 * versions of those steps). */
static job_rc group_add(daemon_t *d, const cJSON *job, int upto, long v0, double theta) {
    const run_spec *sp = &d->spec;
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(job, "slots"), *it;
    const char *id = jstr(job, "lease_id");
    if (d->ngroup >= MAX_SLOTS || !id || strlen(id) >= sizeof d->group[0].id) return JOB_FATAL;
    struct glease *L = &d->group[d->ngroup];
    memset(L, 0, sizeof *L);
    memcpy(L->id, id, strlen(id) + 1);
    L->first = d->gslots;
    L->resume = (int)jnum(job, "resume_step", 0);
    L->last_hb = now_s();
    cJSON_ArrayForEach(it, sl) {
        if (!cJSON_IsNumber(it) || d->gslots + L->K >= MAX_SLOTS) return JOB_FATAL;
        L->slots[L->K++] = it->valueint;
    }
    if (L->K < 1 || ensure_tasks(d, d->gslots + L->K) != 0) return JOB_FATAL;
    int m = (int)jnum(job, "episode", 0);
    hd_err err = {0};
    for (int i = 0; i < L->K; i += d->chunk) {
        int kc = L->K - i < d->chunk ? L->K - i : d->chunk;
        episode_t *ep = NULL;
        if (episode_new_batch(d->m, &sp->inner, &sp->method, sp->steps, sp->task.shots,
                              sp->task.queries, kc, &ep, &err) != HD_OK) {
            HD_LOG_ERROR("episode error=\"%s\"", err.msg);
            return JOB_FATAL;
        }
        episode_set_guard(ep, sp->skip_nonfinite, sp->guard_loss);
        L->ep[L->nchunks++] = ep;
        for (int j = 0; j < kc; j++) {
            int e = L->first + i + j;
            task_make(&sp->task, sp->seed, TASK_STREAM_TRAIN, (uint64_t)m,
                      (uint64_t)L->slots[i + j], &d->tasks[e]);
            episode_begin_slot(ep, j, d->phi, d->tasks[e].xs, d->tasks[e].ys, d->tasks[e].xq,
                               d->tasks[e].yq);
        }
    }
    d->ngroup++;
    d->gslots += L->K;
    char list[256];
    size_t off = 0;
    for (int i = 0; i < L->K && off + 12 < sizeof list; i++)
        off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", i ? "," : "", L->slots[i]);
    list[off] = 0;
    HD_LOG_INFO("lease joined run=%ld lease=%s episode=%d slots=%s resume_step=%d catch_up=%d",
                d->run, L->id, m, list, L->resume, upto);
    int before = 0;
    for (int t = 1; t <= upto; t++) {
        job_rc rc = fetch_tensor(d, "hyper", v0 + before, d->lam, d->nl, &d->lam_version);
        if (rc != JOB_OK) return rc;
        if ((rc = group_step(d, L, t, theta, d->lam_version)) != JOB_OK) return rc;
        before += method_posts_at(&sp->method, t, sp->steps);
    }
    return JOB_OK;
}

/* While the group waits at the sync barrier, take more slots of the episode:
 * slots nobody holds would otherwise keep the barrier closed for ever. */
static job_rc group_extend(daemon_t *d, int m, int upto, long v0, double theta, int *added) {
    *added = 0;
    if (d->gslots >= MAX_SLOTS || stop_flag) return JOB_OK;
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%ld/lease", d->run);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "worker_id", d->worker_id);
    int room = MAX_SLOTS - d->gslots;
    cJSON_AddNumberToObject(o, "max_slots", d->cfg->slots < room ? d->cfg->slots : room);
    client_resp r;
    long st = post_json(d, path, o, &r);
    cJSON_Delete(o);
    if (st != 200) return st == 0 ? JOB_FATAL : JOB_OK;
    cJSON *job = cJSON_ParseWithLength((const char *)r.body, r.len);
    const char *kind = jstr(job, "kind"), *id = jstr(job, "lease_id");
    job_rc rc = JOB_OK;
    if (kind && strcmp(kind, "train") == 0 && (int)jnum(job, "episode", 0) == m) {
        rc = group_add(d, job, upto, v0, theta);
        *added = 1;
    } else if (id && strlen(id) < sizeof d->lease) {
        /* Not part of this episode (cannot happen in sync mode): hand it back. */
        char save[128];
        memcpy(save, d->lease, sizeof save);
        memcpy(d->lease, id, strlen(id) + 1);
        release_lease(d);
        memcpy(d->lease, save, sizeof save);
    }
    cJSON_Delete(job);
    return rc;
}

static job_rc job_train(daemon_t *d, const cJSON *job) {
    const run_spec *sp = &d->spec;
    int m = (int)jnum(job, "episode", 0), T = sp->steps;
    long v0 = (long)jnum(job, "lam_version", -1), pv = (long)jnum(job, "phi_version", -1);
    double theta = jnum(job, "theta", sp->method.theta_init);
    int async = sp->mode == SPEC_MODE_ASYNC;
    job_rc rc = fetch_tensor(d, "init", pv, d->phi, d->nw, &d->phi_version);
    if (rc != JOB_OK) return rc;
    group_clear(d);
    d->lease[0] = 0; /* the group owns the lease from here on */
    if ((rc = group_add(d, job, 0, v0, theta)) != JOB_OK) return rc;
    d->episode = m;
    int before = 0;
    for (int t = 1; t <= T; t++) {
        /* The lam of step t: sync V0 + posting steps before t; async the newest. */
        double tw = now_s();
        if (async) {
            rc = fetch_tensor(d, "hyper", -1, d->lam, d->nl, &d->lam_version);
        } else {
            for (;;) {
                int not_yet = 0, added = 0;
                rc = fetch_tensor_once(d, "hyper", v0 + before, d->lam, d->nl, &d->lam_version, 1,
                                       &not_yet);
                if (rc != JOB_OK || !not_yet) break;
                heartbeat_group(d);
                if (stop_flag) {
                    rc = JOB_STOPPED;
                    break;
                }
                if ((rc = group_extend(d, m, t - 1, v0, theta, &added)) != JOB_OK) break;
            }
        }
        d->t_wait += now_s() - tw;
        if (rc != JOB_OK) return rc;
        long used = d->lam_version;
        int live = 0;
        for (int g = 0; g < d->ngroup; g++) {
            struct glease *L = &d->group[g];
            if (!L->id[0]) continue;
            job_rc r2 = group_step(d, L, t, theta, used);
            if (r2 == JOB_FATAL) return r2;
            if (r2 == JOB_LOST) {
                char save[128];
                memcpy(save, d->lease, sizeof save);
                memcpy(d->lease, L->id, sizeof d->lease);
                release_lease(d);
                memcpy(d->lease, save, sizeof save);
                L->id[0] = 0;
                continue;
            }
            live++;
        }
        if (!live) return JOB_LOST;
        before += method_posts_at(&sp->method, t, T);
        d->step = t;
        progress(d, 0);
        heartbeat_group(d);
        if (stop_flag) return JOB_STOPPED;
    }
    for (int g = 0; g < d->ngroup; g++) {
        struct glease *L = &d->group[g];
        if (!L->id[0]) continue;
        memcpy(d->lease, L->id, sizeof d->lease);
        for (int i = 0; i < L->K && rc == JOB_OK; i++) {
            char path[256];
            snprintf(path, sizeof path, "/v1/leases/%s/final?slot=%d", L->id, L->slots[i]);
            rc = post_tensor(d, path, episode_w_slot(L->ep[i / d->chunk], i % d->chunk), d->nw,
                             "final");
        }
        if (rc != JOB_OK) {
            if (rc == JOB_FATAL) return rc;
            rc = JOB_OK;
            continue;
        }
        cJSON *met = cJSON_CreateObject();
        cJSON *tl = cJSON_AddArrayToObject(met, "train_loss");
        cJSON *hn = cJSON_AddArrayToObject(met, "hypergrad_norm");
        int blow = 0;
        for (int i = 0; i < L->K; i++) {
            double l = L->loss[i];
            if (!isfinite(l) || l > sp->blowup_loss) blow++;
            cJSON_AddItemToArray(tl, cJSON_CreateNumber(isfinite(l) ? l : 1e300));
            cJSON_AddItemToArray(
                hn, cJSON_CreateNumber(L->nposted[i] ? L->gnorm[i] / L->nposted[i] : 0.0));
        }
        cJSON_AddNumberToObject(met, "blowups", blow);
        cJSON_AddNumberToObject(met, "skipped_steps", L->skipped);
        rc = complete(d, met);
        if (rc == JOB_FATAL) return rc;
        L->id[0] = 0;
        rc = JOB_OK;
    }
    group_clear(d);
    d->lease[0] = 0;
    return JOB_OK;
}

static job_rc job_estimate(daemon_t *d, const cJSON *job, const int *slots, int K) {
    const run_spec *sp = &d->spec;
    int m = (int)jnum(job, "episode", 0), T = sp->steps;
    job_rc rc =
        fetch_tensor(d, "init", (long)jnum(job, "phi_version", -1), d->phi, d->nw, &d->phi_version);
    if (rc == JOB_OK)
        rc = fetch_tensor(d, "hyper", (long)jnum(job, "lam_version", -1), d->lam, d->nl,
                          &d->lam_version);
    if (rc != JOB_OK) return rc;
    d->episode = m;
    for (int i = 0; i < K; i++) {
        task_make(&sp->task, sp->seed, TASK_STREAM_TRAIN, (uint64_t)m, (uint64_t)slots[i],
                  &d->tasks[0]);
        episode_begin(d->aux, d->phi, d->tasks[0].xs, d->tasks[0].ys, d->tasks[0].xq,
                      d->tasks[0].yq);
        hd_err err = {0};
        int ok = episode_estimate(d->aux, d->lam, sp->method.gamma, d->sx, d->sy, NULL, NULL,
                                  &err) == HD_OK;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "slot", slots[i]);
        cJSON *xa = cJSON_AddArrayToObject(o, "x"), *ya = cJSON_AddArrayToObject(o, "y");
        if (ok)
            for (int s = 0; s < T; s++) {
                cJSON_AddItemToArray(xa, cJSON_CreateNumber(d->sx[s]));
                cJSON_AddItemToArray(ya, cJSON_CreateNumber(d->sy[s]));
            }
        else
            HD_LOG_WARN("estimation blew up run=%ld episode=%d slot=%d: posting no samples", d->run,
                        m, slots[i]);
        char path[256];
        snprintf(path, sizeof path, "/v1/leases/%s/samples", d->lease);
        client_resp r;
        long st = post_json(d, path, o, &r);
        cJSON_Delete(o);
        if ((rc = check_post(d, st, &r, "samples")) != JOB_OK) return rc;
        heartbeat(d, 0);
        if (stop_flag) return JOB_STOPPED;
    }
    return complete(d, cJSON_CreateObject());
}

static job_rc job_eval(daemon_t *d, const cJSON *job) {
    const run_spec *sp = &d->spec;
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(job, "eval");
    const char *stream = jstr(ev, "stream");
    int first = (int)jnum(ev, "first_task", 0), count = (int)jnum(ev, "count", 0);
    if (!stream || count < 0) {
        HD_LOG_ERROR("malformed eval job");
        return JOB_LOST;
    }
    job_rc rc =
        fetch_tensor(d, "init", (long)jnum(job, "phi_version", -1), d->phi, d->nw, &d->phi_version);
    if (rc == JOB_OK)
        rc = fetch_tensor(d, "hyper", (long)jnum(job, "lam_version", -1), d->lam, d->nl,
                          &d->lam_version);
    if (rc != JOB_OK) return rc;
    task_stream ts = strcmp(stream, "test") == 0 ? TASK_STREAM_TEST : TASK_STREAM_VAL;
    double sum = 0.0;
    int blow = 0;
    /* Chunks of 20 tasks between heartbeats. */
    for (int i = first; i < first + count; i += 20) {
        int n = first + count - i < 20 ? first + count - i : 20;
        double s = 0.0;
        runner_eval(sp, d->aux, &d->tasks[0], d->lam, d->phi, ts, i, n, &blow, &s);
        sum += s;
        heartbeat(d, 0);
    }
    cJSON *met = cJSON_CreateObject();
    cJSON_AddNumberToObject(met, "loss_sum", isfinite(sum) ? sum : 1e300);
    cJSON_AddNumberToObject(met, "count", count);
    cJSON_AddNumberToObject(met, "blowups", blow);
    HD_LOG_INFO("evaluation done run=%ld stream=%s tasks=%d..%d mean_loss=%.6g", d->run, stream,
                first, first + count - 1, count ? sum / count : 0.0);
    return complete(d, met);
}

/* Register with the run. Returns 0, or the HTTP status of the refusal. */
static long register_worker(daemon_t *d) {
    char path[128];
    snprintf(path, sizeof path, "/v1/runs/%ld/workers", d->run);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", d->cfg->name);
    cJSON_AddNumberToObject(o, "shard", d->cfg->shard);
    cJSON_AddNumberToObject(o, "shards", d->cfg->shards);
    client_resp r;
    long st = post_json(d, path, o, &r);
    cJSON_Delete(o);
    if (st != 200 && st != 201) {
        if (st)
            HD_LOG_ERROR("registration refused run=%ld status=%ld error=%s", d->run, st,
                         client_error_text(&r));
        return st ? st : -1;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)r.body, r.len);
    const char *id = jstr(root, "worker_id");
    if (!id || strlen(id) >= sizeof d->worker_id) {
        cJSON_Delete(root);
        return -1;
    }
    memcpy(d->worker_id, id, strlen(id) + 1);
    cJSON_Delete(root);
    HD_LOG_INFO("registered run=%ld worker_id=%s name=%s shard=%d/%d slots=%d", d->run,
                d->worker_id, d->cfg->name, d->cfg->shard, d->cfg->shards, d->cfg->slots);
    return 0;
}

/* Lease and run jobs of d->run until it ends. Returns 0 when the run ended,
 * 1 on a fatal error, 3 when stopped by a signal. */
static int work_run(daemon_t *d) {
    long st = register_worker(d);
    if (st) return 1;
    double idle_wait = 0.01; /* seconds to wait after a 204, doubling */
    for (;;) {
        if (stop_flag) return 3;
        char path[128];
        snprintf(path, sizeof path, "/v1/runs/%ld/lease", d->run);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "worker_id", d->worker_id);
        cJSON_AddNumberToObject(o, "max_slots", d->cfg->slots);
        client_resp r;
        st = post_json(d, path, o, &r);
        cJSON_Delete(o);
        if (st == 0) return 1;
        if (st == 410) {
            HD_LOG_INFO("run over run=%ld", d->run);
            progress(d, 1);
            return 0;
        }
        if (st == 204 || st == 202) {
            /* Nothing to lease yet (e.g. the other workers are finishing the
             * episode): poll again soon, backing off to the server's
             * Retry-After, so that an episode boundary costs milliseconds. */
            double cap = r.retry_after > 0 ? (double)r.retry_after : 1.0;
            double wait = fmin(idle_wait, cap);
            idle_wait = fmin(idle_wait * 2.0, cap);
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&ts, NULL);
            continue;
        }
        idle_wait = 0.01;
        if (st == 404 && strstr(client_error_text(&r), "worker")) {
            /* The server forgot us (e.g. restored from an older state): register again. */
            if (register_worker(d)) return 1;
            continue;
        }
        if (st != 200) {
            HD_LOG_ERROR("lease refused run=%ld status=%ld error=%s", d->run, st,
                         client_error_text(&r));
            return 1;
        }
        cJSON *job = cJSON_ParseWithLength((const char *)r.body, r.len);
        const char *lease = jstr(job, "lease_id"), *kind = jstr(job, "kind");
        const cJSON *sl = cJSON_GetObjectItemCaseSensitive(job, "slots");
        int slots[MAX_SLOTS], K = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, sl) if (K < MAX_SLOTS && cJSON_IsNumber(it)) slots[K++] =
            it->valueint;
        if (!lease || !kind || strlen(lease) >= sizeof d->lease ||
            (strcmp(kind, "eval") != 0 && (K < 1 || K > d->cfg->slots))) {
            HD_LOG_ERROR("malformed lease answer run=%ld", d->run);
            cJSON_Delete(job);
            return 1;
        }
        memcpy(d->lease, lease, strlen(lease) + 1);
        d->lease_seconds = jnum(job, "lease_seconds", d->spec.lease_seconds);
        d->last_hb = now_s();
        HD_LOG_INFO("lease granted run=%ld lease=%s kind=%s episode=%d slots=%d resume_step=%d",
                    d->run, d->lease, kind, (int)jnum(job, "episode", 0), K,
                    (int)jnum(job, "resume_step", 0));
        job_rc rc;
        if (strcmp(kind, "train") == 0)
            rc = job_train(d, job);
        else if (strcmp(kind, "estimate") == 0)
            rc = job_estimate(d, job, slots, K);
        else if (strcmp(kind, "eval") == 0)
            rc = job_eval(d, job);
        else {
            HD_LOG_ERROR("unknown job kind=%s", kind);
            rc = JOB_LOST;
        }
        cJSON_Delete(job);
        if (rc == JOB_STOPPED || stop_flag) {
            release_group(d);
            release_lease(d);
            return 3;
        }
        if (rc == JOB_FATAL) {
            release_group(d);
            release_lease(d);
            return 1;
        }
        if (rc == JOB_LOST) {
            release_group(d);
            if (d->lease[0]) release_lease(d);
        }
        d->lease[0] = 0;
    }
}

/* Pick a run with work when --run is not given: the first running run the
 * token can see. Returns the id, 0 if none, -status on refusal. */
static long pick_run(daemon_t *d) {
    client_resp r;
    long st = req(d, "GET", "/v1/runs", NULL, NULL, 0, NULL, 30.0, &r);
    if (st != 200) return st ? -st : -1;
    cJSON *root = cJSON_ParseWithLength((const char *)r.body, r.len);
    const cJSON *runs = cJSON_IsArray(root) ? root : cJSON_GetObjectItemCaseSensitive(root, "runs");
    long id = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, runs) {
        const char *state = jstr(it, "state");
        if (state && strcmp(state, "running") == 0) {
            id = (long)jnum(it, "id", 0);
            break;
        }
    }
    cJSON_Delete(root);
    return id;
}

int daemon_main(int argc, char **argv) {
    wconfig cfg;
    int help = 0;
    hd_err err = {0};
    if (wconfig_load(argc, argv, &cfg, &help, &err) != HD_OK) {
        fprintf(stderr, "hdworker: %s\n", err.msg);
        return 2;
    }
    if (help) {
        wconfig_usage(stdout);
        return 0;
    }
    hd_log_init("hdworker", (hd_log_level)cfg.log_level);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    daemon_t d;
    memset(&d, 0, sizeof d);
    d.cfg = &cfg;
    d.t_start = now_s();
    d.tty = isatty(2);
    if (client_new(cfg.server, cfg.token, cfg.retry_deadline, &stop_flag, &d.cl, &err) != HD_OK) {
        fprintf(stderr, "hdworker: %s\n", err.msg);
        return 2;
    }
    int status = 0;
    for (;;) {
        long run = cfg.run;
        if (!run) {
            run = pick_run(&d);
            if (run < 0) {
                fprintf(stderr, "hdworker: cannot list runs at %s (%s)\n", cfg.server,
                        run == -1 ? "server unreachable" : "token refused");
                status = 1;
                break;
            }
            if (run == 0) {
                if (cfg.exit_when_done || stop_flag) break;
                sleep(1);
                continue;
            }
        }
        long st = load_run(&d, run);
        if (st != 0) {
            if (st == 404)
                fprintf(stderr, "hdworker: run %ld does not exist on %s\n", run, cfg.server);
            else if (st == 401 || st == 403)
                fprintf(stderr, "hdworker: the server refused the token for run %ld (HTTP %ld)\n",
                        run, st);
            else if (st == -1 && !d.have_spec && d.m == NULL)
                fprintf(stderr, "hdworker: cannot reach %s or read run %ld (see log)\n", cfg.server,
                        run);
            else
                fprintf(stderr, "hdworker: cannot load run %ld (HTTP %ld)\n", run, st);
            status = 1;
            break;
        }
        int r = work_run(&d);
        if (r == 3) {
            HD_LOG_INFO("stopped by signal, lease released");
            status = 0;
            break;
        }
        if (r == 1) {
            fprintf(stderr, "hdworker: giving up on run %ld (see log)\n", run);
            status = 1;
            break;
        }
        if (cfg.run) break;
    }
    const client_stats *cs = client_get_stats(d.cl);
    HD_LOG_INFO(
        "exit status=%d posts=%ld slot_steps=%ld requests=%llu retries=%llu bytes_sent=%llu "
        "bytes_recv=%llu wait_s=%.3f compute_s=%.3f post_s=%.3f elapsed_s=%.3f",
        status, d.posts, d.steps_done, (unsigned long long)cs->requests,
        (unsigned long long)cs->retries, (unsigned long long)cs->bytes_sent,
        (unsigned long long)cs->bytes_recv, d.t_wait, d.t_compute, d.t_post, now_s() - d.t_start);
    free_model(&d);
    client_free(d.cl);
    return status;
}
