/* test_journal_dedup.c - the --dedup-window digest set (journal_dedup.h): found within the
 * window and not after, oldest-first expiry, drops of the newest, middle and oldest with the
 * list still consistent after, growth of the hash, window 0, digests sharing a hash slot, and
 * free then reuse (ASan reports any entry the list lost as a leak). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal_dedup.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

/* A digest from `seed`: uniform bytes, as a real digest's are. */
static void make(unsigned char d[32], uint64_t seed)
{
    uint64_t x = seed * UINT64_C(0x9E3779B97F4A7C15) + 1;
    for (int i = 0; i < 32; i += 8) {
        x += UINT64_C(0x9E3779B97F4A7C15);
        uint64_t z = x;
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        z ^= z >> 31;
        memcpy(d + i, &z, 8);
    }
}

/* The ids found for digests 1..n (seed k, id k) at `now`, as a string of 0/1 per seed. */
static void found(lh_dedup_t *d, int n, double now, char *out)
{
    for (int k = 1; k <= n; k++) {
        unsigned char g[32];
        make(g, (uint64_t)k);
        int64_t id = lh_dedup_find(d, g, now);
        out[k - 1] = id == k ? '1' : id == 0 ? '0' : '?';
    }
    out[n] = '\0';
}

static void add(lh_dedup_t *d, int k, double received)
{
    unsigned char g[32];
    make(g, (uint64_t)k);
    lh_dedup_add(d, g, k, received);
}

/* ------------------------------------------------------------------ tests */

static void test_window(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    unsigned char a[32], b[32];
    make(a, 1);
    make(b, 2);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 100), 0); /* empty: nothing, no table yet */
    lh_dedup_add(&d, a, 41, 100);
    CHECK_EQ_INT(d.n, 1);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 100), 41);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 100), 0);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 105), 41);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 110), 41); /* the window's edge is still inside */
    CHECK_EQ_INT(d.n, 1);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 110.5), 0); /* past it: forgotten */
    CHECK_EQ_INT(d.n, 0);
    CHECK(d.oldest == NULL && d.newest == NULL);
    /* forgotten for good: an earlier `now` does not bring it back */
    CHECK_EQ_INT(lh_dedup_find(&d, a, 100), 0);
    /* added again after: found again */
    lh_dedup_add(&d, a, 42, 200);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 201), 42);
    lh_dedup_free(&d);
}

static void test_expiry_oldest_first(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    char s[8];
    add(&d, 1, 100);
    add(&d, 2, 104);
    add(&d, 3, 108);
    add(&d, 4, 112);
    found(&d, 4, 110, s); /* 110 - 10: the oldest is on the edge, still in */
    CHECK_STR(s, "1111");
    found(&d, 4, 113, s); /* 100 < 103: only the oldest goes */
    CHECK_STR(s, "0111");
    CHECK_EQ_INT(d.n, 3);
    found(&d, 4, 118.5, s); /* 104, 108 < 108.5 */
    CHECK_STR(s, "0001");
    CHECK_EQ_INT(d.n, 1);
    add(&d, 5, 119);        /* the list goes on from the survivor */
    found(&d, 5, 122.5, s); /* 112 < 112.5 */
    CHECK_STR(s, "00001");
    CHECK_EQ_INT(d.n, 1);
    found(&d, 5, 1000, s);
    CHECK_STR(s, "00000");
    CHECK_EQ_INT(d.n, 0);
    CHECK(d.oldest == NULL && d.newest == NULL);
    lh_dedup_free(&d);
}

