/* Route dispatch, path validation, authentication helpers (routes.h). */
#include "routes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srvutil.h"

void routes__fail(http_req_t *r, hd_rc code, const char *fmt, ...) {
    hd_err e;
    hd_err_clear(&e);
    e.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    http_reply_error(r, &e);
}

void routes__reply_rc(http_req_t *r, hd_rc rc, const hd_err *err, int status, char *json) {
    if (rc != HD_OK) {
        free(json);
        http_reply_error(r, err);
        return;
    }
    http_reply_json_take(r, status, json, NULL);
}

const char *routes__token(const http_req_t *r) {
    const char *t = http_bearer(r);
    if (t) return t;
    const char *path = http_path(r);
    size_t n = strlen(path);
    if (strcmp(http_method(r), "GET") == 0 && n >= 7 && strcmp(path + n - 7, "/events") == 0)
        return http_query(r, "access_token");
    return NULL;
}

int routes__is_admin(server_t *s, http_req_t *r) {
    return srvutil_token_eq(s->cfg->admin_token, routes__token(r));
}

void routes_completed(void *ctx, const http_req_t *r, int status, double seconds) {
    server_t *s = ctx;
    const char *path = http_path(r);
    if (s->metrics) metrics_observe(s->metrics, http_method(r), path ? path : "", status, seconds);
}

int routes__auth(server_t *s, http_req_t *r, engine_run *run, int worker_ok) {
    const char *tok = routes__token(r);
    if (!tok) {
        routes__fail(r, HD_EAUTH, "missing bearer token (Authorization: Bearer <token>)");
        return 0;
    }
    if (srvutil_token_eq(s->cfg->admin_token, tok)) return 1;
    if (worker_ok && run && engine_run_token_ok(run, tok)) return 1;
    if (engine_token_known(s->engine, tok)) {
        if (!worker_ok || !run)
            routes__fail(r, HD_EFORBIDDEN, "a worker token cannot use this endpoint (admin only)");
        else
            routes__fail(r, HD_EFORBIDDEN, "this worker token belongs to another run");
        return 0;
    }
    routes__fail(r, HD_EAUTH, "invalid bearer token");
    return 0;
}

/* Split and validate the path. Returns 0, or replies 400 and returns -1. */
static int split(http_req_t *r, routes_path *p) {
    const char *path = http_path(r);
    size_t n = strlen(path);
    if (n >= sizeof p->buf) {
        routes__fail(r, HD_EINVAL, "path too long");
        return -1;
    }
    if (path[0] != '/') {
        routes__fail(r, HD_EINVAL, "path must start with '/'");
        return -1;
    }
    memcpy(p->buf, path, n + 1);
    p->n = 0;
    char *c = p->buf + 1;
    if (n > 1 && p->buf[n - 1] == '/') p->buf[--n] = 0; /* one trailing slash is allowed */
    while (*c || (c == p->buf + 1 && n > 1)) {
        char *slash = strchr(c, '/');
        if (slash) *slash = 0;
        if (!*c) {
            routes__fail(r, HD_EINVAL, "empty path segment ('//')");
            return -1;
        }
        if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0) {
            routes__fail(r, HD_EINVAL, "'.' and '..' path segments are not allowed");
            return -1;
        }
        for (const char *q = c; *q; q++) {
            if ((unsigned char)*q < 0x21 || (unsigned char)*q > 0x7e || *q == '\\') {
                routes__fail(r, HD_EINVAL,
                             "path segment with a control, space, non-ASCII or '\\' character");
                return -1;
            }
        }
        if (p->n == ROUTES_MAX_SEGS) {
            routes__fail(r, HD_ENOTFOUND, "no such endpoint (too many path segments)");
            return -1;
        }
        p->seg[p->n++] = c;
        if (!slash) break;
        c = slash + 1;
    }
    return 0;
}

static int is(const routes_path *p, int i, const char *s) {
    return i < p->n && strcmp(p->seg[i], s) == 0;
}

size_t routes_body_limit(void *ctx, http_req_t *r) {
    server_t *s = ctx;
    size_t cap = (size_t)s->cfg->max_body_bytes;
    routes_path p;
    const char *path = http_path(r);
    if (strlen(path) >= sizeof p.buf) return 0;
    /* A light split without replying: http_path is validated in handle(). */
    memcpy(p.buf, path, strlen(path) + 1);
    p.n = 0;
    for (char *c = p.buf + 1; *c && p.n < ROUTES_MAX_SEGS;) {
        char *slash = strchr(c, '/');
        if (slash) *slash = 0;
        p.seg[p.n++] = c;
        if (!slash) break;
        c = slash + 1;
    }
    size_t lim;
    if (strcmp(http_method(r), "POST") != 0)
        lim = 0;
    else if (p.n >= 3 && is(&p, 0, "v1") && is(&p, 1, "leases")) {
        const char *what = is(&p, 3, "steps") ? "steps" : is(&p, 3, "final") ? "final" : "json";
        lim = s->cfg->discard_posts && is(&p, 3, "steps")
                  ? cap
                  : engine_lease_body_limit(s->engine, p.seg[2], what);
    } else {
        lim = 1 << 20; /* specs and small JSON bodies */
    }
    return lim < cap ? lim : cap;
}

void routes_handle(void *ctx, http_req_t *r) {
    server_t *s = ctx;
    routes_path p;
    if (split(r, &p) != 0) return;
    const char *m = http_method(r);
    if (p.n == 1 && (is(&p, 0, "healthz") || is(&p, 0, "readyz"))) {
        if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
            hd_err e;
            hd_err_clear(&e);
            hd_err_set(&e, HD_EINVAL, "method %s not allowed (use GET)", m);
            http_reply_error_status(r, 405, &e);
            return;
        }
        if (is(&p, 0, "healthz")) {
            http_reply_json(r, 200, "{\"status\":\"ok\"}", NULL);
            return;
        }
        if (!store_ready(s->store)) {
            routes__fail(r, HD_EBUSY, "database not ready");
            return;
        }
        char buf[96];
        snprintf(buf, sizeof buf, "{\"status\":\"ready\",\"schema_version\":%d}",
                 store_schema_version(s->store));
        http_reply_json(r, 200, buf, NULL);
        return;
    }
    if (p.n == 0 || (p.n == 1 && (is(&p, 0, "metrics") || is(&p, 0, "dashboard")))) {
        routes_observe(s, r, &p);
        return;
    }
    if (p.n >= 2 && is(&p, 0, "v1") && is(&p, 1, "runs")) {
        routes_runs(s, r, &p);
        return;
    }
    if (p.n >= 3 && is(&p, 0, "v1") && is(&p, 1, "leases")) {
        routes_leases(s, r, &p);
        return;
    }
    routes__fail(r, HD_ENOTFOUND, "no such endpoint: %s %.200s", m, http_path(r));
}
