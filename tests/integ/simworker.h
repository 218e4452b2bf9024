/* A worker simulated inside a test (header-only): drives a run through the
 * REST API exactly as the protocol of schema/openapi.yaml says, computing
 * hypergradients with common/episode.h. Single-threaded: it holds as many
 * leases as the server gives it and advances each as far as the sync
 * barrier allows. Transport failures call on_down (which may restart the
 * server) and the same request is sent again: every write is idempotent. */
#ifndef HD_TESTS_SIMWORKER_H
#define HD_TESTS_SIMWORKER_H

#include <cJSON.h>
#include <math.h>

#include "episode.h"
#include "hdclient.h"
#include "npy.h"
#include "spec.h"
#include "task.h"
#include "vec.h"

#define SIM_MAX_LEASES 64
#define SIM_CACHE 64

typedef struct {
    char id[48];
    int kind; /* 0 train, 1 estimate, 2 eval */
    int episode;
    int nslots;
    int slots[64];
    int resume;
    long long v0, pv, lv;
    double theta;
    double *phi; /* owned: the episodes start from it */
    episode_t *eps[64];
    task_t tasks[64];
    double train_loss[64];
    int t; /* next step */
    int stream, first, count;
    int done;
} sim_lease;

typedef struct sim {
    hdc_server *srv;
    hdc_conn conn;
    long long run;
    char token[160];
    char worker_id[48];
    run_spec spec;
    mlp_t *m;
    size_t n_lam, n_w;
    int max_slots;
    int (*on_down)(struct sim *s);            /* restart hook; NULL = fail */
    void (*after_req)(struct sim *s, long n); /* called after each answered request */
    void *ctx;
    long nreq;
    long long cv[SIM_CACHE];
    double *cl[SIM_CACHE];
    int ncache;
    sim_lease *leases[SIM_MAX_LEASES];
    int nleases;
    int check_repeat; /* 1: once, re-post a step and check nothing changes */
    int repeat_checked;
    int errors;
    int dropped;    /* leases lost (410) and dropped */
    double last_hb; /* monotonic time of the last heartbeat round */
    char last_err[512];
} sim_t;

static inline void sim_fail(sim_t *s, const char *what, const hdc_resp *r) {
    s->errors++;
    snprintf(s->last_err, sizeof s->last_err, "%s: status %ld body %.300s", what,
             r ? r->status : -1L, r && r->body ? r->body : "");
    fprintf(stderr, "simworker: %s\n", s->last_err);
}

/* Request with retry over server restarts. */
static inline long sim_call(sim_t *s, const char *method, const char *path, const void *body,
                            size_t len, const char *hdr, hdc_resp *r) {
    char url[512];
    for (int attempt = 0; attempt < 50; attempt++) {
        snprintf(url, sizeof url, "%s%s", s->srv->base, path);
        hdc_req(&s->conn, method, url, s->token, body, len, hdr, r);
        if (r->status != 0) {
            s->nreq++;
            if (s->after_req) s->after_req(s, s->nreq);
            return r->status;
        }
        hdc_resp_free(r);
        if (!s->on_down || s->on_down(s) != 0) break;
    }
    memset(r, 0, sizeof *r);
    r->body = calloc(1, 1);
    return 0;
}

static inline double *sim_cache_get(sim_t *s, long long v) {
    for (int i = 0; i < s->ncache; i++)
        if (s->cv[i] == v) return s->cl[i];
    return NULL;
}

static inline void sim_cache_put(sim_t *s, long long v, double *lam) {
    if (s->ncache == SIM_CACHE) {
        free(s->cl[0]);
        memmove(s->cv, s->cv + 1, (SIM_CACHE - 1) * sizeof s->cv[0]);
        memmove(s->cl, s->cl + 1, (SIM_CACHE - 1) * sizeof s->cl[0]);
        s->ncache--;
    }
    s->cv[s->ncache] = v;
    s->cl[s->ncache++] = lam;
}

