/* Run endpoints: create, list, status, control, tensors, metrics, samples,
 * events (routes.h; schema/openapi.yaml). */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srvutil.h"

static int method_is(http_req_t *r, const char *want) {
    if (strcmp(http_method(r), want) == 0) return 1;
    if (strcmp(want, "GET") == 0 && strcmp(http_method(r), "HEAD") == 0) return 1;
    hd_err e;
    hd_err_clear(&e);
    hd_err_set(&e, HD_EINVAL, "method %s not allowed here (use %s)", http_method(r), want);
    http_reply_error_status(r, 405, &e);
    return 0;
}

/* Parse an ETag value: "<v>", W/"<v>" or <v>. Returns -1 if unusable. */
static int64_t etag_version(const char *s) {
    if (!s) return -1;
    if (strncmp(s, "W/", 2) == 0) s += 2;
    char buf[32];
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    int64_t v;
    return srvutil_parse_i64(buf, 0, INT64_MAX, &v) == 0 ? v : -1;
}

static int query_i64(http_req_t *r, const char *name, int64_t lo, int64_t hi, int64_t *out) {
    const char *v = http_query(r, name);
    if (!v) return 0;
    if (srvutil_parse_i64(v, lo, hi, out) != 0) {
        routes__fail(r, HD_EINVAL, "query parameter %s: must be an integer in [%lld, %lld]", name,
                     (long long)lo, (long long)hi);
        return -1;
    }
    return 1;
}

/* ?format= of the run status endpoints: json (default) or text. Sets
 * *text; replies 400 and returns 0 for anything else. */
static int text_format(http_req_t *r, int *text) {
    const char *f = http_query(r, "format");
    *text = f && strcmp(f, "text") == 0;
    if (f && !*text && strcmp(f, "json") != 0) {
        routes__fail(r, HD_EINVAL, "query parameter format: json or text");
        return 0;
    }
    return 1;
}

static void tensor(server_t *s, http_req_t *r, engine_run *run, int which) {
    engine_tensor_query q = {-1, -1, 0};
    int64_t v;
    int got;
    if ((got = query_i64(r, "version", 0, INT64_MAX, &v)) < 0) return;
    if (got) q.version = v;
    if ((got = query_i64(r, "after", 0, INT64_MAX, &v)) < 0) return;
    if (got) q.after = v;
    const char *inm = http_header(r, "If-None-Match");
    if (inm && q.version < 0) {
        int64_t iv = etag_version(inm);
        if (iv < 0) {
            routes__fail(r, HD_EINVAL, "If-None-Match: expected \"<version>\"");
            return;
        }
        if (iv > q.after) q.after = iv;
    }
    const char *w = http_query(r, "wait");
    if (w) {
        if (srvutil_parse_double(w, &q.wait) != 0 || q.wait < 0 || q.wait > 3600) {
            routes__fail(r, HD_EINVAL, "query parameter wait: seconds in [0, 3600]");
            return;
        }
    }
    engine_tensor_reply out = {0, NULL, 0};
    hd_err err;
    hd_err_clear(&err);
    hd_rc rc = engine_tensor_get(s->engine, run, which, &q, &out, &err);
    if (rc != HD_OK) {
        http_reply_error(r, &err);
        return;
    }
    char etag[40], ver[24];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)out.version);
    snprintf(ver, sizeof ver, "%lld", (long long)out.version);
    const char *hdrs[] = {"ETag", etag, "X-HD-Version", ver, "Cache-Control", "no-cache", NULL};
    if (out.status == 304)
        http_reply_empty(r, 304, hdrs);
    else
        http_reply_blob(r, 200, "application/octet-stream", out.npy, hdrs);
}

