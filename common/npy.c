/* .npy codec (format spec: numpy/lib/format.py, NEP 1). The header is a
 * Python dict literal; we parse only the subset numpy itself writes for
 * float arrays, with a small hand-written lexer over (pointer, length), so
 * nothing in the header is trusted or NUL-terminated. Values are moved byte
 * by byte in little-endian order, so the code is correct on any host. */
#include "npy.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const uint8_t npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
#define MAGIC_LEN 6
#define ARRAY_ALIGN 64            /* numpy aligns the data start to 64 bytes */
#define GROWTH_AXIS_MAX_DIGITS 21 /* numpy pads the dict so shape[0] can grow */
#define HEADER_CAP 512            /* bound on any header we write (<= 320) */
#define SHAPE_STR_CAP 200         /* "(d, d, ...)" for 8 dims of 20 digits */

/* ---- bounded string building ------------------------------------------ */

typedef struct {
    char *p;    /* destination, NUL-terminated while len < cap */
    size_t cap; /* bytes at p */
    size_t len; /* bytes the full output needs, may exceed cap - 1 */
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

/* Python repr of a shape tuple: "()", "(5,)", "(3, 4)". */
static void shape_str(char *buf, size_t cap, size_t ndim, const size_t *shape) {
    sbuf b = {buf, cap, 0};
    buf[0] = '\0';
    sb_add(&b, "(");
    for (size_t i = 0; i < ndim; i++) sb_add(&b, "%s%zu", i ? ", " : "", shape[i]);
    sb_add(&b, "%s)", ndim == 1 ? "," : "");
}

static size_t dec_digits(size_t v) {
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static const char *dtype_descr(npy_dtype dtype) { return dtype == NPY_F32 ? "<f4" : "<f8"; }

static int dtype_valid(npy_dtype dtype) { return dtype == NPY_F32 || dtype == NPY_F64; }

/* Element count of a shape, or -1 on size_t overflow. */
static int shape_count(size_t ndim, const size_t *shape, size_t *count) {
    size_t c = 1;
    for (size_t i = 0; i < ndim; i++)
        if (hd_mul_size(c, shape[i], &c) != 0) return -1;
    *count = c;
    return 0;
}

/* ---- writing ------------------------------------------------------------ */

/* Build the complete header (preamble, dict, padding, '\n') exactly as
 * numpy.lib.format._write_array_header does for version 1.0: sorted keys,
 * repr() values, GROWTH_AXIS_MAX_DIGITS spare spaces, then pad so that the
 * data starts at a multiple of ARRAY_ALIGN (numpy always pads at least one
 * space). dtype and ndim must be valid. Returns the header size. */
static size_t header_build(npy_dtype dtype, size_t ndim, const size_t *shape,
                           uint8_t out[HEADER_CAP]) {
    char sh[SHAPE_STR_CAP];
    char dict[HEADER_CAP];
    shape_str(sh, sizeof sh, ndim, shape);
    sbuf b = {dict, sizeof dict, 0};
    sb_add(&b, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", dtype_descr(dtype), sh);
    if (ndim > 0)
        for (size_t k = dec_digits(shape[0]); k < GROWTH_AXIS_MAX_DIGITS; k++) sb_add(&b, " ");
    HD_ASSERT(b.len < sizeof dict);
    size_t hlen = b.len + 1; /* dict + '\n' */
    size_t pad = ARRAY_ALIGN - (MAGIC_LEN + 4 + hlen) % ARRAY_ALIGN;
    size_t total = MAGIC_LEN + 4 + hlen + pad;
    HD_ASSERT(total <= HEADER_CAP && hlen + pad <= 0xffff);
    memcpy(out, npy_magic, MAGIC_LEN);
    out[6] = 1;
    out[7] = 0;
    out[8] = (uint8_t)((hlen + pad) & 0xff);
    out[9] = (uint8_t)((hlen + pad) >> 8);
    memcpy(out + 10, dict, b.len);
    memset(out + 10 + b.len, ' ', pad);
    out[total - 1] = '\n';
    return total;
}

/* Little-endian stores and loads. On a little-endian host they are one
 * memcpy (one move instruction); the byte loops, which gcc does not merge,
 * made decoding an 81 KB tensor cost ~200 us instead of ~10 us. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NPY_HOST_LE 1
#else
#define NPY_HOST_LE 0
#endif

static void store_u64(uint8_t *p, uint64_t u) {
#if NPY_HOST_LE
    memcpy(p, &u, sizeof u);
#else
    for (int k = 0; k < 8; k++) p[k] = (uint8_t)(u >> (8 * k));
#endif
}

static void store_u32(uint8_t *p, uint32_t u) {
#if NPY_HOST_LE
    memcpy(p, &u, sizeof u);
#else
    for (int k = 0; k < 4; k++) p[k] = (uint8_t)(u >> (8 * k));
#endif
}

/* Round to nearest float like a numpy cast. Out-of-range conversions are
 * undefined behaviour in ISO C, so the overflow cases are spelled out:
 * |d| >= FLT_MAX + half an ulp rounds to infinity (the tie goes to the even
 * neighbour, which is 2^128), anything smaller rounds to FLT_MAX. */
static float to_f32(double d) {
    if (d >= 0x1.ffffffp127) return INFINITY;
    if (d <= -0x1.ffffffp127) return -INFINITY;
    if (d > (double)FLT_MAX) return FLT_MAX;
    if (d < -(double)FLT_MAX) return -FLT_MAX;
    return (float)d;
}

size_t npy_header_size(npy_dtype dtype, size_t ndim, const size_t *shape) {
    if (!dtype_valid(dtype) || ndim > NPY_MAX_NDIM || (ndim > 0 && !shape)) return 0;
    uint8_t hdr[HEADER_CAP];
    return header_build(dtype, ndim, shape, hdr);
}

hd_rc npy_encode(npy_dtype dtype, size_t ndim, const size_t *shape, const double *data,
                 uint8_t **out, size_t *out_len, hd_err *err) {
    if (!dtype_valid(dtype))
        return hd_err_set(err, HD_EINVAL, "npy encode: invalid dtype %d", (int)dtype);
    if (ndim > NPY_MAX_NDIM)
        return hd_err_set(err, HD_EINVAL, "npy encode: %zu dimensions, at most %d supported", ndim,
                          NPY_MAX_NDIM);
    HD_ASSERT(ndim == 0 || shape != NULL);
    size_t count, bytes, total;
    uint8_t hdr[HEADER_CAP];
    size_t hsize = header_build(dtype, ndim, shape, hdr);
    if (shape_count(ndim, shape, &count) != 0 || hd_mul_size(count, (size_t)dtype, &bytes) != 0 ||
        bytes > SIZE_MAX - hsize) {
        char sh[SHAPE_STR_CAP];
        shape_str(sh, sizeof sh, ndim, shape);
        return hd_err_set(err, HD_ETOOBIG, "npy encode: shape %s overflows size_t", sh);
    }
    total = hsize + bytes;
    HD_ASSERT(count == 0 || data != NULL);
    uint8_t *img = malloc(total);
    if (!img) return hd_err_set(err, HD_ENOMEM, "npy encode: out of memory for %zu bytes", total);
    memcpy(img, hdr, hsize);
    uint8_t *p = img + hsize;
    if (dtype == NPY_F64) {
        for (size_t i = 0; i < count; i++) {
            uint64_t u;
            memcpy(&u, &data[i], sizeof u);
            store_u64(p + 8 * i, u);
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            float f = to_f32(data[i]);
            uint32_t u;
            memcpy(&u, &f, sizeof u);
            store_u32(p + 4 * i, u);
        }
    }
    *out = img;
    *out_len = total;
    return HD_OK;
}

/* ---- header parsing ----------------------------------------------------- */

/* Cursor over the header dict text. */
typedef struct {
    const char *s; /* dict text (not NUL-terminated) */
    size_t n;      /* bytes at s */
    size_t i;      /* cursor, 0..n */
    size_t base;   /* offset of s[0] in the image, for messages */
    hd_err *err;   /* where errors go */
} lexer;

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void lx_skip_ws(lexer *lx) {
    while (lx->i < lx->n && is_ws(lx->s[lx->i])) lx->i++;
}

/* Current byte, or 0 at the end of the text (header bytes are never 0). */
static char lx_peek(const lexer *lx) { return lx->i < lx->n ? lx->s[lx->i] : '\0'; }

/* Format error at the cursor, naming what was expected and what was found. */
static hd_rc lx_fail(lexer *lx, const char *expected) {
    if (lx->i >= lx->n)
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: expected %s, found end of header",
                          expected);
    return hd_err_set(lx->err, HD_EFORMAT, "npy header: expected %s at offset %zu, found '%c'",
                      expected, lx->base + lx->i, lx->s[lx->i]);
}

/* A Python string literal in single or double quotes, without escapes. */
static hd_rc lx_string(lexer *lx, const char **str, size_t *len, const char *what) {
    char q = lx_peek(lx);
    if (q != '\'' && q != '"') return lx_fail(lx, what);
    size_t start = ++lx->i;
    while (lx->i < lx->n && lx->s[lx->i] != q) {
        if (lx->s[lx->i] == '\\')
            return hd_err_set(lx->err, HD_EFORMAT,
                              "npy header: escape in string at offset %zu not supported",
                              lx->base + lx->i);
        lx->i++;
    }
    if (lx->i >= lx->n)
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: unterminated string at offset %zu",
                          lx->base + start - 1);
    *str = lx->s + start;
    *len = lx->i - start;
    lx->i++;
    return HD_OK;
}

/* Length of the token at the cursor (up to whitespace or a delimiter). */
static size_t lx_token_len(const lexer *lx) {
    size_t j = lx->i;
    while (j < lx->n && !is_ws(lx->s[j]) && !strchr(",:(){}", lx->s[j])) j++;
    return j - lx->i;
}

static hd_rc parse_descr(lexer *lx, npy_dtype *dtype) {
    const char *v;
    size_t vlen;
    char q = lx_peek(lx);
    if (q != '\'' && q != '"')
        return hd_err_set(lx->err, HD_EFORMAT,
                          "npy header: unsupported dtype: 'descr' is not a string (structured "
                          "dtypes are not supported)");
    hd_rc rc = lx_string(lx, &v, &vlen, "dtype string");
    if (rc != HD_OK) return rc;
    if (vlen == 3 && memcmp(v, "<f4", 3) == 0)
        *dtype = NPY_F32;
    else if (vlen == 3 && memcmp(v, "<f8", 3) == 0)
        *dtype = NPY_F64;
    else
        return hd_err_set(lx->err, HD_EFORMAT,
                          "npy header: unsupported dtype '%.*s' (only '<f4' and '<f8')",
                          (int)(vlen > 32 ? 32 : vlen), v);
    return HD_OK;
}

static hd_rc parse_fortran(lexer *lx) {
    size_t t = lx_token_len(lx);
    const char *w = lx->s + lx->i;
    if (t == 5 && memcmp(w, "False", 5) == 0) {
        lx->i += t;
        return HD_OK;
    }
    if (t == 4 && memcmp(w, "True", 4) == 0)
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: fortran_order True not supported");
    return hd_err_set(lx->err, HD_EFORMAT,
                      "npy header: fortran_order must be True or False, found '%.*s'",
                      (int)(t > 32 ? 32 : t), w);
}

/* One tuple element: a non-negative decimal integer that fits size_t. */
static hd_rc parse_dim(lexer *lx, size_t *out) {
    size_t t = lx_token_len(lx);
    const char *w = lx->s + lx->i;
    int show = (int)(t > 32 ? 32 : t);
    if (t == 0) return lx_fail(lx, "a dimension");
    if (t > 1 && w[0] == '-' && w[1] >= '0' && w[1] <= '9')
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: negative dimension %.*s in shape", show,
                          w);
    size_t v = 0;
    for (size_t k = 0; k < t; k++) {
        if (w[k] < '0' || w[k] > '9')
            return hd_err_set(lx->err, HD_EFORMAT, "npy header: bad dimension '%.*s' in shape",
                              show, w);
        size_t d = (size_t)(w[k] - '0');
        if (v > (SIZE_MAX - d) / 10)
            return hd_err_set(lx->err, HD_ETOOBIG,
                              "npy header: dimension %.*s in shape does not fit size_t", show, w);
        v = v * 10 + d;
    }
    lx->i += t;
    *out = v;
    return HD_OK;
}

