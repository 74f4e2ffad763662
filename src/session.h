/*
** session — the console's sign-in sessions (in memory: a restart signs everyone out), their
** CSRF tokens, and the slow-down of wrong sign-in tokens per remote address. No sockets and
** no timers here: the caller says what time it is and waits as told (console.c).
*/
#ifndef LH_SESSION_H
#define LH_SESSION_H

#include <stddef.h>

/* 32 random bytes, base64url without padding */
#define LH_SESSION_ID_LEN 43
#define LH_SESSION_TTL    (12 * 3600.0)
#define LH_SESSION_MAX    256

typedef struct lh_session_s {
    char id[LH_SESSION_ID_LEN + 1]; /* the cookie's value; "" for a free slot */
    char csrf[LH_SESSION_ID_LEN + 1];
    double created, expires;
} lh_session_t;

typedef struct lh_sessions_s {
    lh_session_t *s; /* owned; `cap` slots */
    size_t cap;
    double ttl;
} lh_sessions_t;

/** A table of `cap` sessions that live `ttl` seconds. 0, or -1 when out of memory. */
int lh_sessions_init(lh_sessions_t *t, size_t cap, double ttl);
void lh_sessions_dispose(lh_sessions_t *t);

/** A new session from `now`; when the table is full the oldest one goes. NULL when the
 *  system gave no random bytes. */
const lh_session_t *lh_sessions_new(lh_sessions_t *t, double now);

/** The live session whose id is `id` (compared with every slot, in constant time), or
 *  NULL; expired sessions are dropped on the way. */
const lh_session_t *lh_sessions_find(lh_sessions_t *t, const char *id, size_t len, double now);

/** Ends the session `s` (from lh_sessions_find). */
void lh_sessions_end(lh_sessions_t *t, const lh_session_t *s);

/** The number of live sessions at `now`. */
size_t lh_sessions_count(const lh_sessions_t *t, double now);

/** 1 if `v` is the CSRF token of `s`, compared in constant time. */
int lh_session_csrf_ok(const lh_session_t *s, const char *v, size_t len);

/** Constant time in the content: 1 if a[0..alen) equals b[0..blen). */
int lh_session_same(const char *a, size_t alen, const char *b, size_t blen);

/*
** Wrong sign-in tokens, per address. Each address's answers are queued one after the other,
** each wrong one later than the last (0.25 s after the second, doubling to LH_THROTTLE_CAP),
** so parallel guesses gain nothing. A quiet address is forgotten after LH_THROTTLE_QUIET.
*/
#define LH_THROTTLE_CAP      8.0
#define LH_THROTTLE_QUIET    60.0
#define LH_THROTTLE_BACKLOG  60.0 /* an address whose answers wait longer is refused at once */
#define LH_THROTTLE_ADDR_MAX 64
#define LH_THROTTLE_MAX      1024

typedef struct lh_throttle_entry_s {
    char addr[LH_THROTTLE_ADDR_MAX]; /* "" for a free slot */
    unsigned fails;                  /* wrong tokens in this burst */
    double first, last;              /* the burst's first and last wrong token */
    double until;                    /* the last queued answer's time */
} lh_throttle_entry_t;

typedef struct lh_throttle_s {
    lh_throttle_entry_t *e; /* owned; `cap` slots */
    size_t cap;
    /* the wrong tokens of every address that found each slot taken by one not yet quiet: one
    ** queue ("*"), so that more addresses than slots gain nothing (pushing each other out,
    ** each guess would have been a first one, answered at once) */
    lh_throttle_entry_t crowd;
} lh_throttle_t;

/* A burst that ended: what to log once. */
typedef struct lh_throttle_burst_s {
    char addr[LH_THROTTLE_ADDR_MAX];
    unsigned fails;
    double first, last;
} lh_throttle_burst_t;

int lh_throttle_init(lh_throttle_t *t, size_t cap);
void lh_throttle_dispose(lh_throttle_t *t);

/**
 * A sign-in attempt from `addr` at `now`, right (`ok`) or not, that lh_throttle_refused let
 * through: the seconds to wait before answering it (0: now). A right token ends the
 * address's burst: 1, with `*ended` filled, in `*has_ended` when it was slowed down.
 */
double lh_throttle_attempt(lh_throttle_t *t, const char *addr, int ok, double now,
                           lh_throttle_burst_t *ended, int *has_ended);

/** 1 if `addr` (or, with no slot of its own and none free, the crowd) has so many answers
 *  queued at `now` that a new attempt is refused. */
int lh_throttle_refused(const lh_throttle_t *t, const char *addr, double now);

/** Forgets one address quiet since LH_THROTTLE_QUIET; 1 and `*ended` filled if one was
 *  (a burst of at least two wrong tokens is worth a line), else 0. Call until 0. */
int lh_throttle_sweep(lh_throttle_t *t, double now, lh_throttle_burst_t *ended);

#endif
