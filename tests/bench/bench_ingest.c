/* Server ingest benchmark (make bench-ingest): N = 1, 4, 16 concurrent
 * libcurl clients (keep-alive, one thread each) post 20,400-float32
 * hypergradients (the paper's sinusoid lam, .npy <f4, 81 KB) to an async
 * run, each on its own lease. Reports posts/s and p50/p99 latency with
 * durability (the default synchronous=NORMAL: each post's record in the
 * run's post log, lam snapshots in SQLite; docs/STORAGE.md) next to the
 * HTTP floor (the
 * same binary in the same MHD mode, started with --bench-discard-posts:
 * it authenticates, reads the body and answers without applying or storing
 * it), and lam pulls per second (GET /hyper, 4 clients).
 *
 * Both servers run during the whole benchmark and each repetition measures
 * durable and floor back to back, so that the ratio compares figures taken
 * under the same machine load (the 2-core machine is shared). Every cell is
 * repeated --reps times; the table shows medians and the spread (min-max)
 * of the rates and of p99, because fsync latency can spike for minutes
 * (LIBRARIES.md). Options: --reps R (default 5), --seconds S per cell
 * (default 2), --clients a,b,c (default 1,4,16), --durable-only. */
#include <pthread.h>

#include "../integ/hdclient.h"
#include "npy.h"

#define NLAM 20400
#define MAX_CLIENTS 64
#define MAX_REPS 21
#define MAX_NS 8

static const char *spec =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,100,100,100,1],\"hyper_layers\":"
    "3},"
    "\"inner\":{\"steps\":100000},\"method\":{\"name\":\"fo\"},\"episodes\":1,\"meta_batch\":16,"
    "\"mode\":\"async\",\"max_staleness\":1000000,\"wire_dtype\":\"f4\","
    "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":0}}";

typedef struct {
    const char *base;
    char lease[64];
    char token[160];
    long long run;
    const uint8_t *body;
    size_t len;
    double until;
    double *lat; /* seconds per request */
    long n, cap;
    long errors;
    int pull; /* 1: GET /hyper instead of posting */
} client;

static void *client_main(void *arg) {
    client *c = arg;
    hdc_conn conn;
    hdc_conn_init(&conn);
    char url[512];
    long long version = 0;
    for (long t = 1; hdc_now() < c->until; t++) {
        if (c->pull)
            snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", c->base, c->run);
        else
            snprintf(url, sizeof url, "%s/v1/leases/%s/steps/%ld?slots=1&version=%lld", c->base,
                     c->lease, t, version);
        hdc_resp r;
        double t0 = hdc_now();
        if (c->pull)
            hdc_req(&conn, "GET", url, c->token, NULL, 0, NULL, &r);
        else
            hdc_req(&conn, "POST", url, c->token, c->body, c->len,
                    "Content-Type: application/octet-stream", &r);
        double dt = hdc_now() - t0;
        if (r.status != 200) {
            if (c->errors++ < 3) fprintf(stderr, "request failed: %ld %.200s\n", r.status, r.body);
        } else {
            if (!c->pull) version = hdc_json_int(r.body, "lam_version", version);
            if (c->n < c->cap) c->lat[c->n++] = dt;
        }
        hdc_resp_free(&r);
    }
    hdc_conn_clear(&conn);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    double rate, p50, p99; /* requests/s, ms, ms */
    long errors;
} result;

/* Create a run with nclients leases on server base; fill clients. */
static int setup(const char *base, int nclients, client *cl) {
    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], token[160], wid[64], body[256];
    hdc_resp r;
    int rc = -1;
    snprintf(url, sizeof url, "%s/v1/runs", base);
    hdc_req(&c, "POST", url, HDC_ADMIN, spec, strlen(spec), NULL, &r);
    if (r.status != 201) {
        fprintf(stderr, "create run: %ld %s\n", r.status, r.body);
        hdc_resp_free(&r);
        goto out;
    }
    long long run = hdc_json_int(r.body, "id", -1);
    hdc_json_str(r.body, "worker_token", token, sizeof token);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/workers", base, run);
    hdc_req(&c, "POST", url, token, "{}", 2, NULL, &r);
    hdc_json_str(r.body, "worker_id", wid, sizeof wid);
    hdc_resp_free(&r);
    for (int i = 0; i < nclients; i++) {
        snprintf(url, sizeof url, "%s/v1/runs/%lld/lease", base, run);
        snprintf(body, sizeof body, "{\"worker_id\":\"%s\",\"max_slots\":1}", wid);
        hdc_req(&c, "POST", url, token, body, strlen(body), NULL, &r);
        if (r.status != 200) {
            fprintf(stderr, "lease: %ld %s\n", r.status, r.body);
            hdc_resp_free(&r);
            goto out;
        }
        hdc_json_str(r.body, "lease_id", cl[i].lease, sizeof cl[i].lease);
        snprintf(cl[i].token, sizeof cl[i].token, "%s", token);
        cl[i].run = run;
        hdc_resp_free(&r);
    }
    rc = 0;