/* A Python tuple of ints: "()", "(5,)", "(3, 4)" or "(3, 4,)". */
static hd_rc parse_shape(lexer *lx, size_t *ndim, size_t shape[NPY_MAX_NDIM]) {
    if (lx_peek(lx) != '(')
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: 'shape' is not a tuple");
    lx->i++;
    size_t n = 0;
    int trailing_comma = 0;
    lx_skip_ws(lx);
    while (lx_peek(lx) != ')') {
        if (n == NPY_MAX_NDIM)
            return hd_err_set(lx->err, HD_EFORMAT, "npy header: shape has more than %d dimensions",
                              NPY_MAX_NDIM);
        hd_rc rc = parse_dim(lx, &shape[n]);
        if (rc != HD_OK) return rc;
        n++;
        lx_skip_ws(lx);
        trailing_comma = 0;
        if (lx_peek(lx) == ',') {
            lx->i++;
            trailing_comma = 1;
            lx_skip_ws(lx);
        } else if (lx_peek(lx) != ')') {
            return lx_fail(lx, "',' or ')' in shape");
        }
    }
    lx->i++;
    /* "(5)" is the int 5 in Python, not a tuple; numpy refuses it too. */
    if (n == 1 && !trailing_comma)
        return hd_err_set(lx->err, HD_EFORMAT,
                          "npy header: shape (%zu) is not a tuple (a 1-D shape is written (%zu,))",
                          shape[0], shape[0]);
    *ndim = n;
    return HD_OK;
}

