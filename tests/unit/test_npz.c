/* Unit tests for common/npz: save/load round trips for both dtypes, archives
 * built byte by byte here (plain and zip64, with an independent bitwise
 * CRC-32), a table of malformed archives, every truncation and every single
 * bit flip of a valid archive, save argument checks, and (when python3 has
 * numpy) interoperability with np.savez, np.savez_compressed and np.load. */
#include "npz.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define ZIP_CAP (256 * 1024) /* bytes for a hand-built archive */
#define MAX_ZMEMBERS 4

/* ---- helpers ------------------------------------------------------------ */

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Deterministic test values of varied magnitude and sign. */
static double test_value(size_t i) {
    return sin((double)i * 1.3 + 0.7) * pow(10.0, (double)((int)(i % 5) - 2));
}

/* Reference CRC-32, bit by bit, independent of the table in npz.c. */
static uint32_t ref_crc32(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return ~c;
}

static void put16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_file(const char *path, const uint8_t *buf, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = len ? fwrite(buf, 1, len, f) : 0;
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

/* Read a whole (small) file into a new buffer; NULL on failure. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *buf = malloc(ZIP_CAP);
    size_t n = buf ? fread(buf, 1, ZIP_CAP, f) : 0;
    fclose(f);
    *len = n;
    return buf;
}

static int remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(dir);
}

static int count_dir_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

/* ---- a zip writer independent of npz.c ----------------------------------- */

typedef struct {
    const char *name;    /* member name as stored, e.g. "xs.npy" */
    const uint8_t *data; /* stored bytes */
    size_t len;          /* bytes at data */
    unsigned method;     /* compression method field (0 = stored) */
    unsigned flags;      /* general purpose flags */
    int bad_crc;         /* nonzero: record a wrong CRC-32 */
} zmember;

/* Where the builder put each structure, for targeted corruption. */
typedef struct {
    size_t local[MAX_ZMEMBERS];   /* local header offsets */
    size_t central[MAX_ZMEMBERS]; /* central directory entry offsets */
    size_t cd_off;                /* central directory start */
    size_t z64_eocd;              /* zip64 end record (zip64 only) */
    size_t z64_loc;               /* zip64 locator (zip64 only) */
    size_t eocd;                  /* classic end record */
} zlayout;

/* Build a stored zip archive in buf. With zip64 nonzero every size and
 * offset field holds 0xFFFFFFFF and the real values sit in zip64 extra
 * fields, followed by a zip64 end record and locator (as numpy's
 * force_zip64 writer on some Python versions does, and beyond). */
static size_t zip_build(uint8_t *buf, size_t cap, const zmember *m, size_t n, int zip64,
                        zlayout *lay) {
    HD_ASSERT(n <= MAX_ZMEMBERS);
    size_t off = 0;
    uint32_t crcs[MAX_ZMEMBERS];
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(m[i].name), xlen = zip64 ? 20 : 0;
        HD_ASSERT(off + 30 + nlen + xlen + m[i].len <= cap);
        uint8_t *h = buf + off;
        crcs[i] = ref_crc32(m[i].data, m[i].len) ^ (m[i].bad_crc ? 1u : 0u);
        lay->local[i] = off;
        memset(h, 0, 30);
        put32(h, 0x04034b50u);
        put16(h + 4, zip64 ? 45 : 20);
        put16(h + 6, m[i].flags);
        put16(h + 8, m[i].method);
        put16(h + 12, 0x21);
        put32(h + 14, crcs[i]);
        put32(h + 18, zip64 ? 0xffffffffu : (uint32_t)m[i].len);
        put32(h + 22, zip64 ? 0xffffffffu : (uint32_t)m[i].len);
        put16(h + 26, (unsigned)nlen);
        put16(h + 28, (unsigned)xlen);
        memcpy(h + 30, m[i].name, nlen);
        if (zip64) {
            uint8_t *x = h + 30 + nlen;
            put16(x, 1);
            put16(x + 2, 16);
            put64(x + 4, m[i].len);
            put64(x + 12, m[i].len);
        }
        if (m[i].len) memcpy(h + 30 + nlen + xlen, m[i].data, m[i].len);
        off += 30 + nlen + xlen + m[i].len;
    }
    lay->cd_off = off;
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(m[i].name), xlen = zip64 ? 28 : 0;
        HD_ASSERT(off + 46 + nlen + xlen <= cap);
        uint8_t *h = buf + off;
        lay->central[i] = off;
        memset(h, 0, 46);
        put32(h, 0x02014b50u);
        put16(h + 4, 0x0314);
        put16(h + 6, zip64 ? 45 : 20);
        put16(h + 8, m[i].flags);
        put16(h + 10, m[i].method);
        put16(h + 14, 0x21);
        put32(h + 16, crcs[i]);
        put32(h + 20, zip64 ? 0xffffffffu : (uint32_t)m[i].len);
        put32(h + 24, zip64 ? 0xffffffffu : (uint32_t)m[i].len);
        put16(h + 28, (unsigned)nlen);
        put16(h + 30, (unsigned)xlen);
        put32(h + 38, 0100644u << 16);
        put32(h + 42, zip64 ? 0xffffffffu : (uint32_t)lay->local[i]);
        memcpy(h + 46, m[i].name, nlen);
        if (zip64) {
            uint8_t *x = h + 46 + nlen;
            put16(x, 1);
            put16(x + 2, 24);
            put64(x + 4, m[i].len);
            put64(x + 12, m[i].len);
            put64(x + 20, lay->local[i]);
        }
        off += 46 + nlen + xlen;
    }
    size_t cd_size = off - lay->cd_off;
    HD_ASSERT(off + 56 + 20 + 22 <= cap);
    if (zip64) {
        uint8_t *r = buf + off;
        lay->z64_eocd = off;
        memset(r, 0, 56);
        put32(r, 0x06064b50u);
        put64(r + 4, 44);
        put16(r + 12, 0x032d);
        put16(r + 14, 45);
        put64(r + 24, n);
        put64(r + 32, n);
        put64(r + 40, cd_size);
        put64(r + 48, lay->cd_off);
        off += 56;
        uint8_t *l = buf + off;
        lay->z64_loc = off;
        memset(l, 0, 20);
        put32(l, 0x07064b50u);
        put64(l + 8, lay->z64_eocd);
        put32(l + 16, 1);
        off += 20;
    }
    uint8_t *e = buf + off;
    lay->eocd = off;
    memset(e, 0, 22);
    put32(e, 0x06054b50u);
    put16(e + 8, zip64 ? 0xffff : (unsigned)n);
    put16(e + 10, zip64 ? 0xffff : (unsigned)n);
    put32(e + 12, zip64 ? 0xffffffffu : (uint32_t)cd_size);
    put32(e + 16, zip64 ? 0xffffffffu : (uint32_t)lay->cd_off);
    return off + 22;
}