/* lam (which 0) or phi (1) of exactly version v: 0 ok, 1 not reached yet, -1 error. */
static inline int sim_tensor(sim_t *s, int which, long long v, double **out) {
    if (!which) {
        double *c = sim_cache_get(s, v);
        if (c) {
            *out = c;
            return 0;
        }
    }
    char path[160];
    snprintf(path, sizeof path, "/v1/runs/%lld/%s?version=%lld", s->run, which ? "init" : "hyper",
             v);
    hdc_resp r;
    long st = sim_call(s, "GET", path, NULL, 0, NULL, &r);
    if (st == 404) {
        hdc_resp_free(&r);
        return 1;
    }
    if (st != 200) {
        sim_fail(s, path, &r);
        hdc_resp_free(&r);
        return -1;
    }
    double *x = NULL;
    npy_header h;
    hd_rc rc = npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 1, &h, &x, NULL);
    size_t want = which ? s->n_w : s->n_lam;
    hdc_resp_free(&r);
    if (rc != HD_OK || h.count != want) {
        free(x);
        sim_fail(s, "decode tensor", NULL);
        return -1;
    }
    if (!which) sim_cache_put(s, v, x);
    *out = x;
    return 0;
}

/* Async: the newest lam and its version. 0 ok, -1 error. */
static inline int sim_newest(sim_t *s, double **out, long long *v) {
    char path[160];
    snprintf(path, sizeof path, "/v1/runs/%lld/hyper", s->run);
    hdc_resp r;
    if (sim_call(s, "GET", path, NULL, 0, NULL, &r) != 200) {
        sim_fail(s, path, &r);
        hdc_resp_free(&r);
        return -1;
    }
    *v = strtoll(r.etag + (r.etag[0] == '"'), NULL, 10);
    double *c = sim_cache_get(s, *v);
    if (c) {
        hdc_resp_free(&r);
        *out = c;
        return 0;
    }
    double *x = NULL;
    hd_rc rc = npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 1, NULL, &x, NULL);
    hdc_resp_free(&r);
    if (rc != HD_OK) return -1;
    sim_cache_put(s, *v, x);
    *out = x;
    return 0;
}

static inline int sim_posts_before(const sim_t *s, int t) {
    int n = 0;
    for (int u = 1; u < t; u++) n += method_posts_at(&s->spec.method, u, s->spec.steps);
    return n;
}

static inline void sim_lease_free(sim_lease *l) {
    for (int i = 0; i < l->nslots; i++) {
        episode_free(l->eps[i]);
        task_clear(&l->tasks[i]);
    }
    free(l->phi);
    free(l);
}

static inline int sim_post_json(sim_t *s, const char *path, const char *json, hdc_resp *r) {
    return (int)sim_call(s, "POST", path, json, strlen(json), "Content-Type: application/json", r);
}

static inline int sim_npy(const sim_t *s, const double *x, size_t n, uint8_t **buf, size_t *len) {
    size_t shape[1] = {n};
    return npy_encode(s->spec.wire_f32 ? NPY_F32 : NPY_F64, 1, shape, x, buf, len, NULL) == HD_OK
               ? 0
               : -1;
}

/* Prepare slots (tasks, episodes at s_0, replay up to resume). 0 ok. */
static inline int sim_train_setup(sim_t *s, sim_lease *l) {
    double *phi = NULL;
    if (sim_tensor(s, 1, l->pv, &phi) != 0) return -1;
    l->phi = phi;
    for (int i = 0; i < l->nslots; i++) {
        if (episode_new(s->m, &s->spec.inner, &s->spec.method, s->spec.steps, s->spec.task.shots,
                        s->spec.task.queries, &l->eps[i], NULL) != HD_OK ||
            task_alloc(&l->tasks[i], s->spec.task.shots, s->spec.task.queries, s->spec.task.in_dim,
                       s->spec.task.out_dim, NULL) != HD_OK) {
            return -1;
        }
        episode_set_guard(l->eps[i], s->spec.skip_nonfinite, s->spec.guard_loss);
        task_make(&s->spec.task, s->spec.seed, TASK_STREAM_TRAIN, (uint64_t)l->episode,
                  (uint64_t)l->slots[i], &l->tasks[i]);
        episode_begin(l->eps[i], phi, l->tasks[i].xs, l->tasks[i].ys, l->tasks[i].xq,
                      l->tasks[i].yq);
    }
    double *g = malloc((s->n_lam ? s->n_lam : 1) * sizeof *g);
    for (int t = 1; t <= l->resume; t++) {
        double *lam;
        long long v = l->v0 + sim_posts_before(s, t);
        if (sim_tensor(s, 0, v, &lam) != 0) {
            free(g);
            return -1;
        }
        for (int i = 0; i < l->nslots; i++) episode_step(l->eps[i], lam, l->theta, 1, g, NULL);
    }
    free(g);
    l->t = l->resume + 1;
    return 0;
}

