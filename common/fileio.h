/* Durable file writes shared by the codecs: a new file is written under a
 * unique temporary name next to its destination (O_EXCL: nothing is ever
 * clobbered), synced, then renamed over the destination and the directory
 * synced, so a reader sees the old file or the whole new one. No logging;
 * thread-safe (no shared state). */
#ifndef HD_FILEIO_H
#define HD_FILEIO_H

#include <stddef.h>

#include "err.h"

typedef struct {
    int fd;           /* open temporary file, -1 when closed */
    char *tmp;        /* its name (owned) */
    const char *path; /* destination (borrowed) */
    const char *who;  /* message prefix, e.g. "npy" (borrowed) */
} fileio_atomic;

/* Create the temporary file for path. On failure nothing is left behind.
 * Returns HD_OK, HD_EIO or HD_ENOMEM. */
hd_rc fileio_atomic_open(fileio_atomic *a, const char *who, const char *path, hd_err *err);
/* Append n bytes. Returns HD_OK or HD_EIO (the file stays open: call
 * fileio_atomic_abort). */
hd_rc fileio_atomic_write(fileio_atomic *a, const void *p, size_t n, hd_err *err);
/* fsync, close, rename over the destination, sync the directory. Always
 * releases a; on failure the temporary file is removed. Returns HD_OK or
 * HD_EIO. */
hd_rc fileio_atomic_commit(fileio_atomic *a, hd_err *err);
/* Close and remove the temporary file; releases a. */
void fileio_atomic_abort(fileio_atomic *a);

/* write(2) until done, retrying EINTR. Returns 0 or -1 (errno set). */
int fileio_write_all(int fd, const void *p, size_t n);
/* errno text (thread-safe strerror_r), written into buf. */
const char *fileio_errno_text(int e, char *buf, size_t cap);

#endif