/* Two ordinary members: xs (f64, shape (3,)) and ys (f32, shape (2, 2)). */
typedef struct {
    uint8_t *xs, *ys; /* .npy images from npy_encode */
    size_t xs_len, ys_len;
} images;

static const double xs_vals[3] = {1.5, -2.25, 1e-7};
static const double ys_vals[4] = {0.5, 3.0, -4.0, 0.125};

static void images_init(images *im) {
    static const size_t s3[1] = {3}, s22[2] = {2, 2};
    hd_err err;
    hd_err_clear(&err);
    HD_ASSERT(npy_encode(NPY_F64, 1, s3, xs_vals, &im->xs, &im->xs_len, &err) == HD_OK);
    HD_ASSERT(npy_encode(NPY_F32, 2, s22, ys_vals, &im->ys, &im->ys_len, &err) == HD_OK);
}

static void images_clear(images *im) {
    free(im->xs);
    free(im->ys);
}

static size_t build_two(uint8_t *buf, const images *im, int zip64, zlayout *lay) {
    zmember m[2] = {{"xs.npy", im->xs, im->xs_len, 0, 0, 0},
                    {"ys.npy", im->ys, im->ys_len, 0, 0, 0}};
    return zip_build(buf, ZIP_CAP, m, 2, zip64, lay);
}

/* The members of build_two, as loaded. */
static int two_ok(const npz_file *z) {
    npy_header h;
    if (npz_count(z) != 2 || strcmp(npz_name(z, 0), "xs") != 0 || strcmp(npz_name(z, 1), "ys") != 0)
        return 0;
    const double *x = npz_get(z, "xs", &h);
    if (!x || h.dtype != NPY_F64 || h.ndim != 1 || h.shape[0] != 3) return 0;
    for (size_t i = 0; i < 3; i++)
        if (x[i] != xs_vals[i]) return 0;
    const double *y = npz_get(z, "ys", &h);
    if (!y || h.dtype != NPY_F32 || h.ndim != 2 || h.shape[0] != 2 || h.shape[1] != 2) return 0;
    for (size_t i = 0; i < 4; i++)
        if (y[i] != ys_vals[i]) return 0;
    return 1;
}

/* Write buf and expect npz_load to fail with code and a message containing
 * each of want1 and want2 (either may be NULL), leaving *out untouched. */
static void expect_fail(const char *path, const uint8_t *buf, size_t len, size_t max_elems,
                        hd_rc code, const char *want1, const char *want2, int line) {
    CHECK_MSG(write_file(path, buf, len) == 0, "line %d: write %s", line, path);
    npz_file *sentinel = (npz_file *)&sentinel, *z = sentinel;
    hd_err err;
    hd_err_clear(&err);
    hd_rc rc = npz_load(path, max_elems, &z, &err);
    CHECK_MSG(rc == code, "line %d: rc %s, want %s (%s)", line, hd_rc_name(rc), hd_rc_name(code),
              err.msg);
    CHECK_MSG(err.code == code && err.msg[0] != '\0', "line %d: empty message", line);
    CHECK_MSG(!want1 || contains(err.msg, want1), "line %d: '%s' not in: %s", line, want1, err.msg);
    CHECK_MSG(!want2 || contains(err.msg, want2), "line %d: '%s' not in: %s", line, want2, err.msg);
    CHECK_MSG(z == sentinel, "line %d: *out changed on failure", line);
    if (rc == HD_OK && z != sentinel) npz_free(z);
}

#define EXPECT_FAIL(path, buf, len, code, w1, w2)                                                  \
    expect_fail(path, buf, len, 1000, code, w1, w2, __LINE__)

