/*
** clock — what handler deadlines, sleep, timers and os.time() read the time from, and arm
** one-shot or repeating timers on. One interface, two clocks: the loop's (libuv's timers,
** uv_hrtime, the system's wall clock) in serve and fire, and a virtual one in luahook test,
** whose time moves only when the harness moves it. Knows nothing of Lua.
*/
#ifndef LH_CLOCK_H
#define LH_CLOCK_H

#include <stdint.h>

#include <uv.h>

typedef struct lh_clock_s lh_clock_t;
typedef struct lh_clock_timer_s lh_clock_timer_t;

/** A timer fell due. The timer may be started again, stopped or freed inside. */
typedef void (*lh_clock_cb)(lh_clock_timer_t *t);

struct lh_clock_timer_s {
    void *data;        /* for the callback; first, as libuv's handles have it */
    lh_clock_t *clock; /* borrowed; outlives the timer */
    lh_clock_cb cb;
    uint64_t repeat_ns; /* 0: one-shot */
    int active;         /* started and not yet due (a repeating one stays active) */
    /* the loop's clock */
    uv_timer_t *uv; /* owned; freed in its close callback */
    /* the virtual clock */
    uint64_t due_ns, seq;
    lh_clock_timer_t *prev, *next; /* the clock's queue, in (due_ns, seq) order */
};

typedef struct {
    uint64_t (*now)(lh_clock_t *c);
    double (*wall)(lh_clock_t *c);
    int (*timer_init)(lh_clock_t *c, lh_clock_timer_t *t);
    void (*timer_start)(lh_clock_timer_t *t, uint64_t after_ns);
    void (*timer_stop)(lh_clock_timer_t *t);
    void (*timer_dispose)(lh_clock_timer_t *t); /* frees t, now or once libuv let go */
} lh_clock_ops_t;

struct lh_clock_s {
    const lh_clock_ops_t *ops;
    /* 1: time stands still while Lua computes (luahook test), so a handler's CPU time is
    ** counted apart against its deadline; 0: the clock is the real time */
    int virtual_time;
};

/** The loop's clock: libuv timers on `loop`. NULL when out of memory. */
lh_clock_t *lh_clock_new_loop(uv_loop_t *loop);

/** A virtual clock reading `wall` seconds since the epoch (luahook test: 1700000000.0). */
lh_clock_t *lh_clock_new_virtual(double wall);

/** Frees the clock; every timer made on it must have been freed. NULL does nothing. */
void lh_clock_free(lh_clock_t *c);

/** Monotonic nanoseconds: for deadlines and durations. Never 0. */
uint64_t lh_clock_now(lh_clock_t *c);

/** Seconds since the epoch (ctx.received_at, os.time()). */
double lh_clock_wall(lh_clock_t *c);

/** A new stopped timer calling `cb` with `data`. NULL when out of memory. */
lh_clock_timer_t *lh_clock_timer_new(lh_clock_t *c, lh_clock_cb cb, void *data);

/** (Re)starts: due in `after_ns`, then every `repeat_ns` (0: once). */
void lh_clock_timer_start(lh_clock_timer_t *t, uint64_t after_ns, uint64_t repeat_ns);

/** Stops; the callback does not run until the next start. Idempotent. */
void lh_clock_timer_stop(lh_clock_timer_t *t);

/** Stops and frees; the callback never runs again. NULL does nothing. */
void lh_clock_timer_free(lh_clock_timer_t *t);

/* The virtual clock's own controls (luahook test); -1 / 0 on the loop's clock. */

/** Runs the earliest timer due at or before `limit_ns`, moving the time to its due time.
 *  Returns 1 if one ran, 0 if none is due by then. */
int lh_clock_run_next(lh_clock_t *c, uint64_t limit_ns);

/** Moves the time forward to `ns` without running anything; never back. */
void lh_clock_set(lh_clock_t *c, uint64_t ns);

/** Seconds to nanoseconds, rounded, for a count of seconds from 0 to 1e7. */
uint64_t lh_clock_ns(double seconds);

#endif