/* Advance a training lease; returns 1 if it made progress. */
static inline int sim_train_advance(sim_t *s, sim_lease *l) {
    int T = s->spec.steps, progress = 0;
    double *g = malloc((s->n_lam ? s->n_lam : 1) * sizeof *g);
    double *sum = calloc(s->n_lam ? s->n_lam : 1, sizeof *sum);
    while (l->t <= T) {
        int t = l->t;
        double *lam;
        long long v = l->v0 + sim_posts_before(s, t);
        int rc =
            s->spec.mode == SPEC_MODE_ASYNC ? sim_newest(s, &lam, &v) : sim_tensor(s, 0, v, &lam);
        if (rc == 1) break;
        if (rc < 0) goto fail;
        int posted = 0;
        for (int i = 0; i < l->nslots; i++) {
            episode_info info;
            episode_step(l->eps[i], lam, l->theta, 0, g, &info);
            if (info.posted) {
                if (i == 0)
                    vec_copy(s->n_lam, sum, g);
                else
                    vec_axpy(s->n_lam, sum, 1.0, g);
                posted = 1;
            }
            if (t == T) l->train_loss[i] = info.val_loss;
        }
        if (posted) {
            uint8_t *buf;
            size_t len;
            if (sim_npy(s, sum, s->n_lam, &buf, &len) != 0) goto fail;
            char path[200];
            snprintf(path, sizeof path, "/v1/leases/%s/steps/%d?slots=%d&version=%lld", l->id, t,
                     l->nslots, v);
            hdc_resp r;
            long st =
                sim_call(s, "POST", path, buf, len, "Content-Type: application/octet-stream", &r);
            if (st == 410) {
                /* The lease was lost (expired): drop it; its slots come back. */
                s->dropped++;
                hdc_resp_free(&r);
                free(buf);
                l->done = 1;
                free(g);
                free(sum);
                return 1;
            }
            if (st != 200) {
                sim_fail(s, path, &r);
                hdc_resp_free(&r);
                free(buf);
                goto fail;
            }
            if (s->check_repeat && !s->repeat_checked &&
                hdc_json_int(r.body, "lam_version", -1) == v) {
                /* Repeat with a different body: same answer, nothing changes. */
                s->repeat_checked = 1;
                char hp[120];
                snprintf(hp, sizeof hp, "/v1/runs/%lld/hyper", s->run);
                hdc_resp a, b, rr;
                sim_call(s, "GET", hp, NULL, 0, NULL, &a);
                vec_zero(s->n_lam, sum);
                uint8_t *zb;
                size_t zl;
                sim_npy(s, sum, s->n_lam, &zb, &zl);
                sim_call(s, "POST", path, zb, zl, "Content-Type: application/octet-stream", &rr);
                sim_call(s, "GET", hp, NULL, 0, NULL, &b);
                if (rr.status != 200 || strcmp(rr.body, r.body) != 0 || a.len != b.len ||
                    memcmp(a.body, b.body, a.len) != 0 || strcmp(a.etag, b.etag) != 0) {
                    sim_fail(s, "repeated post changed something or answered differently", &rr);
                    s->repeat_checked = -1;
                }
                free(zb);
                hdc_resp_free(&a);
                hdc_resp_free(&b);
                hdc_resp_free(&rr);
            }
            hdc_resp_free(&r);
            free(buf);
        }
        l->t++;
        progress = 1;
    }
    if (l->t > T && !l->done) {
        char path[200], body[4096];
        for (int i = 0; i < l->nslots; i++) {
            uint8_t *buf;
            size_t len;
            if (sim_npy(s, episode_w(l->eps[i]), s->n_w, &buf, &len) != 0) goto fail;
            snprintf(path, sizeof path, "/v1/leases/%s/final?slot=%d", l->id, l->slots[i]);
            hdc_resp r;
            long st =
                sim_call(s, "POST", path, buf, len, "Content-Type: application/octet-stream", &r);
            free(buf);
            if (st == 410) {
                s->dropped++;
                hdc_resp_free(&r);
                l->done = 1;
                free(g);
                free(sum);
                return 1;
            }
            if (st != 200) {
                sim_fail(s, path, &r);
                hdc_resp_free(&r);
                goto fail;
            }
            hdc_resp_free(&r);
        }
        size_t o = (size_t)snprintf(body, sizeof body, "{\"metrics\":{\"train_loss\":[");
        for (int i = 0; i < l->nslots; i++)
            o += (size_t)snprintf(body + o, sizeof body - o, "%s%.17g", i ? "," : "",
                                  isfinite(l->train_loss[i]) ? l->train_loss[i] : 1e300);
        snprintf(body + o, sizeof body - o, "],\"blowups\":0,\"skipped_steps\":0}}");
        snprintf(path, sizeof path, "/v1/leases/%s/complete", l->id);
        hdc_resp r;
        if (sim_post_json(s, path, body, &r) != 200) {
            sim_fail(s, path, &r);
            hdc_resp_free(&r);
            goto fail;
        }
        hdc_resp_free(&r);
        l->done = 1;
        progress = 1;
    }
    free(g);
    free(sum);
    return progress;
fail:
    free(g);
    free(sum);
    return -1;
}

