/* Atomic, durable file replacement (temp file + fsync + rename + dir sync). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *fileio_errno_text(int e, char *buf, size_t cap) {
    if (strerror_r(e, buf, cap) != 0) snprintf(buf, cap, "errno %d", e);
    return buf;
}

static hd_rc io_fail(const fileio_atomic *a, const char *what, const char *path, int e,
                     hd_err *err) {
    char et[128];
    return hd_err_set(err, HD_EIO, "%s: %s %s: %s", a->who, what, path,
                      fileio_errno_text(e, et, sizeof et));
}

int fileio_write_all(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

hd_rc fileio_atomic_open(fileio_atomic *a, const char *who, const char *path, hd_err *err) {
    a->fd = -1;
    a->who = who;
    a->path = path;
    size_t cap = strlen(path) + 48;
    a->tmp = malloc(cap);
    if (!a->tmp) return hd_err_set(err, HD_ENOMEM, "%s: out of memory saving %s", who, path);
    /* The name mixes pid, clock and a stack address so that threads and
     * processes writing the same path do not collide. */
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        unsigned long long salt = (unsigned long long)ts.tv_nsec ^
                                  ((unsigned long long)ts.tv_sec << 30) ^
                                  (unsigned long long)(uintptr_t)&ts ^ attempt;
        snprintf(a->tmp, cap, "%s.tmp.%ld.%llx", path, (long)getpid(), salt);
        int fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            a->fd = fd;
            return HD_OK;
        }
        if (errno != EEXIST) {
            hd_rc rc = io_fail(a, "create temporary for", path, errno, err);
            free(a->tmp);
            a->tmp = NULL;
            return rc;
        }
    }
    free(a->tmp);
    a->tmp = NULL;
    return hd_err_set(err, HD_EIO, "%s: could not create a unique temporary file for %s", who,
                      path);
}

hd_rc fileio_atomic_write(fileio_atomic *a, const void *p, size_t n, hd_err *err) {
    if (fileio_write_all(a->fd, p, n) != 0) return io_fail(a, "write", a->tmp, errno, err);
    return HD_OK;
}

void fileio_atomic_abort(fileio_atomic *a) {
    if (a->fd >= 0) close(a->fd);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    a->fd = -1;
    a->tmp = NULL;
}

/* Make the rename durable; best effort, since the data itself is synced. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = NULL;
    if (slash) {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        dir = malloc(n + 1);
        if (!dir) return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

hd_rc fileio_atomic_commit(fileio_atomic *a, hd_err *err) {
    hd_rc rc = HD_OK;
    if (fsync(a->fd) != 0) {
        rc = io_fail(a, "fsync", a->tmp, errno, err);
        fileio_atomic_abort(a);
        return rc;
    }
    int crc = close(a->fd);
    a->fd = -1;
    if (crc != 0)
        rc = io_fail(a, "close", a->tmp, errno, err);
    else if (rename(a->tmp, a->path) != 0)
        rc = io_fail(a, "rename to", a->path, errno, err);
    if (rc != HD_OK) {
        fileio_atomic_abort(a);
        return rc;
    }
    sync_parent_dir(a->path);
    free(a->tmp);
    a->tmp = NULL;
    return HD_OK;
}
