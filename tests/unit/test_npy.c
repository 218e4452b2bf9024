/* Unit tests for common/npy: round trips for both dtypes and several shapes,
 * numpy-exact header text, float32 rounding, a table of malformed images,
 * non-finite rejection, decode_into shape checks, files in a temporary
 * directory, and (when python3 has numpy) interoperability with numpy. */
#include "npy.h"

#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define IMG_CAP 4096

/* ---- helpers ------------------------------------------------------------ */

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

/* Deterministic test values of varied magnitude and sign. */
static double test_value(size_t i) {
    return sin((double)i * 1.7 + 0.3) * pow(10.0, (double)((int)(i % 7) - 3));
}

/* Build an image by hand: version major.0 preamble, the dict text, spaces up
 * to a multiple of align, a final '\n', then data_bytes bytes of 1.0 (f8) or
 * zero. Returns the image length. */
static size_t make_image(uint8_t *buf, int major, const char *dict, size_t align,
                         size_t data_bytes) {
    size_t prefix = major == 1 ? 10 : 12;
    size_t dlen = strlen(dict);
    size_t total = prefix + dlen + 1;
    size_t pad = (align - total % align) % align;
    size_t hlen = dlen + pad + 1;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    for (size_t k = 0; k < prefix - 8; k++) buf[8 + k] = (uint8_t)(hlen >> (8 * k));
    memcpy(buf + prefix, dict, dlen);
    memset(buf + prefix + dlen, ' ', pad);
    buf[prefix + hlen - 1] = '\n';
    HD_ASSERT(prefix + hlen + data_bytes <= IMG_CAP);
    memset(buf + prefix + hlen, 0, data_bytes);
    return prefix + hlen + data_bytes;
}

static int all_equal(size_t n, const double *a, const double *b) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])))) return 0;
    return 1;
}

/* Remove every file in dir, then dir itself. Returns 0 on success. */
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

/* ---- round trips -------------------------------------------------------- */

static void roundtrip_one(npy_dtype dt, size_t ndim, const size_t *shape) {
    size_t count = 1;
    for (size_t i = 0; i < ndim; i++) count *= shape[i];
    double *data = malloc((count ? count : 1) * sizeof *data);
    double *want = malloc((count ? count : 1) * sizeof *want);
    for (size_t i = 0; i < count; i++) {
        data[i] = test_value(i);
        want[i] = dt == NPY_F32 ? (double)(float)data[i] : data[i];
    }
    uint8_t *img = NULL;
    size_t len = 0;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(dt, ndim, shape, data, &img, &len, &err), HD_OK);
    size_t hsize = npy_header_size(dt, ndim, shape);
    CHECK_EQ_INT(hsize % 64, 0);
    CHECK_EQ_INT(len, hsize + count * (size_t)dt);

    npy_header h;
    CHECK_EQ_INT(npy_parse_header(img, len, count, 1, &h, &err), HD_OK);
    CHECK_EQ_INT(h.dtype, dt);
    CHECK_EQ_INT(h.ndim, ndim);
    CHECK_EQ_INT(h.count, count);
    CHECK_EQ_INT(h.data_offset, hsize);
    int same_shape = 1;
    for (size_t i = 0; i < ndim; i++) same_shape &= h.shape[i] == shape[i];
    CHECK(same_shape);

    double *out = NULL;
    memset(&h, 0, sizeof h);
    CHECK_EQ_INT(npy_decode(img, len, count, 1, &h, &out, &err), HD_OK);
    CHECK(out != NULL);
    CHECK_EQ_INT(h.count, count);
    if (out) CHECK_MSG(all_equal(count, out, want), "dtype %d ndim %zu", (int)dt, ndim);

    double *into = malloc((count ? count : 1) * sizeof *into);
    npy_dtype got_dt = (npy_dtype)0;
    CHECK_EQ_INT(npy_decode_into(img, len, &got_dt, ndim, shape, 1, into, &err), HD_OK);
    CHECK_EQ_INT(got_dt, dt);
    CHECK(all_equal(count, into, want));
    CHECK_MSG(err.code == HD_OK, "unexpected error: %s", err.msg);
    free(into);
    free(out);
    free(img);
    free(want);
    free(data);
}

