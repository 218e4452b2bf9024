/* Open-addressing hash map with tombstones (hmap.h). FNV-1a hashing. */
#include "hmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;   /* owned; NULL = empty or deleted */
    void *value; /* borrowed */
    int tomb;    /* 1 = deleted (probing continues past it) */
} slot;

struct hmap {
    slot *s;      /* cap slots */
    size_t cap;   /* power of two */
    size_t count; /* live keys */
    size_t used;  /* live + tombstones */
};

static uint64_t hash(const char *k) {
    uint64_t h = 1469598103934665603ull;
    for (; *k; k++) h = (h ^ (uint8_t)*k) * 1099511628211ull;
    return h;
}

hmap_t *hmap_new(void) {
    hmap_t *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->cap = 16;
    h->s = calloc(h->cap, sizeof *h->s);
    if (!h->s) {
        free(h);
        return NULL;
    }
    return h;
}

void hmap_free(hmap_t *h) {
    if (!h) return;
    for (size_t i = 0; i < h->cap; i++) free(h->s[i].key);
    free(h->s);
    free(h);
}

static slot *find(const hmap_t *h, const char *key) {
    size_t m = h->cap - 1, i = (size_t)hash(key) & m;
    for (;;) {
        slot *s = &h->s[i];
        if (!s->key && !s->tomb) return NULL;
        if (s->key && strcmp(s->key, key) == 0) return s;
        i = (i + 1) & m;
    }
}

void *hmap_get(const hmap_t *h, const char *key) {
    slot *s = find(h, key);
    return s ? s->value : NULL;
}

static hd_rc grow(hmap_t *h) {
    size_t ncap = h->count * 4 > h->cap ? h->cap * 2 : h->cap;
    slot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return HD_ENOMEM;
    for (size_t i = 0; i < h->cap; i++) {
        slot *o = &h->s[i];
        if (!o->key) continue;
        size_t j = (size_t)hash(o->key) & (ncap - 1);
        while (ns[j].key) j = (j + 1) & (ncap - 1);
        ns[j] = *o;
    }
    free(h->s);
    h->s = ns;
    h->cap = ncap;
    h->used = h->count;
    return HD_OK;
}

hd_rc hmap_put(hmap_t *h, const char *key, void *value) {
    slot *s = find(h, key);
    if (s) {
        s->value = value;
        return HD_OK;
    }
    if ((h->used + 1) * 4 >= h->cap * 3 && grow(h) != HD_OK) return HD_ENOMEM;
    char *k = strdup(key);
    if (!k) return HD_ENOMEM;
    size_t m = h->cap - 1, i = (size_t)hash(key) & m;
    while (h->s[i].key) i = (i + 1) & m;
    if (!h->s[i].tomb) h->used++;
    h->s[i].key = k;
    h->s[i].tomb = 0;
    h->s[i].value = value;
    h->count++;
    return HD_OK;
}

void *hmap_del(hmap_t *h, const char *key) {
    slot *s = find(h, key);
    if (!s) return NULL;
    void *v = s->value;
    free(s->key);
    s->key = NULL;
    s->tomb = 1;
    s->value = NULL;
    h->count--;
    return v;
}

size_t hmap_count(const hmap_t *h) { return h->count; }

int hmap_next(const hmap_t *h, size_t *pos, const char **key, void **value) {
    while (*pos < h->cap) {
        slot *s = &h->s[(*pos)++];
        if (s->key) {
            *key = s->key;
            *value = s->value;
            return 1;
        }
    }
    return 0;
}