void routes_runs(server_t *s, http_req_t *r, const routes_path *p) {
    hd_err err;
    hd_err_clear(&err);
    char *json = NULL;
    hd_rc rc;
    int text = 0;
    if (p->n == 2) {
        if (strcmp(http_method(r), "POST") == 0) {
            if (!routes__auth(s, r, NULL, 0)) return;
            size_t len;
            const uint8_t *body = http_body(r, &len);
            if (!body) {
                routes__fail(r, HD_EFORMAT, "empty body: expected a run spec (JSON object)");
                return;
            }
            rc = engine_run_create(s->engine, (const char *)body, len, &json, &err);
            routes__reply_rc(r, rc, &err, 201, json);
            return;
        }
        if (!method_is(r, "GET") || !routes__auth(s, r, NULL, 0)) return;
        if (!text_format(r, &text)) return;
        if (text)
            routes_runs_text(s, r, NULL);
        else
            http_reply_json_take(r, 200, engine_runs_json(s->engine), NULL);
        return;
    }
    int64_t id;
    if (srvutil_parse_i64(p->seg[2], 1, INT64_MAX, &id) != 0) {
        if (!routes__auth(s, r, NULL, 1)) return;
        routes__fail(r, HD_EINVAL, "run id '%.40s': must be a positive integer", p->seg[2]);
        return;
    }
    engine_run *run = engine_run_find(s->engine, id);
    const char *what = p->n >= 4 ? p->seg[3] : "";
    int worker_ok =
        p->n == 3 || (p->n == 4 && (strcmp(what, "hyper") == 0 || strcmp(what, "init") == 0 ||
                                    strcmp(what, "workers") == 0 || strcmp(what, "lease") == 0 ||
                                    strcmp(what, "events") == 0));
    if (!run) {
        const char *tok = routes__token(r);
        if (!routes__is_admin(s, r) && !(tok && engine_token_known(s->engine, tok))) {
            routes__auth(s, r, NULL, 0);
            return;
        }
        routes__fail(r, HD_ENOTFOUND, "no such run: %lld", (long long)id);
        return;
    }
    if (!routes__auth(s, r, run, worker_ok)) return;
    if (p->n == 3) {
        if (!method_is(r, "GET") || !text_format(r, &text)) return;
        if (text)
            routes_runs_text(s, r, run);
        else
            http_reply_json_take(r, 200, engine_run_json(s->engine, run), NULL);
        return;
    }
    if (p->n != 4) {
        routes__fail(r, HD_ENOTFOUND, "no such endpoint: %.200s", http_path(r));
        return;
    }
    if (strcmp(what, "pause") == 0 || strcmp(what, "resume") == 0 || strcmp(what, "cancel") == 0) {
        if (!method_is(r, "POST")) return;
        rc = engine_run_control(s->engine, run, what, &json, &err);
        routes__reply_rc(r, rc, &err, 200, json);
    } else if (strcmp(what, "hyper") == 0 || strcmp(what, "init") == 0) {
        if (!method_is(r, "GET")) return;
        tensor(s, r, run, strcmp(what, "init") == 0);
    } else if (strcmp(what, "metrics") == 0) {
        if (!method_is(r, "GET")) return;
        const char *fmt = http_query(r, "format");
        if (fmt && strcmp(fmt, "csv") == 0) {
            char *csv = engine_metrics_csv(s->engine, run);
            if (!csv)
                routes__fail(r, HD_ENOMEM, "out of memory");
            else
                http_reply_take(r, 200, "text/csv", (uint8_t *)csv, strlen(csv), NULL);
        } else if (fmt && strcmp(fmt, "json") != 0) {
            routes__fail(r, HD_EINVAL, "query parameter format: json or csv");
        } else {
            http_reply_json_take(r, 200, engine_metrics_json(s->engine, run), NULL);
        }
    } else if (strcmp(what, "events") == 0) {
        if (!method_is(r, "GET")) return;
        routes_run_events(s, r, run);
    } else if (strcmp(what, "samples") == 0) {
        if (!method_is(r, "GET")) return;
        http_reply_json_take(r, 200, engine_samples_json(s->engine, run), NULL);
    } else if (strcmp(what, "workers") == 0 || strcmp(what, "lease") == 0) {
        routes_run_worker(s, r, run, what);
    } else {
        routes__fail(r, HD_ENOTFOUND, "no such endpoint: %.200s", http_path(r));
    }
}
