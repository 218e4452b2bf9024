/* Server helpers (srvutil.h). */
#include "srvutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

hd_rc srvutil_random_hex(char *out, size_t nbytes, hd_err *err) {
    uint8_t buf[64];
    if (nbytes > sizeof buf) return hd_err_set(err, HD_EINVAL, "random_hex: %zu bytes", nbytes);
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hd_err_set(err, HD_EIO, "open /dev/urandom: %s", strerror(errno));
    size_t got = 0;
    while (got < nbytes) {
        ssize_t r = read(fd, buf + got, nbytes - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            close(fd);
            return hd_err_set(err, HD_EIO, "read /dev/urandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    close(fd);
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return HD_OK;
}

int srvutil_token_eq(const char *a, const char *b) {
    if (!a || !b) return 0;
    size_t la = strlen(a), lb = strlen(b);
    /* Compare over the longer length so that timing reveals only lengths. */
    size_t n = la > lb ? la : lb;
    unsigned diff = (unsigned)(la ^ lb);
    for (size_t i = 0; i < n; i++) {
        unsigned ca = i < la ? (unsigned char)a[i] : 0u;
        unsigned cb = i < lb ? (unsigned char)b[i] : 0u;
        diff |= ca ^ cb;
    }
    return diff == 0;
}

double srvutil_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double srvutil_unix(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec * 1e-6;
}

int srvutil_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s) return -1;
    const char *p = s;
    if (*p == '-') p++;
    if (*p < '0' || *p > '9') return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end) return -1;
    if (v < lo || v > hi) return -1;
    *out = (int64_t)v;
    return 0;
}

int srvutil_parse_double(const char *s, double *out) {
    if (!s || !*s) return -1;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || !end || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}
