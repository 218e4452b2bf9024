/* Crash safety of hdserver: a sync run is driven by a simulated worker
 * while the server is killed with SIGKILL at fixed points (right after an
 * acknowledged request, i.e. between posts) and at random moments from a
 * second thread (during bursts of posts: B=4 one-slot leases post every
 * step). After each kill the server is restarted on the same database and
 * the worker re-sends the request it was making (every write is
 * idempotent). At the end the final lam, phi and theta equal the local
 * single-process run to 1e-9 relative, and the number of accepted posts is
 * exactly M*T*B (none lost, none applied twice).
 *
 * Then the async post log (docs/STORAGE.md): 600 posts on one lease cross
 * two lam snapshots (and rotations of the post log files); after a SIGKILL
 * right after the last acknowledged post, and a torn record appended to
 * every post log file (a write the kill interrupted, never acknowledged),
 * repeated posts (old ones whose idempotency rows were written at a
 * snapshot, recent ones only in the log) get their original answers and
 * change nothing, lam is bit-identical to the one published before the
 * kill, and the post counter is exact. The same with float64 posts, and
 * again (float32) with --sync full. */
#include <dirent.h>
#include <pthread.h>

#include "../integ/simworker.h"
#include "check.h"

static const char *spec =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":8},\"method\":{\"name\":\"hyperdistill\",\"gamma\":0.9,\"estimation_"
    "period\":2},"
    "\"episodes\":4,\"meta_batch\":4,\"seed\":3,\"lease_seconds\":2,"
    "\"eval\":{\"meta_val_tasks\":5,\"meta_test_tasks\":5}}";

static const char *spec_async =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":20},\"method\":{\"name\":\"onestep\"},\"episodes\":3,\"meta_batch\":2,"
    "\"mode\":\"async\",\"max_staleness\":1000,\"wire_dtype\":\"f4\","
    "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":0}}";

static const char *spec_alog =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":1000},\"method\":{\"name\":\"fo\"},\"episodes\":1,\"meta_batch\":2,"
    "\"mode\":\"async\",\"max_staleness\":1000000,\"wire_dtype\":\"f4\","
    "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":0}}";

/* The same run with float64 on the wire (the post log stores the doubles). */
static const char *spec_alog_f8 =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":1000},\"method\":{\"name\":\"fo\"},\"episodes\":1,\"meta_batch\":2,"
    "\"mode\":\"async\",\"max_staleness\":1000000,\"wire_dtype\":\"f8\","
    "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":0}}";
static int alog_f8; /* async_log_idempotency: spec_alog_f8 and float64 posts */

static long kill_base = -1; /* async phase: kill points relative to this request */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static hdc_server srv;
static int restarts, kills_fixed, kills_random;
static volatile int killer_stop;

static int restart(sim_t *s) {
    (void)s;
    pthread_mutex_lock(&mu);
    if (srv.pid) hdc_stop(&srv, SIGKILL);
    int rc = hdc_start(&srv);
    restarts++;
    pthread_mutex_unlock(&mu);
    return rc;
}

static void after_req(sim_t *s, long n) {
    (void)s;
    /* Fixed kill points: right after an acknowledged request. */
    static const long at[] = {9, 23, 40, 61, 97, 140, 190};
    static const long at_async[] = {7, 31, 58, 90};
    if (kill_base >= 0) {
        for (size_t i = 0; i < sizeof at_async / sizeof at_async[0]; i++) {
            if (n == kill_base + at_async[i]) {
                pthread_mutex_lock(&mu);
                if (srv.pid) kill(srv.pid, SIGKILL);
                kills_fixed++;
                pthread_mutex_unlock(&mu);
            }
        }
        return;
    }
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        if (n == at[i]) {
            pthread_mutex_lock(&mu);
            if (srv.pid) kill(srv.pid, SIGKILL);
            kills_fixed++;
            pthread_mutex_unlock(&mu);
        }
    }
}

