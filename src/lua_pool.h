/*
** lua_pool — freed small blocks of one Lua state, kept for its next allocations (issue 16).
**
** An event's tables, strings and closures are a hundred and fifty small blocks or so, made
** while it is decoded and handled and freed by the collector soon after, in bursts. glibc
** keeps only seven freed blocks of a size at hand (its tcache); past that, each malloc and
** free goes through its bins and costs 100 to 200 instructions: about an eighth of the
** instructions of a typical event. This keeps freed blocks of up to LH_POOL_MAX bytes on a
** list per size, up to LH_POOL_CAP bytes in all, and hands them out again first. The cap
** is what a typical event's bursts need, no more: at 4 MiB a 1 MB import took 12 % fewer
** instructions but ran 15 % slower, its blocks handed back from all over the heap where
** glibc carves a burst of new ones side by side.
**
** Sizes are rounded up to glibc's own (16n - 8 usable bytes), so a block costs no more memory
** than malloc would give it. A pool belongs to one state: not thread-safe, as a state is not.
** Under AddressSanitizer a kept block is poisoned but for its link, so a use after free is
** still caught.
*/
#ifndef LH_LUA_POOL_H
#define LH_LUA_POOL_H

#include <stddef.h>

#define LH_POOL_MAX 1016u /* the largest block kept (a chunk of 1 KiB) */
/* chunks of 32, 48 .. LH_POOL_MAX + 8 bytes */
#define LH_POOL_CLASSES ((LH_POOL_MAX + 8) / 16 - 1)
#define LH_POOL_CAP     (512u << 10) /* bytes kept in all; beyond, blocks go back to malloc */

typedef struct lh_pool_s {
    void *free[LH_POOL_CLASSES]; /* a list per size, linked through the blocks' first bytes */
    size_t kept;                 /* bytes on the lists */
} lh_pool_t;

/** lua_Alloc's job for `pool`, nsize > 0: a block of nsize bytes for `ptr` (NULL: a new one;
 *  else osize bytes, which are kept up to nsize). NULL when out of memory (ptr untouched);
 *  never when nsize <= osize, as Lua requires. */
void *lh_pool_realloc(lh_pool_t *pool, void *ptr, size_t osize, size_t nsize);
/** Takes back ptr, a block of osize bytes of this pool's (NULL: nothing). */
void lh_pool_free(lh_pool_t *pool, void *ptr, size_t osize);
/** Gives every kept block back to malloc: after lua_close. */
void lh_pool_drain(lh_pool_t *pool);

#endif
