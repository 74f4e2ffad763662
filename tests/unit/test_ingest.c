/* ingest's secret check, and the metrics text it serves. */
#include <stdlib.h>

#include "ingest.h"
#include "metrics.h"
#include "test.h"

static int ok(const char *v, const char *token)
{
    return lh_ingest_token_ok(v, strlen(v), token);
}

static void test_token(void)
{
    CHECK(ok("Token abc", "abc"));
    CHECK(ok("Bearer abc", "abc"));
    CHECK(ok("token abc", "abc"));
    CHECK(ok("  Bearer abc  ", "abc"));
    CHECK(ok("abc", "abc")); /* the bare secret: Label Studio's header value is free text */
    CHECK(ok("Token Token abc", "Token abc")); /* a secret that starts like a scheme */
    CHECK(ok("Token abc", "Token abc"));
    CHECK(!ok("Token abcd", "abc"));
    CHECK(!ok("Token ab", "abc"));
    CHECK(!ok("Token abd", "abc"));
    CHECK(!ok("Token ", "abc"));
    CHECK(!ok("", "abc"));
    CHECK(!ok("abcd", "abc"));
    CHECK(!ok("Basic abc", "abc"));
}

static void test_metrics_bounded(void)
{
    lh_metrics_t m;
    char name[32];
    lh_metrics_init(&m);
    lh_action_stats_t *first = lh_metrics_action(&m, "A", 1);
    CHECK(first == lh_metrics_action(&m, "A", 1));
    CHECK(first != lh_metrics_action(&m, "AB", 2));
    /* a name with a NUL inside is not confused with its prefix */
    CHECK(first != lh_metrics_action(&m, "A\0B", 3));
    for (int i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "X%d", i);
        lh_metrics_action(&m, name, strlen(name))->received++;
    }
    CHECK(m.nactions == LH_METRICS_MAX_ACTIONS);
    lh_action_stats_t *other = lh_metrics_action(&m, "new", 3);
    CHECK_STR(other->name, "_other");
    CHECK(other->received > 0);
    lh_metrics_dispose(&m);
}

static void test_metrics_render(void)
{
    lh_metrics_t m;
    size_t len = 0;
    lh_metrics_init(&m);
    lh_action_stats_t *a = lh_metrics_action(&m, "Q\"\\", 3);
    a->received = 3;
    lh_metrics_handler_done(a, LH_OUTCOME_OK, 0.002);
    lh_metrics_handler_done(a, LH_OUTCOME_ERROR, 2);
    m.rejected[LH_REJECT_UNAUTHORIZED] = 4;
    char *t = lh_metrics_render(&m, &len);
    CHECK(t != NULL && strlen(t) == len);
    CHECK(strstr(t, "luahook_events_received_total{action=\"Q\\\"\\\\\"} 3\n") != NULL);
    CHECK(strstr(t, "luahook_events_rejected_total{reason=\"unauthorized\"} 4\n") != NULL);
    CHECK(strstr(t, "outcome=\"error\"} 1\n") != NULL);
    CHECK(strstr(t, "le=\"0.0025\"} 1\n") != NULL);
    CHECK(strstr(t, "le=\"5\"} 2\n") != NULL);
    CHECK(strstr(t, "le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(t, "luahook_handler_duration_seconds_count{action=\"Q\\\"\\\\\"} 2\n") != NULL);
    free(t);
    lh_metrics_dispose(&m);
}

int main(void)
{
    RUN_TEST(test_token);
    RUN_TEST(test_metrics_bounded);
    RUN_TEST(test_metrics_render);
    return TEST_SUMMARY();
}
