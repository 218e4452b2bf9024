/* Small server helpers: random tokens from /dev/urandom, constant-time
 * comparison, clocks, strict number parsing and JSON-safe number text.
 * Thread-safe (no shared state). */
#ifndef HD_SERVER_SRVUTIL_H
#define HD_SERVER_SRVUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Fill out with 2*nbytes lowercase hex characters plus NUL (out holds
 * 2*nbytes+1) from nbytes of /dev/urandom. Returns HD_OK or HD_EIO. */
hd_rc srvutil_random_hex(char *out, size_t nbytes, hd_err *err);
/* 1 if a and b are equal strings; time depends only on the lengths. NULL
 * never equals anything. */
int srvutil_token_eq(const char *a, const char *b);
/* Seconds on CLOCK_MONOTONIC. */
double srvutil_mono(void);
/* Seconds since the Unix epoch. */
double srvutil_unix(void);
/* Strict decimal integer in [lo, hi]: the whole string, no spaces or sign
 * tricks beyond one leading '-'. Returns 0 and sets *out, or -1. */
int srvutil_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* Strict finite double: the whole string. Returns 0 or -1. */
int srvutil_parse_double(const char *s, double *out);

#endif
