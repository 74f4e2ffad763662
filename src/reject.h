/*
** reject — the one writer of "rejected" lines (conn, ingest and dispatch call it), with a
** rate limit: a client without a token must not be able to drown the real lines (journald
** drops lines past its own rate limit, whichever they are).
*/
#ifndef LH_REJECT_H
#define LH_REJECT_H

#include <stdint.h>
#include <uv.h>

#include "log.h"

typedef struct lh_app_s lh_app_t;

/* A token bucket: LH_REJECT_LOG_BURST lines at once, then LH_REJECT_LOG_RATE a second: far
** under journald's default limit (10 000 lines in 30 s), and room for an honest burst (a
** misconfigured sender, a test suite). */
#define LH_REJECT_LOG_BURST 100
#define LH_REJECT_LOG_RATE  20

/* Embedded in lh_app_t, all zero at first. */
typedef struct lh_reject_log_s {
    double tokens;
    uint64_t counted_at; /* uv_now when `tokens` was right */
    uint64_t suppressed; /* lines left out since the last summary */
    int started;         /* tokens counted at least once */
    int timer_ready;     /* `timer` initialised; main's uv_walk closes it at the end */
    uv_timer_t timer;    /* writes the summary a second after the first line left out */
} lh_reject_log_t;

/**
 * The "rejected" line (warn) of a refused request, with fields f[0..n) (borrowed for the
 * call), unless the bucket is empty; then it is counted, and one "suppressed rejected
 * lines" line with suppressed=N follows a second after the first one left out. Counting
 * the refusal in /metrics stays with the caller. Without a loop (app->loop NULL) every
 * line is written.
 */
void lh_reject_log(lh_app_t *app, const lh_field_t *f, size_t n);

#endif
