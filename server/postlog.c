/* The post log of an async run (postlog.h, docs/STORAGE.md). Records are
 * written with one pwritev (header + the post's bytes, not copied) at an
 * offset the log tracks itself, so that a failed or undone append is simply
 * overwritten by the next one. */
#include "postlog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <nmmintrin.h>
#define POSTLOG_X86 1
#else
#define POSTLOG_X86 0
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "postlog.c writes little-endian records; big-endian hosts are not supported"
#endif

#define PL_MAGIC 0x4c504448u /* "HDPL" */
/* A record's data is at most a float64 post of a huge lam: refuse anything
 * larger when reading (a corrupt length). */
#define PL_DATA_MAX ((uint64_t)1 << 32)

/* On-disk record header, followed by data_len bytes of data. */
typedef struct {
    uint32_t magic;   /* PL_MAGIC */
    uint32_t hdr_crc; /* CRC-32C of the bytes after this field */
    int64_t gen;      /* generation: must equal the file's */
    int64_t version;  /* lam version the post produced */
    int64_t used;     /* lam version the worker used */
    int64_t episode;  /* episode of the lease */
    int64_t t;        /* inner step */
    int64_t first_slot;
    int64_t k;            /* slots summed */
    uint64_t data_len;    /* bytes of data after the header */
    uint32_t data_crc[3]; /* CRC-32C of each third of the data (postlog_data_crc) */
    uint32_t lease_len;   /* bytes of lease used */
    char lease[POSTLOG_LEASE_MAX + 1];
} pl_hdr;

_Static_assert(sizeof(pl_hdr) == 128, "pl_hdr must have no padding");

struct postlog {
    char *dir;         /* directory of the database (owned) */
    char *prefix;      /* "<db base name>-plog-<run>-" (owned) */
    int sync_full;     /* appends are reported by postlog_take_sync */
    int64_t lo_gen;    /* no live file has a lower generation */
    int64_t gen;       /* generation of the next append */
    int fd;            /* file of generation gen, -1 until its first append */
    uint64_t off;      /* bytes of valid records in fd */
    uint64_t last;     /* offset of the last record appended (postlog_unappend) */
    int pend_fd;       /* the file rotated out last, until retired, or -1 */
    int64_t pend_gen;  /* its generation */
    int spare_fd;      /* a retired file to reuse (its name: spare_gen), or -1 */
    int64_t spare_gen; /* its generation (below lo_gen) */
    int dirty;         /* appends since postlog_take_sync */
    int dir_dirty;     /* a file was created or renamed since postlog_take_sync */
};

/* ---- CRC-32C -------------------------------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
        crc_table[i] = c;
    }
}

static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n) {
    pthread_once(&crc_once, crc_init);
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
    return c;
}

#if POSTLOG_X86
/* ~10 us for an 82 KB post instead of ~80 us with the table. */
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const uint8_t *p,
                                                            size_t n) {
    uint64_t c64 = c;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, sizeof w);
        c64 = _mm_crc32_u64(c64, w);
    }
    uint32_t c32 = (uint32_t)c64;
    for (; i < n; i++) c32 = _mm_crc32_u8(c32, p[i]);
    return c32;
}
#endif

#if POSTLOG_X86
/* Three independent chains: the crc32 instruction has a latency of 3
 * cycles and a throughput of 1, so one chain runs at a third of the speed
 * (~10 us for an 82 KB post). w words per chain, from a, b and c. */
__attribute__((target("sse4.2"))) static void
crc3_sse42(const uint8_t *a, const uint8_t *b, const uint8_t *c, size_t w, uint64_t out[3]) {
    uint64_t x = out[0], y = out[1], z = out[2];
    for (size_t i = 0; i < w; i++) {
        uint64_t u, v, t;
        memcpy(&u, a + 8 * i, sizeof u);
        memcpy(&v, b + 8 * i, sizeof v);
        memcpy(&t, c + 8 * i, sizeof t);
        x = _mm_crc32_u64(x, u);
        y = _mm_crc32_u64(y, v);
        z = _mm_crc32_u64(z, t);
    }
    out[0] = x;
    out[1] = y;
    out[2] = z;
}
#endif

