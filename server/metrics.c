/* Prometheus exposition (metrics.h). Histograms are cumulative at render
 * time: each request increments one non-cumulative bucket, so that the
 * hot path is one atomic add per counter. */
#include "metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_OUT_MAX (64u << 20) /* largest exposition text */

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,   0.5,   1.0,    2.5,   5.0,  10.0,  30.0, 60.0};
#define NBUCKETS (sizeof bucket_le / sizeof bucket_le[0])

static const char *const classes[] = {"lease_step", "lease",   "tensor", "run_read", "run_write",
                                      "events",     "observe", "health", "other"};
#define NCLASSES (sizeof classes / sizeof classes[0])
#define CLASS_EVENTS 5

static const char *const reasons[] = {"invalid", "auth",      "not_found", "stale",
                                      "gone",    "too_large", "error",     "other"};
#define NREASONS (sizeof reasons / sizeof reasons[0])

static const char *const run_states[] = {"running", "paused", "completed", "failed", "cancelled"};
#define NSTATES (sizeof run_states / sizeof run_states[0])

typedef struct {
    atomic_uint_fast64_t bucket[NBUCKETS + 1]; /* non-cumulative; last = above the largest bound */
    atomic_uint_fast64_t sum_ns;               /* total latency, nanoseconds */
} histo;

struct metrics {
    histo h[NCLASSES];
    atomic_uint_fast64_t refused[NREASONS]; /* refused step posts */
};

metrics_t *metrics_new(void) {
    metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    for (size_t c = 0; c < NCLASSES; c++) {
        for (size_t b = 0; b <= NBUCKETS; b++) atomic_init(&m->h[c].bucket[b], 0);
        atomic_init(&m->h[c].sum_ns, 0);
    }
    for (size_t i = 0; i < NREASONS; i++) atomic_init(&m->refused[i], 0);
    return m;
}

void metrics_free(metrics_t *m) { free(m); }

/* Segment i (0-based) of path equals s. */
static int seg_is(const char *path, int i, const char *s) {
    const char *p = path;
    for (int k = 0; k < i; k++) {
        p = strchr(p + 1, '/');
        if (!p) return 0;
    }
    if (*p != '/') return 0;
    p++;
    size_t n = strlen(s);
    return strncmp(p, s, n) == 0 && (p[n] == '/' || p[n] == 0);
}

static int nsegs(const char *path) {
    int n = 0;
    for (const char *p = path; *p; p++)
        if (*p == '/' && p[1] && p[1] != '/') n++;
    return n;
}

const char *metrics_route_class(const char *method, const char *path) {
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int n = nsegs(path);
    if (n == 0 || (n == 1 && (seg_is(path, 0, "metrics") || seg_is(path, 0, "dashboard"))))
        return "observe";
    if (n == 1 && (seg_is(path, 0, "healthz") || seg_is(path, 0, "readyz"))) return "health";
    if (!seg_is(path, 0, "v1")) return "other";
    if (seg_is(path, 1, "leases"))
        return n >= 4 && seg_is(path, 3, "steps") ? "lease_step" : "lease";
    if (!seg_is(path, 1, "runs")) return "other";
    if (n == 4 && seg_is(path, 3, "events")) return "events";
    if (n == 4 && (seg_is(path, 3, "hyper") || seg_is(path, 3, "init"))) return "tensor";
    if (n == 4 && (seg_is(path, 3, "workers") || seg_is(path, 3, "lease"))) return "lease";
    return get ? "run_read" : "run_write";
}

static size_t reason_of(int status) {
    switch (status) {
    case 400:
        return 0;
    case 401:
    case 403:
        return 1;
    case 404:
        return 2;
    case 409:
        return 3;
    case 410:
        return 4;
    case 413:
    case 414:
        return 5;
    default:
        return status >= 500 ? 6 : 7;
    }
}

void metrics_observe(metrics_t *m, const char *method, const char *path, int status,
                     double seconds) {
    const char *cls = metrics_route_class(method, path);
    size_t c = 0;
    while (c < NCLASSES && strcmp(classes[c], cls) != 0) c++;
    if (c == NCLASSES) c = NCLASSES - 1;
    if (c == 0 && status >= 400 && strcmp(method, "POST") == 0)
        atomic_fetch_add(&m->refused[reason_of(status)], 1);
    if (c == CLASS_EVENTS) return;
    if (!(seconds >= 0)) seconds = 0;
    size_t b = 0;
    while (b < NBUCKETS && seconds > bucket_le[b]) b++;
    atomic_fetch_add(&m->h[c].bucket[b], 1);
    double ns = seconds * 1e9;
    atomic_fetch_add(&m->h[c].sum_ns, ns < 1.8e19 ? (uint_fast64_t)ns : 0);
}

/* ---- rendering -------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    int bad; /* 1 after an allocation failure or the size cap */
} obuf;

static void out(obuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(obuf *o, const char *fmt, ...) {
    if (o->bad) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->bad = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t nc = o->cap * 2;
        if (nc > METRICS_OUT_MAX) {
            o->bad = 1;
            return;
        }
        char *np = realloc(o->p, nc);
        if (!np) {
            o->bad = 1;
            return;
        }
        o->p = np;
        o->cap = nc;
    }
}

