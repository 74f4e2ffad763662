/* test_store.c - the store's memory side: values, limits, other processes' changes against
 * our own newer writes, and locks (FIFO hand-over, cancel of a waiter and of a granted one). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "test.h"

static void test_values(void)
{
    char err[200];
    lh_store_t *s = lh_store_new(NULL, NULL, 3);
    lh_store_value_t v = {.type = LH_SV_INT, .i = 5}, out;
    CHECK(lh_store_set(s, "a.lua", "k", 1, &v, 0, err, sizeof(err)) == 0);
    CHECK(lh_store_get(s, "b.lua", "k", 1, &out) == 0); /* another namespace */
    CHECK(lh_store_get(s, "a.lua", "k", 1, &out) == 1 && out.type == LH_SV_INT && out.i == 5);
    lh_store_value_t by = {.type = LH_SV_INT, .i = 2};
    CHECK(lh_store_incr(s, "a.lua", "k", 1, &by, 0, &out, err, sizeof(err)) == 0 && out.i == 7);
    CHECK(lh_store_set(s, "a.lua", "k2", 2, &v, 0, err, sizeof(err)) == 0);
    CHECK(lh_store_set(s, "a.lua", "k3", 2, &v, 0, err, sizeof(err)) == 0);
    CHECK(lh_store_set(s, "a.lua", "k4", 2, &v, 0, err, sizeof(err)) != 0);
    CHECK_STR(err, "the store is full (3 keys, --store-max-keys)");
    CHECK(lh_store_set(s, "a.lua", "k3", 2, &v, 0, err, sizeof(err)) == 0); /* replacing is fine */
    lh_store_value_t str = {.type = LH_SV_STRING, .bytes = "x", .len = LH_STORE_MAX_VALUE + 1};
    CHECK(lh_store_set(s, "a.lua", "k", 1, &str, 0, err, sizeof(err)) != 0);
    CHECK(lh_store_delete(s, "a.lua", "k", 1) == 1);
    CHECK(lh_store_count(s) == 2);
    /* an expired key reads as absent */
    CHECK(lh_store_set(s, "a.lua", "e", 1, &v, 1e-6, err, sizeof(err)) == 0);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    CHECK(lh_store_get(s, "a.lua", "e", 1, &out) == 0);
    lh_store_free(s);
}

/* A change by another process applies unless our own write of the key is newer. */
static void test_external(void)
{
    char err[200];
    lh_store_t *s = lh_store_new(NULL, NULL, 10);
    lh_state_hooks_t hk = lh_store_state_hooks(s);
    lh_state_row_t r = {.ns = "a.lua", .key = "k", .type = LH_SV_STRING, .bytes = "cli", .len = 3};
    lh_store_value_t out;
    hk.external(hk.data, &r, 0);
    CHECK(lh_store_get(s, "a.lua", "k", 1, &out) == 1 && out.len == 3);
    r.type = 0;
    hk.external(hk.data, &r, 0);
    CHECK(lh_store_get(s, "a.lua", "k", 1, &out) == 0);
    (void)err;
    lh_store_free(s);
}

static int granted[4];

static void on_granted(lh_store_waiter_t *w)
{
    granted[w->owner - 1]++;
}

static void test_locks(void)
{
    uv_loop_t loop;
    CHECK(uv_loop_init(&loop) == 0);
    lh_store_t *s = lh_store_new(&loop, NULL, 10);
    lh_store_lock_t *l1, *l;
    lh_store_waiter_t w2 = {.granted = on_granted}; /* the store fills in the owner */
    lh_store_waiter_t w3 = {.granted = on_granted};
    lh_store_waiter_t w4 = {.granted = on_granted};
    CHECK(lh_store_lock(s, "a.lua", "p", 1, 1, NULL, &l1) == 1);
    CHECK(lh_store_lock(s, "a.lua", "p", 1, 1, NULL, &l) == -1); /* held by the same run */
    CHECK(lh_store_lock(s, "b.lua", "p", 1, 2, &w2, &l) == 1);   /* another namespace */
    lh_store_unlock(s, l, 2);
    CHECK(lh_store_lock(s, "a.lua", "p", 1, 2, &w2, &l) == 0);
    CHECK(lh_store_lock(s, "a.lua", "p", 1, 3, &w3, &l) == 0);
    CHECK(lh_store_lock(s, "a.lua", "p", 1, 4, &w4, &l) == 0);
    lh_store_lock_cancel(s, &w3); /* a waiter times out */
    lh_store_unlock(s, l1, 1);    /* to 2, told from the loop */
    CHECK(granted[1] == 0);
    lh_store_lock_cancel(s, &w2); /* granted but not told yet: goes on to 4 */
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(granted[1] == 0 && granted[2] == 0 && granted[3] == 1);
    lh_store_unlock(s, l, 4);
    CHECK(lh_store_nlocks(s) == 0);
    lh_store_close(s);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    lh_store_free(s);
}

int main(void)
{
    RUN_TEST(test_values);
    RUN_TEST(test_external);
    RUN_TEST(test_locks);
    return TEST_SUMMARY();
}
