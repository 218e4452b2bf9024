/* NumPy .npy codec: the on-disk and on-wire format for every tensor the
 * server and workers exchange (gradients, hyperparameters, distilled data).
 * Reads and writes format 1.0 (reads 2.0 too), little-endian float32 ('<f4')
 * and float64 ('<f8'), C order only, 0 to NPY_MAX_NDIM dimensions. Headers
 * are written byte for byte as numpy.save writes them. In memory, values are
 * always double. No logging; errors come back as hd_rc plus an hd_err. All
 * functions are thread-safe (no shared state). */
#ifndef HD_NPY_H
#define HD_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define NPY_MAX_NDIM 8
/* Largest header (preamble + dict + padding) accepted when reading. numpy
 * never writes more than a few hundred bytes for the shapes we support. */
#define NPY_MAX_HEADER_LEN 65536

typedef enum {
    NPY_F32 = 4, /* '<f4', value is the item size in bytes */
    NPY_F64 = 8  /* '<f8', value is the item size in bytes */
} npy_dtype;

typedef struct {
    npy_dtype dtype;            /* element type on disk / wire */
    size_t ndim;                /* number of dimensions, 0..NPY_MAX_NDIM */
    size_t shape[NPY_MAX_NDIM]; /* extents; entries >= ndim are 0 */
    size_t count;               /* product of shape (1 for ndim 0), no overflow */
    size_t data_offset;         /* byte offset of the data in the image */
} npy_header;

/* Parse and validate the header at the start of buf (len bytes, borrowed):
 * magic, version (1.0 or 2.0), header length, the dict (keys 'descr',
 * 'fortran_order' and 'shape' in any order, each exactly once, nothing else),
 * dtype '<f4' or '<f8', fortran_order False, overflow-checked sizes, then
 * count <= max_elems, then len >= data_offset + count * itemsize and, when
 * exact is nonzero, len == data_offset + count * itemsize (trailing bytes are
 * refused). The data start need not be 64-byte aligned (old numpy aligned to
 * 16). On success fills *h; on failure *h is untouched. Nothing is allocated.
 * Returns HD_OK; HD_EFORMAT for malformed or unsupported images (bad magic,
 * bad version, bad dict, unsupported dtype, fortran_order True, more than
 * NPY_MAX_NDIM dimensions, truncated data, trailing bytes); HD_ETOOBIG when
 * the element or byte count overflows size_t, exceeds max_elems, or the
 * header exceeds NPY_MAX_HEADER_LEN. */
hd_rc npy_parse_header(const uint8_t *buf, size_t len, size_t max_elems, int exact, npy_header *h,
                       hd_err *err);

/* Decode the .npy image buf (len bytes, borrowed; trailing bytes refused) into
 * a new array of doubles (float32 data is widened exactly). On success *out is
 * returned owned (release with free(); never NULL, even for zero elements) and
 * *h, if h is not NULL, receives the header. With reject_nonfinite nonzero a
 * NaN or Inf anywhere fails with HD_ENONFINITE naming the first index. On
 * failure *out and *h are untouched. Returns HD_OK, HD_EFORMAT, HD_ETOOBIG,
 * HD_ENONFINITE or HD_ENOMEM. */
hd_rc npy_decode(const uint8_t *buf, size_t len, size_t max_elems, int reject_nonfinite,
                 npy_header *h, double **out, hd_err *err);

/* Decode the .npy image buf (len bytes, borrowed; trailing bytes refused) into
 * the caller's array out, which holds the product of shape[0..ndim) doubles.
 * The image must have exactly the expected shape: ndim or any extent that
 * differs fails with HD_EINVAL naming both shapes, checked before the data
 * length so that a header can be validated early. *dtype_out (if not NULL)
 * receives the on-wire dtype. With reject_nonfinite nonzero NaN/Inf fails with
 * HD_ENONFINITE. On failure nothing is written to out or *dtype_out. Returns
 * HD_OK, HD_EINVAL (also for ndim > NPY_MAX_NDIM or an overflowing expected
 * shape), HD_EFORMAT, HD_ETOOBIG or HD_ENONFINITE. */
hd_rc npy_decode_into(const uint8_t *buf, size_t len, npy_dtype *dtype_out, size_t ndim,
                      const size_t *shape, int reject_nonfinite, double *out, hd_err *err);

/* Encode data (product of shape[0..ndim) doubles, borrowed; may be NULL when
 * that product is 0; shape may be NULL when ndim is 0) as a .npy image of the
 * given dtype. NPY_F32 rounds to nearest float (values beyond the float range
 * become +-Inf, as in numpy). On success *out is a new buffer returned owned
 * (release with free()) of *out_len bytes; on failure both are untouched.
 * Non-finite values are written as they are. Returns HD_OK, HD_EINVAL (bad
 * dtype, ndim > NPY_MAX_NDIM), HD_ETOOBIG (size overflow) or HD_ENOMEM. */
hd_rc npy_encode(npy_dtype dtype, size_t ndim, const size_t *shape, const double *data,
                 uint8_t **out, size_t *out_len, hd_err *err);

/* Size in bytes of the header (preamble + dict + padding, a multiple of 64)
 * that npy_encode writes for this dtype and shape, i.e. the data offset; for
 * streaming writers. Returns 0 for an invalid dtype or ndim > NPY_MAX_NDIM. */
size_t npy_header_size(npy_dtype dtype, size_t ndim, const size_t *shape);

/* Write data as a .npy file at path (borrowed), atomically: the image goes to
 * a new temporary file in the same directory (mode 0666 minus umask, like
 * numpy.save), is fsync'ed and then renamed over path, so readers see either
 * the old file or the complete new one. Arguments as for npy_encode. Returns
 * HD_OK, HD_EINVAL, HD_ETOOBIG, HD_ENOMEM or HD_EIO (with the errno text). */
hd_rc npy_save(const char *path, npy_dtype dtype, size_t ndim, const size_t *shape,
               const double *data, hd_err *err);

/* Read the .npy file at path (borrowed) as for npy_decode without non-finite
 * rejection. The header is read and checked against max_elems and the file
 * size before the data is read or anything large is allocated. On success *out
 * is returned owned (free()) and *h, if not NULL, receives the header; on
 * failure both are untouched. Returns HD_OK, HD_ENOTFOUND (no such file),
 * HD_EIO, HD_EFORMAT, HD_ETOOBIG or HD_ENOMEM. */
hd_rc npy_load(const char *path, size_t max_elems, npy_header *h, double **out, hd_err *err);

/* npy_save of a 1-D array of n elements. */
hd_rc npy_save_vec(const char *path, npy_dtype dtype, size_t n, const double *data, hd_err *err);

#endif