static void test_roundtrip(void) {
    static const size_t s1[] = {5}, s3[] = {2, 3, 4}, s0[] = {0}, s302[] = {3, 0, 2},
                        s8[] = {1, 2, 1, 2, 1, 2, 1, 3}, sbig[] = {1000, 3};
    const npy_dtype dts[2] = {NPY_F32, NPY_F64};
    for (int d = 0; d < 2; d++) {
        roundtrip_one(dts[d], 0, NULL);
        roundtrip_one(dts[d], 1, s1);
        roundtrip_one(dts[d], 3, s3);
        roundtrip_one(dts[d], 1, s0);
        roundtrip_one(dts[d], 3, s302);
        roundtrip_one(dts[d], 8, s8);
        roundtrip_one(dts[d], 2, sbig);
    }
}

/* The header text is byte for byte what numpy 1.24 writes. */
static void test_header_text(void) {
    static const size_t s34[] = {3, 4}, s5[] = {5};
    uint8_t *img = NULL;
    size_t len = 0;
    double z[12] = {0};
    hd_err err;
    hd_err_clear(&err);

    CHECK_EQ_INT(npy_encode(NPY_F64, 2, s34, z, &img, &len, &err), HD_OK);
    const char *d34 = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }";
    CHECK_EQ_INT(len, 128 + 96);
    CHECK(memcmp(img, "\x93NUMPY\x01\x00", 8) == 0);
    CHECK_EQ_INT(img[8] | img[9] << 8, 118);
    CHECK(memcmp(img + 10, d34, strlen(d34)) == 0);
    int spaces = 1;
    for (size_t k = 10 + strlen(d34); k < 127; k++) spaces &= img[k] == ' ';
    CHECK(spaces);
    CHECK_EQ_INT(img[127], '\n');
    free(img);

    CHECK_EQ_INT(npy_encode(NPY_F32, 1, s5, z, &img, &len, &err), HD_OK);
    const char *d5 = "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }";
    CHECK(memcmp(img + 10, d5, strlen(d5)) == 0);
    CHECK_EQ_INT(len, 128 + 20);
    free(img);

    CHECK_EQ_INT(npy_encode(NPY_F64, 0, NULL, z, &img, &len, &err), HD_OK);
    const char *d0 = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }";
    CHECK(memcmp(img + 10, d0, strlen(d0)) == 0);
    CHECK_EQ_INT(len, 128 + 8);
    CHECK_EQ_INT(img[127], '\n');
    free(img);

    CHECK_EQ_INT(npy_header_size(NPY_F64, 2, s34), 128);
    /* When preamble + dict + '\n' is already a multiple of 64, numpy still
     * pads a full 64 bytes: here the dict is 117 bytes, 10 + 118 = 128. */
    static const size_t s_aligned[] = {1, 1000000000000000000u, 100000000000000000u};
    CHECK_EQ_INT(npy_header_size(NPY_F64, 3, s_aligned), 192);
    CHECK_EQ_INT(npy_header_size((npy_dtype)3, 2, s34), 0);
    CHECK_EQ_INT(npy_header_size(NPY_F64, NPY_MAX_NDIM + 1, s34), 0);
    CHECK_MSG(err.code == HD_OK, "unexpected error: %s", err.msg);
}

/* ---- float32 rounding --------------------------------------------------- */

static void test_f32_rounding(void) {
    const double in[] = {0.1,
                         1.0 / 3.0,
                         -2.5e-3,
                         1e-40,           /* float subnormal */
                         1e-50,           /* underflows to 0 */
                         16777217.0,      /* 2^24 + 1: tie, rounds to even 2^24 */
                         (double)FLT_MAX, /* exact */
                         0x1.fffffefp127, /* above FLT_MAX, below the midpoint */
                         0x1.ffffffp127,  /* the midpoint: rounds to inf */
                         1e39,            /* overflow */
                         -1e39,           /* negative overflow */
                         -0.0,
                         (double)NAN};
    const size_t n = sizeof in / sizeof in[0];
    const double want[] = {(double)0.1f,
                           (double)(float)(1.0 / 3.0),
                           (double)-2.5e-3f,
                           (double)1e-40f,
                           0.0,
                           16777216.0,
                           (double)FLT_MAX,
                           (double)FLT_MAX,
                           (double)INFINITY,
                           (double)INFINITY,
                           -(double)INFINITY,
                           -0.0,
                           (double)NAN};
    uint8_t *img = NULL;
    size_t len = 0;
    double *out = NULL;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F32, 1, &n, in, &img, &len, &err), HD_OK);
    CHECK_EQ_INT(npy_decode(img, len, n, 0, NULL, &out, &err), HD_OK);
    if (out) {
        for (size_t i = 0; i < n; i++) {
            int ok = isnan(want[i]) ? isnan(out[i]) != 0 : out[i] == want[i];
            CHECK_MSG(ok, "f32 rounding of %a: got %a, want %a", in[i], out[i], want[i]);
            /* every value must be exactly a float */
            CHECK(isnan(out[i]) || (double)(float)out[i] == out[i]);
        }
        CHECK(signbit(out[11]));
    }
    free(out);
    free(img);
}