enum { KEY_DESCR = 1, KEY_FORTRAN = 2, KEY_SHAPE = 4, KEY_ALL = 7 };

/* The dict: each of the three keys exactly once, in any order, nothing else,
 * an optional trailing comma, then only whitespace. */
static hd_rc parse_dict(lexer *lx, npy_header *h) {
    unsigned seen = 0;
    hd_rc rc;
    lx_skip_ws(lx);
    if (lx_peek(lx) != '{') return lx_fail(lx, "'{' starting the header dict");
    lx->i++;
    lx_skip_ws(lx);
    while (lx_peek(lx) != '}') {
        const char *key;
        size_t klen;
        unsigned bit;
        if ((rc = lx_string(lx, &key, &klen, "a quoted key or '}'")) != HD_OK) return rc;
        if (klen == 5 && memcmp(key, "descr", 5) == 0)
            bit = KEY_DESCR;
        else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0)
            bit = KEY_FORTRAN;
        else if (klen == 5 && memcmp(key, "shape", 5) == 0)
            bit = KEY_SHAPE;
        else
            return hd_err_set(lx->err, HD_EFORMAT, "npy header: unknown key '%.*s'",
                              (int)(klen > 32 ? 32 : klen), key);
        if (seen & bit)
            return hd_err_set(lx->err, HD_EFORMAT, "npy header: duplicate key '%.*s'", (int)klen,
                              key);
        seen |= bit;
        lx_skip_ws(lx);
        if (lx_peek(lx) != ':') return lx_fail(lx, "':' after a key");
        lx->i++;
        lx_skip_ws(lx);
        if (bit == KEY_DESCR)
            rc = parse_descr(lx, &h->dtype);
        else if (bit == KEY_FORTRAN)
            rc = parse_fortran(lx);
        else
            rc = parse_shape(lx, &h->ndim, h->shape);
        if (rc != HD_OK) return rc;
        lx_skip_ws(lx);
        if (lx_peek(lx) == ',') {
            lx->i++;
            lx_skip_ws(lx);
        } else if (lx_peek(lx) != '}') {
            return lx_fail(lx, "',' or '}' in the header dict");
        }
    }
    lx->i++;
    lx_skip_ws(lx);
    if (lx->i < lx->n)
        return hd_err_set(lx->err, HD_EFORMAT,
                          "npy header: unexpected '%c' at offset %zu after the header dict",
                          lx->s[lx->i], lx->base + lx->i);
    if (seen != KEY_ALL)
        return hd_err_set(lx->err, HD_EFORMAT, "npy header: missing key '%s'",
                          !(seen & KEY_DESCR)     ? "descr"
                          : !(seen & KEY_FORTRAN) ? "fortran_order"
                                                  : "shape");
    return HD_OK;
}

