/*
** retry — what becomes of a handler run after an attempt: the pure rules, apart from the
** journal that stores them, so that they are tested alone (tests/unit/test_retry.c).
*/
#ifndef LH_RETRY_H
#define LH_RETRY_H

#include "metrics.h"

/* The schedule: exponential backoff with jitter. */
typedef struct lh_retry_policy_s {
    int retries;  /* attempts after the first one before the run is dead */
    double first; /* seconds before the first retry */
    double cap;   /* the longest wait between two attempts */
} lh_retry_policy_t;

/* The defaults: 5 s, doubling up to 3 h between attempts, 18 retries: about a day. */
#define LH_RETRY_DEFAULT_RETRIES 18
#define LH_RETRY_DEFAULT_FIRST   5.0
#define LH_RETRY_DEFAULT_CAP     (3 * 3600.0)

/** The wait before attempt `attempt` + 1, after attempt `attempt` (from 1) failed:
 *  first * 2^(attempt-1), at most cap, times a jitter from 0.8 to 1.2 (`rand01` in [0,1)),
 *  so that events that failed together do not come back together. */
double lh_retry_delay(const lh_retry_policy_t *p, int attempt, double rand01);

/** The sum of the waits without jitter: how long a run is retried before it is dead. */
double lh_retry_span(const lh_retry_policy_t *p);

/* A run's states, as the journal stores them (runs.state). */
typedef enum {
    LH_RUN_PENDING = 0,
    LH_RUN_RUNNING,
    LH_RUN_OK,
    LH_RUN_RETRYING,
    LH_RUN_DEAD,
} lh_run_state_t;

const char *lh_run_state_name(lh_run_state_t s);

/* How an attempt ended, beyond the outcome. */
typedef enum {
    LH_END_NORMAL = 0,  /* the handler returned, raised, or its waiting timed out */
    LH_END_PERMANENT,   /* it raised permanent(...): retrying cannot help */
    LH_END_COMPUTING,   /* stopped computing past --handler-timeout */
    LH_END_INTERRUPTED, /* cut short by a shutdown or a crash: not the handler's doing */
    LH_END_NOT_STARTED, /* could not start (the host ran out of memory): not the handler's
                           doing either, so retried even with outcome memory */
} lh_end_t;

/**
 * The state after attempt `attempt` (from 1) ended with `outcome` / `how`, under `p`:
 * ok; dead (a permanent failure, computing past the timeout, the memory limit, or no
 * retry left); pending again at once (interrupted, with retries left); else retrying.
 */
lh_run_state_t lh_retry_next(const lh_retry_policy_t *p, int attempt, lh_outcome_t outcome,
                             lh_end_t how);

/** The name of an attempt's ending for attempts.outcome: ok, error, timeout, memory,
 *  permanent, interrupted. */
const char *lh_retry_outcome_name(lh_outcome_t outcome, lh_end_t how);

#endif