/* ---- malformed images --------------------------------------------------- */

enum {
    MUT_NONE,
    MUT_MAGIC,
    MUT_VERSION,
    MUT_HLEN_BIG,
    MUT_NO_NEWLINE,
    MUT_NOT_ASCII,
    MUT_SHORT,
    MUT_EMPTY
};

typedef struct {
    const char *name;     /* what is wrong */
    const char *dict;     /* header dict text */
    int mut;              /* MUT_*: damage applied after building */
    size_t data_bytes;    /* data bytes after the header */
    size_t max_elems;     /* limit passed to the parser */
    int exact;            /* refuse trailing bytes */
    hd_rc want;           /* expected result */
    const char *want_msg; /* substring expected in the message */
} bad_case;

#define GOOD "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"

static const bad_case bad_cases[] = {
    {"bad magic", GOOD, MUT_MAGIC, 48, 100, 1, HD_EFORMAT, "bad magic"},
    {"bad version", GOOD, MUT_VERSION, 48, 100, 1, HD_EFORMAT, "unsupported format version 4.0"},
    {"header length beyond buffer", GOOD, MUT_HLEN_BIG, 0, 100, 0, HD_EFORMAT, "beyond buffer"},
    {"missing key", "{'descr': '<f8', 'fortran_order': False, }", MUT_NONE, 8, 100, 0, HD_EFORMAT,
     "missing key 'shape'"},
    {"duplicate key", "{'descr': '<f8', 'fortran_order': False, 'descr': '<f8', 'shape': (2, 3), }",
     MUT_NONE, 48, 100, 1, HD_EFORMAT, "duplicate key 'descr'"},
    {"unknown key", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'extra': 1, }",
     MUT_NONE, 48, 100, 1, HD_EFORMAT, "unknown key 'extra'"},
    {"fortran_order True", "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "fortran_order True not supported"},
    {"fortran_order not bool", "{'descr': '<f8', 'fortran_order': 0, 'shape': (2, 3), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "must be True or False"},
    {"dtype <i4", "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", MUT_NONE, 24, 100,
     1, HD_EFORMAT, "unsupported dtype '<i4'"},
    {"dtype >f8", "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }", MUT_NONE, 48, 100,
     1, HD_EFORMAT, "unsupported dtype '>f8'"},
    {"dtype |f8", "{'descr': '|f8', 'fortran_order': False, 'shape': (2, 3), }", MUT_NONE, 48, 100,
     1, HD_EFORMAT, "unsupported dtype '|f8'"},
    {"structured dtype", "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (2, 3), }",
     MUT_NONE, 48, 100, 1, HD_EFORMAT, "not a string"},
    {"negative dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (-2, 3), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "negative dimension -2"},
    {"non-numeric dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (two, 3), }",
     MUT_NONE, 48, 100, 1, HD_EFORMAT, "bad dimension 'two'"},
    {"float dimension", "{'descr': '<f8', 'fortran_order': False, 'shape': (2.0, 3), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "bad dimension '2.0'"},
    {"shape overflow",
     "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }",
     MUT_NONE, 48, 100, 1, HD_ETOOBIG, "overflows size_t"},
    {"dimension beyond size_t",
     "{'descr': '<f8', 'fortran_order': False, 'shape': (123456789012345678901234567890,), }",
     MUT_NONE, 48, 100, 1, HD_ETOOBIG, "does not fit size_t"},
    {"1-D shape without comma", "{'descr': '<f8', 'fortran_order': False, 'shape': (6), }",
     MUT_NONE, 48, 100, 1, HD_EFORMAT, "not a tuple"},
    {"shape not a tuple", "{'descr': '<f8', 'fortran_order': False, 'shape': [2, 3], }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "not a tuple"},
    {"too many dimensions",
     "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 6), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "more than 8 dimensions"},
    {"truncated data", GOOD, MUT_NONE, 40, 100, 0, HD_EFORMAT,
     "truncated data: need 176 bytes, have 168"},
    {"trailing bytes with exact", GOOD, MUT_NONE, 56, 100, 1, HD_EFORMAT, "8 trailing bytes"},
    {"header not ending in newline", GOOD, MUT_NO_NEWLINE, 48, 100, 1, HD_EFORMAT,
     "does not end with a newline"},
    {"count over max_elems", GOOD, MUT_NONE, 48, 5, 1, HD_ETOOBIG,
     "6 elements exceed the limit of 5"},
    {"unterminated dict", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), ", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "found end of header"},
    {"garbage after dict", GOOD " x", MUT_NONE, 48, 100, 1, HD_EFORMAT, "unexpected 'x'"},
    {"missing colon", "{'descr' '<f8', 'fortran_order': False, 'shape': (2, 3), }", MUT_NONE, 48,
     100, 1, HD_EFORMAT, "expected ':'"},
    {"unterminated string", "{'descr': '<f8', 'fortran_order': False, 'shape: (2, 3), }", MUT_NONE,
     48, 100, 1, HD_EFORMAT, "unterminated string"},
    {"escape in key", "{'de\\scr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", MUT_NONE, 48,
     100, 1, HD_EFORMAT, "escape"},
    {"not a dict", "['descr', '<f8']", MUT_NONE, 48, 100, 1, HD_EFORMAT, "expected '{'"},
    {"non-ASCII header byte", GOOD, MUT_NOT_ASCII, 48, 100, 1, HD_EFORMAT, "not ASCII"},
    {"short preamble", GOOD, MUT_SHORT, 48, 100, 1, HD_EFORMAT, "truncated preamble"},
    {"empty image", GOOD, MUT_EMPTY, 48, 100, 1, HD_EFORMAT, "empty"},
};

static void test_malformed(void) {
    static uint8_t buf[IMG_CAP];
    size_t ncases = sizeof bad_cases / sizeof bad_cases[0];
    CHECK(ncases >= 12);
    for (size_t c = 0; c < ncases; c++) {
        const bad_case *bc = &bad_cases[c];
        size_t len = make_image(buf, 1, bc->dict, 64, bc->data_bytes);
        size_t hend = 10 + (size_t)(buf[8] | buf[9] << 8); /* data offset */
        switch (bc->mut) {
        case MUT_MAGIC:
            buf[1] = 'X';
            break;
        case MUT_VERSION:
            buf[6] = 4;
            break;
        case MUT_HLEN_BIG:
            buf[8] = 0xf0;
            buf[9] = 0x7f;
            break;
        case MUT_NO_NEWLINE:
            buf[hend - 1] = ' ';
            break;
        case MUT_NOT_ASCII:
            buf[hend - 3] = 0xe9;
            break;
        case MUT_SHORT:
            len = 9;
            break;
        case MUT_EMPTY:
            len = 0;
            break;
        default:
            break;
        }
        hd_err err;
        hd_err_clear(&err);
        npy_header h;
        memset(&h, 0xab, sizeof h);
        npy_header h_before = h;
        hd_rc rc = npy_parse_header(buf, len, bc->max_elems, bc->exact, &h, &err);
        CHECK_MSG(rc == bc->want, "case '%s': rc %s, want %s (%s)", bc->name, hd_rc_name(rc),
                  hd_rc_name(bc->want), err.msg);
        CHECK_MSG(err.msg[0] != '\0', "case '%s': empty message", bc->name);
        CHECK_MSG(contains(err.msg, bc->want_msg), "case '%s': message '%s' lacks '%s'", bc->name,
                  err.msg, bc->want_msg);
        CHECK_MSG(err.code == bc->want, "case '%s': err.code %d", bc->name, (int)err.code);
        CHECK_MSG(memcmp(&h, &h_before, sizeof h) == 0, "case '%s': header written on failure",
                  bc->name);

        /* npy_decode (always exact) refuses it too, leaving *out alone. */
        double sentinel = 0.0, *out = &sentinel;
        hd_err_clear(&err);
        rc = npy_decode(buf, len, bc->max_elems, 1, NULL, &out, &err);
        CHECK_MSG(rc == bc->want, "case '%s' decode: rc %s (%s)", bc->name, hd_rc_name(rc),
                  err.msg);
        CHECK_MSG(out == &sentinel, "case '%s' decode: *out written on failure", bc->name);
        printf("  malformed: %-30s -> %-10s %s\n", bc->name, hd_rc_name(rc), err.msg);
    }
}

/* Variants numpy also accepts: other quoting, order, spacing, version 2.0,
 * old 16-byte alignment, trailing-comma-free dicts. */
static void test_accepted_variants(void) {
    static uint8_t buf[IMG_CAP];
    static const struct {
        const char *dict;
        int major;
        size_t align, ndim, s0, s1, count;
    } ok[] = {
        {GOOD, 1, 64, 2, 2, 3, 6},
        {"{\"descr\": \"<f8\", \"fortran_order\": False, \"shape\": (2, 3)}", 1, 64, 2, 2, 3, 6},
        {"{'shape': (2,3), 'fortran_order': False, 'descr': '<f8'}", 1, 64, 2, 2, 3, 6},
        {" {\t'descr' :'<f8' ,'fortran_order':False,'shape':( 2 , 3 , ) , } ", 1, 64, 2, 2, 3, 6},
        {GOOD, 2, 64, 2, 2, 3, 6},
        {GOOD, 1, 16, 2, 2, 3, 6},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }", 1, 16, 1, 6, 0, 6},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (), }", 1, 64, 0, 0, 0, 1},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (0, 3), }", 1, 64, 2, 0, 3, 0},
    };
    for (size_t c = 0; c < sizeof ok / sizeof ok[0]; c++) {
        size_t len = make_image(buf, ok[c].major, ok[c].dict, ok[c].align, ok[c].count * 8);
        hd_err err;
        hd_err_clear(&err);
        npy_header h;
        hd_rc rc = npy_parse_header(buf, len, 100, 1, &h, &err);
        CHECK_MSG(rc == HD_OK, "variant %zu: %s", c, err.msg);
        if (rc != HD_OK) continue;
        CHECK_EQ_INT(h.dtype, NPY_F64);
        CHECK_EQ_INT(h.ndim, ok[c].ndim);
        if (h.ndim > 0) CHECK_EQ_INT(h.shape[0], ok[c].s0);
        if (h.ndim > 1) CHECK_EQ_INT(h.shape[1], ok[c].s1);
        CHECK_EQ_INT(h.count, ok[c].count);
        CHECK_EQ_INT(h.data_offset, len - ok[c].count * 8);
        CHECK_EQ_INT(h.data_offset % ok[c].align, 0);
    }
    /* Without exact, trailing bytes are fine. */
    size_t len = make_image(buf, 1, GOOD, 64, 60);
    npy_header h;
    CHECK_EQ_INT(npy_parse_header(buf, len, 6, 0, &h, NULL), HD_OK);
    CHECK_EQ_INT(npy_parse_header(buf, len, 6, 1, &h, NULL), HD_EFORMAT);
}

/* ---- non-finite values and decode_into ---------------------------------- */

static void test_nonfinite(void) {
    const double v[5] = {1.0, 2.0, 3.0, (double)NAN, 5.0};
    const size_t n = 5;
    uint8_t *img = NULL;
    size_t len = 0;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F64, 1, &n, v, &img, &len, &err), HD_OK);
    double sentinel = 0.0, *out = &sentinel;
    CHECK_EQ_INT(npy_decode(img, len, 10, 1, NULL, &out, &err), HD_ENONFINITE);
    CHECK_MSG(contains(err.msg, "nan at index 3"), "%s", err.msg);
    CHECK(out == &sentinel);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode(img, len, 10, 0, NULL, &out, &err), HD_OK);
    CHECK(out != &sentinel && isnan(out[3]) && out[4] == 5.0);
    if (out != &sentinel) free(out);
    free(img);

    const double w[3] = {1.0, -(double)INFINITY, (double)INFINITY};
    const size_t m = 3;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F32, 1, &m, w, &img, &len, &err), HD_OK);
    out = &sentinel;
    CHECK_EQ_INT(npy_decode(img, len, 10, 1, NULL, &out, &err), HD_ENONFINITE);
    CHECK_MSG(contains(err.msg, "-inf at index 1"), "%s", err.msg);
    double into[3] = {7.0, 7.0, 7.0};
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, NULL, 1, &m, 1, into, &err), HD_ENONFINITE);
    CHECK(into[0] == 7.0 && into[1] == 7.0 && into[2] == 7.0);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, NULL, 1, &m, 0, into, &err), HD_OK);
    CHECK(into[0] == 1.0 && isinf(into[1]) && into[1] < 0 && isinf(into[2]) && into[2] > 0);
    free(img);
}