/* ---- round trips ---------------------------------------------------------- */

static void test_roundtrip(const char *dir) {
    static const size_t s_xs[2] = {10, 1}, s_ys[1] = {10}, s_xq[2] = {7, 3};
    double xs[10], ys[10], xq[21], yq = -3.75;
    for (size_t i = 0; i < 10; i++) xs[i] = test_value(i);
    for (size_t i = 0; i < 10; i++) ys[i] = test_value(i + 20);
    for (size_t i = 0; i < 21; i++) xq[i] = test_value(i + 40);
    const double *vals[4] = {xs, ys, xq, &yq};
    static const size_t counts[4] = {10, 10, 21, 1};
    static const char *const names[4] = {"xs", "ys", "xq", "yq"};
    char p[512];
    snprintf(p, sizeof p, "%s/rt.npz", dir);
    for (int pass = 0; pass < 2; pass++) {
        npy_dtype dt = pass == 0 ? NPY_F64 : NPY_F32;
        npz_member m[4] = {{"xs", dt, 2, s_xs, xs},
                           {"ys", dt, 1, s_ys, ys},
                           {"xq", dt, 2, s_xq, xq},
                           {"yq", dt, 0, NULL, &yq}};
        hd_err err;
        hd_err_clear(&err);
        CHECK_EQ_INT(npz_save(p, 4, m, &err), HD_OK);
        CHECK_MSG(err.code == HD_OK, "%s", err.msg);
        CHECK_EQ_INT(count_dir_entries(dir), 1); /* no temporary left behind */
        npz_file *z = NULL;
        CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
        CHECK_MSG(err.code == HD_OK, "%s", err.msg);
        if (!z) continue;
        CHECK_EQ_INT(npz_count(z), 4);
        for (size_t k = 0; k < 4; k++) {
            CHECK(npz_name(z, k) && strcmp(npz_name(z, k), names[k]) == 0);
            npy_header h;
            memset(&h, 0xab, sizeof h);
            const double *d = npz_get(z, names[k], &h);
            CHECK(d != NULL);
            if (!d) continue;
            CHECK_EQ_INT(h.dtype, dt);
            CHECK_EQ_INT(h.ndim, m[k].ndim);
            CHECK_EQ_INT(h.count, counts[k]);
            for (size_t j = 0; j < h.ndim; j++) CHECK_EQ_INT(h.shape[j], m[k].shape[j]);
            size_t bad = 0;
            for (size_t j = 0; j < counts[k]; j++) {
                double want = dt == NPY_F64 ? vals[k][j] : (double)(float)vals[k][j];
                if (d[j] != want) bad++;
            }
            CHECK_MSG(bad == 0, "%s: %zu values differ (dtype %d)", names[k], bad, (int)dt);
            CHECK(npz_get(z, names[k], NULL) == d);
        }
        CHECK(npz_name(z, 4) == NULL);
        CHECK(npz_get(z, "missing", NULL) == NULL);
        CHECK(npz_get(z, "xs.npy", NULL) == NULL);
        CHECK(npz_get(z, "x", NULL) == NULL);
        npz_free(z);

        /* The element limit is inclusive; one less refuses xq (21 numbers). */
        z = NULL;
        CHECK_EQ_INT(npz_load(p, 21, &z, &err), HD_OK);
        npz_free(z);
        z = NULL;
        hd_err_clear(&err);
        CHECK_EQ_INT(npz_load(p, 20, &z, &err), HD_ETOOBIG);
        CHECK_MSG(contains(err.msg, "xq.npy") && contains(err.msg, "21 elements"), "%s", err.msg);
        CHECK(z == NULL);
    }

    /* The bytes: fixed dates make saving reproducible, and the CRC-32 of the
     * first member matches the bitwise reference. */
    size_t len1 = 0, len2 = 0;
    uint8_t *a = read_file(p, &len1);
    npz_member one[1] = {{"yq", NPY_F32, 0, NULL, &yq}};
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, one, &err), HD_OK);
    uint8_t *b1 = read_file(p, &len2);
    CHECK_EQ_INT(npz_save(p, 1, one, &err), HD_OK);
    size_t len3 = 0;
    uint8_t *b2 = read_file(p, &len3);
    CHECK(a && b1 && b2);
    if (a && b1 && b2) {
        CHECK(len2 == len3 && memcmp(b1, b2, len2) == 0);
        CHECK(len1 > len2);
        CHECK_EQ_INT(get32(b1), 0x04034b50u);
        size_t nlen = (size_t)(b1[26] | b1[27] << 8), xlen = (size_t)(b1[28] | b1[29] << 8);
        size_t dlen = get32(b1 + 18);
        CHECK(30 + nlen + xlen + dlen < len2);
        CHECK(nlen == 6 && memcmp(b1 + 30, "yq.npy", 6) == 0);
        if (30 + nlen + xlen + dlen < len2)
            CHECK_EQ_INT(get32(b1 + 14), ref_crc32(b1 + 30 + nlen + xlen, dlen));
    }
    free(a);
    free(b1);
    free(b2);

    /* An empty archive is valid both ways. */
    npz_file *z = NULL;
    CHECK_EQ_INT(npz_save(p, 0, NULL, &err), HD_OK);
    CHECK_EQ_INT(npz_load(p, 10, &z, &err), HD_OK);
    CHECK_EQ_INT(npz_count(z), 0);
    CHECK(npz_get(z, "xs", NULL) == NULL);
    npz_free(z);
    npz_free(NULL);
    CHECK_EQ_INT(npz_count(NULL), 0);
    CHECK(npz_get(NULL, "xs", NULL) == NULL);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    CHECK_EQ_INT(unlink(p), 0);
}