/* Magic, version and header length. On success *prefix is the preamble size
 * and *hlen the dict length field (bounded by NPY_MAX_HEADER_LEN). */
static hd_rc parse_preamble(const uint8_t *buf, size_t len, size_t *prefix, size_t *hlen,
                            hd_err *err) {
    if (len == 0) return hd_err_set(err, HD_EFORMAT, "npy: empty image");
    if (memcmp(buf, npy_magic, len < MAGIC_LEN ? len : MAGIC_LEN) != 0)
        return hd_err_set(err, HD_EFORMAT, "npy: bad magic (not a .npy image)");
    if (len < MAGIC_LEN + 4)
        return hd_err_set(err, HD_EFORMAT, "npy: truncated preamble: %zu bytes", len);
    unsigned major = buf[6], minor = buf[7];
    size_t p, hl;
    if (major == 1 && minor == 0) {
        p = 10;
        hl = (size_t)buf[8] | (size_t)buf[9] << 8;
    } else if (major == 2 && minor == 0) {
        if (len < 12) return hd_err_set(err, HD_EFORMAT, "npy: truncated preamble: %zu bytes", len);
        p = 12;
        hl = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 |
             (size_t)((uint32_t)buf[11] << 24);
    } else {
        return hd_err_set(err, HD_EFORMAT, "npy: unsupported format version %u.%u (only 1.0, 2.0)",
                          major, minor);
    }
    if (hl > NPY_MAX_HEADER_LEN - p)
        return hd_err_set(err, HD_ETOOBIG, "npy: header length %zu exceeds the limit of %d bytes",
                          hl, NPY_MAX_HEADER_LEN);
    *prefix = p;
    *hlen = hl;
    return HD_OK;
}