void postlog_data_crc(const void *buf, size_t len, uint32_t out[3]) {
    const uint8_t *p = buf;
    size_t seg = len / 24 * 8; /* bytes of each of the first two thirds */
#if POSTLOG_X86
    if (__builtin_cpu_supports("sse4.2")) {
        uint64_t c[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
        crc3_sse42(p, p + seg, p + 2 * seg, seg / 8, c);
        out[0] = ~(uint32_t)c[0];
        out[1] = ~(uint32_t)c[1];
        out[2] = ~crc_sse42((uint32_t)c[2], p + 3 * seg, len - 3 * seg);
        return;
    }
#endif
    out[0] = ~crc_soft(0xffffffffu, p, seg);
    out[1] = ~crc_soft(0xffffffffu, p + seg, seg);
    out[2] = ~crc_soft(0xffffffffu, p + 2 * seg, len - 2 * seg);
}

uint32_t postlog_crc(const void *buf, size_t len) {
    const uint8_t *p = buf;
#if POSTLOG_X86
    if (__builtin_cpu_supports("sse4.2")) return ~crc_sse42(0xffffffffu, p, len);
#endif
    return ~crc_soft(0xffffffffu, p, len);
}

static uint32_t hdr_crc(const pl_hdr *h) {
    const uint8_t *p = (const uint8_t *)h;
    size_t skip = offsetof(pl_hdr, gen);
    return postlog_crc(p + skip, sizeof *h - skip);
}

/* ---- files ---------------------------------------------------------------- */

static void file_name(const postlog_t *pl, int64_t gen, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s%lld", pl->dir, pl->prefix, (long long)gen);
}

hd_rc postlog_new(const char *db_path, int64_t run, int sync_full, postlog_t **out, hd_err *err) {
    postlog_t *pl = calloc(1, sizeof *pl);
    if (!pl) return hd_err_set(err, HD_ENOMEM, "out of memory");
    const char *slash = strrchr(db_path, '/');
    const char *base = slash ? slash + 1 : db_path;
    size_t dlen = slash ? (size_t)(slash - db_path) : 1;
    pl->dir = malloc(dlen + 1);
    size_t plen = strlen(base) + 48;
    pl->prefix = malloc(plen);
    if (!pl->dir || !pl->prefix) {
        postlog_free(pl);
        return hd_err_set(err, HD_ENOMEM, "out of memory");
    }
    if (slash && slash == db_path)
        memcpy(pl->dir, "/", 2);
    else if (slash) {
        memcpy(pl->dir, db_path, dlen);
        pl->dir[dlen] = 0;
    } else
        memcpy(pl->dir, ".", 2);
    snprintf(pl->prefix, plen, "%s-plog-%lld-", base, (long long)run);
    pl->sync_full = sync_full;
    pl->fd = pl->spare_fd = pl->pend_fd = -1;
    *out = pl;
    return HD_OK;
}

void postlog_free(postlog_t *pl) {
    if (!pl) return;
    if (pl->fd >= 0) close(pl->fd);
    if (pl->spare_fd >= 0) close(pl->spare_fd);
    if (pl->pend_fd >= 0) close(pl->pend_fd);
    free(pl->dir);
    free(pl->prefix);
    free(pl);
}

static int cmp_gen(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int read_full(int fd, void *buf, size_t n, uint64_t off) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* Replay the valid records of one file; stops at the first invalid one. */
static hd_rc replay_file(postlog_t *pl, int64_t gen, store_row_cb cb, void *ctx, hd_err *err) {
    char path[4096];
    file_name(pl, gen, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hd_err_set(err, HD_EDB, "open %s: %s", path, strerror(errno));
    hd_rc rc = HD_OK;
    uint8_t *buf = NULL;
    size_t cap = 0;
    uint64_t off = 0;
    for (;;) {
        pl_hdr h;
        if (read_full(fd, &h, sizeof h, off) != 0) break;
        if (h.magic != PL_MAGIC || h.hdr_crc != hdr_crc(&h) || h.gen != gen ||
            h.data_len > PL_DATA_MAX || h.lease_len > POSTLOG_LEASE_MAX)
            break;
        if (h.data_len > cap) {
            uint8_t *nb = realloc(buf, (size_t)h.data_len);
            if (!nb) {
                rc = hd_err_set(err, HD_ENOMEM, "out of memory");
                break;
            }
            buf = nb;
            cap = (size_t)h.data_len;
        }
        if (h.data_len && read_full(fd, buf, (size_t)h.data_len, off + sizeof h) != 0) break;
        uint32_t dc[3];
        postlog_data_crc(buf, (size_t)h.data_len, dc);
        if (memcmp(dc, h.data_crc, sizeof dc) != 0) break;
        h.lease[h.lease_len] = 0;
        store_row row;
        memset(&row, 0, sizeof row);
        row.i[0] = h.episode;
        row.i[1] = h.t;
        row.i[2] = h.first_slot;
        row.i[3] = h.k;
        row.i[4] = h.version;
        row.i[5] = h.used;
        row.t1 = h.lease;
        row.b1 = buf;
        row.b1_len = (size_t)h.data_len;
        if ((rc = cb(ctx, &row, err)) != HD_OK) break;
        off += sizeof h + h.data_len;
    }
    free(buf);
    /* The records may be only in the page cache (the server was killed):
     * the states committed from now on count them, so they go to disk
     * first. */
    if (rc == HD_OK && off > 0 && fdatasync(fd) != 0)
        rc = hd_err_set(err, HD_EDB, "fdatasync %s: %s", path, strerror(errno));
    close(fd);
    return rc;
}

/* The generations of the run's files in the directory, sorted (*out owned,
 * NULL when there is none). */
static hd_rc scan_gens(const postlog_t *pl, int64_t **out, size_t *nout, hd_err *err) {
    *out = NULL;
    *nout = 0;
    DIR *d = opendir(pl->dir);
    if (!d) return hd_err_set(err, HD_EDB, "open directory %s: %s", pl->dir, strerror(errno));
    int64_t *gens = NULL;
    size_t n = 0, cap = 0;
    size_t plen = strlen(pl->prefix);
    hd_rc rc = HD_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, pl->prefix, plen) != 0) continue;
        const char *s = de->d_name + plen;
        if (*s < '0' || *s > '9') continue;
        char *end;
        long long g = strtoll(s, &end, 10);
        if (*end || g < 0) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            int64_t *ng = realloc(gens, nc * sizeof *ng);
            if (!ng) {
                rc = hd_err_set(err, HD_ENOMEM, "out of memory");
                break;
            }
            gens = ng;
            cap = nc;
        }
        gens[n++] = g;
    }
    closedir(d);
    if (rc != HD_OK) {
        free(gens);
        return rc;
    }
    if (n) qsort(gens, n, sizeof *gens, cmp_gen);
    *out = gens;
    *nout = n;
    return HD_OK;
}

