/* A table of bad requests against a live hdserver: each must get the right
 * 4xx status and a JSON error {"error":{"code","message"}} whose code names
 * the problem; the server must stay up, and the run's state and lam must be
 * unchanged afterwards (GET /v1/runs/1 and /hyper compared before/after).
 * Covers malformed JSON, wrong types, unknown runs and leases, negative and
 * out-of-range sizes, wrong dtype/shape, NaN/Inf, truncated .npy, huge
 * Content-Length, chunked bodies over the limit, missing/wrong tokens, a
 * worker token on another run or on admin endpoints, path tricks (.., %2e%2e,
 * //), very long paths and wrong methods. */
#include <math.h>

#include "../integ/hdclient.h"
#include "check.h"
#include "cJSON.h"
#include "npy.h"

enum { TK_NONE, TK_ADMIN, TK_W1, TK_W2, TK_BAD };
enum {
    B_NONE,
    B_TEXT,
    B_NPY_OK,
    B_NPY_F4,
    B_NPY_LONG,
    B_NPY_2D,
    B_NPY_NAN,
    B_NPY_INF,
    B_NPY_TRUNC,
    B_BIG
};

typedef struct {
    const char *method;
    const char *path; /* {L} = lease id, {W} = worker id */
    int token;
    int body;
    const char *text; /* B_TEXT body ({W} substituted) */
    const char *hdr;
    int status;
    const char *code; /* expected error code, NULL = any */
} bad_case;