/* ---- archives built here ---------------------------------------------------- */

static void test_hand_built(const char *dir) {
    images im;
    images_init(&im);
    uint8_t *buf = malloc(ZIP_CAP);
    HD_ASSERT(buf);
    char p[512];
    snprintf(p, sizeof p, "%s/hand.npz", dir);
    zlayout lay;
    hd_err err;
    for (int zip64 = 0; zip64 < 2; zip64++) {
        size_t len = build_two(buf, &im, zip64, &lay);
        CHECK_EQ_INT(write_file(p, buf, len), 0);
        npz_file *z = NULL;
        hd_err_clear(&err);
        CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
        CHECK_MSG(z && two_ok(z), "zip64=%d: members differ (%s)", zip64, err.msg);
        npz_free(z);

        /* An archive comment that itself contains an end record signature. */
        static const uint8_t comment[] = "comment PK\x05\x06 fake end record here....";
        size_t clen = sizeof comment - 1;
        memcpy(buf + len, comment, clen);
        put16(buf + lay.eocd + 20, (unsigned)clen);
        CHECK_EQ_INT(write_file(p, buf, len + clen), 0);
        z = NULL;
        CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
        CHECK_MSG(z && two_ok(z), "zip64=%d with comment: %s", zip64, err.msg);
        npz_free(z);
    }
    /* A data descriptor flag (sizes known only from the central directory)
     * is fine for stored members. */
    zmember dd[1] = {{"xs.npy", im.xs, im.xs_len, 0, 0x0008, 0}};
    size_t len = zip_build(buf, ZIP_CAP, dd, 1, 0, &lay);
    CHECK_EQ_INT(write_file(p, buf, len), 0);
    npz_file *z = NULL;
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
    CHECK(z && npz_count(z) == 1 && npz_get(z, "xs", NULL) != NULL);
    npz_free(z);
    CHECK_EQ_INT(unlink(p), 0);
    free(buf);
    images_clear(&im);
}

