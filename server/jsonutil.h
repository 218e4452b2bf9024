/* Strict JSON input helpers over cJSON for request bodies and stored rows:
 * every field is checked for presence, type and range, unknown keys are
 * refused, and errors name the field. Thread-safe (no shared state). */
#ifndef HD_SERVER_JSONUTIL_H
#define HD_SERVER_JSONUTIL_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Parse len bytes (need not be NUL-terminated) that must hold exactly one
 * JSON object. *out is owned (cJSON_Delete). Returns HD_OK or HD_EFORMAT. */
hd_rc jsonutil_parse_object(const char *text, size_t len, cJSON **out, hd_err *err);
/* HD_EINVAL naming the first key of obj not in allowed (NULL-terminated), or
 * a key given twice. */
hd_rc jsonutil_check_keys(const cJSON *obj, const char *const *allowed, hd_err *err);
/* Integer field (a JSON number with an integral value) in [lo, hi]. When the
 * field is absent: *out = def if !required, else HD_EINVAL. */
hd_rc jsonutil_int(const cJSON *obj, const char *name, int required, int64_t def, int64_t lo,
                   int64_t hi, int64_t *out, hd_err *err);
/* Finite number field. */
hd_rc jsonutil_num(const cJSON *obj, const char *name, int required, double def, double *out,
                   hd_err *err);
/* String field of at most maxlen bytes of printable ASCII; *out borrowed
 * from obj (NULL when absent and not required). */
hd_rc jsonutil_str(const cJSON *obj, const char *name, int required, size_t maxlen,
                   const char **out, hd_err *err);
/* Array of at most maxn finite numbers; *out is malloc'd (NULL when n == 0). */
hd_rc jsonutil_num_array(const cJSON *obj, const char *name, size_t maxn, double **out, size_t *n,
                         hd_err *err);
/* Add an array of n doubles to obj under name (non-finite become null).
 * Returns 0, or -1 on allocation failure. */
int jsonutil_add_num_array(cJSON *obj, const char *name, const double *x, size_t n);
/* Print and delete root; returns the malloc'd text or NULL. */
char *jsonutil_print_free(cJSON *root);

#endif
