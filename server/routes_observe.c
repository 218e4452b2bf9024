/* Observation endpoints (routes.h; schema/openapi.yaml): the dashboard
 * page, Prometheus /metrics, the run event stream (SSE) and the plain-text
 * run status. Authentication: / and /metrics are public (no secrets: the
 * page holds no data, /metrics only ids, states and counts); the events
 * and text endpoints authenticate as their JSON counterparts. */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"
#include "events.h"
#include "metrics.h"
#include "srvutil.h"
#include "textstatus.h"

static int get_only(http_req_t *r) {
    const char *m = http_method(r);
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0) return 1;
    hd_err e;
    hd_err_clear(&e);
    hd_err_set(&e, HD_EINVAL, "method %s not allowed here (use GET)", m);
    http_reply_error_status(r, 405, &e);
    return 0;
}

void routes_observe(server_t *s, http_req_t *r, const routes_path *p) {
    if (!get_only(r)) return;
    if (p->n == 1 && strcmp(p->seg[0], "metrics") == 0) {
        if (!s->metrics) {
            routes__fail(r, HD_ENOTFOUND, "metrics are not enabled");
            return;
        }
        size_t len = 0;
        char *txt =
            metrics_render(s->metrics, s->engine, s->events, http_errors_total(s->http), &len);
        if (!txt) {
            routes__fail(r, HD_ENOMEM, "out of memory rendering the metrics");
            return;
        }
        static const char *const hdrs[] = {"Cache-Control", "no-store", NULL};
        http_reply_take(r, 200, "text/plain; version=0.0.4; charset=utf-8", (uint8_t *)txt, len,
                        hdrs);
        return;
    }
    /* "/" and "/dashboard": the page. It is static: the data comes from
     * the API with the token the user gives the page. */
    size_t len;
    const char *page = dashboard_page(&len);
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) {
        routes__fail(r, HD_ENOMEM, "out of memory");
        return;
    }
    memcpy(copy, page, len);
    static const char *const hdrs[] = {
        "Cache-Control",
        "no-cache",
        "X-Content-Type-Options",
        "nosniff",
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
        "Referrer-Policy",
        "no-referrer",
        NULL};
    http_reply_take(r, 200, "text/html; charset=utf-8", copy, len, hdrs);
}

void routes_run_events(server_t *s, http_req_t *r, engine_run *run) {
    if (!s->events) {
        routes__fail(r, HD_ENOTFOUND, "events are not enabled");
        return;
    }
    if (s->cfg->threads > 0) {
        /* A stream waits inside its read callback: with a pool of polling
         * threads that would stall every connection of the thread. */
        routes__fail(r, HD_EBUSY,
                     "event streams need the thread-per-connection mode (--threads 0)");
        return;
    }
    int64_t last = -1;
    const char *lid = http_header(r, "Last-Event-ID");
    if (!lid) lid = http_query(r, "last_event_id");
    if (lid && srvutil_parse_i64(lid, 0, INT64_MAX, &last) != 0) {
        routes__fail(r, HD_EINVAL, "Last-Event-ID: expected a non-negative integer");
        return;
    }
    double hb = EVENTS_HEARTBEAT_S;
    const char *h = http_query(r, "heartbeat");
    if (h && (srvutil_parse_double(h, &hb) != 0 || hb < 0.1 || hb > 60)) {
        routes__fail(r, HD_EINVAL, "query parameter heartbeat: seconds in [0.1, 60]");
        return;
    }
    if (strcmp(http_method(r), "HEAD") == 0) {
        http_reply_empty(r, 200, NULL);
        return;
    }
    events_stream *st = events_stream_new(s->events, run, last, hb);
    if (!st) {
        routes__fail(r, HD_ENOMEM, "out of memory");
        return;
    }
    static const char *const hdrs[] = {"Cache-Control", "no-cache", "X-Accel-Buffering", "no",
                                       NULL};
    http_reply_stream(r, 200, "text/event-stream; charset=utf-8", events_stream_read, st,
                      events_stream_free, hdrs);
}

void routes_runs_text(server_t *s, http_req_t *r, engine_run *run) {
    size_t len = 0;
    char *txt = run ? textstatus_run(s->engine, run, &len) : textstatus_runs(s->engine, &len);
    if (!txt) {
        routes__fail(r, HD_ENOMEM, "out of memory");
        return;
    }
    http_reply_take(r, 200, "text/plain; charset=utf-8", (uint8_t *)txt, len, NULL);
}