static void test_malformed(const char *dir) {
    images im;
    images_init(&im);
    uint8_t *buf = malloc(ZIP_CAP);
    HD_ASSERT(buf);
    char p[512];
    snprintf(p, sizeof p, "%s/bad.npz", dir);
    zlayout lay;
    size_t len;

    /* Not a zip at all, empty, tiny. */
    EXPECT_FAIL(p, im.xs, im.xs_len, HD_EFORMAT, "end of central directory", NULL);
    EXPECT_FAIL(p, buf, 0, HD_EFORMAT, "too short", NULL);
    EXPECT_FAIL(p, (const uint8_t *)"PK\x05\x06", 4, HD_EFORMAT, "too short", NULL);

    /* Truncated. */
    len = build_two(buf, &im, 0, &lay);
    EXPECT_FAIL(p, buf, len / 2, HD_EFORMAT, "end of central directory", "truncated");
    EXPECT_FAIL(p, buf, len - 1, HD_EFORMAT, "end of central directory", NULL);

    /* Bad end of central directory record. */
    len = build_two(buf, &im, 0, &lay);
    buf[lay.eocd + 1] ^= 0x20;
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "end of central directory", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.eocd + 20, 5); /* comment runs past the end */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "end of central directory", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.eocd + 8, 1); /* entries on this disk != total */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "multi-disk", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.eocd + 8, 9);
    put16(buf + lay.eocd + 10, 9); /* more entries than the directory holds */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "cannot hold 9 entries", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.eocd + 8, 1);
    put16(buf + lay.eocd + 10, 1); /* fewer entries than the directory holds */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "after its 1 entries", NULL);

    /* Central directory offset or size beyond the file. */
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.eocd + 16, 1000000);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "central directory (offset 1000000", "beyond");
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.eocd + 16, 0xfffffff0u);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "central directory (offset", "beyond");
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.eocd + 12, 0xffffffffu);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "central directory (offset", "beyond");
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.eocd + 16, (uint32_t)lay.cd_off + 1); /* misaligned directory */
    put32(buf + lay.eocd + 12, (uint32_t)(lay.eocd - lay.cd_off - 1));
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "bad central directory entry 0", NULL);

    /* Central directory entries. */
    len = build_two(buf, &im, 0, &lay);
    buf[lay.central[1]] = 'X';
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "bad central directory entry 1", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.central[1] + 32, 200); /* comment past the directory */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "entry 1 is truncated", NULL);
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.central[1] + 42, (uint32_t)lay.cd_off); /* local header in the directory */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'ys.npy' (offset", "lies outside");
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.central[0] + 20, (uint32_t)im.xs_len + 1);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'xs.npy' is stored but its sizes differ", NULL);
    len = build_two(buf, &im, 0, &lay);
    put32(buf + lay.central[0] + 20, 0x7fffffffu);
    put32(buf + lay.central[0] + 24, 0x7fffffffu);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "lies outside", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.central[0] + 34, 1); /* starts on another disk */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "multi-disk", NULL);

    /* Two directory entries for the same bytes. */
    {
        double v[40];
        for (size_t i = 0; i < 40; i++) v[i] = (double)i;
        static const size_t s40[1] = {40};
        uint8_t *img = NULL;
        size_t img_len = 0;
        hd_err e;
        hd_err_clear(&e);
        HD_ASSERT(npy_encode(NPY_F64, 1, s40, v, &img, &img_len, &e) == HD_OK);
        zmember m[2] = {{"aa.npy", img, img_len, 0, 0, 0}, {"bb.npy", im.xs, im.xs_len, 0, 0, 0}};
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        put32(buf + lay.central[1] + 16, ref_crc32(img, img_len));
        put32(buf + lay.central[1] + 20, (uint32_t)img_len);
        put32(buf + lay.central[1] + 24, (uint32_t)img_len);
        put32(buf + lay.central[1] + 42, 0);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "members overlap", NULL);
        free(img);
    }

    /* Local headers. */
    len = build_two(buf, &im, 0, &lay);
    buf[lay.local[1] + 2] = 0x07;
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'ys.npy': bad local header signature", NULL);
    len = build_two(buf, &im, 0, &lay);
    buf[lay.local[0] + 30] = 'z';
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "local header name differs", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.local[1] + 8, 8);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "local header says compressed", NULL);
    len = build_two(buf, &im, 0, &lay);
    put16(buf + lay.local[1] + 28, 0xfff0); /* extra field runs past the data */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "runs past the archive data", NULL);

    /* Member contents and flags. */
    {
        zmember m[2] = {{"xs.npy", im.xs, im.xs_len, 0, 0, 0},
                        {"ys.npy", im.ys, im.ys_len, 0, 0, 1}};
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'ys.npy' fails its CRC-32 check", NULL);
        len = build_two(buf, &im, 0, &lay);
        buf[lay.local[0] + 30 + 6 + im.xs_len - 1] ^= 0x01; /* one data bit */
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "CRC-32", NULL);
        m[1].bad_crc = 0;
        m[1].method = 8;
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "member 'ys.npy' is compressed (deflate)",
                    "save with np.savez, not np.savez_compressed");
        m[1].method = 14;
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "compressed (lzma)", NULL);
        m[1].method = 99;
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "compressed (method 99)", NULL);
        m[1].method = 0;
        m[1].flags = 0x0001;
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'ys.npy' is encrypted", NULL);
        m[1].flags = 0;
        m[1].name = "readme.txt";
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'readme.txt' is not a .npy array", NULL);
        m[1].name = "npy";
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'npy' is not a .npy array", NULL);
        m[1].name = "bad\x01\xff.txt";
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'bad??.txt'", NULL);
        m[1].name = "xs.npy";
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "duplicate member 'xs.npy'", NULL);
        m[1].name = "xsXq.npy"; /* the NUL is patched in below */
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        buf[lay.central[1] + 46 + 2] = '\0';
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "contains a NUL byte", NULL);

        static const uint8_t junk[] = "this is not a .npy image at all";
        m[1].name = "ys.npy";
        m[1].data = junk;
        m[1].len = sizeof junk - 1;
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "member 'ys.npy'", "bad magic");
        m[1].data = im.ys;
        m[1].len = im.ys_len - 4; /* npy data cut short, CRC still right */
        len = zip_build(buf, ZIP_CAP, m, 2, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_EFORMAT, "member 'ys.npy'", "truncated data");
    }
    {
        static const size_t s2[1] = {2};
        const double nanv[2] = {1.0, (double)NAN};
        uint8_t *img = NULL;
        size_t img_len = 0;
        hd_err e;
        hd_err_clear(&e);
        HD_ASSERT(npy_encode(NPY_F64, 1, s2, nanv, &img, &img_len, &e) == HD_OK);
        zmember m[1] = {{"bad.npy", img, img_len, 0, 0, 0}};
        len = zip_build(buf, ZIP_CAP, m, 1, 0, &lay);
        EXPECT_FAIL(p, buf, len, HD_ENONFINITE, "member 'bad.npy'", "nan at index 1");
        free(img);
    }

    /* A member larger than any image within the element limit is refused
     * before its data is read. */
    {
        static const size_t s[1] = {20000};
        double *v = calloc(20000, sizeof *v);
        uint8_t *img = NULL;
        size_t img_len = 0;
        hd_err e;
        hd_err_clear(&e);
        HD_ASSERT(v && npy_encode(NPY_F64, 1, s, v, &img, &img_len, &e) == HD_OK);
        zmember m[1] = {{"big.npy", img, img_len, 0, 0, 0}};
        len = zip_build(buf, ZIP_CAP, m, 1, 0, &lay);
        expect_fail(p, buf, len, 10, HD_ETOOBIG, "'big.npy' has 160128 bytes", NULL, __LINE__);
        expect_fail(p, buf, len, 19999, HD_ETOOBIG, "20000 elements exceed", NULL, __LINE__);
        free(img);
        free(v);
    }

    /* zip64 records. */
    len = build_two(buf, &im, 1, &lay);
    buf[lay.z64_eocd] = 'Q';
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "bad zip64 end of central directory record", NULL);
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.z64_loc + 8, lay.z64_loc);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "zip64 end of central directory offset", "out of range");
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.z64_loc + 8, UINT64_MAX);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "out of range", NULL);
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.z64_eocd + 4, UINT64_MAX - 5);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "bad zip64 end of central directory record", NULL);
    len = build_two(buf, &im, 1, &lay);
    put32(buf + lay.z64_loc + 16, 3);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "multi-disk", NULL);
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.z64_eocd + 48, UINT64_MAX - 10);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "central directory (offset", "beyond");
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.z64_eocd + 24, 70000);
    put64(buf + lay.z64_eocd + 32, 70000);
    EXPECT_FAIL(p, buf, len, HD_ETOOBIG, "70000 members exceed the limit", NULL);
    len = build_two(buf, &im, 1, &lay);
    put16(buf + lay.central[0] + 46 + 6 + 2, 8); /* zip64 extra holds one field */
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'xs.npy'", "extra field");
    len = build_two(buf, &im, 1, &lay);
    put16(buf + lay.central[0] + 46 + 6 + 2, 200);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'xs.npy': malformed extra field", NULL);
    len = build_two(buf, &im, 1, &lay);
    put64(buf + lay.central[1] + 46 + 6 + 4 + 16, UINT64_MAX);
    EXPECT_FAIL(p, buf, len, HD_EFORMAT, "'ys.npy' (offset", "lies outside");

    /* Files that are not archives at all. */
    {
        npz_file *z = NULL;
        hd_err e;
        hd_err_clear(&e);
        char q[600];
        snprintf(q, sizeof q, "%s/missing.npz", dir);
        CHECK_EQ_INT(npz_load(q, 10, &z, &e), HD_EIO);
        CHECK_MSG(contains(e.msg, "missing.npz"), "%s", e.msg);
        hd_err_clear(&e);
        CHECK_EQ_INT(npz_load(dir, 10, &z, &e), HD_EIO);
        CHECK_MSG(contains(e.msg, "not a regular file"), "%s", e.msg);
        CHECK(z == NULL);
        /* Larger than 1 GiB (sparse, so nothing is really written). */
        int fd = open(p, O_WRONLY | O_TRUNC);
        CHECK(fd >= 0);
        if (fd >= 0) {
            CHECK_EQ_INT(ftruncate(fd, ((off_t)1 << 30) + 1), 0);
            close(fd);
            hd_err_clear(&e);
            CHECK_EQ_INT(npz_load(p, 10, &z, &e), HD_ETOOBIG);
            CHECK_MSG(contains(e.msg, "more than the limit"), "%s", e.msg);
            CHECK(z == NULL);
        }
    }
    CHECK_EQ_INT(unlink(p), 0);
    free(buf);
    images_clear(&im);
}

