/* Reference-counted immutable byte buffers: an encoded .npy of a published
 * lam or phi version is built once and shared by every response that sends
 * it (the HTTP layer drops its reference when the response is destroyed).
 * Thread-safe reference counting. */
#ifndef HD_SERVER_BLOB_H
#define HD_SERVER_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob blob_t;

/* Wrap bytes (takes ownership of data, which must come from malloc) with a
 * reference count of 1. Returns NULL (and frees data) on allocation failure. */
blob_t *blob_wrap(uint8_t *data, size_t len);
/* Add a reference; returns b. NULL allowed. */
blob_t *blob_ref(blob_t *b);
/* Drop a reference; frees at zero. NULL allowed. */
void blob_unref(blob_t *b);
const uint8_t *blob_data(const blob_t *b);
size_t blob_len(const blob_t *b);

#endif
