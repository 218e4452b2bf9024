/* The worker's HTTP client: one libcurl easy handle (one keep-alive
 * connection) to hdserver, bearer-token auth, bounded response bodies, and
 * retries of connection errors and 5xx answers with exponential backoff and
 * jitter up to a deadline, resending the same request (its idempotency key is
 * in the path). Every retry and give-up is logged with its reason. Not
 * thread-safe: one client per thread. */
#ifndef HD_CLIENT_H
#define HD_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct client client_t;

typedef struct {
    long status;   /* HTTP status, 0 if no answer */
    uint8_t *body; /* response body (NUL-terminated), owned by the client until the next request */
    size_t len;    /* body bytes */
    char etag[64]; /* ETag header without quotes, "" if none */
    long retry_after; /* Retry-After seconds, -1 if none */
} client_resp;

typedef struct {
    uint64_t requests;   /* requests sent (retries included) */
    uint64_t retries;    /* retried attempts */
    uint64_t bytes_sent; /* request body bytes */
    uint64_t bytes_recv; /* response body bytes */
} client_stats;

/* base_url like "http://127.0.0.1:8080" (no trailing slash needed); token
 * borrowed; retry_deadline_s bounds the retries of one request; stop (may be
 * NULL) is polled between retries: when it becomes non-zero the request gives
 * up with HD_ETIMEOUT. Returns HD_OK, HD_EINVAL or HD_ENOMEM. */
hd_rc client_new(const char *base_url, const char *token, double retry_deadline_s,
                 volatile sig_atomic_t *stop, client_t **out, hd_err *err);
void client_free(client_t *c);

/* One request with retries. path starts with '/'. body may be NULL. ctype is
 * the body's Content-Type ("application/json" or "application/octet-stream").
 * if_none_match (may be NULL) is sent as If-None-Match: "<value>". timeout_s
 * bounds one attempt (long polls pass their wait plus a margin). Returns
 * HD_OK when the server answered with a status below 500 (any 2xx/3xx/4xx:
 * the caller inspects resp->status), HD_ENET when the deadline passed with
 * only connection errors or 5xx answers, HD_ETIMEOUT when stopped. */
hd_rc client_request(client_t *c, const char *method, const char *path, const char *ctype,
                     const void *body, size_t len, const char *if_none_match, double timeout_s,
                     client_resp *resp, hd_err *err);

/* The error message of a JSON error body ({"error": {"message": ...}}) or
 * the raw body, for logs. Never NULL. */
const char *client_error_text(const client_resp *r);

const client_stats *client_get_stats(const client_t *c);

#endif
