/* lua_pool: freed small blocks are handed out again by size class, the cap holds, a shrink
 * never fails, contents survive a move, and a Lua state runs on it. malloc is wrapped
 * (-Wl,--wrap=malloc, tests/CMakeLists.txt) so that a test can make it fail. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_pool.h"
#include "test.h"

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
static int malloc_fails; /* set: every malloc of the pool's (and the test's) fails */

void *__wrap_malloc(size_t n)
{
    return malloc_fails ? NULL : __real_malloc(n);
}

static void fill(void *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        ((unsigned char *)p)[i] = (unsigned char)(seed + i);
}

static int holds(const void *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != (unsigned char)(seed + i))
            return 0;
    return 1;
}

static void test_freed_block_serves_its_class_again(void)
{
    lh_pool_t pool = {0};
    void *a = lh_pool_realloc(&pool, NULL, 0, 40); /* 40 and 33: both 40 usable bytes */
    CHECK(a != NULL);
    fill(a, 40, 1);
    lh_pool_free(&pool, a, 40);
    CHECK_EQ_INT(pool.kept, 40);
    void *b = lh_pool_realloc(&pool, NULL, 0, 33);
    CHECK(b == a);
    CHECK_EQ_INT(pool.kept, 0);
    lh_pool_free(&pool, b, 33);
    void *c = lh_pool_realloc(&pool, NULL, 0, 100); /* another class: not that block */
    CHECK(c != NULL && c != a);
    CHECK_EQ_INT(pool.kept, 40);
    lh_pool_free(&pool, c, 100);
    lh_pool_drain(&pool);
    CHECK_EQ_INT(pool.kept, 0);
    for (unsigned k = 0; k < LH_POOL_CLASSES; k++)
        CHECK(pool.free[k] == NULL);
}

static void test_big_blocks_are_not_kept(void)
{
    lh_pool_t pool = {0};
    void *a = lh_pool_realloc(&pool, NULL, 0, LH_POOL_MAX + 1);
    CHECK(a != NULL);
    lh_pool_free(&pool, a, LH_POOL_MAX + 1);
    CHECK_EQ_INT(pool.kept, 0);
    void *b = lh_pool_realloc(&pool, NULL, 0, LH_POOL_MAX); /* the largest kept */
    lh_pool_free(&pool, b, LH_POOL_MAX);
    CHECK_EQ_INT(pool.kept, LH_POOL_MAX);
    lh_pool_drain(&pool);
}

static void test_resize_keeps_contents(void)
{
    lh_pool_t pool = {0};
    void *a = lh_pool_realloc(&pool, NULL, 0, 50);
    fill(a, 50, 7);
    void *b = lh_pool_realloc(&pool, a, 50, 56); /* same class (56 usable): in place */
    CHECK(b == a);
    CHECK(holds(b, 50, 7));
    fill(b, 56, 9);
    void *c = lh_pool_realloc(&pool, b, 56, 300); /* another class: moved */
    CHECK(c != NULL && c != b);
    CHECK(holds(c, 56, 9));
    CHECK_EQ_INT(pool.kept, 56); /* the old block, kept */
    fill(c, 300, 3);
    void *d = lh_pool_realloc(&pool, c, 300, 5000); /* to a big block */
    CHECK(holds(d, 300, 3));
    fill(d, 5000, 4);
    void *e = lh_pool_realloc(&pool, d, 5000, 9000); /* big to big: realloc */
    CHECK(holds(e, 5000, 4));
    void *f = lh_pool_realloc(&pool, e, 9000, 20); /* back to a small one */
    CHECK(holds(f, 20, 4));
    lh_pool_free(&pool, f, 20);
    lh_pool_drain(&pool);
}

static void test_cap_bounds_what_is_kept(void)
{
    lh_pool_t pool = {0};
    size_t n = LH_POOL_CAP / 1016 + 8;
    void **v = calloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = lh_pool_realloc(&pool, NULL, 0, 1016);
    for (size_t i = 0; i < n; i++)
        lh_pool_free(&pool, v[i], 1016);
    CHECK(pool.kept <= LH_POOL_CAP);
    CHECK(pool.kept > LH_POOL_CAP - 1016);
    /* the newest kept (the last freed under the cap) is handed out first */
    void *a = lh_pool_realloc(&pool, NULL, 0, 1010);
    CHECK(a == v[LH_POOL_CAP / 1016 - 1]);
    lh_pool_free(&pool, a, 1010);
    lh_pool_drain(&pool);
    CHECK_EQ_INT(pool.kept, 0);
    free(v);
}