static void test_decode_into(void) {
    static const size_t s34[] = {3, 4}, s43[] = {4, 3}, s12[] = {12}, s345[] = {3, 4, 5};
    double v[12];
    for (size_t i = 0; i < 12; i++) v[i] = (double)i - 5.5;
    uint8_t *img = NULL;
    size_t len = 0;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F32, 2, s34, v, &img, &len, &err), HD_OK);

    double out[60];
    for (size_t i = 0; i < 60; i++) out[i] = 99.0;
    npy_dtype dt = NPY_F64;
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, 2, s43, 1, out, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "(3, 4)") && contains(err.msg, "(4, 3)"), "%s", err.msg);
    CHECK_EQ_INT(dt, NPY_F64);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, 1, s12, 1, out, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "(3, 4)") && contains(err.msg, "(12,)"), "%s", err.msg);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, 3, s345, 1, out, &err), HD_EINVAL);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, 0, NULL, 1, out, &err), HD_EINVAL);
    CHECK_MSG(contains(err.msg, "()"), "%s", err.msg);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, NPY_MAX_NDIM + 1, s345, 1, out, &err), HD_EINVAL);
    /* The shape is checked before the data length: a truncated body with the
     * wrong shape is a shape error, with the right shape a format error. */
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len - 4, &dt, 2, s43, 1, out, &err), HD_EINVAL);
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len - 4, &dt, 2, s34, 1, out, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "truncated data"), "%s", err.msg);
    int untouched = 1;
    for (size_t i = 0; i < 60; i++) untouched &= out[i] == 99.0;
    CHECK(untouched);
    CHECK_EQ_INT(dt, NPY_F64);

    hd_err_clear(&err);
    CHECK_EQ_INT(npy_decode_into(img, len, &dt, 2, s34, 1, out, &err), HD_OK);
    CHECK_EQ_INT(dt, NPY_F32);
    CHECK(all_equal(12, out, v));
    CHECK(out[12] == 99.0);
    free(img);
}

