/*
** store — what handlers keep between runs: (namespace, key) → value, served from memory,
** written through to the state database (state.c) when there is one, and per-key locks.
** It lives in the app, outside every VM, so a reload keeps values and locks alike. Knows
** neither Lua nor SQL: lib_store.c is the Lua side; state.c (or, later, another backend)
** the disk.
*/
#ifndef LH_STORE_H
#define LH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "metrics.h"

#include "clock.h"
#include "state.h"

#define LH_STORE_MAX_KEY   512                  /* bytes of a key (the namespace aside) */
#define LH_STORE_MAX_VALUE (64 * 1024)          /* bytes of a string value, or of a table's JSON */
#define LH_STORE_MAX_TTL   (10 * 365 * 86400.0) /* seconds */

typedef struct lh_store_s lh_store_t;
typedef struct lh_store_lock_s lh_store_lock_t;
typedef struct lh_store_waiter_s lh_store_waiter_t;

/* A value: `type` is an lh_sv_type_t (0: none); `bytes` is borrowed from the store until
** its next change. */
typedef struct lh_store_value_s {
    int type;
    int64_t i; /* bool (0/1), integer */
    double f;
    const char *bytes; /* string, JSON */
    size_t len;
} lh_store_value_t;

/**
 * A store on `loop`, writing through to `state` (borrowed; NULL: memory only), holding at
 * most `max_keys` keys. Its sweep timer is unref'd: it never keeps the loop alive. NULL on
 * failure.
 */
lh_store_t *lh_store_new(uv_loop_t *loop, lh_state_t *state, size_t max_keys);

/** luahook test: `s` (made with no loop) reads the time from `clock` and delivers lock
 *  grants on its timers, so ttl and store.lock follow the virtual clock. `clock` must
 *  outlive `s`. Returns 0, or -1 when out of memory. */
int lh_store_use_clock(lh_store_t *s, lh_clock_t *clock);

/** Loads the rows of the state database (start-up) and registers for other processes'
 *  changes; call before lh_state_start. Returns 0 or -1 with a message. */
int lh_store_load(lh_store_t *s, char *err, size_t errlen);
/** The hooks to give lh_state_start: other processes' changes reach the memory. */
lh_state_hooks_t lh_store_state_hooks(lh_store_t *s);

/** Keeps luahook_store_keys and luahook_store_refused_total in `m` (borrowed) current. */
void lh_store_observe(lh_store_t *s, lh_metrics_t *m);

/** Keys in the store now. */
size_t lh_store_count(const lh_store_t *s);

/** 1 and *out if (ns, key) holds a live value; 0 if not. */
int lh_store_get(lh_store_t *s, const char *ns, const char *key, size_t klen,
                 lh_store_value_t *out);

/**
 * Sets (ns, key) to `v` (copied; v->type 0 deletes) with a time to live in seconds (0:
 * none). Returns 0, or -1 with the reason in `err` (a key or value over its size, the
 * store full, out of memory); nothing changed then.
 */
int lh_store_set(lh_store_t *s, const char *ns, const char *key, size_t klen,
                 const lh_store_value_t *v, double ttl, char *err, size_t errlen);

/**
 * Adds `by` (an integer or a float value) to the number at (ns, key), 0 when there is
 * none; `ttl` (0: none) applies only when that creates the key. Integers stay integers
 * (overflow is an error); a float on either side makes a float. *out gets the new value.
 * Returns 0, or -1 with the reason in `err`.
 */
int lh_store_incr(lh_store_t *s, const char *ns, const char *key, size_t klen,
                  const lh_store_value_t *by, double ttl, lh_store_value_t *out, char *err,
                  size_t errlen);

/** Deletes (ns, key); returns 1 if it held a live value, else 0. */
int lh_store_delete(lh_store_t *s, const char *ns, const char *key, size_t klen);

/** Calls `fn` for each live key of `ns` that starts with `prefix` (any order). */
void lh_store_keys(lh_store_t *s, const char *ns, const char *prefix, size_t plen,
                   void (*fn)(void *data, const char *key, size_t klen), void *data);

/* ---- locks: one per (ns, key) that someone holds or waits for ---- */

/* A waiter: `granted` is filled by its owner, the rest by the store. `granted` runs from
** the loop (never inside lh_store_unlock) once the lock is the waiter's. */
struct lh_store_waiter_s {
    void (*granted)(lh_store_waiter_t *w);
    uint64_t owner;        /* set by the store: who waits (lh_store_lock's `owner`) */
    lh_store_lock_t *lock; /* set by the store */
    int state;             /* set by the store */
    lh_store_waiter_t *prev, *next;
};

/**
 * Takes the lock of (ns, key) for `owner`. Returns 1 and *lock when it was free (held
 * now), 0 when `w` now waits (`w->granted` runs later, exactly once, unless cancelled),
 * -1 when `owner` holds it already, -2 out of memory.
 */
int lh_store_lock(lh_store_t *s, const char *ns, const char *key, size_t klen, uint64_t owner,
                  lh_store_waiter_t *w, lh_store_lock_t **lock);

/** Releases a lock `owner` holds: the next waiter gets it. */
void lh_store_unlock(lh_store_t *s, lh_store_lock_t *lock, uint64_t owner);

/** Stops waiting (timeout, shutdown): `granted` never runs; a lock already handed to `w`
 *  but not yet delivered goes on to the next waiter. */
void lh_store_lock_cancel(lh_store_t *s, lh_store_waiter_t *w);

/** Locks held or waited for now (tests, metrics). */
size_t lh_store_nlocks(const lh_store_t *s);

/** Closes the timers; free with lh_store_free once the loop ran their close. */
void lh_store_close(lh_store_t *s);
/** NULL is a no-op. Every lock must be gone (their runs ended). */
void lh_store_free(lh_store_t *s);

#endif