/* Everything that only needs the header bytes: fills *h (count and byte size
 * are overflow-checked, data_offset + count * itemsize fits size_t). */
static hd_rc parse_head(const uint8_t *buf, size_t len, npy_header *h, hd_err *err) {
    size_t prefix, hlen;
    hd_rc rc = parse_preamble(buf, len, &prefix, &hlen, err);
    if (rc != HD_OK) return rc;
    if (hlen > len - prefix)
        return hd_err_set(err, HD_EFORMAT, "npy: header length %zu beyond buffer of %zu bytes",
                          hlen, len);
    if (hlen == 0 || buf[prefix + hlen - 1] != '\n')
        return hd_err_set(err, HD_EFORMAT, "npy header: does not end with a newline");
    for (size_t k = 0; k < hlen; k++) {
        uint8_t c = buf[prefix + k];
        if ((c < 0x20 || c > 0x7e) && !is_ws((char)c))
            return hd_err_set(err, HD_EFORMAT,
                              "npy header: byte 0x%02x at offset %zu is not ASCII text", c,
                              prefix + k);
    }
    npy_header t;
    memset(&t, 0, sizeof t);
    /* The text is plain ASCII, so reading it as char is exact. */
    lexer lx = {(const char *)(buf + prefix), hlen - 1, 0, prefix, err};
    if ((rc = parse_dict(&lx, &t)) != HD_OK) return rc;
    size_t bytes;
    if (shape_count(t.ndim, t.shape, &t.count) != 0 ||
        hd_mul_size(t.count, (size_t)t.dtype, &bytes) != 0 || bytes > SIZE_MAX - (prefix + hlen)) {
        char sh[SHAPE_STR_CAP];
        shape_str(sh, sizeof sh, t.ndim, t.shape);
        return hd_err_set(err, HD_ETOOBIG, "npy: shape %s overflows size_t", sh);
    }
    t.data_offset = prefix + hlen;
    *h = t;
    return HD_OK;
}

