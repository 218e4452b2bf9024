/* Prometheus metrics (GET /metrics, text exposition format 0.0.4): request
 * latency histograms by route class and refused step posts by reason,
 * recorded from the HTTP layer's completion hook, plus gauges and counters
 * read from the engine (runs by state, per-run lam version, posts, workers,
 * leases) and the event hub at scrape time. No tokens, specs or paths are
 * exposed: only run ids, states and counts.
 *
 * Threading: metrics_observe is lock-free (atomics); metrics_render may run
 * concurrently with it. */
#ifndef HD_SERVER_METRICS_H
#define HD_SERVER_METRICS_H

#include <stddef.h>

#include "engine.h"
#include "err.h"
#include "events.h"

typedef struct metrics metrics_t;

/* New collector (all counters 0). Returns NULL when out of memory. */
metrics_t *metrics_new(void);
/* Free; NULL allowed. */
void metrics_free(metrics_t *m);

/* Route class of a request ("lease_step", "lease", "tensor", "run_read",
 * "run_write", "events", "observe", "health", "other"). Static string. */
const char *metrics_route_class(const char *method, const char *path);

/* Record one finished request: latency into its class's histogram (except
 * "events" streams, which are long-lived), and a refused step post
 * (POST /v1/leases/{id}/steps/{t} answered >= 400) by reason:
 * 400 invalid, 401/403 auth, 404 not_found, 409 stale, 410 gone,
 * 413 too_large, 5xx error, other statuses other. */
void metrics_observe(metrics_t *m, const char *method, const char *path, int status,
                     double seconds);

/* The exposition text (malloc'd, NUL-terminated; *len its length) or NULL
 * when out of memory. ev may be NULL. http_errors: error replies so far. */
char *metrics_render(metrics_t *m, engine_t *e, events_t *ev, unsigned long long http_errors,
                     size_t *len);

#endif
