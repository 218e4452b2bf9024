/* A string-keyed hash map (open addressing, linear probing) for the
 * engine's in-memory indexes: lease id -> lease, idempotency key -> answer.
 * Keys are copied; values are borrowed pointers. Not thread-safe. */
#ifndef HD_SERVER_HMAP_H
#define HD_SERVER_HMAP_H

#include <stddef.h>

#include "err.h"

typedef struct hmap hmap_t;

/* New empty map; NULL on allocation failure. */
hmap_t *hmap_new(void);
/* Free the map and its key copies (not the values); NULL allowed. */
void hmap_free(hmap_t *h);
/* Value for key, or NULL. */
void *hmap_get(const hmap_t *h, const char *key);
/* Insert or replace. Returns HD_OK or HD_ENOMEM. */
hd_rc hmap_put(hmap_t *h, const char *key, void *value);
/* Remove key; returns the old value or NULL. */
void *hmap_del(hmap_t *h, const char *key);
size_t hmap_count(const hmap_t *h);
/* Iterate: *pos starts at 0; returns 1 and sets key/value, or 0 at the end. */
int hmap_next(const hmap_t *h, size_t *pos, const char **key, void **value);

#endif