static inline int sim_estimate(sim_t *s, sim_lease *l) {
    double *lam, *phi;
    if (sim_tensor(s, 0, l->lv, &lam) != 0 || sim_tensor(s, 1, l->pv, &phi) != 0) return -1;
    l->phi = phi;
    int T = s->spec.steps;
    double *x = malloc((size_t)T * sizeof *x), *y = malloc((size_t)T * sizeof *y);
    char *body = malloc((size_t)T * 60 + 256);
    int ok = 0;
    for (int i = 0; i < l->nslots; i++) {
        episode_t *e = NULL;
        task_t tk;
        memset(&tk, 0, sizeof tk);
        episode_new(s->m, &s->spec.inner, &s->spec.method, T, s->spec.task.shots,
                    s->spec.task.queries, &e, NULL);
        task_alloc(&tk, s->spec.task.shots, s->spec.task.queries, s->spec.task.in_dim,
                   s->spec.task.out_dim, NULL);
        task_make(&s->spec.task, s->spec.seed, TASK_STREAM_TRAIN, (uint64_t)l->episode,
                  (uint64_t)l->slots[i], &tk);
        episode_begin(e, phi, tk.xs, tk.ys, tk.xq, tk.yq);
        long vj = 0;
        int good = episode_estimate(e, lam, s->spec.method.gamma, x, y, NULL, &vj, NULL) == HD_OK;
        episode_free(e);
        task_clear(&tk);
        size_t p = 0;
        p += (size_t)snprintf(body + p, (size_t)T * 60 + 256 - p, "{\"slot\":%d,\"x\":[",
                              l->slots[i]);
        for (int k = 0; good && k < T; k++)
            p +=
                (size_t)snprintf(body + p, (size_t)T * 60 + 256 - p, "%s%.17g", k ? "," : "", x[k]);
        p += (size_t)snprintf(body + p, (size_t)T * 60 + 256 - p, "],\"y\":[");
        for (int k = 0; good && k < T; k++)
            p +=
                (size_t)snprintf(body + p, (size_t)T * 60 + 256 - p, "%s%.17g", k ? "," : "", y[k]);
        snprintf(body + p, (size_t)T * 60 + 256 - p, "]}");
        char path[160];
        snprintf(path, sizeof path, "/v1/leases/%s/samples", l->id);
        hdc_resp r;
        if (sim_post_json(s, path, body, &r) != 200) {
            sim_fail(s, path, &r);
            hdc_resp_free(&r);
            ok = -1;
            break;
        }
        hdc_resp_free(&r);
    }
    if (ok == 0) {
        char path[160];
        snprintf(path, sizeof path, "/v1/leases/%s/complete", l->id);
        hdc_resp r;
        if (sim_post_json(s, path, "{}", &r) != 200) {
            sim_fail(s, path, &r);
            ok = -1;
        }
        hdc_resp_free(&r);
    }
    free(x);
    free(y);
    free(body);
    l->done = 1;
    return ok;
}

