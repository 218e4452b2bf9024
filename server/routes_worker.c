/* Worker endpoints: registration, leases, steps, samples, finals,
 * completion (routes.h; schema/openapi.yaml). */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srvutil.h"

static int post_only(http_req_t *r) {
    if (strcmp(http_method(r), "POST") == 0) return 1;
    hd_err e;
    hd_err_clear(&e);
    hd_err_set(&e, HD_EINVAL, "method %s not allowed here (use POST)", http_method(r));
    http_reply_error_status(r, 405, &e);
    return 0;
}

void routes_run_worker(server_t *s, http_req_t *r, engine_run *run, const char *what) {
    if (!post_only(r)) return;
    hd_err err;
    hd_err_clear(&err);
    char *json = NULL;
    size_t len;
    const char *body = (const char *)http_body(r, &len);
    hd_rc rc;
    if (strcmp(what, "workers") == 0) {
        rc = engine_worker_register(s->engine, run, body, len, &json, &err);
        routes__reply_rc(r, rc, &err, 201, json);
        return;
    }
    rc = engine_lease_acquire(s->engine, run, body, len, &json, &err);
    if (rc == HD_OK && !json) {
        static const char *const hdrs[] = {"Retry-After", "1", NULL};
        http_reply_empty(r, 204, hdrs);
        return;
    }
    routes__reply_rc(r, rc, &err, 200, json);
}

static int query_i64(http_req_t *r, const char *name, int required, int64_t lo, int64_t hi,
                     int64_t *out) {
    const char *v = http_query(r, name);
    if (!v) {
        if (required) {
            routes__fail(r, HD_EINVAL, "query parameter %s: required", name);
            return -1;
        }
        return 0;
    }
    if (srvutil_parse_i64(v, lo, hi, out) != 0) {
        routes__fail(r, HD_EINVAL, "query parameter %s: must be an integer in [%lld, %lld]", name,
                     (long long)lo, (long long)hi);
        return -1;
    }
    return 1;
}

void routes_leases(server_t *s, http_req_t *r, const routes_path *p) {
    const char *lid = p->seg[2];
    const char *what = p->n >= 4 ? p->seg[3] : "";
    int shape_ok =
        (p->n == 4 && strcmp(what, "steps") != 0) || (p->n == 5 && strcmp(what, "steps") == 0);
    if (!shape_ok) {
        routes__fail(r, HD_ENOTFOUND, "no such endpoint: %.200s", http_path(r));
        return;
    }
    if (!post_only(r)) return;
    if (strlen(lid) > 64) {
        routes__fail(r, HD_EINVAL, "lease id too long");
        return;
    }
    engine_run *run = engine_lease_run(s->engine, lid);
    if (!run) {
        const char *tok = http_bearer(r);
        if (!routes__is_admin(s, r) && !(tok && engine_token_known(s->engine, tok))) {
            routes__auth(s, r, NULL, 0);
            return;
        }
        routes__fail(r, HD_ENOTFOUND, "no such lease: %.64s", lid);
        return;
    }
    if (!routes__auth(s, r, run, 1)) return;
    hd_err err;
    hd_err_clear(&err);
    char *json = NULL;
    hd_rc rc;
    size_t len;
    const uint8_t *body = http_body(r, &len);
    if (strcmp(what, "steps") == 0) {
        int64_t t, k = -1, v = -1;
        if (srvutil_parse_i64(p->seg[4], 1, 1 << 30, &t) != 0) {
            routes__fail(r, HD_EINVAL, "step '%.32s': must be a positive integer", p->seg[4]);
            return;
        }
        if (query_i64(r, "slots", 0, 1, 1 << 20, &k) < 0) return;
        if (query_i64(r, "version", 1, 0, INT64_MAX, &v) < 0) return;
        if (s->cfg->discard_posts) {
            /* Benchmark floor: the body was read; nothing else happens. */
            http_reply_json(r, 200, "{\"accepted\":true,\"lam_version\":0}", NULL);
            return;
        }
        if (!body) {
            routes__fail(r, HD_EFORMAT, "empty body: expected a .npy hypergradient");
            return;
        }
        rc = engine_lease_step(s->engine, lid, t, k, v, body, len, &json, &err);
    } else if (strcmp(what, "final") == 0) {
        int64_t slot;
        if (query_i64(r, "slot", 1, 0, 1 << 20, &slot) < 0) return;
        if (!body) {
            routes__fail(r, HD_EFORMAT, "empty body: expected a .npy of w_T");
            return;
        }
        rc = engine_lease_final(s->engine, lid, slot, body, len, &json, &err);
    } else if (strcmp(what, "heartbeat") == 0) {
        rc = engine_lease_heartbeat(s->engine, lid, &json, &err);
    } else if (strcmp(what, "samples") == 0) {
        rc = engine_lease_samples(s->engine, lid, (const char *)body, len, &json, &err);
    } else if (strcmp(what, "complete") == 0) {
        rc = engine_lease_complete(s->engine, lid, (const char *)body, len, &json, &err);
    } else if (strcmp(what, "release") == 0) {
        rc = engine_lease_release(s->engine, lid, &json, &err);
    } else {
        routes__fail(r, HD_ENOTFOUND, "no such endpoint: %.200s", http_path(r));
        return;
    }
    routes__reply_rc(r, rc, &err, 200, json);
}