out:
    hdc_conn_clear(&c);
    return rc;
}

static result measure(const char *base, int n, int pull, const uint8_t *body, size_t len,
                      double seconds) {
    client cl[MAX_CLIENTS];
    memset(cl, 0, sizeof cl);
    result res = {0, 0, 0, 1};
    /* Pulls: 4 clients share one lease's run (meta_batch 16 > 4 anyway). */
    if (setup(base, pull ? 1 : n, cl) != 0) return res;
    res.errors = 0;
    double t0 = hdc_now();
    pthread_t th[MAX_CLIENTS];
    for (int i = 0; i < n; i++) {
        if (pull && i > 0) cl[i] = cl[0];
        cl[i].base = base;
        cl[i].body = body;
        cl[i].len = len;
        cl[i].until = t0 + seconds;
        cl[i].cap = 1000000;
        cl[i].lat = malloc((size_t)cl[i].cap * sizeof(double));
        cl[i].n = 0;
        cl[i].errors = 0;
        cl[i].pull = pull;
        if (!cl[i].lat || pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) {
            fprintf(stderr, "cannot start client %d\n", i);
            exit(1);
        }
    }
    long total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].n;
        res.errors += cl[i].errors;
    }
    double secs = hdc_now() - t0;
    double *all = malloc((size_t)(total ? total : 1) * sizeof(double));
    if (!all) exit(1);
    long k = 0;
    for (int i = 0; i < n; i++) {
        memcpy(all + k, cl[i].lat, (size_t)cl[i].n * sizeof(double));
        k += cl[i].n;
        free(cl[i].lat);
    }
    qsort(all, (size_t)total, sizeof(double), cmp_d);
    res.rate = (double)total / secs;
    if (total) {
        res.p50 = all[total / 2] * 1e3;
        res.p99 = all[(long)((double)total * 0.99)] * 1e3;
    }
    free(all);
    return res;
}

/* Median, min and max of n values (n >= 1); sorts x. */
typedef struct {
    double med, lo, hi;
} stat3;

static stat3 stats(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_d);
    stat3 s = {n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]), x[0], x[n - 1]};
    return s;
}

typedef struct {
    double rate[MAX_REPS], p50[MAX_REPS], p99[MAX_REPS], ratio[MAX_REPS];
} cells;

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > MAX_CLIENTS) return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

static void usage(void) {
    fprintf(
        stderr,
        "usage: bench_ingest [--reps R (1-%d)] [--seconds S] [--clients a,b,c] [--durable-only]\n",
        MAX_REPS);
    exit(2);
}

