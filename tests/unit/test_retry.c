/* The journal's retry schedule and run state transitions (src/retry.c). */
#include <math.h>

#include "retry.h"
#include "test.h"

static const lh_retry_policy_t defaults = {LH_RETRY_DEFAULT_RETRIES, LH_RETRY_DEFAULT_FIRST,
                                           LH_RETRY_DEFAULT_CAP};

/* Doubling from `first`, capped, jitter within 0.8..1.2 of it. */
static void test_delay(void)
{
    lh_retry_policy_t p = {10, 2.0, 30.0};
    CHECK(fabs(lh_retry_delay(&p, 1, 0.5) - 2.0) < 1e-9);
    CHECK(fabs(lh_retry_delay(&p, 2, 0.5) - 4.0) < 1e-9);
    CHECK(fabs(lh_retry_delay(&p, 4, 0.5) - 16.0) < 1e-9);
    CHECK(fabs(lh_retry_delay(&p, 5, 0.5) - 30.0) < 1e-9);   /* 32, capped */
    CHECK(fabs(lh_retry_delay(&p, 500, 0.5) - 30.0) < 1e-9); /* no overflow far out */
    CHECK(fabs(lh_retry_delay(&p, 1, 0.0) - 1.6) < 1e-9);
    CHECK(lh_retry_delay(&p, 1, 0.999999) < 2.4 && lh_retry_delay(&p, 1, 0.999999) > 2.39);
    /* every attempt waits longer than the one before until the cap */
    for (int a = 1; a < 5; a++)
        CHECK(lh_retry_delay(&p, a + 1, 0.5) > lh_retry_delay(&p, a, 0.5));
}

/* The default schedule outlasts an outage of hours: about a day in all, from seconds to
** hours between attempts. */
static void test_default_span(void)
{
    double span = lh_retry_span(&defaults);
    CHECK(span > 20 * 3600.0 && span < 30 * 3600.0);
    CHECK(lh_retry_delay(&defaults, 1, 0.5) <= 10.0);
    CHECK(lh_retry_delay(&defaults, defaults.retries, 0.5) >= 3600.0);
    lh_retry_policy_t none = {0, 5, 60};
    CHECK(lh_retry_span(&none) == 0);
}

static void test_transitions(void)
{
    lh_retry_policy_t p = {2, 1, 10};
    /* success ends it, at any attempt */
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_OK, LH_END_NORMAL), LH_RUN_OK);
    CHECK_EQ_INT(lh_retry_next(&p, 3, LH_OUTCOME_OK, LH_END_NORMAL), LH_RUN_OK);
    /* a raise, or a timed-out wait, is retried while retries are left: 1 + 2 attempts */
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_ERROR, LH_END_NORMAL), LH_RUN_RETRYING);
    CHECK_EQ_INT(lh_retry_next(&p, 2, LH_OUTCOME_TIMEOUT, LH_END_NORMAL), LH_RUN_RETRYING);
    CHECK_EQ_INT(lh_retry_next(&p, 3, LH_OUTCOME_ERROR, LH_END_NORMAL), LH_RUN_DEAD);
    /* dead at once: permanent(), computing past the timeout, the memory limit */
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_ERROR, LH_END_PERMANENT), LH_RUN_DEAD);
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_TIMEOUT, LH_END_COMPUTING), LH_RUN_DEAD);
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_MEMORY, LH_END_NORMAL), LH_RUN_DEAD);
    /* a run that could not start for want of memory did nothing: retried, until dead */
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_MEMORY, LH_END_NOT_STARTED), LH_RUN_RETRYING);
    CHECK_EQ_INT(lh_retry_next(&p, 3, LH_OUTCOME_MEMORY, LH_END_NOT_STARTED), LH_RUN_DEAD);
    /* cut short by a stop or a crash: due again at once, but it still counts */
    CHECK_EQ_INT(lh_retry_next(&p, 1, LH_OUTCOME_TIMEOUT, LH_END_INTERRUPTED), LH_RUN_PENDING);
    CHECK_EQ_INT(lh_retry_next(&p, 3, LH_OUTCOME_ERROR, LH_END_INTERRUPTED), LH_RUN_DEAD);
    /* no retries at all */
    lh_retry_policy_t zero = {0, 1, 10};
    CHECK_EQ_INT(lh_retry_next(&zero, 1, LH_OUTCOME_ERROR, LH_END_NORMAL), LH_RUN_DEAD);
}

static void test_names(void)
{
    CHECK_STR(lh_run_state_name(LH_RUN_PENDING), "pending");
    CHECK_STR(lh_run_state_name(LH_RUN_RUNNING), "running");
    CHECK_STR(lh_run_state_name(LH_RUN_OK), "ok");
    CHECK_STR(lh_run_state_name(LH_RUN_RETRYING), "retrying");
    CHECK_STR(lh_run_state_name(LH_RUN_DEAD), "dead");
    CHECK_STR(lh_retry_outcome_name(LH_OUTCOME_ERROR, LH_END_PERMANENT), "permanent");
    CHECK_STR(lh_retry_outcome_name(LH_OUTCOME_TIMEOUT, LH_END_INTERRUPTED), "interrupted");
    CHECK_STR(lh_retry_outcome_name(LH_OUTCOME_TIMEOUT, LH_END_COMPUTING), "timeout");
    CHECK_STR(lh_retry_outcome_name(LH_OUTCOME_ERROR, LH_END_NORMAL), "error");
}

int main(void)
{
    RUN_TEST(test_delay);
    RUN_TEST(test_default_span);
    RUN_TEST(test_transitions);
    RUN_TEST(test_names);
    return TEST_SUMMARY();
}