static void head(obuf *o, const char *name, const char *type, const char *help) {
    out(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Per-run gauge or counter over every observed run. */
typedef struct {
    engine_obs *o;
    int n;
} runs_view;

static void per_run(obuf *o, const runs_view *v, const char *name, const char *type,
                    const char *help, double (*get)(const engine_obs *)) {
    head(o, name, type, help);
    for (int i = 0; i < v->n; i++)
        out(o, "%s{run=\"%lld\"} %.17g\n", name, (long long)v->o[i].id, get(&v->o[i]));
}

static double g_lam(const engine_obs *x) { return (double)x->lam_version; }
static double g_phi(const engine_obs *x) { return (double)x->phi_version; }
static double g_episode(const engine_obs *x) { return (double)x->episode; }
static double g_posts(const engine_obs *x) { return (double)x->posts; }
static double g_stale(const engine_obs *x) { return (double)x->stale_refused; }
static double g_outer(const engine_obs *x) { return (double)x->outer_steps; }
static double g_leases(const engine_obs *x) { return (double)x->leases; }
static double g_workers(const engine_obs *x) { return (double)x->workers; }
static double g_theta(const engine_obs *x) { return isfinite(x->theta) ? x->theta : 0.0; }

char *metrics_render(metrics_t *m, engine_t *e, events_t *ev, unsigned long long http_errors,
                     size_t *len) {
    obuf o = {malloc(16384), 0, 16384, 0};
    if (!o.p) return NULL;
    int n = 0, active = 0;
    engine_counts(e, &n, &active);
    runs_view v = {calloc(n > 0 ? (size_t)n : 1, sizeof(engine_obs)), 0};
    if (!v.o) {
        free(o.p);
        return NULL;
    }
    engine_obs_row none;
    for (int64_t id = 1; id <= n; id++) {
        engine_run *r = engine_run_find(e, id);
        if (r) engine_run_observe(e, r, 1, &none, 0, &v.o[v.n++]);
    }
    head(&o, "hd_up", "gauge", "1 while hdserver is serving.");
    out(&o, "hd_up 1\n");
    head(&o, "hd_runs", "gauge", "Runs by state.");
    for (size_t s = 0; s < NSTATES; s++) {
        int c = 0;
        for (int i = 0; i < v.n; i++) c += strcmp(v.o[i].state, run_states[s]) == 0;
        out(&o, "hd_runs{state=\"%s\"} %d\n", run_states[s], c);
    }
    per_run(&o, &v, "hd_lam_version", "gauge", "Published (committed) lam version of the run.",
            g_lam);
    per_run(&o, &v, "hd_phi_version", "gauge", "Published phi version of the run (Reptile steps).",
            g_phi);
    per_run(&o, &v, "hd_episode", "gauge", "Current episode of the run (1-based).", g_episode);
    per_run(&o, &v, "hd_outer_steps_total", "counter", "Outer optimiser steps applied to lam.",
            g_outer);
    per_run(&o, &v, "hd_theta", "gauge", "Current LinearEstimation theta of the run.", g_theta);
    per_run(&o, &v, "hd_posts_total", "counter", "Accepted hypergradient step posts of the run.",
            g_posts);
    per_run(&o, &v, "hd_posts_stale_refused_total", "counter",
            "Async step posts of the run refused for staleness above max_staleness.", g_stale);
    per_run(&o, &v, "hd_leases_active", "gauge", "Active, unexpired leases of the run.", g_leases);
    per_run(&o, &v, "hd_workers", "gauge", "Workers registered with the run.", g_workers);
    head(&o, "hd_posts_refused_total", "counter",
         "Step posts (POST /v1/leases/{id}/steps/{t}) answered with an error, by reason (409 = "
         "stale).");
    for (size_t i = 0; i < NREASONS; i++)
        out(&o, "hd_posts_refused_total{reason=\"%s\"} %llu\n", reasons[i],
            (unsigned long long)atomic_load(&m->refused[i]));
    head(&o, "hd_http_errors_total", "counter", "HTTP error replies (4xx and 5xx).");
    out(&o, "hd_http_errors_total %llu\n", http_errors);
    if (ev) {
        long streams = 0;
        uint64_t total = 0;
        events_stats(ev, &streams, &total);
        head(&o, "hd_sse_streams", "gauge", "Open Server-Sent Events streams.");
        out(&o, "hd_sse_streams %ld\n", streams);
        head(&o, "hd_events_total", "counter", "Run events produced for the event streams.");
        out(&o, "hd_events_total %llu\n", (unsigned long long)total);
    }
    head(&o, "hd_http_request_duration_seconds", "histogram",
         "HTTP request latency by route class (event streams excluded).");
    for (size_t c = 0; c < NCLASSES; c++) {
        if (c == CLASS_EVENTS) continue;
        const histo *h = &m->h[c];
        /* Read the buckets first and derive the count from them, so that
         * the +Inf bucket always equals _count within one scrape. */
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += atomic_load(&h->bucket[b]);
            out(&o, "hd_http_request_duration_seconds_bucket{class=\"%s\",le=\"%g\"} %llu\n",
                classes[c], bucket_le[b], (unsigned long long)cum);
        }
        cum += atomic_load(&h->bucket[NBUCKETS]);
        out(&o, "hd_http_request_duration_seconds_bucket{class=\"%s\",le=\"+Inf\"} %llu\n",
            classes[c], (unsigned long long)cum);
        out(&o, "hd_http_request_duration_seconds_sum{class=\"%s\"} %.9f\n", classes[c],
            (double)atomic_load(&h->sum_ns) * 1e-9);
        out(&o, "hd_http_request_duration_seconds_count{class=\"%s\"} %llu\n", classes[c],
            (unsigned long long)cum);
    }
    free(v.o);
    if (o.bad) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