static inline int sim_eval(sim_t *s, sim_lease *l) {
    double *lam, *phi;
    if (sim_tensor(s, 0, l->lv, &lam) != 0 || sim_tensor(s, 1, l->pv, &phi) != 0) return -1;
    l->phi = phi;
    episode_t *e = NULL;
    task_t tk;
    memset(&tk, 0, sizeof tk);
    episode_new(s->m, &s->spec.inner, &s->spec.method, s->spec.steps, s->spec.task.shots,
                s->spec.task.queries, &e, NULL);
    task_alloc(&tk, s->spec.task.shots, s->spec.task.queries, s->spec.task.in_dim,
               s->spec.task.out_dim, NULL);
    double sum = 0;
    int blow = 0;
    for (int i = l->first; i < l->first + l->count; i++) {
        task_make(&s->spec.task, s->spec.seed, (task_stream)l->stream, 0, (uint64_t)i, &tk);
        double v = episode_eval(e, lam, phi, tk.xs, tk.ys, tk.xq, tk.yq);
        if (!isfinite(v) || v > s->spec.blowup_loss) blow++;
        sum += v;
    }
    episode_free(e);
    task_clear(&tk);
    char path[160], body[256];
    snprintf(path, sizeof path, "/v1/leases/%s/complete", l->id);
    snprintf(body, sizeof body, "{\"metrics\":{\"loss_sum\":%.17g,\"count\":%d,\"blowups\":%d}}",
             sum, l->count, blow);
    hdc_resp r;
    int ok = 0;
    if (sim_post_json(s, path, body, &r) != 200) {
        sim_fail(s, path, &r);
        ok = -1;
    }
    hdc_resp_free(&r);
    l->done = 1;
    return ok;
}

/* Parse a lease answer into a new sim_lease. */
static inline sim_lease *sim_lease_parse(const char *json) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return NULL;
    sim_lease *l = calloc(1, sizeof *l);
    const cJSON *it;
    if ((it = cJSON_GetObjectItem(j, "lease_id")) && cJSON_IsString(it))
        snprintf(l->id, sizeof l->id, "%s", it->valuestring);
    const char *kind = cJSON_GetStringValue(cJSON_GetObjectItem(j, "kind"));
    l->kind = kind && strcmp(kind, "estimate") == 0 ? 1 : kind && strcmp(kind, "eval") == 0 ? 2 : 0;
    l->episode = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "episode"));
    l->resume = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "resume_step"));
    l->lv = l->v0 = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "lam_version"));
    l->pv = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "phi_version"));
    l->theta = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "theta"));
    const cJSON *sl = cJSON_GetObjectItem(j, "slots");
    for (const cJSON *x = sl ? sl->child : NULL; x && l->nslots < 64; x = x->next)
        l->slots[l->nslots++] = (int)x->valuedouble;
    const cJSON *ev = cJSON_GetObjectItem(j, "eval");
    if (ev) {
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "stream"));
        l->stream = st && strcmp(st, "test") == 0 ? TASK_STREAM_TEST : TASK_STREAM_VAL;
        l->first = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "first_task"));
        l->count = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "count"));
    }
    cJSON_Delete(j);
    return l;
}

