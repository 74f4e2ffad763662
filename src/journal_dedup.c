#include "journal_dedup.h"

#include <stdlib.h>
#include <string.h>

struct lh_dedup_entry_s {
    lh_dedup_entry_t *newer; /* toward d->newest */
    lh_dedup_entry_t *chain; /* the slot's next */
    int64_t id;
    double received;
    unsigned char digest[32];
};

void lh_dedup_init(lh_dedup_t *d, double window)
{
    memset(d, 0, sizeof(*d));
    d->window = window;
}

static size_t slot_of(const lh_dedup_t *d, const unsigned char *digest)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h)); /* a digest's bytes are already uniform */
    return (size_t)(h & (d->cap - 1));
}

static void unchain(lh_dedup_t *d, lh_dedup_entry_t *e)
{
    lh_dedup_entry_t **p = &d->slots[slot_of(d, e->digest)];
    while (*p && *p != e)
        p = &(*p)->chain;
    if (*p)
        *p = e->chain;
}

static void expire(lh_dedup_t *d, double now)
{
    while (d->oldest && d->oldest->received < now - d->window) {
        lh_dedup_entry_t *e = d->oldest;
        d->oldest = e->newer;
        if (d->oldest == NULL)
            d->newest = NULL;
        unchain(d, e);
        free(e);
        d->n--;
    }
}

static int grow(lh_dedup_t *d)
{
    size_t cap = d->cap ? d->cap * 2 : 256;
    lh_dedup_entry_t **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    free(d->slots);
    d->slots = slots;
    d->cap = cap;
    for (lh_dedup_entry_t *e = d->oldest; e; e = e->newer) {
        size_t k = slot_of(d, e->digest);
        e->chain = slots[k];
        slots[k] = e;
    }
    return 0;
}

int64_t lh_dedup_find(lh_dedup_t *d, const unsigned char *digest, double now)
{
    expire(d, now);
    if (d->cap == 0)
        return 0;
    for (lh_dedup_entry_t *e = d->slots[slot_of(d, digest)]; e; e = e->chain)
        if (memcmp(e->digest, digest, 32) == 0)
            return e->id;
    return 0;
}

void lh_dedup_add(lh_dedup_t *d, const unsigned char *digest, int64_t id, double received)
{
    if (d->window <= 0 || (d->n + 1 > d->cap && grow(d) != 0))
        return;
    lh_dedup_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return;
    memcpy(e->digest, digest, 32);
    e->id = id;
    e->received = received;
    size_t k = slot_of(d, digest);
    e->chain = d->slots[k];
    d->slots[k] = e;
    if (d->newest)
        d->newest->newer = e;
    else
        d->oldest = e;
    d->newest = e;
    d->n++;
}

void lh_dedup_drop(lh_dedup_t *d, int64_t id)
{
    lh_dedup_entry_t **p = &d->oldest, *prev = NULL;
    while (*p && (*p)->id != id)
        prev = *p, p = &(*p)->newer;
    lh_dedup_entry_t *e = *p;
    if (e == NULL)
        return;
    *p = e->newer;
    if (d->newest == e)
        d->newest = prev;
    unchain(d, e);
    free(e);
    d->n--;
}

void lh_dedup_free(lh_dedup_t *d)
{
    while (d->oldest) {
        lh_dedup_entry_t *e = d->oldest;
        d->oldest = e->newer;
        free(e);
    }
    free(d->slots);
    lh_dedup_init(d, d->window);
}