static void test_encode_errors(void) {
    static const size_t big[] = {(size_t)1 << 40, (size_t)1 << 40},
                        s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    uint8_t sentinel = 0, *img = &sentinel;
    size_t len = 77;
    double one = 1.0;
    hd_err err;
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode((npy_dtype)2, 1, s9, &one, &img, &len, &err), HD_EINVAL);
    CHECK(contains(err.msg, "dtype"));
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F64, 9, s9, &one, &img, &len, &err), HD_EINVAL);
    CHECK(contains(err.msg, "9 dimensions"));
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_encode(NPY_F64, 2, big, NULL, &img, &len, &err), HD_ETOOBIG);
    CHECK(contains(err.msg, "overflows"));
    CHECK(img == &sentinel && len == 77);
}

/* ---- files -------------------------------------------------------------- */

static void test_files(const char *dir) {
    char p[512], q[512];
    static const size_t s234[] = {2, 3, 4};
    double v[24];
    for (size_t i = 0; i < 24; i++) v[i] = test_value(i + 100);
    hd_err err;
    hd_err_clear(&err);

    snprintf(p, sizeof p, "%s/a.npy", dir);
    CHECK_EQ_INT(npy_save(p, NPY_F64, 3, s234, v, &err), HD_OK);
    npy_header h;
    double *out = NULL;
    CHECK_EQ_INT(npy_load(p, 24, &h, &out, &err), HD_OK);
    CHECK_EQ_INT(h.ndim, 3);
    CHECK_EQ_INT(h.count, 24);
    CHECK_EQ_INT(h.dtype, NPY_F64);
    if (out) CHECK(all_equal(24, out, v));
    free(out);
    out = NULL;

    /* Overwrite atomically with a different vector. */
    CHECK_EQ_INT(npy_save_vec(p, NPY_F32, 7, v, &err), HD_OK);
    CHECK_EQ_INT(npy_load(p, 7, &h, &out, &err), HD_OK);
    CHECK_EQ_INT(h.ndim, 1);
    CHECK_EQ_INT(h.shape[0], 7);
    CHECK_EQ_INT(h.dtype, NPY_F32);
    if (out) CHECK_EQ_INT((double)(float)v[6] == out[6], 1);
    free(out);
    CHECK_EQ_INT(count_dir_entries(dir), 1); /* no temporary left behind */
    CHECK_MSG(err.code == HD_OK, "unexpected error: %s", err.msg);

    /* Failures leave outputs alone. */
    double sentinel = 0.0;
    out = &sentinel;
    CHECK_EQ_INT(npy_load(p, 6, &h, &out, &err), HD_ETOOBIG);
    CHECK(out == &sentinel);
    hd_err_clear(&err);
    snprintf(q, sizeof q, "%s/missing.npy", dir);
    CHECK_EQ_INT(npy_load(q, 100, &h, &out, &err), HD_ENOTFOUND);
    CHECK(contains(err.msg, "missing.npy"));
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_load(dir, 100, &h, &out, &err), HD_EIO);
    hd_err_clear(&err);
    snprintf(q, sizeof q, "%s/no/such/dir/b.npy", dir);
    CHECK_EQ_INT(npy_save_vec(q, NPY_F64, 3, v, &err), HD_EIO);
    CHECK(err.msg[0] != '\0');

    /* A truncated file and a junk file. */
    uint8_t *img = NULL;
    size_t len = 0;
    CHECK_EQ_INT(npy_encode(NPY_F64, 3, s234, v, &img, &len, NULL), HD_OK);
    snprintf(q, sizeof q, "%s/trunc.npy", dir);
    FILE *f = fopen(q, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK_EQ_INT(fwrite(img, 1, len - 1, f), len - 1);
        fclose(f);
    }
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_load(q, 100, &h, &out, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "truncated data"), "%s", err.msg);
    free(img);
    snprintf(q, sizeof q, "%s/junk.npy", dir);
    f = fopen(q, "wb");
    if (f) {
        fputs("hello", f);
        fclose(f);
    }
    hd_err_clear(&err);
    CHECK_EQ_INT(npy_load(q, 100, &h, &out, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "bad magic"), "%s", err.msg);
    CHECK(out == &sentinel);
}

