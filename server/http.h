/* The HTTP layer: a libmicrohttpd daemon, per-request contexts, body limits,
 * the one error-reply function and the request log. It knows nothing of
 * runs: a route table (routes.h) supplies two callbacks.
 *
 * Request life: on the first access-handler call (headers known) the layer
 * asks the routes for the body limit of this request; a Content-Length above
 * it is answered 413 at once, before any body byte is read. Body bytes are
 * appended to a buffer that never grows past the limit (a chunked body that
 * crosses it is refused with 413 too). When the body is complete the routes'
 * handle() runs and must answer with exactly one http_reply_* call. No
 * response is queued on the first call of a request: libmicrohttpd 0.9.75
 * closes the connection after such a response (LIBRARIES.md), so the answer
 * waits for the next call, and keep-alive connections are reused.
 *
 * One log line per request (method, path, status, microseconds) is written
 * when the response has been sent. Threading: by default one thread per
 * connection, so handlers may block (group commit, long polls). */
#ifndef HD_SERVER_HTTP_H
#define HD_SERVER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "config.h"
#include "err.h"

typedef struct http_server http_server_t;
typedef struct http_req http_req_t;

typedef struct {
    /* Largest body accepted for this request (headers are known; the body
     * is not). Return 0 to refuse any body. Must not reply. */
    size_t (*body_limit)(void *ctx, http_req_t *r);
    /* Handle a complete request; must call exactly one http_reply_*. */
    void (*handle)(void *ctx, http_req_t *r);
    /* Optional (NULL = none): called once per request when its response
     * has been sent or the connection ended, with the status (0 when none
     * was queued) and the seconds since the request started. Must not
     * reply. (Observation hook for metrics.c.) */
    void (*completed)(void *ctx, const http_req_t *r, int status, double seconds);
} http_routes;

/* Start listening per cfg (borrowed; must outlive the server). routes and
 * ctx are borrowed. *port receives the bound port. Returns HD_OK, HD_EINVAL
 * (bad --listen, TLS unsupported or unreadable files) or HD_ENET. */
hd_rc http_start(const server_config *cfg, const http_routes *routes, void *ctx,
                 http_server_t **out, unsigned *port, hd_err *err);
/* Stop accepting new connections (in-flight requests go on). */
void http_quiesce(http_server_t *s);
/* Stop the daemon: waits for in-flight requests, closes connections, frees.
 * NULL allowed. */
void http_stop(http_server_t *s);

/* ---- request accessors (borrowed strings, valid during handle) ---------- */
const char *http_method(const http_req_t *r);
const char *http_path(const http_req_t *r);
/* Request header or query argument by name; NULL if absent. */
const char *http_header(const http_req_t *r, const char *name);
const char *http_query(const http_req_t *r, const char *name);
/* Body bytes (NULL, 0 when there is none). */
const uint8_t *http_body(const http_req_t *r, size_t *len);
/* The request's Content-Length header, or -1 if none / not a number. */
int64_t http_content_length(const http_req_t *r);
/* Bearer token of the Authorization header, or NULL. */
const char *http_bearer(const http_req_t *r);
/* A per-request slot for the routes (not freed by the layer). */
void **http_route_data(http_req_t *r);

/* ---- replies (exactly one per request) --------------------------------- */
/* Header pairs: hdrs is NULL or a NULL-terminated list name, value, ... */
/* JSON body: copies json. */
void http_reply_json(http_req_t *r, int status, const char *json, const char *const *hdrs);
/* JSON body: takes json (malloc'd); NULL replies 500. */
void http_reply_json_take(http_req_t *r, int status, char *json, const char *const *hdrs);
/* Arbitrary body, takes data (malloc'd). */
void http_reply_take(http_req_t *r, int status, const char *ctype, uint8_t *data, size_t len,
                     const char *const *hdrs);
/* Body from a shared blob (takes the caller's reference). */
void http_reply_blob(http_req_t *r, int status, const char *ctype, blob_t *b,
                     const char *const *hdrs);
/* No body (204, 304). */
void http_reply_empty(http_req_t *r, int status, const char *const *hdrs);
/* THE error reply: maps e->code to an HTTP status by one table (or uses
 * status when it is nonzero), writes {"error":{"code":...,"message":...}},
 * counts it and logs WARN for 4xx, ERROR for 5xx. */
void http_reply_error_status(http_req_t *r, int status, const hd_err *e);
void http_reply_error(http_req_t *r, const hd_err *e);
/* Status http_reply_error uses for rc. */
int http_status_of(hd_rc rc);

/* Counters (thread-safe reads). */
uint64_t http_requests_total(const http_server_t *s);
uint64_t http_errors_total(const http_server_t *s);

/* ---- streamed replies (Server-Sent Events; events.c) ---------------------- */
#define HTTP_STREAM_END (-1)   /* http_stream_read: end of the body */
#define HTTP_STREAM_ERROR (-2) /* http_stream_read: abort the connection */
/* Fill buf with at most max bytes of the body at offset pos. Returns the
 * number of bytes (0 = nothing now, called again soon: the callback should
 * have waited a little first), HTTP_STREAM_END or HTTP_STREAM_ERROR. Runs on
 * the connection's thread; may block briefly (thread-per-connection mode). */
typedef long (*http_stream_read)(void *cls, uint64_t pos, char *buf, size_t max);
/* Reply with a body produced by fn (chunked, no Content-Length). Takes cls:
 * free_cls(cls) runs when the response is destroyed (also when queuing
 * fails). */
void http_reply_stream(http_req_t *r, int status, const char *ctype, http_stream_read fn, void *cls,
                       void (*free_cls)(void *cls), const char *const *hdrs);

#endif