/* Size checks against the element limit and the image length. */
static hd_rc check_body(const npy_header *h, size_t len, size_t max_elems, int exact, hd_err *err) {
    if (h->count > max_elems)
        return hd_err_set(err, HD_ETOOBIG, "npy: %zu elements exceed the limit of %zu", h->count,
                          max_elems);
    size_t need = h->data_offset + h->count * (size_t)h->dtype; /* checked in parse_head */
    if (len < need)
        return hd_err_set(err, HD_EFORMAT, "npy: truncated data: need %zu bytes, have %zu", need,
                          len);
    if (exact && len != need)
        return hd_err_set(err, HD_EFORMAT,
                          "npy: %zu trailing bytes after the data (need %zu, have %zu)", len - need,
                          need, len);
    return HD_OK;
}

hd_rc npy_parse_header(const uint8_t *buf, size_t len, size_t max_elems, int exact, npy_header *h,
                       hd_err *err) {
    npy_header t;
    hd_rc rc = parse_head(buf, len, &t, err);
    if (rc == HD_OK) rc = check_body(&t, len, max_elems, exact, err);
    if (rc == HD_OK) *h = t;
    return rc;
}

/* ---- reading data ------------------------------------------------------- */

static uint64_t load_u64(const uint8_t *p) {
    uint64_t u = 0;
#if NPY_HOST_LE
    memcpy(&u, p, sizeof u);
#else
    for (int k = 7; k >= 0; k--) u = u << 8 | p[k];
#endif
    return u;
}

static uint32_t load_u32(const uint8_t *p) {
    uint32_t u = 0;
#if NPY_HOST_LE
    memcpy(&u, p, sizeof u);
#else
    for (int k = 3; k >= 0; k--) u = u << 8 | p[k];
#endif
    return u;
}

/* Refuse NaN/Inf by their bit patterns (all exponent bits set), before any
 * value is converted or written anywhere. */
