/* Plain-text status for terminals (GET /v1/runs?format=text and
 * GET /v1/runs/{id}?format=text): aligned columns and a Unicode sparkline
 * (U+2581..U+2588) of the validation loss by episode, or of the train loss
 * when no validation loss exists yet. Built from the engine's JSON views
 * (engine_run_json, engine_runs_json, engine_metrics_json), so it shows
 * exactly what the JSON endpoints show. Thread-safe. */
#ifndef HD_SERVER_TEXTSTATUS_H
#define HD_SERVER_TEXTSTATUS_H

#include <stddef.h>

#include "engine.h"

#define TEXTSTATUS_SPARK_MAX 48 /* sparkline characters at most (episodes are averaged in groups) */

/* Status of one run (malloc'd UTF-8 text; *len its length), or NULL when
 * out of memory. */
char *textstatus_run(engine_t *e, engine_run *r, size_t *len);
/* One line per run under a header line. */
char *textstatus_runs(engine_t *e, size_t *len);

/* Write a sparkline of v[0..n) into out (cap bytes, NUL-terminated; each
 * character takes 3 bytes); at most width characters (n > width: groups of
 * consecutive values are averaged). Non-finite values are skipped. Returns
 * the number of characters written. */
int textstatus_sparkline(const double *v, int n, int width, char *out, size_t cap);

#endif