/* ---- numpy interoperability --------------------------------------------- */

static const double interop_vals[6] = {0.1, -1.0 / 3.0, 2.5, 1e-3, 12345.678, -7.0};

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
    char p[512];
    static const size_t s23[] = {2, 3}, s234[] = {2, 3, 4};
    double v24[24], zero_d = 42.5;
    for (size_t i = 0; i < 24; i++) v24[i] = test_value(i + 7);
    hd_err err;
    hd_err_clear(&err);

    /* C writes, numpy reads (and re-saves: the bytes must be identical). */
    snprintf(p, sizeof p, "%s/c_f64.npy", dir);
    CHECK_EQ_INT(npy_save(p, NPY_F64, 2, s23, interop_vals, &err), HD_OK);
    snprintf(p, sizeof p, "%s/c_f32.npy", dir);
    CHECK_EQ_INT(npy_save(p, NPY_F32, 2, s23, interop_vals, &err), HD_OK);
    snprintf(p, sizeof p, "%s/c_0d.npy", dir);
    CHECK_EQ_INT(npy_save(p, NPY_F64, 0, NULL, &zero_d, &err), HD_OK);
    snprintf(p, sizeof p, "%s/c_3d.npy", dir);
    CHECK_EQ_INT(npy_save(p, NPY_F32, 3, s234, v24, &err), HD_OK);
    snprintf(p, sizeof p, "%s/c_vec.npy", dir);
    CHECK_EQ_INT(npy_save_vec(p, NPY_F64, 5, v24, &err), HD_OK);
    snprintf(p, sizeof p, "%s/c_empty.npy", dir);
    CHECK_EQ_INT(npy_save_vec(p, NPY_F64, 0, NULL, &err), HD_OK);
    CHECK_MSG(err.code == HD_OK, "unexpected error: %s", err.msg);

    snprintf(p, sizeof p, "%s/check.py", dir);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs("import io, sys\n"
          "import numpy as np\n"
          "d = sys.argv[1]\n"
          "def chk(name, dtype, shape, vals):\n"
          "    a = np.load(d + '/' + name)\n"
          "    assert a.dtype == np.dtype(dtype), (name, a.dtype)\n"
          "    assert a.shape == shape, (name, a.shape)\n"
          "    exp = np.array(vals, dtype=np.float64).astype(dtype).reshape(shape)\n"
          "    assert np.array_equal(a, exp), (name, a, exp)\n"
          "    b = io.BytesIO()\n"
          "    np.save(b, exp)\n"
          "    with open(d + '/' + name, 'rb') as fh:\n"
          "        assert fh.read() == b.getvalue(), name + ': bytes differ from np.save'\n",
          f);
    fputs("v6 = ", f);
    fprint_list(f, 6, interop_vals);
    fputs("\nv24 = ", f);
    fprint_list(f, 24, v24);
    fputs("\nchk('c_f64.npy', '<f8', (2, 3), v6)\n"
          "chk('c_f32.npy', '<f4', (2, 3), v6)\n"
          "chk('c_0d.npy', '<f8', (), 42.5)\n"
          "chk('c_3d.npy', '<f4', (2, 3, 4), v24)\n"
          "chk('c_vec.npy', '<f8', (5,), v24[:5])\n"
          "chk('c_empty.npy', '<f8', (0,), [])\n"
          "np.save(d + '/py_f64.npy', np.array(v6, dtype=np.float64).reshape(2, 3))\n"
          "np.save(d + '/py_f32.npy', np.array(v6, dtype=np.float32).reshape(2, 3))\n"
          "np.save(d + '/py_fortran.npy', np.asfortranarray(np.arange(6.0).reshape(2, 3)))\n"
          "np.save(d + '/py_i4.npy', np.arange(6, dtype=np.int32).reshape(2, 3))\n"
          "print('numpy side ok')\n",
          f);
    fclose(f);

    char cmd[1200];
    fflush(stdout);
    snprintf(cmd, sizeof cmd, "%s %s/check.py %s", py, dir, dir);
    CHECK_MSG(system(cmd) == 0, "python check failed: %s", cmd);

    /* numpy writes, C reads. */
    npy_header h;
    double *out = NULL;
    snprintf(p, sizeof p, "%s/py_f64.npy", dir);
    CHECK_EQ_INT(npy_load(p, 6, &h, &out, &err), HD_OK);
    CHECK_EQ_INT(h.dtype, NPY_F64);
    CHECK_EQ_INT(h.ndim, 2);
    CHECK(h.shape[0] == 2 && h.shape[1] == 3);
    if (out) CHECK(all_equal(6, out, interop_vals));
    free(out);
    out = NULL;
    snprintf(p, sizeof p, "%s/py_f32.npy", dir);
    CHECK_EQ_INT(npy_load(p, 6, &h, &out, &err), HD_OK);
    CHECK_EQ_INT(h.dtype, NPY_F32);
    CHECK(h.ndim == 2 && h.shape[0] == 2 && h.shape[1] == 3);
    if (out) {
        double want[6];
        for (size_t i = 0; i < 6; i++) want[i] = (double)(float)interop_vals[i];
        CHECK(all_equal(6, out, want));
    }
    free(out);
    out = NULL;
    CHECK_MSG(err.code == HD_OK, "unexpected error: %s", err.msg);
    snprintf(p, sizeof p, "%s/py_fortran.npy", dir);
    CHECK_EQ_INT(npy_load(p, 6, &h, &out, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "fortran_order True"), "%s", err.msg);
    hd_err_clear(&err);
    snprintf(p, sizeof p, "%s/py_i4.npy", dir);
    CHECK_EQ_INT(npy_load(p, 6, &h, &out, &err), HD_EFORMAT);
    CHECK_MSG(contains(err.msg, "'<i4'"), "%s", err.msg);
    CHECK(out == NULL);
}

int main(void) {
    test_roundtrip();
    test_header_text();
    test_f32_rounding();
    test_malformed();
    test_accepted_variants();
    test_nonfinite();
    test_decode_into();
    test_encode_errors();

    char dir[] = "/tmp/test_npy.XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK_MSG(0, "mkdtemp failed");
    } else {
        char sub[64];
        snprintf(sub, sizeof sub, "%s/files", dir);
        CHECK(mkdir(sub, 0700) == 0);
        test_files(sub);
        CHECK_EQ_INT(remove_dir(sub), 0);
        snprintf(sub, sizeof sub, "%s/interop", dir);
        CHECK(mkdir(sub, 0700) == 0);
        test_numpy_interop(sub);
        CHECK_EQ_INT(remove_dir(sub), 0);
        CHECK_EQ_INT(rmdir(dir), 0);
    }
    return check_finish("test_npy");
}
