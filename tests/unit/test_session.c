/* session: the sign-in sessions (ids, CSRF tokens, expiry, the cap) and the slow-down of
** wrong tokens per address. Time is given, never read: no sleeping here. */
#include "session.h"

#include <ctype.h>

#include "test.h"

static int url_safe(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return 0;
    return 1;
}

static void test_new_and_find(void)
{
    lh_sessions_t t;
    CHECK(lh_sessions_init(&t, 4, 100) == 0);
    const lh_session_t *a = lh_sessions_new(&t, 1000);
    CHECK(a != NULL);
    CHECK_EQ_INT(strlen(a->id), LH_SESSION_ID_LEN);
    CHECK_EQ_INT(strlen(a->csrf), LH_SESSION_ID_LEN);
    CHECK(url_safe(a->id) && url_safe(a->csrf));
    CHECK(strcmp(a->id, a->csrf) != 0);
    CHECK(a->expires == 1100);
    char id[LH_SESSION_ID_LEN + 1];
    memcpy(id, a->id, sizeof(id));
    const lh_session_t *b = lh_sessions_new(&t, 1001);
    CHECK(b != NULL && b != a && strcmp(b->id, id) != 0);
    CHECK(lh_sessions_find(&t, id, strlen(id), 1050) == a);
    /* a prefix, a longer value, one changed byte, the CSRF token: none is the session */
    CHECK(lh_sessions_find(&t, id, strlen(id) - 1, 1050) == NULL);
    char longer[LH_SESSION_ID_LEN + 2];
    memcpy(longer, id, LH_SESSION_ID_LEN);
    longer[LH_SESSION_ID_LEN] = 'A';
    longer[LH_SESSION_ID_LEN + 1] = '\0';
    CHECK(lh_sessions_find(&t, longer, strlen(longer), 1050) == NULL);
    char changed[LH_SESSION_ID_LEN + 1];
    memcpy(changed, id, sizeof(changed));
    changed[LH_SESSION_ID_LEN - 1] ^= 1;
    CHECK(lh_sessions_find(&t, changed, strlen(changed), 1050) == NULL);
    CHECK(lh_sessions_find(&t, a->csrf, strlen(a->csrf), 1050) == NULL);
    CHECK(lh_sessions_find(&t, "", 0, 1050) == NULL);
    CHECK(lh_session_csrf_ok(a, a->csrf, strlen(a->csrf)));
    CHECK(!lh_session_csrf_ok(a, b->csrf, strlen(b->csrf)));
    CHECK(!lh_session_csrf_ok(a, a->csrf, strlen(a->csrf) - 1));
    CHECK(!lh_session_csrf_ok(NULL, a->csrf, strlen(a->csrf)));
    CHECK_EQ_INT(lh_sessions_count(&t, 1050), 2);
    lh_sessions_end(&t, a);
    CHECK(lh_sessions_find(&t, id, strlen(id), 1050) == NULL);
    CHECK_EQ_INT(lh_sessions_count(&t, 1050), 1);
    lh_sessions_dispose(&t);
}

static void test_expiry(void)
{
    lh_sessions_t t;
    CHECK(lh_sessions_init(&t, 4, LH_SESSION_TTL) == 0);
    const lh_session_t *a = lh_sessions_new(&t, 0);
    char id[LH_SESSION_ID_LEN + 1];
    memcpy(id, a->id, sizeof(id));
    CHECK(a->expires == 12 * 3600);
    CHECK(lh_sessions_find(&t, id, strlen(id), 12 * 3600 - 1) != NULL);
    CHECK(lh_sessions_find(&t, id, strlen(id), 12 * 3600) == NULL);
    /* gone for good, even if the clock goes back */
    CHECK(lh_sessions_find(&t, id, strlen(id), 10) == NULL);
    CHECK_EQ_INT(lh_sessions_count(&t, 10), 0);
    lh_sessions_dispose(&t);
}

static void test_cap(void)
{
    lh_sessions_t t;
    char ids[5][LH_SESSION_ID_LEN + 1];
    CHECK(lh_sessions_init(&t, 4, 1000) == 0);
    for (int i = 0; i < 4; i++)
        memcpy(ids[i], lh_sessions_new(&t, 10 + i)->id, sizeof(ids[i]));
    CHECK_EQ_INT(lh_sessions_count(&t, 20), 4);
    /* full: the oldest (created first) makes room */
    memcpy(ids[4], lh_sessions_new(&t, 20)->id, sizeof(ids[4]));
    CHECK_EQ_INT(lh_sessions_count(&t, 21), 4);
    CHECK(lh_sessions_find(&t, ids[0], LH_SESSION_ID_LEN, 21) == NULL);
    for (int i = 1; i < 5; i++)
        CHECK(lh_sessions_find(&t, ids[i], LH_SESSION_ID_LEN, 21) != NULL);
    lh_sessions_dispose(&t);
}

