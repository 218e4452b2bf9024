/* Reference-counted byte buffers (blob.h). */
#include "blob.h"

#include <stdatomic.h>
#include <stdlib.h>

struct blob {
    atomic_long refs; /* > 0 while alive */
    uint8_t *data;    /* owned */
    size_t len;       /* bytes */
};

blob_t *blob_wrap(uint8_t *data, size_t len) {
    blob_t *b = malloc(sizeof *b);
    if (!b) {
        free(data);
        return NULL;
    }
    atomic_init(&b->refs, 1);
    b->data = data;
    b->len = len;
    return b;
}

blob_t *blob_ref(blob_t *b) {
    if (b) atomic_fetch_add(&b->refs, 1);
    return b;
}

void blob_unref(blob_t *b) {
    if (!b) return;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

const uint8_t *blob_data(const blob_t *b) { return b->data; }
size_t blob_len(const blob_t *b) { return b->len; }