static void test_a_shrink_never_fails(void)
{
    lh_pool_t pool = {0};
    void *a = lh_pool_realloc(&pool, NULL, 0, 600);
    void *big = lh_pool_realloc(&pool, NULL, 0, 4000);
    fill(a, 600, 5);
    fill(big, 4000, 6);
    malloc_fails = 1;
    CHECK(lh_pool_realloc(&pool, NULL, 0, 100) == NULL); /* a new block can fail */
    CHECK(lh_pool_realloc(&pool, a, 600, 900) == NULL);  /* so can growing */
    void *b = lh_pool_realloc(&pool, a, 600, 30);        /* a shrink: the block stays */
    void *c = lh_pool_realloc(&pool, big, 4000, 200);    /* from big to small alike */
    malloc_fails = 0;
    CHECK(b == a);
    CHECK(holds(b, 30, 5));
    CHECK(c == big);
    CHECK(holds(c, 200, 6));
    /* freed as what they are now, they are kept and serve their new classes */
    lh_pool_free(&pool, b, 30);
    lh_pool_free(&pool, c, 200);
    CHECK(lh_pool_realloc(&pool, NULL, 0, 30) == b);
    CHECK(lh_pool_realloc(&pool, NULL, 0, 200) == c);
    lh_pool_free(&pool, b, 30);
    lh_pool_free(&pool, c, 200);
    lh_pool_drain(&pool);
}

#ifdef POOL_ASAN
static void test_kept_blocks_are_poisoned(void)
{
    lh_pool_t pool = {0};
    char *a = lh_pool_realloc(&pool, NULL, 0, 72);
    CHECK(!__asan_address_is_poisoned(a) && !__asan_address_is_poisoned(a + 71));
    lh_pool_free(&pool, a, 72);
    CHECK(!__asan_address_is_poisoned(a)); /* the link */
    CHECK(__asan_address_is_poisoned(a + sizeof(void *)) && __asan_address_is_poisoned(a + 71));
    char *b = lh_pool_realloc(&pool, NULL, 0, 64); /* the same block: 72 usable, 64 asked */
    CHECK(b == a);
    CHECK(!__asan_address_is_poisoned(b) && !__asan_address_is_poisoned(b + 63));
    CHECK(__asan_address_is_poisoned(b + 64)); /* past what was asked: an overrun is caught */
    lh_pool_free(&pool, b, 64);
    lh_pool_drain(&pool);
}

/* A state never closed keeps its pool to the end (fuzz_recipes' does): LeakSanitizer must
** reach every kept block through the lists. */
static lh_pool_t kept_to_exit;

/* 100 blocks kept in one list; no other pointer to them is left (the array is cleared,
** then freed, and this frame is gone when the check runs) */
__attribute__((noinline)) static void keep_100(void)
{
    void **v = calloc(100, sizeof(*v));
    for (int i = 0; i < 100; i++)
        v[i] = lh_pool_realloc(&kept_to_exit, NULL, 0, 40);
    for (int i = 0; i < 100; i++)
        lh_pool_free(&kept_to_exit, v[i], 40);
    memset(v, 0, 100 * sizeof(*v));
    free(v);
}

static void test_kept_blocks_are_no_leak(void)
{
    keep_100();
    CHECK_EQ_INT(kept_to_exit.kept, 100 * 40);
    CHECK(__lsan_do_recoverable_leak_check() == 0);
    lh_pool_drain(&kept_to_exit);
}
#endif

/* ------------------------------------------------------------------ a Lua state on it */

static void *pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        lh_pool_free(ud, ptr, osize);
        return NULL;
    }
    return lh_pool_realloc(ud, ptr, osize, nsize);
}

static void test_a_lua_state_runs_on_it(void)
{
    lh_pool_t pool = {0};
    lua_State *L = lua_newstate(pool_alloc, &pool);
    luaL_openlibs(L);
    const char *chunk = "collectgarbage('generational')\n"
                        "local sum = 0\n"
                        "for round = 1, 200 do\n"
                        "  local t = {}\n"
                        "  for i = 1, 50 do t['k' .. i] = { i, tostring(i * round), {} } end\n"
                        "  for i = 1, 50 do sum = sum + t['k' .. i][1] + #t['k' .. i][2] end\n"
                        "end\n"
                        "return sum";
    CHECK(luaL_dostring(L, chunk) == LUA_OK);
    /* 200 rounds of sum(1..50) = 255000, plus the digits of i * round */
    long digits = 0;
    for (long round = 1; round <= 200; round++)
        for (long i = 1; i <= 50; i++) {
            char buf[32];
            digits += snprintf(buf, sizeof buf, "%ld", i * round);
        }
    CHECK_EQ_INT(lua_tointeger(L, -1), 255000 + digits);
    CHECK(pool.kept > 0); /* the collector's frees went to the lists */
    lua_close(L);
    CHECK(pool.kept <= LH_POOL_CAP);
    lh_pool_drain(&pool); /* LeakSanitizer (the ASan build) finds any block left */
    CHECK_EQ_INT(pool.kept, 0);
}

int main(void)
{
    RUN_TEST(test_freed_block_serves_its_class_again);
    RUN_TEST(test_big_blocks_are_not_kept);
    RUN_TEST(test_resize_keeps_contents);
    RUN_TEST(test_cap_bounds_what_is_kept);
    RUN_TEST(test_a_shrink_never_fails);
#ifdef POOL_ASAN
    RUN_TEST(test_kept_blocks_are_poisoned);
    RUN_TEST(test_kept_blocks_are_no_leak);
#endif
    RUN_TEST(test_a_lua_state_runs_on_it);
    return TEST_SUMMARY();
}