/* Every proper prefix of a valid archive, and every single-bit change of
 * one, must be refused with a message or still load (flips in fields the
 * reader does not use, such as dates) -- never crash or leak (ASan). */
static void test_mutations(const char *dir) {
    images im;
    images_init(&im);
    uint8_t *buf = malloc(ZIP_CAP);
    HD_ASSERT(buf);
    char p[512];
    snprintf(p, sizeof p, "%s/mut.npz", dir);
    zlayout lay;
    for (int zip64 = 0; zip64 < 2; zip64++) {
        size_t len = build_two(buf, &im, zip64, &lay);
        size_t bad = 0, refused = 0, accepted = 0;
        for (size_t cut = 0; cut < len; cut++) {
            npz_file *z = NULL;
            hd_err e;
            hd_err_clear(&e);
            if (write_file(p, buf, cut) != 0 || npz_load(p, 100, &z, &e) == HD_OK ||
                e.msg[0] == '\0' || z != NULL)
                bad++;
            npz_free(z);
        }
        CHECK_MSG(bad == 0, "zip64=%d: %zu of %zu truncations not refused cleanly", zip64, bad,
                  len);
        bad = 0;
        for (size_t i = 0; i < len; i++) {
            for (int bit = 0; bit < 8; bit++) {
                buf[i] ^= (uint8_t)(1u << bit);
                npz_file *sentinel = (npz_file *)&sentinel, *z = sentinel;
                hd_err e;
                hd_err_clear(&e);
                hd_rc rc = write_file(p, buf, len) == 0 ? npz_load(p, 100, &z, &e) : HD_EIO;
                if (rc == HD_OK) {
                    accepted++;
                    if (z == sentinel || !z)
                        bad++;
                    else
                        npz_free(z);
                } else {
                    refused++;
                    if (e.msg[0] == '\0' || e.code != rc || z != sentinel) bad++;
                }
                buf[i] ^= (uint8_t)(1u << bit);
            }
        }
        CHECK_MSG(bad == 0, "zip64=%d: %zu bit flips handled badly", zip64, bad);
        CHECK(refused > accepted);
        printf("zip64=%d: %zu bytes, %zu truncations refused; bit flips: %zu refused, %zu "
               "accepted\n",
               zip64, len, len, refused, accepted);
    }
    CHECK_EQ_INT(unlink(p), 0);
    free(buf);
    images_clear(&im);
}

