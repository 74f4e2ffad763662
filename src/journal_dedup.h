/*
** journal_dedup — the digests of the events accepted within --dedup-window, on the loop:
** an event whose digest (path and body) is here is a duplicate of the event named. Kept in
** memory (loaded from the journal at start) because the index trails the log: two copies
** sent at once (a hook registered for both a project and its organization) must meet here.
*/
#ifndef LH_JOURNAL_DEDUP_H
#define LH_JOURNAL_DEDUP_H

#include <stddef.h>
#include <stdint.h>

typedef struct lh_dedup_entry_s lh_dedup_entry_t;

typedef struct lh_dedup_s {
    double window;                     /* seconds; 0: off (nothing is kept) */
    lh_dedup_entry_t *oldest, *newest; /* in the order received */
    lh_dedup_entry_t **slots;          /* a hash of the same entries */
    size_t n, cap;
} lh_dedup_t;

void lh_dedup_init(lh_dedup_t *d, double window);
/** The id of the event with `digest` (32 bytes) received within the window before `now`;
 *  0: none. Forgets what the window has passed. */
int64_t lh_dedup_find(lh_dedup_t *d, const unsigned char *digest, double now);
/** Keeps `digest` as event `id`'s (out of memory: not kept, so not deduplicated). */
void lh_dedup_add(lh_dedup_t *d, const unsigned char *digest, int64_t id, double received);
/** Forgets event `id` (its write failed: it is no original). */
void lh_dedup_drop(lh_dedup_t *d, int64_t id);
void lh_dedup_free(lh_dedup_t *d);

#endif