hd_rc postlog_replay(postlog_t *pl, store_row_cb cb, void *ctx, hd_err *err) {
    int64_t *gens;
    size_t n;
    hd_rc rc = scan_gens(pl, &gens, &n, err);
    if (rc != HD_OK) return rc;
    for (size_t i = 0; i < n && rc == HD_OK; i++) rc = replay_file(pl, gens[i], cb, ctx, err);
    if (n) {
        pl->lo_gen = gens[0];
        pl->gen = gens[n - 1] + 1;
    }
    free(gens);
    return rc;
}

hd_rc postlog_purge(postlog_t *pl, hd_err *err) {
    int64_t *gens;
    size_t n;
    hd_rc rc = scan_gens(pl, &gens, &n, err);
    if (rc != HD_OK) return rc;
    char path[4096];
    for (size_t i = 0; i < n; i++) {
        file_name(pl, gens[i], path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT)
            rc = hd_err_set(err, HD_EDB, "remove %s: %s", path, strerror(errno));
    }
    if (n) pl->gen = gens[n - 1] + 1;
    pl->lo_gen = pl->gen;
    free(gens);
    return rc;
}

/* Open the file of the current generation: a retired file renamed (its
 * pages are likely cached), else a new one. */
static hd_rc open_current(postlog_t *pl, hd_err *err) {
    char path[4096];
    file_name(pl, pl->gen, path, sizeof path);
    if (pl->spare_fd >= 0) {
        char old[4096];
        file_name(pl, pl->spare_gen, old, sizeof old);
        if (rename(old, path) == 0) {
            pl->fd = pl->spare_fd;
            pl->spare_fd = -1;
            pl->off = 0;
            pl->dir_dirty = 1;
            return HD_OK;
        }
        close(pl->spare_fd);
        pl->spare_fd = -1;
        unlink(old);
    }
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return hd_err_set(err, HD_EDB, "create %s: %s", path, strerror(errno));
    pl->fd = fd;
    pl->off = 0;
    pl->dir_dirty = 1;
    return HD_OK;
}