/* Set up the worker for run (token) with the given spec text. 0 ok. */
static inline int sim_init(sim_t *s, hdc_server *srv, long long run, const char *token,
                           const char *spec_json, int max_slots) {
    memset(s, 0, sizeof *s);
    s->srv = srv;
    s->run = run;
    snprintf(s->token, sizeof s->token, "%s", token);
    s->max_slots = max_slots;
    hdc_conn_init(&s->conn);
    if (spec_parse(spec_json, strlen(spec_json), &s->spec, NULL) != HD_OK) return -1;
    if (spec_model_new(&s->spec, s->spec.task.shots + s->spec.task.queries, &s->m, NULL) != HD_OK)
        return -1;
    s->n_lam = mlp_n_lam(s->m);
    s->n_w = mlp_n_w(s->m);
    char path[96];
    snprintf(path, sizeof path, "/v1/runs/%lld/workers", run);
    hdc_resp r;
    if (sim_post_json(s, path, "{\"name\":\"sim\",\"shard\":0,\"shards\":1}", &r) != 201) {
        sim_fail(s, path, &r);
        hdc_resp_free(&r);
        return -1;
    }
    hdc_json_str(r.body, "worker_id", s->worker_id, sizeof s->worker_id);
    hdc_resp_free(&r);
    return 0;
}

static inline void sim_clear(sim_t *s) {
    for (int i = 0; i < s->nleases; i++) sim_lease_free(s->leases[i]);
    for (int i = 0; i < s->ncache; i++) free(s->cl[i]);
    mlp_free(s->m);
    hdc_conn_clear(&s->conn);
}

/* Drive the run until it is completed (returns 0), fails (-1) or the time
 * limit passes (-2). */
static inline int sim_drive(sim_t *s, double max_seconds) {
    double t0 = hdc_now();
    char path[128], body[160];
    while (hdc_now() - t0 < max_seconds) {
        if (s->errors) return -1;
        int progress = 0;
        /* Take every lease the server offers now. */
        for (;;) {
            if (s->nleases >= SIM_MAX_LEASES) break;
            snprintf(path, sizeof path, "/v1/runs/%lld/lease", s->run);
            snprintf(body, sizeof body, "{\"worker_id\":\"%s\",\"max_slots\":%d}", s->worker_id,
                     s->max_slots);
            hdc_resp r;
            long st = sim_post_json(s, path, body, &r);
            if (st == 204) {
                hdc_resp_free(&r);
                break;
            }
            if (st == 410) {
                hdc_resp_free(&r);
                snprintf(path, sizeof path, "/v1/runs/%lld", s->run);
                sim_call(s, "GET", path, NULL, 0, NULL, &r);
                char state[32];
                hdc_json_str(r.body, "state", state, sizeof state);
                hdc_resp_free(&r);
                return strcmp(state, "completed") == 0 ? 0 : -1;
            }
            if (st != 200) {
                sim_fail(s, "lease", &r);
                hdc_resp_free(&r);
                return -1;
            }
            sim_lease *l = sim_lease_parse(r.body);
            hdc_resp_free(&r);
            if (!l) return -1;
            progress = 1;
            if (l->kind == 0 && sim_train_setup(s, l) != 0) {
                sim_lease_free(l);
                return -1;
            }
            s->leases[s->nleases++] = l;
        }
        for (int i = 0; i < s->nleases; i++) {
            sim_lease *l = s->leases[i];
            int rc = l->kind == 0   ? sim_train_advance(s, l)
                     : l->kind == 1 ? sim_estimate(s, l)
                                    : sim_eval(s, l);
            if (rc < 0) return -1;
            if (rc > 0 || l->kind != 0) progress = 1;
        }
        int j = 0;
        for (int i = 0; i < s->nleases; i++) {
            if (s->leases[i]->done)
                sim_lease_free(s->leases[i]);
            else
                s->leases[j++] = s->leases[i];
        }
        s->nleases = j;
        if (!progress) {
            if (hdc_now() - s->last_hb > 0.3) {
                /* Blocked at the barrier (or waiting for slots): heartbeat. */
                s->last_hb = hdc_now();
                for (int i = 0; i < s->nleases; i++) {
                    hdc_resp r;
                    snprintf(path, sizeof path, "/v1/leases/%s/heartbeat", s->leases[i]->id);
                    long st = sim_post_json(s, path, "{}", &r);
                    if (st == 410) {
                        s->dropped++;
                        s->leases[i]->done = 1;
                    } else if (st != 200) {
                        sim_fail(s, path, &r);
                    }
                    hdc_resp_free(&r);
                }
            }
            hdc_sleep(0.01);
        }
    }
    return -2;
}

#endif