static void test_save_errors(const char *dir) {
    static const size_t s3[1] = {3};
    static const size_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    static const double v[3] = {1, 2, 3};
    char p[512];
    snprintf(p, sizeof p, "%s/save.npz", dir);
    hd_err err;

    npz_member dup[2] = {{"a", NPY_F64, 1, s3, v}, {"a", NPY_F32, 1, s3, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 2, dup, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "duplicate member name 'a'"), "%s", err.msg);

    npz_member bad_dtype[1] = {{"a", (npy_dtype)3, 1, s3, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, bad_dtype, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "invalid dtype 3"), "%s", err.msg);

    npz_member deep[1] = {{"a", NPY_F64, 9, s9, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, deep, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "9 dimensions"), "%s", err.msg);

    npz_member noname[1] = {{NULL, NPY_F64, 1, s3, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, noname, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "no name"), "%s", err.msg);

    npz_member nodata[1] = {{"a", NPY_F64, 1, s3, NULL}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, nodata, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "no data"), "%s", err.msg);

    static const size_t huge[2] = {(size_t)1 << 20, (size_t)1 << 20};
    npz_member toobig[1] = {{"a", NPY_F32, 2, huge, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, toobig, &err), HD_ETOOBIG);
    CHECK_MSG(contains(err.msg, "4 GiB"), "%s", err.msg);

    /* An empty data pointer is fine for zero elements. */
    static const size_t s0[1] = {0};
    npz_member empty[1] = {{"e", NPY_F64, 1, s0, NULL}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(p, 1, empty, &err), HD_OK);
    npz_file *z = NULL;
    CHECK_EQ_INT(npz_load(p, 10, &z, &err), HD_OK);
    npy_header h;
    memset(&h, 0, sizeof h);
    CHECK(z && npz_get(z, "e", &h) != NULL && h.ndim == 1 && h.count == 0);
    npz_free(z);
    CHECK_EQ_INT(unlink(p), 0);

    /* Nothing is created for refused arguments, nor in a missing directory. */
    CHECK_EQ_INT(count_dir_entries(dir), 0);
    char q[600];
    snprintf(q, sizeof q, "%s/nodir/x.npz", dir);
    npz_member ok[1] = {{"a", NPY_F64, 1, s3, v}};
    hd_err_clear(&err);
    CHECK_EQ_INT(npz_save(q, 1, ok, &err), HD_EIO);
    CHECK_MSG(contains(err.msg, "nodir"), "%s", err.msg);
    CHECK_EQ_INT(count_dir_entries(dir), 0);
}

/* ---- numpy interoperability ------------------------------------------------- */

static const char *find_numpy_python(void) {
    static const char *const cands[] = {"python3", "/usr/bin/python3"};
    char cmd[256];
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) return cands[i];
    }
    return NULL;
}

static void fprint_list(FILE *f, size_t n, const double *v) {
    fputc('[', f);
    for (size_t i = 0; i < n; i++) fprintf(f, "%s%.17g", i ? ", " : "", v[i]);
    fputc(']', f);
}

