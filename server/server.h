/* The server object: everything hdserver owns, passed as the first argument
 * to the routes (STYLE C9: no hidden globals). */
#ifndef HD_SERVER_SERVER_H
#define HD_SERVER_SERVER_H

#include "config.h"
#include "engine.h"
#include "events.h"
#include "http.h"
#include "metrics.h"
#include "store.h"

typedef struct {
    const server_config *cfg; /* resolved configuration (read-only) */
    store_t *store;           /* the database (written by the committer only) */
    engine_t *engine;         /* runs */
    http_server_t *http;      /* the daemon */
    events_t *events;         /* run event hub for the SSE streams (NULL = none) */
    metrics_t *metrics;       /* Prometheus counters (NULL = none) */
} server_t;

#endif