static void *killer(void *arg) {
    (void)arg;
    unsigned seed = 12345;
    for (int k = 0; k < 6 && !killer_stop; k++) {
        seed = seed * 1103515245u + 12345u;
        hdc_sleep(0.03 + (double)(seed % 1000) / 1000.0 * 0.15);
        pthread_mutex_lock(&mu);
        if (srv.pid && !killer_stop) {
            kill(srv.pid, SIGKILL);
            kills_random++;
        }
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

#define ALOG_POSTS 600

/* POST step t of lease on run (body: a deterministic f4 gradient of n
 * values); returns the status and the answer's lam_version in *v. */
static long alog_post(hdc_conn *c, const char *lease, const char *token, long t, long long used,
                      size_t n, long long *v, char *body_out, size_t cap) {
    double *g = malloc(n * sizeof *g);
    if (!g) return 0;
    for (size_t i = 0; i < n; i++)
        g[i] = 1e-4 * (double)((long)((size_t)t * 31 + i * 17) % 101 - 50);
    uint8_t *npy = NULL;
    size_t len = 0, shape[1] = {n};
    npy_encode(alog_f8 ? NPY_F64 : NPY_F32, 1, shape, g, &npy, &len, NULL);
    free(g);
    char url[512];
    snprintf(url, sizeof url, "%s/v1/leases/%s/steps/%ld?slots=1&version=%lld", srv.base, lease, t,
             used);
    hdc_resp r;
    long st =
        hdc_req(c, "POST", url, token, npy, len, "Content-Type: application/octet-stream", &r);
    free(npy);
    *v = hdc_json_int(r.body, "lam_version", -1);
    if (body_out) snprintf(body_out, cap, "%s", r.body);
    hdc_resp_free(&r);
    return st;
}

/* Append a torn record (a header start and part of a body, as a killed
 * write leaves it) to every post log file of the database; returns the
 * number of files. */
static int tear_post_logs(void) {
    char prefix[400];
    const char *base = strrchr(srv.db, '/');
    snprintf(prefix, sizeof prefix, "%s-plog-", base ? base + 1 : srv.db);
    DIR *d = opendir(srv.dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        char path[700];
        snprintf(path, sizeof path, "%s/%s", srv.dir, de->d_name);
        FILE *f = fopen(path, "ab");
        if (!f) continue;
        static const unsigned char torn[] = {'H', 'D', 'P', 'L', 1, 2, 3, 4, 5, 6, 7, 8, 9};
        fwrite(torn, 1, sizeof torn, f);
        for (int i = 0; i < 3000; i++) fputc(i & 0xff, f);
        fclose(f);
        n++;
    }
    closedir(d);
    return n;
}

static void async_log_idempotency(void) {
    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], token[160], wid[64], lease[64], body[256];
    hdc_resp r;
    snprintf(url, sizeof url, "%s/v1/runs", srv.base);
    const char *sp = alog_f8 ? spec_alog_f8 : spec_alog;
    hdc_req(&c, "POST", url, HDC_ADMIN, sp, strlen(sp), NULL, &r);
    CHECK_EQ_INT(r.status, 201);
    long long run = hdc_json_int(r.body, "id", -1);
    hdc_json_str(r.body, "worker_token", token, sizeof token);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/workers", srv.base, run);
    hdc_req(&c, "POST", url, token, "{}", 2, NULL, &r);
    hdc_json_str(r.body, "worker_id", wid, sizeof wid);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/lease", srv.base, run);
    snprintf(body, sizeof body, "{\"worker_id\":\"%s\",\"max_slots\":1}", wid);
    hdc_req(&c, "POST", url, token, body, strlen(body), NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    hdc_json_str(r.body, "lease_id", lease, sizeof lease);
    size_t n = (size_t)hdc_json_int(r.body, "n_lam", 0);
    hdc_resp_free(&r);
    CHECK(n > 0);
    static long long ans[ALOG_POSTS + 2];
    static char ans_body[ALOG_POSTS + 2][96];
    long long used = 0;
    int ok = 1;
    for (long t = 1; t <= ALOG_POSTS && ok; t++) {
        ok = alog_post(&c, lease, token, t, used, n, &ans[t], ans_body[t], sizeof ans_body[t]) ==
             200;
        used = ans[t];
    }
    CHECK_MSG(ok, "async log: a first post failed");
    CHECK_EQ_INT(ans[ALOG_POSTS], ALOG_POSTS);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", srv.base, run);
    hdc_req(&c, "GET", url, token, NULL, 0, NULL, &r);
    char *lam_before = malloc(r.len ? r.len : 1);
    size_t lam_len = r.len;
    if (lam_before) memcpy(lam_before, r.body, r.len);
    hdc_resp_free(&r);

    /* SIGKILL right after the last acknowledged post, then restart. */
    hdc_conn_clear(&c);
    pthread_mutex_lock(&mu);
    hdc_stop(&srv, SIGKILL);
    CHECK_MSG(tear_post_logs() >= 1, "no post log file beside %s", srv.db);
    CHECK_EQ_INT(hdc_start(&srv), 0);
    pthread_mutex_unlock(&mu);
    hdc_conn_init(&c);
    static const long again[] = {1, 2, 255, 256, 257, 300, 511, 512, 513, 599, 600};
    for (size_t i = 0; i < sizeof again / sizeof again[0]; i++) {
        long t = again[i];
        long long v;
        char b[96];
        CHECK_EQ_INT(alog_post(&c, lease, token, t, ans[t] - 1, n, &v, b, sizeof b), 200);
        CHECK_MSG(strcmp(b, ans_body[t]) == 0, "repeated post t=%ld: answer %s, first answer %s", t,
                  b, ans_body[t]);
    }
    snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(hdc_json_int(r.body, "posts", -1), ALOG_POSTS);
    CHECK_EQ_INT(hdc_json_int(r.body, "lam_version", -1), ALOG_POSTS);
    CHECK_EQ_INT(hdc_json_int(r.body, "outer_steps", -1), ALOG_POSTS);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", srv.base, run);
    hdc_req(&c, "GET", url, token, NULL, 0, NULL, &r);
    CHECK(lam_before && r.len == lam_len && memcmp(r.body, lam_before, lam_len) == 0);
    hdc_resp_free(&r);
    free(lam_before);
    /* The run goes on where it stopped; the new post survives a kill too. */
    long long v;
    CHECK_EQ_INT(alog_post(&c, lease, token, ALOG_POSTS + 1, ALOG_POSTS, n, &v,
                           ans_body[ALOG_POSTS + 1], sizeof ans_body[0]),
                 200);
    CHECK_EQ_INT(v, ALOG_POSTS + 1);
    hdc_conn_clear(&c);
    pthread_mutex_lock(&mu);
    hdc_stop(&srv, SIGKILL);
    CHECK_EQ_INT(hdc_start(&srv), 0);
    pthread_mutex_unlock(&mu);
    hdc_conn_init(&c);
    char b[96];
    CHECK_EQ_INT(alog_post(&c, lease, token, ALOG_POSTS + 1, ALOG_POSTS, n, &v, b, sizeof b), 200);
    CHECK(strcmp(b, ans_body[ALOG_POSTS + 1]) == 0);
    snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(hdc_json_int(r.body, "posts", -1), ALOG_POSTS + 1);
    CHECK_EQ_INT(hdc_json_int(r.body, "lam_version", -1), ALOG_POSTS + 1);
    hdc_resp_free(&r);
    hdc_conn_clear(&c);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (hdc_tmpdir(&srv, "kill") != 0 || hdc_start(&srv) != 0) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    char specf[400], outd[400], cmd[1200];
    snprintf(specf, sizeof specf, "%s/spec.json", srv.dir);
    snprintf(outd, sizeof outd, "%s/local", srv.dir);
    FILE *f = fopen(specf, "w");
    fputs(spec, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/hdworker --local %s --out %s > %s/local.log 2>&1",
             hdc_build_dir(), specf, outd, srv.dir);
    CHECK_EQ_INT(system(cmd), 0);

    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], token[128];
    hdc_resp r;
    snprintf(url, sizeof url, "%s/v1/runs", srv.base);
    hdc_req(&c, "POST", url, HDC_ADMIN, spec, strlen(spec), NULL, &r);
    CHECK_EQ_INT(r.status, 201);
    long long run = hdc_json_int(r.body, "id", -1);
    hdc_json_str(r.body, "worker_token", token, sizeof token);
    hdc_resp_free(&r);

    sim_t s;
    CHECK_EQ_INT(sim_init(&s, &srv, run, token, spec, 1), 0);
    s.on_down = restart;
    s.after_req = after_req;
    pthread_t th;
    pthread_create(&th, NULL, killer, NULL);
    int rc = sim_drive(&s, 150.0);
    killer_stop = 1;
    pthread_join(th, NULL);
    CHECK_MSG(rc == 0, "run did not complete (%d): %s", rc, s.last_err);
    fprintf(stderr, "kills: fixed %d random %d, restarts %d, leases dropped %d\n", kills_fixed,
            kills_random, restarts, s.dropped);
    CHECK(kills_fixed >= 5);
    CHECK(restarts >= kills_fixed);

    /* Final state against the local run. */
    if (!srv.pid) CHECK_EQ_INT(hdc_start(&srv), 0);
    const char *names[2] = {"hyper", "init"}, *files[2] = {"lambda.npy", "phi.npy"};
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof url, "%s/v1/runs/%lld/%s", srv.base, run, names[i]);
        hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
        CHECK_EQ_INT(r.status, 200);
        double *x = NULL, *ref = NULL;
        npy_header h1, h2;
        char path[500];
        snprintf(path, sizeof path, "%s/%s", outd, files[i]);
        int ok = npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 0, &h1, &x, NULL) == HD_OK &&
                 npy_load(path, 1u << 26, &h2, &ref, NULL) == HD_OK && h1.count == h2.count;
        CHECK(ok);
        if (ok) {
            double d = vec_max_rel_diff(h1.count, x, ref);
            CHECK_MSG(d <= 1e-9, "%s differs from the local run after kills: %.3g", names[i], d);
        }
        free(x);
        free(ref);
        hdc_resp_free(&r);
    }
    snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(hdc_json_int(r.body, "posts", -1), 4 * 8 * 4);
    CHECK_EQ_INT(hdc_json_int(r.body, "outer_steps", -1), 4 * 8);
    char state[32];
    hdc_json_str(r.body, "state", state, sizeof state);
    CHECK(strcmp(state, "completed") == 0);
    hdc_resp_free(&r);
    sim_clear(&s);

    /* Async: the same sequential worker on two identical runs, the second
     * with kills (posts are logged and replayed on the stored lam after a
     * restart): the final lam must be bit-identical. */
    double *lams[2] = {NULL, NULL};
    size_t nl[2] = {0, 0};
    for (int pass = 0; pass < 2; pass++) {
        snprintf(url, sizeof url, "%s/v1/runs", srv.base);
        hdc_req(&c, "POST", url, HDC_ADMIN, spec_async, strlen(spec_async), NULL, &r);
        CHECK_EQ_INT(r.status, 201);
        long long ar = hdc_json_int(r.body, "id", -1);
        hdc_json_str(r.body, "worker_token", token, sizeof token);
        hdc_resp_free(&r);
        sim_t as;
        CHECK_EQ_INT(sim_init(&as, &srv, ar, token, spec_async, 1), 0);
        as.on_down = restart;
        as.after_req = after_req;
        kill_base = pass == 1 ? 0 : -1;
        int arc = sim_drive(&as, 60.0);
        kill_base = -1;
        CHECK_MSG(arc == 0, "async run (pass %d) did not complete: %s", pass, as.last_err);
        sim_clear(&as);
        snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", srv.base, ar);
        hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
        npy_header h;
        if (npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 0, &h, &lams[pass], NULL) == HD_OK)
            nl[pass] = h.count;
        hdc_resp_free(&r);
        snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, ar);
        hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
        CHECK_EQ_INT(hdc_json_int(r.body, "lam_version", -1), 3 * 2 * 20);
        hdc_resp_free(&r);
    }
    CHECK(lams[0] && lams[1] && nl[0] == nl[1] &&
          memcmp(lams[0], lams[1], nl[0] * sizeof(double)) == 0);
    free(lams[0]);
    free(lams[1]);
    fprintf(stderr, "after the async phase: kills fixed %d, restarts %d\n", kills_fixed, restarts);
    async_log_idempotency();
    alog_f8 = 1;
    async_log_idempotency();
    alog_f8 = 0;
    /* --sync full: a post is fdatasynced (by the committer) before its ack. */
    pthread_mutex_lock(&mu);
    hdc_stop(&srv, SIGTERM);
    snprintf(srv.extra[srv.nextra++], sizeof srv.extra[0], "--sync");
    snprintf(srv.extra[srv.nextra++], sizeof srv.extra[0], "full");
    CHECK_EQ_INT(hdc_start(&srv), 0);
    pthread_mutex_unlock(&mu);
    async_log_idempotency();
    hdc_conn_clear(&c);
    hdc_stop(&srv, SIGTERM);
    if (check_failed_count == 0)
        hdc_cleanup(&srv);
    else
        fprintf(stderr, "kept %s\n", srv.dir);
    curl_global_cleanup();
    return check_finish("test_server_kill");
}
