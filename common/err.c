/* Result-code names and the error setter (STYLE C6, C7). */
#include "err.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const rc_names[HD_RC_COUNT] = {
    [HD_OK] = "ok",
    [HD_EINVAL] = "invalid",
    [HD_ENOMEM] = "no_memory",
    [HD_EIO] = "io",
    [HD_EDB] = "database",
    [HD_ENET] = "network",
    [HD_EFORMAT] = "bad_format",
    [HD_ETOOBIG] = "too_big",
    [HD_ENOTFOUND] = "not_found",
    [HD_ECONFLICT] = "conflict",
    [HD_EBUSY] = "busy",
    [HD_ENONFINITE] = "non_finite",
    [HD_ETIMEOUT] = "timeout",
    [HD_EAUTH] = "unauthorized",
    [HD_EFORBIDDEN] = "forbidden",
    [HD_EGONE] = "gone",
    [HD_EINTERNAL] = "internal",
};

const char *hd_rc_name(hd_rc rc) {
    if ((int)rc < 0 || rc >= HD_RC_COUNT || !rc_names[rc]) return "unknown";
    return rc_names[rc];
}

void hd_err_clear(hd_err *err) {
    if (!err) return;
    err->code = HD_OK;
    err->msg[0] = '\0';
}

hd_rc hd_err_set(hd_err *err, hd_rc code, const char *fmt, ...) {
    if (!err || err->code != HD_OK) return code;
    /* A newline in the format would break one-line logs and JSON messages. */
    HD_ASSERT(strchr(fmt, '\n') == NULL);
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    for (char *p = err->msg; *p; p++)
        if (*p == '\n' || *p == '\r') *p = ' ';
    return code;
}

void hd__assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "assertion failed: %s at %s:%d\n", expr, file, line);
    abort();
}

int hd_mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}
