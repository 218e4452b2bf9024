/* Whole life of small runs driven through the REST API by a simulated
 * worker (tests/integ/simworker.h): a sync HyperDistill run with an
 * estimation round, multi-slot leases, meta-validation every 2 episodes and
 * meta-test (two jobs), checked against `hdworker --local` (lam, phi, theta
 * to 1e-9 relative; meta-test loss to 1e-9); a repeated post that changes
 * nothing; keep-alive reuse; metrics/samples endpoints; SIGTERM exits 0 and
 * a restart serves the same final state; and an async run to completion. */
#include <math.h>

#include "check.h"
#include "simworker.h"

static const char *spec_sync =
    "{\"task\":{\"family\":\"sinusoid\",\"shots\":10,\"queries\":10},"
    "\"model\":{\"layers\":[1,24,24,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":6,\"lr\":0.01,\"momentum\":0.9},"
    "\"method\":{\"name\":\"hyperdistill\",\"gamma\":0.9,\"estimation_period\":3},"
    "\"episodes\":4,\"meta_batch\":3,\"seed\":7,"
    "\"eval\":{\"meta_val_tasks\":7,\"meta_test_tasks\":150,\"interval\":2}}";

static const char *spec_async =
    "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,16,16,1],\"hyper_layers\":2},"
    "\"inner\":{\"steps\":4},\"method\":{\"name\":\"onestep\"},\"episodes\":2,\"meta_batch\":2,"
    "\"eval\":{\"meta_val_tasks\":3,\"meta_test_tasks\":3},\"mode\":\"async\",\"max_staleness\":"
    "100}";

static double *load_npy(const char *path, size_t *n) {
    double *x = NULL;
    npy_header h;
    if (npy_load(path, 1u << 26, &h, &x, NULL) != HD_OK) return NULL;
    *n = h.count;
    return x;
}

static double *get_tensor(hdc_conn *c, const char *base, long long run, const char *what,
                          size_t *n) {
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/%lld/%s", base, run, what);
    hdc_resp r;
    hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    double *x = NULL;
    npy_header h;
    if (r.status == 200 &&
        npy_decode((const uint8_t *)r.body, r.len, 1u << 26, 0, &h, &x, NULL) == HD_OK)
        *n = h.count;
    hdc_resp_free(&r);
    return x;
}

static double json_num(const char *json, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(json, pat);
    return p ? strtod(p + strlen(pat), NULL) : (double)NAN;
}

