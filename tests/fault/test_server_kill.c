/* Crash safety of hdserver: a sync run is driven by a simulated worker
 * while the server is killed with SIGKILL at fixed points (right after an
 * acknowledged request, i.e. between posts) and at random moments from a
 * second thread (during bursts of posts: B=4 one-slot leases post every
 * step). After each kill the server is restarted on the same database and
 * the worker re-sends the request it was making (every write is
 * idempotent). At the end the final lam, phi and theta equal the local
 * single-process run to 1e-9 relative, and the number of accepted posts is
 * exactly M*T*B (none lost, none applied twice). */
#include <pthread.h>

#include "../integ/simworker.h"
#include "check.h"

static const char *spec =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":8},\"method\":{\"name\":\"hyperdistill\",\"gamma\":0.9,\"estimation_period\":2},"
    "\"episodes\":4,\"meta_batch\":4,\"seed\":3,\"lease_seconds\":2,"
    "\"eval\":{\"meta_val_tasks\":5,\"meta_test_tasks\":5}}";

static const char *spec_async =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,32,32,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":20},\"method\":{\"name\":\"onestep\"},\"episodes\":3,\"meta_batch\":2,"
    "\"mode\":\"async\",\"max_staleness\":1000,\"wire_dtype\":\"f4\","
    "\"eval\":{\"meta_val_tasks\":0,\"meta_test_tasks\":0}}";

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
    snprintf(cmd, sizeof cmd, "%s/hdworker --local %s --out %s > %s/local.log 2>&1", hdc_build_dir(), specf, outd,
             srv.dir);
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
    fprintf(stderr, "kills: fixed %d random %d, restarts %d, leases dropped %d\n", kills_fixed, kills_random,
            restarts, s.dropped);
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
        if (npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 0, &h, &lams[pass], NULL) == HD_OK) nl[pass] = h.count;
        hdc_resp_free(&r);
        snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, ar);
        hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
        CHECK_EQ_INT(hdc_json_int(r.body, "lam_version", -1), 3 * 2 * 20);
        hdc_resp_free(&r);
    }
    CHECK(lams[0] && lams[1] && nl[0] == nl[1] && memcmp(lams[0], lams[1], nl[0] * sizeof(double)) == 0);
    free(lams[0]);
    free(lams[1]);
    fprintf(stderr, "after the async phase: kills fixed %d, restarts %d\n", kills_fixed, restarts);
    hdc_conn_clear(&c);
    hdc_stop(&srv, SIGTERM);
    if (check_failed_count == 0) hdc_cleanup(&srv);
    else fprintf(stderr, "kept %s\n", srv.dir);
    curl_global_cleanup();
    return check_finish("test_server_kill");
}