static void test_drop_newest(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    char s[8];
    add(&d, 1, 100);
    add(&d, 2, 101);
    add(&d, 3, 102);
    lh_dedup_drop(&d, 3);
    CHECK_EQ_INT(d.n, 2);
    found(&d, 3, 102, s);
    CHECK_STR(s, "110");
    /* the new newest is 2: 4 must be linked after it, or expiry past 2 loses it */
    add(&d, 4, 103);
    found(&d, 4, 103, s);
    CHECK_STR(s, "1101");
    found(&d, 4, 111.5, s); /* 100, 101 expire; 4 stays, reached through the list */
    CHECK_STR(s, "0001");
    CHECK_EQ_INT(d.n, 1);
    CHECK(d.oldest != NULL && d.oldest == d.newest);
    found(&d, 4, 113.5, s);
    CHECK_STR(s, "0000");
    CHECK(d.oldest == NULL && d.newest == NULL && d.n == 0);
    lh_dedup_free(&d);
}

static void test_drop_middle(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    char s[8];
    add(&d, 1, 100);
    add(&d, 2, 101);
    add(&d, 3, 102);
    lh_dedup_drop(&d, 2);
    CHECK_EQ_INT(d.n, 2);
    found(&d, 3, 102, s);
    CHECK_STR(s, "101");
    add(&d, 4, 103);
    found(&d, 4, 110.5, s); /* 1 expires; 3 follows it in the list */
    CHECK_STR(s, "0011");
    CHECK_EQ_INT(d.n, 2);
    found(&d, 4, 112.5, s);
    CHECK_STR(s, "0001");
    found(&d, 4, 200, s);
    CHECK_STR(s, "0000");
    CHECK(d.oldest == NULL && d.newest == NULL && d.n == 0);
    lh_dedup_free(&d);
}

static void test_drop_oldest(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    char s[8];
    add(&d, 1, 100);
    add(&d, 2, 101);
    add(&d, 3, 102);
    lh_dedup_drop(&d, 1);
    CHECK_EQ_INT(d.n, 2);
    found(&d, 3, 102, s);
    CHECK_STR(s, "011");
    add(&d, 4, 103);
    found(&d, 4, 111.5, s); /* 2 expires */
    CHECK_STR(s, "0011");
    lh_dedup_drop(&d, 99); /* unknown: nothing changes */
    CHECK_EQ_INT(d.n, 2);
    lh_dedup_drop(&d, 4); /* then the newest, then the last one left */
    lh_dedup_drop(&d, 3);
    CHECK(d.oldest == NULL && d.newest == NULL && d.n == 0);
    found(&d, 4, 103, s);
    CHECK_STR(s, "0000");
    add(&d, 2, 104); /* an emptied list takes entries again */
    add(&d, 1, 105);
    found(&d, 4, 105, s);
    CHECK_STR(s, "1100");
    found(&d, 4, 114.5, s);
    CHECK_STR(s, "1000");
    lh_dedup_free(&d);
}

static void test_growth(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 1e9);
    enum { N = 2100 };
    char *s = malloc(N + 1);
    char *want = malloc(N + 1);
    for (int k = 1; k <= N; k++) {
        add(&d, k, 1000 + k);
        CHECK_EQ_INT(d.n, k);
        if (k == 256 || k == 257 || k == 511 || k == 512 || k == 513 || k == 1024 || k == 1025 ||
            k == 2048 || k == N) {
            found(&d, k, 1000 + k, s);
            memset(want, '1', (size_t)k);
            want[k] = '\0';
            CHECK_STR(s, want);
            CHECK(d.cap >= (size_t)k);
            CHECK((d.cap & (d.cap - 1)) == 0); /* slot_of masks with cap - 1 */
        }
    }
    /* drops and expiry after rehashing */
    lh_dedup_drop(&d, 700);
    lh_dedup_drop(&d, N);
    d.window = 1000; /* now 2600: received below 1600 (k < 600) go */
    found(&d, N, 2600, s);
    for (int k = 1; k <= N; k++)
        want[k - 1] = (k >= 600 && k != 700 && k != N) ? '1' : '0';
    want[N] = '\0';
    CHECK_STR(s, want);
    CHECK_EQ_INT(d.n, N - 599 - 2);
    lh_dedup_free(&d);
    free(s);
    free(want);
}