hd_rc postlog_append(postlog_t *pl, const postlog_rec *rec, hd_err *err) {
    size_t ll = strlen(rec->lease);
    if (ll > POSTLOG_LEASE_MAX)
        return hd_err_set(err, HD_EDB, "post log: lease id of %zu bytes", ll);
    if (pl->fd < 0) {
        hd_rc rc = open_current(pl, err);
        if (rc != HD_OK) return rc;
    }
    pl_hdr h;
    memset(&h, 0, sizeof h);
    h.magic = PL_MAGIC;
    h.gen = pl->gen;
    h.version = rec->version;
    h.used = rec->used;
    h.episode = rec->episode;
    h.t = rec->t;
    h.first_slot = rec->first_slot;
    h.k = rec->k;
    h.data_len = rec->len;
    memcpy(h.data_crc, rec->data_crc, sizeof h.data_crc);
    h.lease_len = (uint32_t)ll;
    memcpy(h.lease, rec->lease, ll);
    h.hdr_crc = hdr_crc(&h);
    struct iovec iov[2] = {{&h, sizeof h}, {(void *)(uintptr_t)rec->data, rec->len}};
    int niov = 2;
    struct iovec *v = iov;
    uint64_t off = pl->off;
    size_t left = sizeof h + rec->len;
    while (left > 0) {
        ssize_t w = pwritev(pl->fd, v, niov, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return hd_err_set(err, HD_EDB, "post log write: %s",
                              w < 0 ? strerror(errno) : "nothing written");
        off += (uint64_t)w;
        left -= (size_t)w;
        size_t adv = (size_t)w;
        while (niov > 0 && adv >= v->iov_len) {
            adv -= v->iov_len;
            v++;
            niov--;
        }
        if (niov > 0) {
            v->iov_base = (uint8_t *)v->iov_base + adv;
            v->iov_len -= adv;
        }
    }
    pl->last = pl->off;
    pl->off = off;
    pl->dirty = 1;
    return HD_OK;
}

void postlog_unappend(postlog_t *pl) {
    if (pl->fd < 0 || pl->off == pl->last) return;
    pl_hdr z;
    memset(&z, 0, sizeof z);
    /* Best effort: should the write fail, the record stays valid and a
     * restart replays it (the run is failed by then). */
    if (pwrite(pl->fd, &z, sizeof z, (off_t)pl->last) != (ssize_t)sizeof z) return;
    pl->off = pl->last;
}

int64_t postlog_rotate(postlog_t *pl) {
    /* Nothing appended since the last rotation: older files (found at
     * recovery) may still wait to be retired. */
    if (pl->fd < 0) return pl->lo_gen < pl->gen ? pl->gen - 1 : -1;
    /* Two rotations without a retire in between cannot happen (the
     * committer retires after each commit); should it, the older file is
     * only closed here and deleted by the next retire. */
    if (pl->pend_fd >= 0) close(pl->pend_fd);
    pl->pend_fd = pl->fd;
    pl->pend_gen = pl->gen;
    pl->fd = -1;
    return pl->gen++;
}

void postlog_retire(postlog_t *pl, int64_t gen, int keep_spare) {
    char path[4096];
    int64_t hi = gen < pl->gen ? gen : pl->gen - 1;
    for (int64_t g = pl->lo_gen; g <= hi; g++) {
        if (pl->pend_fd >= 0 && g == pl->pend_gen) {
            if (keep_spare && pl->spare_fd < 0) {
                pl->spare_fd = pl->pend_fd; /* reused, renamed, by the next append */
                pl->spare_gen = g;
                pl->pend_fd = -1;
                continue;
            }
            close(pl->pend_fd);
            pl->pend_fd = -1;
        }
        file_name(pl, g, path, sizeof path);
        unlink(path);
    }
    if (hi >= pl->lo_gen) pl->lo_gen = hi + 1;
    if (!keep_spare && pl->spare_fd >= 0) {
        close(pl->spare_fd);
        pl->spare_fd = -1;
        file_name(pl, pl->spare_gen, path, sizeof path);
        unlink(path);
    }
    if (!keep_spare && pl->fd >= 0 && gen >= pl->gen) {
        close(pl->fd);
        pl->fd = -1;
        file_name(pl, pl->gen, path, sizeof path);
        unlink(path);
    }
}

int postlog_take_sync(postlog_t *pl, int force, int *dir) {
    *dir = 0;
    if ((!pl->sync_full && !force) || !pl->dirty || pl->fd < 0) return -1;
    *dir = pl->dir_dirty;
    pl->dirty = pl->dir_dirty = 0;
    return pl->fd;
}

hd_rc postlog_fsync(const postlog_t *pl, int fd, int dir, hd_err *err) {
    if (fd >= 0 && fdatasync(fd) != 0)
        return hd_err_set(err, HD_EDB, "post log fdatasync: %s", strerror(errno));
    if (dir) {
        int dfd = open(pl->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) return hd_err_set(err, HD_EDB, "open %s: %s", pl->dir, strerror(errno));
        int r = fsync(dfd);
        close(dfd);
        if (r != 0) return hd_err_set(err, HD_EDB, "fsync %s: %s", pl->dir, strerror(errno));
    }
    return HD_OK;
}
