/* Run events for live observers (GET /v1/runs/{id}/events, Server-Sent
 * Events). A poller thread reads every unfinished run through
 * engine_run_observe() ten times a second, turns what changed into events
 * (step, theta, episode, eval, state) and appends them to a bounded ring per
 * run; each SSE connection holds a cursor into its run's ring. The engine
 * has no hook for this: polling its observation accessor keeps the ingest
 * path untouched. Several outer updates that land between two polls become
 * one `step` event (`updates` > 1, `hypergrad_norm` is their mean).
 *
 * Threading: all functions are thread-safe. The SSE read callback blocks at
 * most EVENTS_WAIT_MS per call (thread-per-connection mode only). */
#ifndef HD_SERVER_EVENTS_H
#define HD_SERVER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "err.h"

#define EVENTS_RING 512       /* events kept per run */
#define EVENTS_POLL_MS 100    /* poller period */
#define EVENTS_WAIT_MS 500    /* longest wait inside one read callback */
#define EVENTS_HEARTBEAT_S 15 /* default comment heartbeat */

typedef struct events events_t;
typedef struct events_stream events_stream;

/* New event hub over engine e (borrowed; must outlive the hub) and start
 * its poller thread. Returns HD_OK, HD_ENOMEM or HD_EINTERNAL. */
hd_rc events_start(engine_t *e, events_t **out, hd_err *err);
/* Stop: open streams end at their next read, no new events. Idempotent. */
void events_shutdown(events_t *ev);
/* Join the poller and free everything; every stream must have been freed
 * (http_stop destroys them). NULL allowed. */
void events_free(events_t *ev);

/* A new stream cursor for run (last_event_id < 0: start with new events;
 * else resume after that id when the ring still holds it). The first bytes
 * are a `retry:` line and a `state` snapshot of the run (without an id).
 * heartbeat_s: seconds between comment heartbeats. Returns NULL when out of
 * memory. Free with events_stream_free. */
events_stream *events_stream_new(events_t *ev, engine_run *run, int64_t last_event_id,
                                 double heartbeat_s);
void events_stream_free(void *stream);
/* The read callback (http_stream_read signature): SSE bytes, 0 after a
 * short wait when there is nothing new, HTTP_STREAM_END once the run is
 * finished and its last event was sent, or at shutdown. */
long events_stream_read(void *stream, uint64_t pos, char *buf, size_t max);

/* Open SSE streams and events produced so far (for /metrics). */
void events_stats(events_t *ev, long *streams, uint64_t *events_total);

#endif