static void test_window_zero(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 0);
    unsigned char a[32];
    make(a, 1);
    lh_dedup_add(&d, a, 1, 100);
    CHECK_EQ_INT(d.n, 0);
    CHECK(d.oldest == NULL && d.slots == NULL);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 100), 0);
    lh_dedup_drop(&d, 1);
    lh_dedup_free(&d);
    lh_dedup_init(&d, -5); /* a negative window is off as well */
    lh_dedup_add(&d, a, 1, 100);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 100), 0);
    CHECK_EQ_INT(d.n, 0);
    lh_dedup_free(&d);
}

static void test_same_slot(void)
{
    /* the slot is the first 8 bytes: these share it and differ at byte 8, 31 */
    unsigned char a[32], b[32], c[32];
    make(a, 1);
    memcpy(b, a, 32);
    memcpy(c, a, 32);
    b[8] ^= 1;
    c[31] ^= 0x80;
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    lh_dedup_add(&d, a, 1, 100);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 100), 0);
    CHECK_EQ_INT(lh_dedup_find(&d, c, 100), 0);
    lh_dedup_add(&d, b, 2, 101);
    lh_dedup_add(&d, c, 3, 102);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 102), 1);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 102), 2);
    CHECK_EQ_INT(lh_dedup_find(&d, c, 102), 3);
    lh_dedup_drop(&d, 2); /* the chain's middle */
    CHECK_EQ_INT(lh_dedup_find(&d, a, 102), 1);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 102), 0);
    CHECK_EQ_INT(lh_dedup_find(&d, c, 102), 3);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 110.5), 0); /* expiry unchains the chain's tail */
    CHECK_EQ_INT(lh_dedup_find(&d, c, 110.5), 3);
    lh_dedup_add(&d, b, 4, 111);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 111), 4);
    CHECK_EQ_INT(lh_dedup_find(&d, a, 111), 0);
    CHECK_EQ_INT(d.n, 2);
    /* many entries in one slot, across a growth */
    for (int k = 0; k < 300; k++) {
        unsigned char g[32];
        memcpy(g, a, 32);
        g[16] = (unsigned char)k;
        g[17] = (unsigned char)(k >> 8);
        lh_dedup_add(&d, g, 1000 + k, 111);
    }
    int bad = 0;
    for (int k = 0; k < 300; k++) {
        unsigned char g[32];
        memcpy(g, a, 32);
        g[16] = (unsigned char)k;
        g[17] = (unsigned char)(k >> 8);
        bad += lh_dedup_find(&d, g, 111) != 1000 + k;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(lh_dedup_find(&d, b, 111), 4);
    CHECK_EQ_INT(lh_dedup_find(&d, c, 111), 3);
    lh_dedup_free(&d);
}

static void test_free_reuse(void)
{
    lh_dedup_t d;
    lh_dedup_init(&d, 10);
    lh_dedup_free(&d); /* freeing an empty one is fine */
    char s[8];
    for (int k = 1; k <= 5; k++)
        add(&d, k, 100);
    lh_dedup_free(&d);
    CHECK(d.oldest == NULL && d.newest == NULL && d.slots == NULL);
    CHECK_EQ_INT(d.n, 0);
    CHECK_EQ_INT(d.cap, 0);
    CHECK(d.window == 10); /* the window outlives the entries */
    found(&d, 5, 100, s);
    CHECK_STR(s, "00000");
    add(&d, 2, 200);
    add(&d, 3, 201);
    found(&d, 5, 201, s);
    CHECK_STR(s, "01100");
    found(&d, 5, 210.5, s);
    CHECK_STR(s, "00100");
    lh_dedup_free(&d);
    lh_dedup_free(&d); /* twice: the first left it empty */
}

int main(void)
{
    RUN_TEST(test_window);
    RUN_TEST(test_expiry_oldest_first);
    RUN_TEST(test_drop_newest);
    RUN_TEST(test_drop_middle);
    RUN_TEST(test_drop_oldest);
    RUN_TEST(test_growth);
    RUN_TEST(test_window_zero);
    RUN_TEST(test_same_slot);
    RUN_TEST(test_free_reuse);
    return TEST_SUMMARY();
}