static const bad_case cases[] = {
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{\"task\":", NULL, 400, "bad_format"},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "[1,2]", NULL, 400, NULL},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{\"episodes\":\"ten\"}", NULL, 400, "invalid"},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{\"bogus\":1}", NULL, 400, "invalid"},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{\"meta_batch\":-1}", NULL, 400, "invalid"},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{\"inner\":{\"steps\":0}}", NULL, 400, "invalid"},
    {"POST", "/v1/runs", TK_ADMIN, B_NONE, NULL, NULL, 400, "bad_format"},
    {"POST", "/v1/runs", TK_NONE, B_TEXT, "{}", NULL, 401, "unauthorized"},
    {"POST", "/v1/runs", TK_BAD, B_TEXT, "{}", NULL, 401, "unauthorized"},
    {"POST", "/v1/runs", TK_W1, B_TEXT, "{}", NULL, 403, "forbidden"},
    {"POST", "/v1/runs", TK_ADMIN, B_TEXT, "{}", "Authorization: Basic eHg6eXk=", 401,
     "unauthorized"},
    {"POST", "/v1/runs", TK_ADMIN, B_BIG, NULL, NULL, 413, "too_big"},
    {"GET", "/v1/runs", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"GET", "/v1/runs/999", TK_ADMIN, B_NONE, NULL, NULL, 404, "not_found"},
    {"GET", "/v1/runs/abc", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/-1", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/99999999999999999999999", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/2", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"GET", "/v1/runs/2/hyper", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"POST", "/v1/runs/1/pause", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"POST", "/v1/runs/1/cancel", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"GET", "/v1/runs/1/metrics", TK_W1, B_NONE, NULL, NULL, 403, "forbidden"},
    {"POST", "/v1/runs/1/explode", TK_ADMIN, B_NONE, NULL, NULL, 404, "not_found"},
    {"DELETE", "/v1/runs/1", TK_ADMIN, B_NONE, NULL, NULL, 405, "invalid"},
    {"GET", "/v1/runs/1/pause", TK_ADMIN, B_NONE, NULL, NULL, 405, "invalid"},
    {"GET", "/v1/runs/1/../2", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/1/%2e%2e/2", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/./1", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "//v1/runs", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/1%00/hyper", TK_ADMIN, B_NONE, NULL, NULL, 400, NULL},
    {"GET", "/nope", TK_ADMIN, B_NONE, NULL, NULL, 404, "not_found"},
    {"GET", "/v1/runs/1/hyper?version=abc", TK_W1, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/1/hyper?version=999", TK_W1, B_NONE, NULL, NULL, 404, "not_found"},
    {"GET", "/v1/runs/1/hyper?wait=-1", TK_W1, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/1/hyper", TK_W1, B_NONE, NULL, "If-None-Match: garbage", 400, "invalid"},
    {"GET", "/v1/runs/1/init?version=-3", TK_W1, B_NONE, NULL, NULL, 400, "invalid"},
    {"GET", "/v1/runs/1/metrics?format=xml", TK_ADMIN, B_NONE, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/runs/1/workers", TK_W1, B_TEXT, "{\"shard\":2,\"shards\":1}", NULL, 400,
     "invalid"},
    {"POST", "/v1/runs/1/workers", TK_W1, B_TEXT, "{\"name\":5}", NULL, 400, "invalid"},
    {"POST", "/v1/runs/1/workers", TK_W1, B_TEXT, "{\"shard\":-1}", NULL, 400, "invalid"},
    {"POST", "/v1/runs/1/workers", TK_W1, B_TEXT, "{\"name\":\"a\"} junk", NULL, 400, "bad_format"},
    {"POST", "/v1/runs/1/lease", TK_W1, B_TEXT, "{\"worker_id\":\"nope\"}", NULL, 404, "not_found"},
    {"POST", "/v1/runs/1/lease", TK_W1, B_TEXT, "{\"worker_id\":\"{W}\",\"max_slots\":0}", NULL,
     400, "invalid"},
    {"POST", "/v1/runs/1/lease", TK_W1, B_TEXT, "{\"worker_id\":\"{W}\",\"max_slots\":\"x\"}", NULL,
     400, "invalid"},
    {"POST", "/v1/runs/1/lease", TK_W1, B_TEXT, "{\"worker_id\":7}", NULL, 400, "invalid"},
    {"POST", "/v1/runs/1/lease", TK_W2, B_TEXT, "{\"worker_id\":\"{W}\"}", NULL, 403, "forbidden"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_F4, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_LONG, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_2D, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_NAN, NULL, NULL, 400, "non_finite"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_INF, NULL, NULL, 400, "non_finite"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NPY_TRUNC, NULL, NULL, 400, "bad_format"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_TEXT, "not a npy file at all", NULL, 400,
     "bad_format"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_NONE, NULL, NULL, 400, "bad_format"},
    {"POST", "/v1/leases/{L}/steps/1", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=abc", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/0?version=0", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/999?version=0", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/x?version=0", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/steps/2?version=0", TK_W1, B_NPY_OK, NULL, NULL, 409, "conflict"},
    {"POST", "/v1/leases/{L}/steps/1?version=5", TK_W1, B_NPY_OK, NULL, NULL, 409, "conflict"},
    {"POST", "/v1/leases/{L}/steps/1?version=0&slots=2", TK_W1, B_NPY_OK, NULL, NULL, 400,
     "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=0&slots=-2", TK_W1, B_NPY_OK, NULL, NULL, 400,
     "invalid"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W1, B_BIG, NULL, NULL, 413, "too_big"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_W2, B_NPY_OK, NULL, NULL, 403, "forbidden"},
    {"POST", "/v1/leases/{L}/steps/1?version=0", TK_NONE, B_NPY_OK, NULL, NULL, 401,
     "unauthorized"},
    {"POST", "/v1/leases/nope/heartbeat", TK_W1, B_NONE, NULL, NULL, 404, "not_found"},
    {"GET", "/v1/leases/{L}/heartbeat", TK_W1, B_NONE, NULL, NULL, 405, "invalid"},
    {"POST", "/v1/leases/{L}/final?slot=0", TK_W1, B_NPY_OK, NULL, NULL, 409, "conflict"},
    {"POST", "/v1/leases/{L}/final?slot=1", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/final", TK_W1, B_NPY_OK, NULL, NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/samples", TK_W1, B_TEXT, "{\"slot\":0,\"x\":[1],\"y\":[2]}", NULL, 409,
     "conflict"},
    {"POST", "/v1/leases/{L}/samples", TK_W1, B_TEXT, "{\"slot\":0,\"x\":[1,null]}", NULL, 400,
     "invalid"},
    {"POST", "/v1/leases/{L}/complete", TK_W1, B_TEXT, "{\"metrics\":5}", NULL, 400, "invalid"},
    {"POST", "/v1/leases/{L}/complete", TK_W1, B_TEXT, "{}", NULL, 409, "conflict"},
    {"POST", "/v1/leases/{L}/complete", TK_W1, B_TEXT, "{\"metrics\":{\"train_loss\":[1e999]}}",
     NULL, 400, NULL},
};

static uint8_t *npy_of(int kind, size_t n, size_t *len) {
    double *x = calloc(n + 8, sizeof *x);
    uint8_t *buf = NULL;
    size_t shape[2] = {n, 1};
    npy_dtype dt = kind == B_NPY_F4 ? NPY_F32 : NPY_F64;
    size_t cnt = kind == B_NPY_LONG ? n + 1 : n;
    if (kind == B_NPY_LONG) shape[0] = n + 1;
    if (kind == B_NPY_NAN) x[n / 2] = NAN;
    if (kind == B_NPY_INF) x[0] = -INFINITY;
    (void)cnt;
    npy_encode(dt, kind == B_NPY_2D ? 2 : 1, shape, x, &buf, len, NULL);
    if (kind == B_NPY_TRUNC) *len -= 9;
    free(x);
    return buf;
}

static void subst(char *out, size_t cap, const char *in, const char *lease, const char *worker) {
    size_t o = 0;
    for (const char *p = in; *p && o + 1 < cap; p++) {
        const char *rep = NULL;
        if (strncmp(p, "{L}", 3) == 0) rep = lease;
        if (strncmp(p, "{W}", 3) == 0) rep = worker;
        if (rep) {
            o += (size_t)snprintf(out + o, cap - o, "%s", rep);
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o < cap ? o : cap - 1] = 0;
}

/* GET /v1/runs/1 without the fields that move with the clock. */
static char *run_state(hdc_conn *c, const char *base) {
    char url[256];
    snprintf(url, sizeof url, "%s/v1/runs/1", base);
    hdc_resp r;
    hdc_req(c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &r);
    cJSON *j = cJSON_Parse(r.body);
    hdc_resp_free(&r);
    if (!j) return NULL;
    cJSON *ws = cJSON_GetObjectItem(j, "workers");
    for (cJSON *w = ws ? ws->child : NULL; w; w = w->next)
        cJSON_DeleteItemFromObject(w, "last_seen_seconds_ago");
    cJSON *ls = cJSON_GetObjectItem(j, "leases");
    for (cJSON *l = ls ? ls->child : NULL; l; l = l->next)
        cJSON_DeleteItemFromObject(l, "expires_in");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    hdc_server srv;
    if (hdc_tmpdir(&srv, "badreq") != 0 || hdc_start(&srv) != 0) {
        fprintf(stderr, "cannot start the server\n");
        return 1;
    }
    hdc_conn c;
    hdc_conn_init(&c);
    char url[4096], w1[160], w2[160], wid[64], lease[64];
    const char *spec =
        "{\"task\":{\"family\":\"sinusoid\"},\"model\":{\"layers\":[1,16,16,1],\"hyper_layers\":2},"
        "\"inner\":{\"steps\":4},\"method\":{\"name\":\"onestep\"},\"episodes\":2,\"meta_batch\":"
        "2}";
    hdc_resp r;
    snprintf(url, sizeof url, "%s/v1/runs", srv.base);
    hdc_req(&c, "POST", url, HDC_ADMIN, spec, strlen(spec), NULL, &r);
    CHECK_EQ_INT(r.status, 201);
    hdc_json_str(r.body, "worker_token", w1, sizeof w1);
    hdc_resp_free(&r);
    hdc_req(&c, "POST", url, HDC_ADMIN, spec, strlen(spec), NULL, &r);
    hdc_json_str(r.body, "worker_token", w2, sizeof w2);
    hdc_resp_free(&r);
    snprintf(url, sizeof url, "%s/v1/runs/1/workers", srv.base);
    hdc_req(&c, "POST", url, w1, "{\"name\":\"t\"}", 12, NULL, &r);
    CHECK_EQ_INT(r.status, 201);
    hdc_json_str(r.body, "worker_id", wid, sizeof wid);
    hdc_resp_free(&r);
    char body[256];
    snprintf(body, sizeof body, "{\"worker_id\":\"%s\",\"max_slots\":1}", wid);
    snprintf(url, sizeof url, "%s/v1/runs/1/lease", srv.base);
    hdc_req(&c, "POST", url, w1, body, strlen(body), NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    hdc_json_str(r.body, "lease_id", lease, sizeof lease);
    size_t n_lam = (size_t)hdc_json_int(r.body, "n_lam", 0),
           n_w = (size_t)hdc_json_int(r.body, "n_w", 0);
    hdc_resp_free(&r);
    CHECK(n_lam > 0 && n_w > 0 && lease[0]);

    char *before = run_state(&c, srv.base);
    snprintf(url, sizeof url, "%s/v1/runs/1/hyper", srv.base);
    hdc_resp lam0;
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &lam0);

    size_t big_len = 3u << 20;
    char *big = malloc(big_len);
    memset(big, ' ', big_len);
    big[0] = '{';
    big[big_len - 1] = '}';
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < ncases; i++) {
        const bad_case *k = &cases[i];
        char path[512], text[512];
        subst(path, sizeof path, k->path, lease, wid);
        snprintf(url, sizeof url, "%s%s", srv.base, path);
        const char *tok = k->token == TK_ADMIN ? HDC_ADMIN
                          : k->token == TK_W1  ? w1
                          : k->token == TK_W2  ? w2
                          : k->token == TK_BAD ? "not-a-valid-token-at-all"
                                               : NULL;
        uint8_t *data = NULL;
        size_t len = 0;
        const void *b = NULL;
        if (k->body == B_TEXT) {
            subst(text, sizeof text, k->text, lease, wid);
            b = text;
            len = strlen(text);
        } else if (k->body == B_BIG) {
            b = big;
            len = big_len;
        } else if (k->body != B_NONE) {
            int final = strstr(path, "/final") != NULL;
            data = npy_of(k->body, final ? n_w : n_lam, &len);
            b = data;
        }
        if (k->hdr && strncmp(k->hdr, "Authorization", 13) == 0) tok = NULL;
        hdc_req(&c, k->method, url, tok, b, len, k->hdr, &r);
        cJSON *j = cJSON_Parse(r.body);
        const char *code =
            cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code"));
        const char *msg =
            cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "message"));
        CHECK_MSG(r.status == k->status, "case %d %s %s: status %ld, want %d (%s)", i, k->method,
                  path, r.status, k->status, r.body);
        CHECK_MSG(code && msg && msg[0], "case %d %s %s: no JSON error (%s)", i, k->method, path,
                  r.body);
        if (k->code && code)
            CHECK_MSG(strcmp(code, k->code) == 0, "case %d %s %s: code %s, want %s (%s)", i,
                      k->method, path, code, k->code, msg ? msg : "");
        cJSON_Delete(j);
        hdc_resp_free(&r);
        free(data);
        snprintf(url, sizeof url, "%s/healthz", srv.base);
        hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r);
        CHECK_MSG(r.status == 200, "server down after case %d", i);
        hdc_resp_free(&r);
    }
    int extra = 0;
    /* A very long path: 414 with a JSON error. */
    {
        char *lp = malloc(6000);
        size_t o = (size_t)snprintf(lp, 6000, "%s/v1/runs/1/", srv.base);
        memset(lp + o, 'a', 5000);
        lp[o + 5000] = 0;
        hdc_req(&c, "GET", lp, HDC_ADMIN, NULL, 0, NULL, &r);
        CHECK_MSG(r.status == 414 && strstr(r.body, "\"error\""), "long path: %ld %s", r.status,
                  r.body);
        hdc_resp_free(&r);
        free(lp);
        extra++;
    }
    /* A huge Content-Length: 413 at once, before any body byte is sent. */
    {
        char req[1024], out[4096];
        int n = snprintf(req, sizeof req,
                         "POST /v1/leases/%s/steps/1?version=0 HTTP/1.1\r\nHost: "
                         "x\r\nAuthorization: Bearer %s\r\n"
                         "Content-Length: 99999999999\r\n\r\n",
                         lease, w1);
        int st = hdc_raw(srv.port, req, (size_t)n, NULL, 0, out, sizeof out);
        CHECK_MSG(st == 413 && strstr(out, "too_big"), "huge Content-Length: %d %.200s", st, out);
        n = snprintf(req, sizeof req,
                     "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: -5\r\n\r\n",
                     HDC_ADMIN);
        st = hdc_raw(srv.port, req, (size_t)n, NULL, 0, out, sizeof out);
        CHECK_MSG(st >= 400 && st < 500, "negative Content-Length: %d %.200s", st, out);
        extra += 2;
    }
    /* A chunked body that grows past the limit: 413 (or the connection is cut). */
    {
        char req[1024], out[4096];
        int n = snprintf(req, sizeof req,
                         "POST /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n",
                         HDC_ADMIN);
        size_t chunk = 60000, nch = 40;
        size_t cap = nch * (chunk + 16) + 16, o = 0;
        char *body2 = malloc(cap);
        for (size_t i = 0; i < nch; i++) {
            o += (size_t)snprintf(body2 + o, cap - o, "%zx\r\n", chunk);
            memset(body2 + o, ' ', chunk);
            o += chunk;
            memcpy(body2 + o, "\r\n", 2);
            o += 2;
        }
        o += (size_t)snprintf(body2 + o, cap - o, "0\r\n\r\n");
        int st = hdc_raw(srv.port, req, (size_t)n, body2, o, out, sizeof out);
        CHECK_MSG(st == 413 || st == 0, "chunked over the limit: %d %.200s", st, out);
        free(body2);
        extra++;
    }
    snprintf(url, sizeof url, "%s/healthz", srv.base);
    hdc_req(&c, "GET", url, NULL, NULL, 0, NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    hdc_resp_free(&r);

    char *after = run_state(&c, srv.base);
    CHECK_MSG(before && after && strcmp(before, after) == 0, "run state changed:\n%s\n%s", before,
              after);
    snprintf(url, sizeof url, "%s/v1/runs/1/hyper", srv.base);
    hdc_resp lam1;
    hdc_req(&c, "GET", url, HDC_ADMIN, NULL, 0, NULL, &lam1);
    CHECK(lam0.len == lam1.len && memcmp(lam0.body, lam1.body, lam0.len) == 0 &&
          strcmp(lam0.etag, lam1.etag) == 0);
    fprintf(stderr, "%d table cases + %d raw cases\n", ncases, extra);
    CHECK(ncases + extra >= 40);
    hdc_resp_free(&lam0);
    hdc_resp_free(&lam1);
    free(before);
    free(after);
    free(big);
    hdc_conn_clear(&c);
    int st = hdc_stop(&srv, SIGTERM);
    CHECK_EQ_INT(WEXITSTATUS(st), 0);
    hdc_cleanup(&srv);
    curl_global_cleanup();
    return check_finish("test_server_badreq");
}