static void test_throttle(void)
{
    lh_throttle_t t;
    lh_throttle_burst_t b;
    int ended;
    CHECK(lh_throttle_init(&t, 8) == 0);
    /* the first wrong token is answered at once; then 0.25 s, doubling */
    CHECK(lh_throttle_attempt(&t, "a", 0, 100, &b, &ended) == 0 && !ended);
    CHECK(lh_throttle_attempt(&t, "a", 0, 101, &b, &ended) == 0.25);
    CHECK(lh_throttle_attempt(&t, "a", 0, 102, &b, &ended) == 0.5);
    CHECK(lh_throttle_attempt(&t, "a", 0, 103, &b, &ended) == 1);
    /* at once, several: queued one after the other, each later than the last */
    double w1 = lh_throttle_attempt(&t, "a", 0, 110, &b, &ended);
    double w2 = lh_throttle_attempt(&t, "a", 0, 110, &b, &ended);
    double w3 = lh_throttle_attempt(&t, "a", 0, 110, &b, &ended);
    CHECK(w1 == 2 && w2 == 2 + 4 && w3 == 2 + 4 + LH_THROTTLE_CAP);
    /* another address is not slowed */
    CHECK(lh_throttle_attempt(&t, "b", 1, 110, &b, &ended) == 0 && !ended);
    CHECK(lh_throttle_attempt(&t, "b", 0, 110, &b, &ended) == 0);
    CHECK(!lh_throttle_refused(&t, "a", 110));
    /* a right token waits behind those queued, then ends the burst: told once */
    CHECK(lh_throttle_attempt(&t, "a", 1, 111, &b, &ended) == 110 + 14 - 111);
    CHECK(ended && strcmp(b.addr, "a") == 0 && b.fails == 7 && b.first == 100 && b.last == 110);
    CHECK(lh_throttle_attempt(&t, "a", 1, 130, &b, &ended) == 0 && !ended);
    CHECK(lh_throttle_attempt(&t, "a", 0, 131, &b, &ended) == 0); /* a new burst */
    lh_throttle_dispose(&t);
}

static void test_throttle_backlog_and_sweep(void)
{
    lh_throttle_t t;
    lh_throttle_burst_t b;
    int ended, n = 0;
    CHECK(lh_throttle_init(&t, 2) == 0);
    while (!lh_throttle_refused(&t, "a", 0) && n < 100) {
        lh_throttle_attempt(&t, "a", 0, 0, &b, &ended);
        n++;
    }
    /* refused once a minute of answers is queued: a bounded number of timers */
    CHECK(n > 5 && n < 20);
    CHECK(lh_throttle_refused(&t, "a", 0));
    CHECK(!lh_throttle_refused(&t, "a", 1000));
    /* quiet for a minute, its answers out: forgotten, the burst told once */
    CHECK(lh_throttle_sweep(&t, 30, &b) == 0);
    CHECK(lh_throttle_sweep(&t, 1000, &b) == 1);
    CHECK(strcmp(b.addr, "a") == 0 && (int)b.fails == n);
    CHECK(lh_throttle_sweep(&t, 1000, &b) == 0);
    CHECK(!lh_throttle_refused(&t, "a", 1000));
    /* a single wrong token is no burst: forgotten without a word */
    lh_throttle_attempt(&t, "c", 0, 2000, &b, &ended);
    CHECK(lh_throttle_sweep(&t, 3000, &b) == 0);
    /* the table is bounded: a third address takes a quiet slot, and none other */
    lh_throttle_attempt(&t, "x", 0, 4000, &b, &ended);
    lh_throttle_attempt(&t, "y", 0, 4001, &b, &ended);
    lh_throttle_attempt(&t, "z", 0, 4002, &b, &ended);                /* the crowd's */
    CHECK(lh_throttle_attempt(&t, "y", 0, 4003, &b, &ended) == 0.25); /* kept */
    CHECK(lh_throttle_attempt(&t, "x", 0, 4003, &b, &ended) == 0.25); /* kept */
    CHECK(lh_throttle_attempt(&t, "w", 0, 4003, &b, &ended) == 0.25); /* the crowd's second */
    /* a right token of the crowd is not held up by it */
    CHECK(lh_throttle_attempt(&t, "v", 1, 4003, &b, &ended) == 0 && !ended);
    /* x quiet for a minute: its slot goes to the next address */
    lh_throttle_attempt(&t, "y", 0, 4070, &b, &ended);
    CHECK(lh_throttle_attempt(&t, "u", 0, 4070, &b, &ended) == 0);
    CHECK(lh_throttle_attempt(&t, "u", 0, 4070, &b, &ended) == 0.25);
    /* the crowd quiet too: forgotten, its burst told once */
    CHECK(lh_throttle_sweep(&t, 5000, &b) == 1);
    lh_throttle_dispose(&t);
}

/* More addresses than slots, each guessing in turn: pushing each other out, every guess
** was a first one and answered at once; they share one queue instead, slowed down. */
static void test_throttle_many_addresses(void)
{
    lh_throttle_t t;
    lh_throttle_burst_t b;
    int ended, refused = 0;
    double waited = 0;
    const char *addrs[] = {"a", "b", "c", "d", "e"};
    CHECK(lh_throttle_init(&t, 2) == 0);
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < 5; i++) {
            if (lh_throttle_refused(&t, addrs[i], 100)) {
                refused++;
                continue;
            }
            waited += lh_throttle_attempt(&t, addrs[i], 0, 100, &b, &ended);
        }
    CHECK(waited > 60);
    CHECK(refused > 0);
    /* the first two keep their slots; the others, in the crowd, are refused together */
    CHECK(lh_throttle_refused(&t, "e", 100) && lh_throttle_refused(&t, "new", 100));
    lh_throttle_dispose(&t);
}

int main(void)
{
    RUN_TEST(test_new_and_find);
    RUN_TEST(test_expiry);
    RUN_TEST(test_cap);
    RUN_TEST(test_throttle);
    RUN_TEST(test_throttle_backlog_and_sweep);
    RUN_TEST(test_throttle_many_addresses);
    return TEST_SUMMARY();
}