static hd_rc check_finite(const uint8_t *data, npy_dtype dtype, size_t count, hd_err *err) {
    /* Fast pass without an early exit (vectorisable): OR of "exponent all
     * ones" over the whole tensor; the exact loop below runs only to name
     * the first bad index. */
    unsigned any = 0;
    if (dtype == NPY_F64) {
        for (size_t i = 0; i < count; i++)
            any |= (load_u64(data + 8 * i) & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL;
    } else {
        for (size_t i = 0; i < count; i++)
            any |= (load_u32(data + 4 * i) & 0x7f800000U) == 0x7f800000U;
    }
    if (!any) return HD_OK;
    for (size_t i = 0; i < count; i++) {
        int bad, nan;
        if (dtype == NPY_F64) {
            uint64_t u = load_u64(data + 8 * i);
            bad = (u & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL;
            nan = (u & 0x000fffffffffffffULL) != 0;
        } else {
            uint32_t u = load_u32(data + 4 * i);
            bad = (u & 0x7f800000U) == 0x7f800000U;
            nan = (u & 0x007fffffU) != 0;
        }
        if (bad) {
            int neg = data[(size_t)dtype * i + (size_t)dtype - 1] >> 7;
            return hd_err_set(err, HD_ENONFINITE, "npy: non-finite value %s at index %zu",
                              nan   ? "nan"
                              : neg ? "-inf"
                                    : "inf",
                              i);
        }
    }
    return HD_OK;
}

static void convert(const uint8_t *data, npy_dtype dtype, size_t count, double *out) {
    if (dtype == NPY_F64) {
        for (size_t i = 0; i < count; i++) {
            uint64_t u = load_u64(data + 8 * i);
            memcpy(&out[i], &u, sizeof u);
        }
    } else {
        for (size_t i = 0; i < count; i++) {
            uint32_t u = load_u32(data + 4 * i);
            float f;
            memcpy(&f, &u, sizeof f);
            out[i] = (double)f;
        }
    }
}

hd_rc npy_decode(const uint8_t *buf, size_t len, size_t max_elems, int reject_nonfinite,
                 npy_header *h, double **out, hd_err *err) {
    npy_header t;
    hd_rc rc = npy_parse_header(buf, len, max_elems, 1, &t, err);
    if (rc != HD_OK) return rc;
    const uint8_t *data = buf + t.data_offset;
    if (reject_nonfinite && (rc = check_finite(data, t.dtype, t.count, err)) != HD_OK) return rc;
    size_t bytes;
    if (hd_mul_size(t.count ? t.count : 1, sizeof(double), &bytes) != 0)
        return hd_err_set(err, HD_ETOOBIG, "npy: %zu doubles overflow size_t", t.count);
    double *arr = malloc(bytes);
    if (!arr) return hd_err_set(err, HD_ENOMEM, "npy: out of memory for %zu bytes", bytes);
    convert(data, t.dtype, t.count, arr);
    *out = arr;
    if (h) *h = t;
    return HD_OK;
}

hd_rc npy_decode_into(const uint8_t *buf, size_t len, npy_dtype *dtype_out, size_t ndim,
                      const size_t *shape, int reject_nonfinite, double *out, hd_err *err) {
    if (ndim > NPY_MAX_NDIM)
        return hd_err_set(err, HD_EINVAL, "npy: expected shape has %zu dimensions, at most %d",
                          ndim, NPY_MAX_NDIM);
    HD_ASSERT(ndim == 0 || shape != NULL);
    size_t want;
    if (shape_count(ndim, shape, &want) != 0) {
        char sh[SHAPE_STR_CAP];
        shape_str(sh, sizeof sh, ndim, shape);
        return hd_err_set(err, HD_EINVAL, "npy: expected shape %s overflows size_t", sh);
    }
    npy_header t;
    hd_rc rc = parse_head(buf, len, &t, err);
    if (rc != HD_OK) return rc;
    int same = t.ndim == ndim;
    for (size_t i = 0; same && i < ndim; i++) same = t.shape[i] == shape[i];
    if (!same) {
        char got[SHAPE_STR_CAP], exp[SHAPE_STR_CAP];
        shape_str(got, sizeof got, t.ndim, t.shape);
        shape_str(exp, sizeof exp, ndim, shape);
        return hd_err_set(err, HD_EINVAL, "npy: shape mismatch: image has %s, expected %s", got,
                          exp);
    }
    if ((rc = check_body(&t, len, want, 1, err)) != HD_OK) return rc;
    const uint8_t *data = buf + t.data_offset;
    if (reject_nonfinite && (rc = check_finite(data, t.dtype, t.count, err)) != HD_OK) return rc;
    HD_ASSERT(t.count == 0 || out != NULL);
    convert(data, t.dtype, t.count, out);
    if (dtype_out) *dtype_out = t.dtype;
    return HD_OK;
}

/* ---- files -------------------------------------------------------------- */

static hd_rc io_fail(hd_err *err, hd_rc code, const char *what, const char *path, int e) {
    char et[128];
    return hd_err_set(err, code, "npy: %s %s: %s", what, path, fileio_errno_text(e, et, sizeof et));
}

/* pread n bytes at off; *got < n only at end of file. */
static int read_at(int fd, size_t off, uint8_t *p, size_t n, size_t *got) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        done += (size_t)r;
    }
    *got = done;
    return 0;
}