static void test_numpy_interop(const char *dir) {
    const char *py = find_numpy_python();
    if (!py) {
        printf("SKIP numpy interop: numpy not available\n");
        return;
    }
    printf("numpy interop with %s\n", py);
    static const size_t s_xs[2] = {10, 1}, s_ys[1] = {10}, s_xq[2] = {7, 3};
    double xs[10], ys[10], xq[21], yq = 0.1;
    for (size_t i = 0; i < 10; i++) xs[i] = test_value(i + 3);
    for (size_t i = 0; i < 10; i++) ys[i] = test_value(i + 30);
    for (size_t i = 0; i < 21; i++) xq[i] = test_value(i + 60);
    char p[512];
    hd_err err;
    hd_err_clear(&err);

    /* C writes (mixed dtypes), numpy reads. */
    npz_member m[4] = {{"xs", NPY_F64, 2, s_xs, xs},
                       {"ys", NPY_F32, 1, s_ys, ys},
                       {"xq", NPY_F32, 2, s_xq, xq},
                       {"yq", NPY_F64, 0, NULL, &yq}};
    snprintf(p, sizeof p, "%s/c.npz", dir);
    CHECK_EQ_INT(npz_save(p, 4, m, &err), HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);

    snprintf(p, sizeof p, "%s/check.py", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("import sys, zipfile\n"
          "import numpy as np\n"
          "d = sys.argv[1]\n",
          f);
    fputs("xs = np.array(", f);
    fprint_list(f, 10, xs);
    fputs(").reshape(10, 1)\nys = np.array(", f);
    fprint_list(f, 10, ys);
    fputs(")\nxq = np.array(", f);
    fprint_list(f, 21, xq);
    fprintf(f, ").reshape(7, 3)\nyq = np.float64(%.17g)\n", yq);
    fputs("with zipfile.ZipFile(d + '/c.npz') as zf:\n"
          "    assert zf.testzip() is None, 'CRC'\n"
          "    assert zf.namelist() == ['xs.npy', 'ys.npy', 'xq.npy', 'yq.npy'], zf.namelist()\n"
          "    assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())\n"
          "z = np.load(d + '/c.npz')\n"
          "want = {'xs': xs, 'ys': ys.astype('<f4'), 'xq': xq.astype('<f4'), 'yq': yq}\n"
          "for k, w in want.items():\n"
          "    a = z[k]\n"
          "    assert a.dtype == np.asarray(w).dtype, (k, a.dtype)\n"
          "    assert a.shape == np.shape(w), (k, a.shape)\n"
          "    assert np.array_equal(a, w), (k, a, w)\n"
          "z.close()\n"
          "np.savez(d + '/py.npz', xs=xs, ys=ys.astype(np.float32), xq=xq, yq=yq)\n"
          "np.savez_compressed(d + '/pyc.npz', xs=xs, ys=ys)\n"
          "np.savez(d + '/pyint.npz', xs=xs, n=np.arange(3))\n"
          "np.savez(d + '/pyempty.npz')\n"
          "class Stream:\n"
          "    def __init__(self, f): self.f = f\n"
          "    def write(self, b): return self.f.write(b)\n"
          "    def read(self, n=-1): raise OSError('write only')\n"
          "    def flush(self): self.f.flush()\n"
          "with open(d + '/pystream.npz', 'wb') as fh:\n"
          "    np.savez(Stream(fh), xs=xs, yq=yq)\n"
          "print('numpy side ok')\n",
          f);
    fclose(f);
    char cmd[1200];
    fflush(stdout);
    snprintf(cmd, sizeof cmd, "%s %s/check.py %s", py, dir, dir);
    CHECK_MSG(system(cmd) == 0, "python check failed: %s", cmd);

    /* numpy writes, C reads. */
    npz_file *z = NULL;
    snprintf(p, sizeof p, "%s/py.npz", dir);
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    if (z) {
        static const char *const names[4] = {"xs", "ys", "xq", "yq"};
        const double *vals[4] = {xs, ys, xq, &yq};
        static const size_t counts[4] = {10, 10, 21, 1}, ndims[4] = {2, 1, 2, 0};
        static const npy_dtype dts[4] = {NPY_F64, NPY_F32, NPY_F64, NPY_F64};
        CHECK_EQ_INT(npz_count(z), 4);
        for (size_t k = 0; k < 4; k++) {
            CHECK(npz_name(z, k) && strcmp(npz_name(z, k), names[k]) == 0);
            npy_header h;
            const double *d = npz_get(z, names[k], &h);
            CHECK(d != NULL);
            if (!d) continue;
            CHECK_EQ_INT(h.dtype, dts[k]);
            CHECK_EQ_INT(h.ndim, ndims[k]);
            CHECK_EQ_INT(h.count, counts[k]);
            size_t bad = 0;
            for (size_t j = 0; j < counts[k]; j++) {
                double want = dts[k] == NPY_F64 ? vals[k][j] : (double)(float)vals[k][j];
                if (d[j] != want) bad++;
            }
            CHECK_MSG(bad == 0, "%s: %zu values differ", names[k], bad);
        }
        npy_header h;
        CHECK(npz_get(z, "xq", &h) && h.shape[0] == 7 && h.shape[1] == 3);
        CHECK(npz_get(z, "xs", &h) && h.shape[0] == 10 && h.shape[1] == 1);
        npz_free(z);
    }
    z = NULL;
    snprintf(p, sizeof p, "%s/pystream.npz", dir);
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
    CHECK_MSG(err.code == HD_OK, "%s", err.msg);
    if (z) {
        const double *d = npz_get(z, "xs", NULL), *q = npz_get(z, "yq", NULL);
        CHECK(npz_count(z) == 2 && d && q);
        if (d && q) {
            CHECK(memcmp(d, xs, sizeof xs) == 0);
            CHECK(*q == yq);
        }
        npz_free(z);
    }
    z = NULL;
    snprintf(p, sizeof p, "%s/pyempty.npz", dir);
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_OK);
    CHECK_EQ_INT(npz_count(z), 0);
    npz_free(z);

    z = NULL;
    hd_err_clear(&err);
    snprintf(p, sizeof p, "%s/pyc.npz", dir);
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "'xs.npy' is compressed (deflate)") &&
                  contains(err.msg, "np.savez_compressed"),
              "%s", err.msg);
    CHECK(z == NULL);
    hd_err_clear(&err);
    snprintf(p, sizeof p, "%s/pyint.npz", dir);
    CHECK_EQ_INT(npz_load(p, 100, &z, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "member 'n.npy'") && contains(err.msg, "'<i8'"), "%s", err.msg);
    CHECK(z == NULL);
}

int main(void) {
    char dir[] = "/tmp/test_npz.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
        return check_finish("test_npz");
    }
    static const char *const subs[] = {"rt", "hand", "bad", "mut", "save", "interop"};
    void (*const fns[])(const char *) = {test_roundtrip, test_hand_built,  test_malformed,
                                         test_mutations, test_save_errors, test_numpy_interop};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        CHECK(mkdir(sub, 0700) == 0);
        fns[i](sub);
        CHECK_EQ_INT(remove_dir(sub), 0);
    }
    CHECK_EQ_INT(rmdir(dir), 0);
    return check_finish("test_npz");
}