int main(int argc, char **argv) {
    int reps = 5, durable_only = 0;
    double seconds = 2.0;
    int ns[MAX_NS] = {1, 4, 16}, nns = 3;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = (int)strtol(argv[++i], &end, 10);
            if (*end || reps < 1 || reps > MAX_REPS) usage();
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], &end);
            if (*end || !(seconds > 0.05 && seconds < 600)) usage();
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            if ((nns = parse_list(argv[++i], ns, MAX_NS)) < 1) usage();
        } else if (strcmp(argv[i], "--durable-only") == 0) {
            durable_only = 1;
        } else {
            usage();
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static double g[NLAM];
    for (int i = 0; i < NLAM; i++) g[i] = 1e-3 * (double)((i * 7919) % 1000 - 500) / 500.0;
    uint8_t *body = NULL;
    size_t len = 0;
    size_t shape[1] = {NLAM};
    if (npy_encode(NPY_F32, 1, shape, g, &body, &len, NULL) != HD_OK) return 1;

    hdc_server dur, flo;
    if (hdc_tmpdir(&dur, "bench") != 0 || hdc_start(&dur) != 0) return 1;
    if (hdc_tmpdir(&flo, "benchfloor") != 0) return 1;
    snprintf(flo.extra[0], sizeof flo.extra[0], "--bench-discard-posts");
    snprintf(flo.extra[1], sizeof flo.extra[1], "1");
    flo.nextra = 2;
    if (!durable_only && hdc_start(&flo) != 0) return 1;
    fprintf(stderr, "durable server pid %d, floor server pid %d\n", (int)dur.pid, (int)flo.pid);

    static cells dc[MAX_NS], fc[MAX_NS];
    int ok = 1;
    for (int rep = 0; rep < reps; rep++) {
        for (int i = 0; i < nns; i++) {
            result d = measure(dur.base, ns[i], 0, body, len, seconds);
            result f = {0, 0, 0, 0};
            if (!durable_only) f = measure(flo.base, ns[i], 0, body, len, seconds);
            if (d.errors || f.errors) ok = 0;
            dc[i].rate[rep] = d.rate;
            dc[i].p50[rep] = d.p50;
            dc[i].p99[rep] = d.p99;
            fc[i].rate[rep] = f.rate;
            fc[i].p50[rep] = f.p50;
            fc[i].p99[rep] = f.p99;
            dc[i].ratio[rep] = f.rate > 0 ? d.rate / f.rate : 0.0;
            fprintf(stderr,
                    "rep %d clients %d: durable %.0f/s p50 %.2f p99 %.2f | floor %.0f/s p50 %.2f "
                    "p99 %.2f\n",
                    rep + 1, ns[i], d.rate, d.p50, d.p99, f.rate, f.p50, f.p99);
        }
    }

    printf("ingest: async run, lam = %d float32 (%zu-byte .npy posts), %d reps x %.1f s per cell, "
           "medians [min-max]\n",
           NLAM, len, reps, seconds);
    printf("%7s | %21s %6s %15s | %21s %6s %6s | %s\n", "clients", "durable posts/s", "p50 ms",
           "p99 ms", "floor posts/s", "p50 ms", "p99 ms", "ratio");
    for (int i = 0; i < nns; i++) {
        stat3 dr = stats(dc[i].rate, reps), d5 = stats(dc[i].p50, reps),
              d9 = stats(dc[i].p99, reps);
        stat3 fr = stats(fc[i].rate, reps), f5 = stats(fc[i].p50, reps),
              f9 = stats(fc[i].p99, reps);
        stat3 ra = stats(dc[i].ratio, reps);
        printf("%7d | %5.0f [%5.0f-%5.0f] %6.2f %5.2f [%4.1f-%4.1f] | %5.0f [%5.0f-%5.0f] %6.2f "
               "%6.2f | %.2f [%.2f-%.2f]\n",
               ns[i], dr.med, dr.lo, dr.hi, d5.med, d9.med, d9.lo, d9.hi, fr.med, fr.lo, fr.hi,
               f5.med, f9.med, ra.med, ra.lo, ra.hi);
        if (ns[i] == 4 && !durable_only)
            printf("goal (4 clients, medians): durable >= 0.5 x floor: %s; p99 < 5 ms: %s\n",
                   ra.med >= 0.5 ? "met" : "NOT met", d9.med < 5.0 ? "met" : "NOT met");
    }
    double pr[MAX_REPS], p5[MAX_REPS], p9[MAX_REPS];
    for (int rep = 0; rep < reps; rep++) {
        result p = measure(dur.base, 4, 1, NULL, 0, seconds);
        if (p.errors) ok = 0;
        pr[rep] = p.rate;
        p5[rep] = p.p50;
        p9[rep] = p.p99;
    }
    stat3 a = stats(pr, reps), b = stats(p5, reps), c = stats(p9, reps);
    printf("lam pulls (GET /hyper, 4 clients): %.0f [%.0f-%.0f] /s  p50 %.2f ms  p99 %.2f ms  "
           "(goal >= 5000/s: %s)\n",
           a.med, a.lo, a.hi, b.med, c.med, a.med >= 5000 ? "met" : "NOT met");
    free(body);
    hdc_stop(&dur, SIGTERM);
    if (!durable_only) hdc_stop(&flo, SIGTERM);
    hdc_cleanup(&dur);
    hdc_cleanup(&flo);
    curl_global_cleanup();
    if (!ok) fprintf(stderr, "some requests failed\n");
    return ok ? 0 : 1;
}