hd_rc npy_save(const char *path, npy_dtype dtype, size_t ndim, const size_t *shape,
               const double *data, hd_err *err) {
    uint8_t *img = NULL;
    size_t img_len = 0;
    hd_rc rc = npy_encode(dtype, ndim, shape, data, &img, &img_len, err);
    if (rc != HD_OK) return rc;
    fileio_atomic a;
    if ((rc = fileio_atomic_open(&a, "npy", path, err)) == HD_OK) {
        if ((rc = fileio_atomic_write(&a, img, img_len, err)) == HD_OK)
            rc = fileio_atomic_commit(&a, err);
        else
            fileio_atomic_abort(&a);
    }
    free(img);
    return rc;
}

hd_rc npy_save_vec(const char *path, npy_dtype dtype, size_t n, const double *data, hd_err *err) {
    const size_t shape[1] = {n};
    return npy_save(path, dtype, 1, shape, data, err);
}

hd_rc npy_load(const char *path, size_t max_elems, npy_header *h, double **out, hd_err *err) {
    hd_rc rc;
    uint8_t *head = NULL, *img = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return io_fail(err, errno == ENOENT ? HD_ENOTFOUND : HD_EIO, "open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = io_fail(err, HD_EIO, "stat", path, errno);
        goto close_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = hd_err_set(err, HD_EIO, "npy: %s is not a regular file", path);
        goto close_fd;
    }
    if ((unsigned long long)st.st_size > SIZE_MAX) {
        rc = hd_err_set(err, HD_ETOOBIG, "npy: %s is too large", path);
        goto close_fd;
    }
    size_t size = (size_t)st.st_size, got, prefix, hlen;
    uint8_t pre[12];
    size_t npre = size < sizeof pre ? size : sizeof pre;
    if (read_at(fd, 0, pre, npre, &got) != 0) {
        rc = io_fail(err, HD_EIO, "read", path, errno);
        goto close_fd;
    }
    if ((rc = parse_preamble(pre, got, &prefix, &hlen, err)) != HD_OK) goto close_fd;
    /* Read and check only the header first: a hostile file cannot make us
     * allocate more than NPY_MAX_HEADER_LEN before max_elems is enforced. */
    size_t hsize = prefix + hlen < size ? prefix + hlen : size;
    if (!(head = malloc(hsize))) {
        rc = hd_err_set(err, HD_ENOMEM, "npy: out of memory reading %s", path);
        goto close_fd;
    }
    if (read_at(fd, 0, head, hsize, &got) != 0) {
        rc = io_fail(err, HD_EIO, "read", path, errno);
        goto free_head;
    }
    npy_header t;
    if ((rc = parse_head(head, got, &t, err)) != HD_OK) goto free_head;
    if ((rc = check_body(&t, size, max_elems, 1, err)) != HD_OK) goto free_head;
    if (!(img = malloc(size))) {
        rc = hd_err_set(err, HD_ENOMEM, "npy: out of memory for %zu bytes reading %s", size, path);
        goto free_head;
    }
    if (read_at(fd, 0, img, size, &got) != 0) {
        rc = io_fail(err, HD_EIO, "read", path, errno);
        goto free_img;
    }
    if (got != size) {
        rc = hd_err_set(err, HD_EIO, "npy: %s shrank while being read (%zu of %zu bytes)", path,
                        got, size);
        goto free_img;
    }
    rc = npy_decode(img, size, max_elems, 0, h, out, err);
free_img:
    free(img);
free_head:
    free(head);
close_fd:
    close(fd);
    return rc;
}
