/* NumPy .npz archives (np.savez: a zip of .npy members, stored without
 * compression). Reads the central directory (zip64 included) and decodes
 * every member with npy.h; writes stored archives that numpy loads. Members
 * compressed with deflate (np.savez_compressed) are refused with a clear
 * error. No logging; thread-safe (no shared state). */
#ifndef HD_NPZ_H
#define HD_NPZ_H

#include <stddef.h>

#include "err.h"
#include "npy.h"

typedef struct npz_file npz_file;

/* Load every member of the archive at path (each member at most max_elems
 * numbers, the file at most 1 GiB). *out is owned by the caller, freed with
 * npz_free. Returns HD_OK, HD_EIO, HD_EFORMAT, HD_ETOOBIG, HD_ENOMEM. */
hd_rc npz_load(const char *path, size_t max_elems, npz_file **out, hd_err *err);
void npz_free(npz_file *z);
/* Number of members and the i-th member's name (without ".npy"). */
size_t npz_count(const npz_file *z);
const char *npz_name(const npz_file *z, size_t i);
/* Member by name (without ".npy"): its data as doubles (borrowed from z)
 * and, when h is non-NULL, its header. NULL if there is no such member. */
const double *npz_get(const npz_file *z, const char *name, npy_header *h);

/* One array to store. */
typedef struct {
    const char *name;    /* member name without ".npy" */
    npy_dtype dtype;     /* stored dtype */
    size_t ndim;         /* 0..NPY_MAX_NDIM */
    const size_t *shape; /* ndim entries */
    const double *data;  /* product(shape) numbers */
} npz_member;

/* Write an uncompressed archive atomically (temp file + rename). */
hd_rc npz_save(const char *path, size_t count, const npz_member *members, hd_err *err);

#endif
