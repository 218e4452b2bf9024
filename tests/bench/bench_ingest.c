/* Server ingest benchmark (make bench-ingest): N = 1, 4, 16 concurrent
 * libcurl clients (keep-alive, one thread each) post 20,400-float32
 * hypergradients (the paper's sinusoid lam, .npy <f4, 81 KB) to an async
 * run, each on its own lease. Reports posts/s and p50/p99 latency with
 * durability (group commit, synchronous=NORMAL) next to the HTTP floor (the
 * same server started with --bench-discard-posts, which reads the body and
 * answers without applying or storing it), and lam pulls per second (GET
 * /hyper, 4 clients). Bounded: each measurement runs BENCH_SECONDS. */
#include <pthread.h>

#include "../integ/hdclient.h"
#include "npy.h"

#define BENCH_SECONDS 3.0
#define NLAM 20400

static const char *spec =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,100,100,100,1],\"hyper_layers\":3},"
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
    double *lat;      /* seconds per request */
    long n, cap;
    long errors;
    int pull;         /* 1: GET /hyper instead of posting */
} client;

static void *client_main(void *arg) {
    client *c = arg;
    hdc_conn conn;
    hdc_conn_init(&conn);
    char url[512];
    long long version = 0;
    for (long t = 1; hdc_now() < c->until; t++) {
        if (c->pull) snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", c->base, c->run);
        else snprintf(url, sizeof url, "%s/v1/leases/%s/steps/%ld?slots=1&version=%lld", c->base, c->lease, t, version);
        hdc_resp r;
        double t0 = hdc_now();
        if (c->pull) hdc_req(&conn, "GET", url, c->token, NULL, 0, NULL, &r);
        else hdc_req(&conn, "POST", url, c->token, c->body, c->len, "Content-Type: application/octet-stream", &r);
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
    double rate, p50, p99;
    long errors;
} result;

/* Create a run with nclients leases on server base; fill clients. */
static int setup(const char *base, int nclients, client *cl) {
    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], token[160], wid[64], body[256];
    hdc_resp r;
    snprintf(url, sizeof url, "%s/v1/runs", base);
    hdc_req(&c, "POST", url, HDC_ADMIN, spec, strlen(spec), NULL, &r);
    if (r.status != 201) {
        fprintf(stderr, "create run: %ld %s\n", r.status, r.body);
        return -1;
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
            return -1;
        }
        hdc_json_str(r.body, "lease_id", cl[i].lease, sizeof cl[i].lease);
        snprintf(cl[i].token, sizeof cl[i].token, "%s", token);
        cl[i].run = run;
        hdc_resp_free(&r);
    }
    hdc_conn_clear(&c);
    return 0;
}

static result measure(const char *base, int n, int pull, const uint8_t *body, size_t len) {
    client cl[16];
    memset(cl, 0, sizeof cl);
    result res = {0, 0, 0, 0};
    if (setup(base, pull ? 1 : n, cl) != 0) return res;
    double t0 = hdc_now();
    pthread_t th[16];
    for (int i = 0; i < n; i++) {
        if (pull && i > 0) cl[i] = cl[0];
        cl[i].base = base;
        cl[i].body = body;
        cl[i].len = len;
        cl[i].until = t0 + BENCH_SECONDS;
        cl[i].cap = 2000000;
        cl[i].lat = malloc((size_t)cl[i].cap * sizeof(double));
        cl[i].n = 0;
        cl[i].errors = 0;
        cl[i].pull = pull;
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    long total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        total += cl[i].n;
        res.errors += cl[i].errors;
    }
    double secs = hdc_now() - t0;
    double *all = malloc((size_t)(total ? total : 1) * sizeof(double));
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

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static double g[NLAM];
    for (int i = 0; i < NLAM; i++) g[i] = 1e-3 * (double)((i * 7919) % 1000 - 500) / 500.0;
    uint8_t *body = NULL;
    size_t len = 0;
    size_t shape[1] = {NLAM};
    npy_encode(NPY_F32, 1, shape, g, &body, &len, NULL);

    hdc_server dur, flo;
    if (hdc_tmpdir(&dur, "bench") != 0 || hdc_start(&dur) != 0) return 1;
    if (hdc_tmpdir(&flo, "benchfloor") != 0) return 1;
    snprintf(flo.extra[0], sizeof flo.extra[0], "--bench-discard-posts");
    snprintf(flo.extra[1], sizeof flo.extra[1], "1");
    flo.nextra = 2;
    if (hdc_start(&flo) != 0) return 1;

    printf("ingest: async run, lam = %d float32 (%zu-byte .npy posts), %.0f s per cell, 2-core machine\n", NLAM,
           len, BENCH_SECONDS);
    printf("%-8s | %-30s | %-30s | %s\n", "clients", "durable posts/s  p50 ms  p99 ms", "floor posts/s  p50 ms  p99 ms",
           "durable/floor");
    static const int ns[3] = {1, 4, 16};
    int ok = 1;
    for (int i = 0; i < 3; i++) {
        result d = measure(dur.base, ns[i], 0, body, len);
        result f = measure(flo.base, ns[i], 0, body, len);
        printf("%-8d | %14.0f  %6.2f  %6.2f | %13.0f  %6.2f  %6.2f | %.2f\n", ns[i], d.rate, d.p50, d.p99, f.rate,
               f.p50, f.p99, f.rate > 0 ? d.rate / f.rate : 0.0);
        if (d.errors || f.errors) ok = 0;
        if (ns[i] == 4)
            printf("goal (4 clients): durable >= 0.5 x floor: %s; p99 < 5 ms: %s\n",
                   d.rate >= 0.5 * f.rate ? "met" : "NOT met", d.p99 < 5.0 ? "met" : "NOT met");
    }
    result p = measure(dur.base, 4, 1, NULL, 0);
    printf("lam pulls (GET /hyper, 4 clients): %.0f /s  p50 %.2f ms  p99 %.2f ms  (goal >= 5000/s: %s)\n", p.rate,
           p.p50, p.p99, p.rate >= 5000 ? "met" : "NOT met");
    free(body);
    hdc_stop(&dur, SIGTERM);
    hdc_stop(&flo, SIGTERM);
    hdc_cleanup(&dur);
    hdc_cleanup(&flo);
    curl_global_cleanup();
    return ok ? 0 : 1;
}
