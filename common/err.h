/* Project-wide result codes and the caller-owned error message (STYLE C6, C7).
 * Every function that can fail returns hd_rc and, where it takes one, fills an
 * hd_err with a one-line message. HD_ASSERT catches bugs, never bad input. */
#ifndef HD_ERR_H
#define HD_ERR_H

#include <stddef.h>

typedef enum {
    HD_OK = 0,
    HD_EINVAL,     /* invalid argument or input */
    HD_ENOMEM,     /* allocation failed */
    HD_EIO,        /* file or socket I/O failed */
    HD_EDB,        /* database error */
    HD_ENET,       /* network error */
    HD_EFORMAT,    /* malformed data (file or wire format) */
    HD_ETOOBIG,    /* a size limit was exceeded */
    HD_ENOTFOUND,  /* no such object */
    HD_ECONFLICT,  /* state conflict (stale, already done, wrong state) */
    HD_EBUSY,      /* resource in use */
    HD_ENONFINITE, /* NaN or Inf where finite numbers are required */
    HD_ETIMEOUT,   /* deadline passed */
    HD_EAUTH,      /* missing or wrong credentials */
    HD_EFORBIDDEN, /* credentials valid but not for this resource */
    HD_EGONE,      /* the object existed but is no longer valid (expired lease) */
    HD_EINTERNAL,  /* a bug or an unexpected library failure */
    HD_RC_COUNT
} hd_rc;

/* Error detail owned by the caller. code is HD_OK until the first error. */
typedef struct {
    hd_rc code;    /* first error recorded, HD_OK if none */
    char msg[256]; /* NUL-terminated one-line message, "" if none */
} hd_err;

/* Fixed lower-case name of a result code ("not_found"), never NULL. */
const char *hd_rc_name(hd_rc rc);

/* Reset err to "no error". Accepts NULL. */
void hd_err_clear(hd_err *err);

/* Record an error: keeps only the first one, truncates long text. Accepts a
 * NULL err. Returns code so that callers can write `return hd_err_set(...)`. */
hd_rc hd_err_set(hd_err *err, hd_rc code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Abort with file:line and the expression. Stays on in release builds. */
void hd__assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define HD_ASSERT(cond) ((cond) ? (void)0 : hd__assert_fail(#cond, __FILE__, __LINE__))

/* Overflow-checked size multiplication: returns 0 and sets *out on success,
 * -1 on overflow. */
int hd_mul_size(size_t a, size_t b, size_t *out);

#endif
