#include "retry.h"

#include <math.h>

double lh_retry_delay(const lh_retry_policy_t *p, int attempt, double rand01)
{
    double d = p->first * ldexp(1.0, attempt > 1 ? (attempt - 1 > 60 ? 60 : attempt - 1) : 0);
    if (d > p->cap)
        d = p->cap;
    return d * (0.8 + 0.4 * rand01);
}

double lh_retry_span(const lh_retry_policy_t *p)
{
    double sum = 0;
    for (int a = 1; a <= p->retries; a++)
        sum += lh_retry_delay(p, a, 0.5);
    return sum;
}

const char *lh_run_state_name(lh_run_state_t s)
{
    switch (s) {
    case LH_RUN_PENDING:
        return "pending";
    case LH_RUN_RUNNING:
        return "running";
    case LH_RUN_OK:
        return "ok";
    case LH_RUN_RETRYING:
        return "retrying";
    case LH_RUN_DEAD:
        break;
    }
    return "dead";
}

lh_run_state_t lh_retry_next(const lh_retry_policy_t *p, int attempt, lh_outcome_t outcome,
                             lh_end_t how)
{
    if (outcome == LH_OUTCOME_OK)
        return LH_RUN_OK;
    /* repeating these would fail again, or hold the server again (--memory-limit) */
    if (how == LH_END_PERMANENT || how == LH_END_COMPUTING ||
        (outcome == LH_OUTCOME_MEMORY && how != LH_END_NOT_STARTED))
        return LH_RUN_DEAD;
    if (attempt > p->retries)
        return LH_RUN_DEAD;
    return how == LH_END_INTERRUPTED ? LH_RUN_PENDING : LH_RUN_RETRYING;
}

const char *lh_retry_outcome_name(lh_outcome_t outcome, lh_end_t how)
{
    if (how == LH_END_PERMANENT)
        return "permanent";
    if (how == LH_END_INTERRUPTED)
        return "interrupted";
    return lh_metrics_outcome_name(outcome);
}
