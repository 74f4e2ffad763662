#include "lua_pool.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define LH_POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LH_POOL_ASAN 1
#endif
#endif

#ifdef LH_POOL_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* n (1 .. LH_POOL_MAX) -> its list: chunks of 16 (k + 2) bytes, 8 of them glibc's header */
static unsigned class_of(size_t n)
{
    size_t chunk = (n + 8 + 15) & ~(size_t)15;
    return chunk < 32 ? 0 : (unsigned)(chunk / 16 - 2);
}

static size_t usable(unsigned k)
{
    return 16 * (size_t)(k + 2) - 8;
}

/* The first n bytes of a block of class k are the caller's; under ASan the rest stays
** poisoned, so an overrun past n is caught as it would be on malloc's block. */
static void expose(void *p, size_t n, unsigned k)
{
    UNPOISON(p, n);
    POISON((char *)p + n, usable(k) - n);
}

static void *take(lh_pool_t *pool, size_t n)
{
    if (n > LH_POOL_MAX)
        return malloc(n);
    unsigned k = class_of(n);
    void *p = pool->free[k];
    if (p == NULL) {
        p = malloc(usable(k)); /* the whole class, so it can serve any size of it later */
        if (p != NULL)
            expose(p, n, k);
        return p;
    }
    UNPOISON(p, sizeof(void *));
    memcpy(&pool->free[k], p, sizeof(void *));
    pool->kept -= usable(k);
    expose(p, n, k);
    return p;
}

void lh_pool_free(lh_pool_t *pool, void *ptr, size_t osize)
{
    if (ptr == NULL)
        return;
    if (osize > LH_POOL_MAX) {
        free(ptr);
        return;
    }
    unsigned k = class_of(osize);
    if (pool->kept + usable(k) > LH_POOL_CAP) {
        free(ptr);
        return;
    }
    /* the link stays readable: LeakSanitizer follows no pointer stored in poisoned bytes,
    ** and a pool still holding blocks at exit (a state never closed) must not read as a
    ** leak */
    UNPOISON(ptr, sizeof(void *));
    memcpy(ptr, &pool->free[k], sizeof(void *));
    POISON((char *)ptr + sizeof(void *), usable(k) - sizeof(void *));
    pool->free[k] = ptr;
    pool->kept += usable(k);
}

void *lh_pool_realloc(lh_pool_t *pool, void *ptr, size_t osize, size_t nsize)
{
    if (ptr == NULL)
        return take(pool, nsize);
    if (osize > LH_POOL_MAX && nsize > LH_POOL_MAX)
        return realloc(ptr, nsize);
    if (osize <= LH_POOL_MAX && nsize <= LH_POOL_MAX && class_of(osize) == class_of(nsize)) {
        expose(ptr, nsize, class_of(nsize));
        return ptr;
    }
    void *p = take(pool, nsize);
    if (p == NULL) {
        if (nsize > osize)
            return NULL;
        /* Lua counts on a shrink never failing: the block stays, bigger than it need be (a
        ** list may then hold it: it serves its class all the same) */
        if (osize <= LH_POOL_MAX)
            expose(ptr, nsize, class_of(osize));
        return ptr;
    }
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    lh_pool_free(pool, ptr, osize);
    return p;
}

void lh_pool_drain(lh_pool_t *pool)
{
    for (unsigned k = 0; k < LH_POOL_CLASSES; k++) {
        void *p = pool->free[k];
        while (p != NULL) {
            void *next;
            UNPOISON(p, sizeof(void *));
            memcpy(&next, p, sizeof(void *));
            free(p);
            p = next;
        }
        pool->free[k] = NULL;
    }
    pool->kept = 0;
}