static long long create_run(hdc_conn *c, const char *base, const char *spec, char *token,
                            size_t cap) {
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs", base);
    hdc_resp r;
    hdc_req(c, "POST", url, HDC_ADMIN, spec, strlen(spec), "Content-Type: application/json", &r);
    CHECK_EQ_INT(r.status, 201);
    long long id = hdc_json_int(r.body, "id", -1);
    hdc_json_str(r.body, "worker_token", token, cap);
    hdc_resp_free(&r);
    return id;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    hdc_server srv;
    if (hdc_tmpdir(&srv, "sync") != 0 || hdc_start(&srv) != 0) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    hdc_conn c;
    hdc_conn_init(&c);
    char url[512], token[128];

    /* Reference: the local runner. */
    char specf[400], outd[400], cmd[1200];
    snprintf(specf, sizeof specf, "%s/spec.json", srv.dir);
    snprintf(outd, sizeof outd, "%s/local", srv.dir);
    FILE *f = fopen(specf, "w");
    fputs(spec_sync, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s/hdworker --local %s --out %s > %s/local.log 2>&1",
             hdc_build_dir(), specf, outd, srv.dir);
    CHECK_EQ_INT(system(cmd), 0);

    long long run = create_run(&c, srv.base, spec_sync, token, sizeof token);
    CHECK_EQ_INT(run, 1);

    /* Keep-alive: the second request reuses the connection. */
    snprintf(url, sizeof url, "%s/healthz", srv.base);
    hdc_resp r;
    hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r);
    hdc_resp_free(&r);
    hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r);
    long nconn = -1;
    curl_easy_getinfo(c.h, CURLINFO_NUM_CONNECTS, &nconn);
    CHECK_EQ_INT(r.status, 200);
    CHECK_MSG(nconn == 0, "second GET opened %ld new connections", nconn);
    hdc_resp_free(&r);

    sim_t s;
    CHECK_EQ_INT(sim_init(&s, &srv, run, token, spec_sync, 2), 0);
    s.check_repeat = 1;
    int rc = sim_drive(&s, 120.0);
    CHECK_MSG(rc == 0, "sync run did not complete (%d): %s", rc, s.last_err);
    CHECK_EQ_INT(s.repeat_checked, 1);

    size_t n1 = 0, n2 = 0;
    char path[500];
    snprintf(path, sizeof path, "%s/lambda.npy", outd);
    double *lam_ref = load_npy(path, &n1);
    double *lam = get_tensor(&c, srv.base, run, "hyper", &n2);
    CHECK(lam_ref && lam && n1 == n2 && n1 == s.n_lam);
    if (lam_ref && lam && n1 == n2) {
        double d = vec_max_rel_diff(n1, lam, lam_ref);
        CHECK_MSG(d <= 1e-9, "final lam differs from the local run: max rel diff %.3g", d);
    }
    snprintf(path, sizeof path, "%s/phi.npy", outd);
    double *phi_ref = load_npy(path, &n1);
    double *phi = get_tensor(&c, srv.base, run, "init", &n2);
    CHECK(phi_ref && phi && n1 == n2);
    if (phi_ref && phi && n1 == n2) {
        double d = vec_max_rel_diff(n1, phi, phi_ref);
        CHECK_MSG(d <= 1e-9, "final phi differs from the local run: max rel diff %.3g", d);
    }

    /* theta and meta-test loss against summary.json. */
    snprintf(path, sizeof path, "%s/summary.json", outd);
    char sum[4096] = "";
    f = fopen(path, "r");
    if (f) {
        size_t k = fread(sum, 1, sizeof sum - 1, f);
        sum[k] = 0;
        fclose(f);
    }
    snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, run);
    hdc_req(&c, "GET", url, token, NULL, 0, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    char state[32];
    hdc_json_str(r.body, "state", state, sizeof state);
    CHECK(strcmp(state, "completed") == 0);
    double th = json_num(r.body, "theta"), th_ref = json_num(sum, "theta");
    CHECK_MSG(fabs(th - th_ref) <= 1e-9 * fabs(th_ref), "theta %.17g vs local %.17g", th, th_ref);
    double mt = json_num(r.body, "meta_test_loss"), mt_ref = json_num(sum, "meta_test_loss");
    CHECK_MSG(fabs(mt - mt_ref) <= 1e-9 * fabs(mt_ref), "meta_test_loss %.17g vs local %.17g", mt,
              mt_ref);
    double mv = json_num(r.body, "meta_val_loss"), mv_ref = json_num(sum, "meta_val_loss");
    CHECK_MSG(fabs(mv - mv_ref) <= 1e-9 * fabs(mv_ref), "meta_val_loss %.17g vs local %.17g", mv,
              mv_ref);
    hdc_resp_free(&r);

    /* Metrics (JSON and CSV) and samples. */
    snprintf(url, sizeof url, "%s/v1/runs/%lld/metrics", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    cJSON *mj = cJSON_Parse(r.body);
    CHECK(mj && cJSON_GetArraySize(mj) == 4);
    if (mj && cJSON_GetArraySize(mj) == 4) {
        CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(mj, 1), "val_loss") != NULL);
        CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(mj, 0), "val_loss") == NULL);
        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetArrayItem(mj, 3), "train_loss")));
        CHECK(cJSON_IsNumber(cJSON_GetObjectItem(cJSON_GetArrayItem(mj, 3), "meta_test_loss")));
    }
    cJSON_Delete(mj);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/metrics?format=csv", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    int lines = 0;
    for (const char *p = r.body; *p; p++) lines += *p == '\n';
    CHECK_EQ_INT(lines, 5);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/samples", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    mj = cJSON_Parse(r.body);
    CHECK(mj && cJSON_GetArraySize(mj) == 2); /* episodes 1 and 4 */
    if (mj && cJSON_GetArraySize(mj) == 2)
        CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(mj, 0), "samples")),
                     3 * 6);
    cJSON_Delete(mj);
    hdc_resp_free(&r);

    /* SIGTERM: clean exit 0; a restart serves the same state. */
    snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    char etag1[64];
    snprintf(etag1, sizeof etag1, "%s", r.etag);
    hdc_resp_free(&r);
    int st = hdc_stop(&srv, SIGTERM);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM exit status %d", st);
    CHECK_EQ_INT(hdc_start(&srv), 0);
    size_t n3 = 0;
    double *lam2 = get_tensor(&c, srv.base, run, "hyper", &n3);
    CHECK(lam2 && lam && n3 == s.n_lam && memcmp(lam2, lam, n3 * sizeof(double)) == 0);
    snprintf(url, sizeof url, "%s/v1/runs/%lld/hyper", srv.base, run);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK(strcmp(r.etag, etag1) == 0);
    hdc_resp_free(&r);
    /* Conditional GET: 304 with the current version. */
    char inm[96];
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag1);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, inm, &r);
    CHECK_EQ_INT(r.status, 304);
    hdc_resp_free(&r);
    sim_clear(&s);

    /* An async run to completion. */
    long long run2 = create_run(&c, srv.base, spec_async, token, sizeof token);
    sim_t a;
    CHECK_EQ_INT(sim_init(&a, &srv, run2, token, spec_async, 1), 0);
    rc = sim_drive(&a, 60.0);
    CHECK_MSG(rc == 0, "async run did not complete (%d): %s", rc, a.last_err);
    snprintf(url, sizeof url, "%s/v1/runs/%lld", srv.base, run2);
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    CHECK_EQ_INT(hdc_json_int(r.body, "lam_version", -1), 2 * 2 * 4); /* M*B*T updates */
    hdc_resp_free(&r);
    sim_clear(&a);

    free(lam_ref);
    free(lam);
    free(lam2);
    free(phi_ref);
    free(phi);
    hdc_conn_clear(&c);
    CHECK_EQ_INT(WEXITSTATUS(hdc_stop(&srv, SIGTERM)), 0);
    hdc_cleanup(&srv);
    curl_global_cleanup();
    return check_finish("test_server_sync");
}
