/* The REST routes (schema/openapi.yaml): request parsing, authentication
 * and conversion between HTTP/JSON/.npy and engine calls. No algorithm and
 * no SQL here. routes_runs.c holds the run and tensor endpoints,
 * routes_worker.c the worker and lease endpoints; routes.c dispatches. */
#ifndef HD_SERVER_ROUTES_H
#define HD_SERVER_ROUTES_H

#include <stddef.h>

#include "http.h"
#include "server.h"

#define ROUTES_MAX_SEGS 8

/* A parsed path: segments between '/' (borrowed from a copy owned here). */
typedef struct {
    char buf[2100];
    const char *seg[ROUTES_MAX_SEGS];
    int n;
} routes_path;

/* Callbacks for http_start (ctx is the server_t). */
size_t routes_body_limit(void *ctx, http_req_t *r);
void routes_handle(void *ctx, http_req_t *r);
/* Completion hook: records the request in s->metrics. */
void routes_completed(void *ctx, const http_req_t *r, int status, double seconds);

/* Shared helpers (routes__ prefix: used only by the routes files). */
/* Authenticate: admin only (run NULL, worker_ok 0), or the run's worker
 * token when worker_ok. Replies 401/403/404 and returns 0 on failure. */
int routes__auth(server_t *s, http_req_t *r, engine_run *run, int worker_ok);
int routes__is_admin(server_t *s, http_req_t *r);
/* The request's token: the Authorization bearer, or for GET .../events only
 * (EventSource cannot send headers) the access_token query parameter. */
const char *routes__token(const http_req_t *r);
void routes__fail(http_req_t *r, hd_rc code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void routes__reply_rc(http_req_t *r, hd_rc rc, const hd_err *err, int status, char *json);

/* Handlers: the path was split already. Each replies exactly once. */
void routes_runs(server_t *s, http_req_t *r, const routes_path *p);
void routes_leases(server_t *s, http_req_t *r, const routes_path *p);
void routes_run_worker(server_t *s, http_req_t *r, engine_run *run, const char *what);
/* routes_observe.c: GET / (dashboard), GET /metrics, GET /v1/runs/{id}/events
 * and the ?format=text variants of GET /v1/runs and GET /v1/runs/{id}. */
void routes_observe(server_t *s, http_req_t *r, const routes_path *p);
void routes_run_events(server_t *s, http_req_t *r, engine_run *run);
void routes_runs_text(server_t *s, http_req_t *r, engine_run *run);

#endif
