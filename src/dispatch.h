/*
** dispatch — the one part that knows both sides: a request body becomes an event, the
** event becomes handler tasks, their outcomes become an answer, a log line and metrics.
**
** An event goes through steps, each with one job, in this order:
**
**   lh_dispatch_decode   the body becomes the event table and ctx; refuses what is not
**                        an event (400) or does not fit in memory (503)
**   lh_dispatch_admit    the server's limits (--max-pending); refuses with 503
**   lh_dispatch_accept   the event is taken: it gets its delivery id, and (--ack accept)
**                        its 200. A journal commits the event here, and the step completes
**                        once the commit is durable; today it completes at once
**   lh_dispatch_run      its handlers run, each in a task of its own
**
** The answer is given by dispatch itself, through the event's reply callback, exactly
** once: the refusal of the step that refused it, the 200 at accept (--ack accept, or no
** handler), or 200/500 once the last handler ended (--ack handled). An event refused at
** any step runs no handler: nothing runs before accept completed.
**
** lh_dispatch_event chains every step for serve; fire and luahook test call
** lh_dispatch_submit, or the steps one by one. Several events may be in any step at
** once: an event keeps all its state (callbacks included) in itself.
*/
#ifndef LH_DISPATCH_H
#define LH_DISPATCH_H

#include <stddef.h>

#include "app.h"
#include "metrics.h"
#include "request.h"
#include "vm.h"

typedef struct lh_event_s lh_event_t;


/** The answer to an event: runs at most once (exactly once unless the event's reply is
 *  NULL), now or later. `extra_headers` (lines ending in "\r\n", or NULL) and `body` are
 *  borrowed for the call. */
typedef void (*lh_reply_cb)(void *data, int status, const char *extra_headers, const char *body,
                            size_t len);

/** Told how an event's handlers end (fire prints it; luahook test collects it). Both
 *  members may be NULL. The observer is borrowed: it must outlive the event. */
typedef struct lh_dispatch_observer_s {
    /** A run of handler `h` (borrowed from the event's VM) for `e` ended. `err` is NULL on
     *  success, else borrowed for the call. */
    void (*handler_done)(void *data, const lh_event_t *e, const lh_handler_t *h,
                         lh_outcome_t outcome, const char *err, double seconds);
    /** The last handler of `e` ended (or it had none), after its answer; `e` is freed when
     *  this returns. Runs once per event that ran (lh_dispatch_run), never for a refused
     *  one. */
    void (*event_done)(void *data, const lh_event_t *e, int handlers, int failed);
    void *data;
} lh_dispatch_observer_t;

/** What an event is made of. Everything is borrowed, and only during
 *  lh_dispatch_decode / lh_dispatch_submit, except `observer` and the reply's `data`,
 *  which must stay valid until the event is answered and done. */
typedef struct lh_dispatch_input_s {
    const lh_request_t *req; /* body, path, headers, received_at, received_ns */
    const char *remote;      /* ctx.remote: "ip:port" */
    int attempt;             /* ctx.attempt: 1 for a first delivery (0 counts as 1), more
                                when the event is delivered again */
    const char *action;      /* NULL, or replaces the body's "action" (fire --action); the
                                body's bytes, ctx.body, stay as sent */
    lh_reply_cb reply;       /* NULL: nobody is answered */
    void *reply_data;
    const lh_dispatch_observer_t *observer; /* NULL: none */
    int journal; /* store it in app->journal at accept (serve); 0: never (fire, test) */
} lh_dispatch_input_t;

/**
 * Step 1. Decodes `in`'s body into the event table on app->vm, checks that it is an
 * event (an object with a string "action", after in->action), and builds its ctx. After
 * this returns, `in` and what it points to (but the observer and the reply's data) are
 * no longer used.
 * Returns the event, or NULL when it was refused (400, or 503 when memory ran out): the
 * refusal has then been answered and logged, and nothing of it is left.
 */
lh_event_t *lh_dispatch_decode(lh_app_t *app, const lh_dispatch_input_t *in);

/**
 * Step 2. Admits `e` under the server's limits: its handler runs must fit in
 * --max-pending with those running and those admitted before it. An admitted event's
 * runs are reserved until it runs or is dropped. Returns 0, or -1 when `e` was refused
 * (503): answered, logged and freed.
 */
int lh_dispatch_admit(lh_event_t *e);

/** Runs when an accepted event is durable (status 0) — the caller continues with
 *  lh_dispatch_run(e) — or could not be made so (status < 0): `e` has then been
 *  answered with 503 and is freed when this returns; it must not run. */
typedef void (*lh_dispatch_accept_cb)(void *data, lh_event_t *e, int status);
/* The accept status of an event stored but not to run: a duplicate (answered 200), or
** stored while the server stops (it runs at the next start). `e` is freed after the call. */
#define LH_DISPATCH_NOT_RUN 1

/**
 * Step 3. Takes `e` for good: gives it its delivery id, counts it as received and, with
 * --ack accept or when no handler will run, answers 200. `cb` runs exactly once, when the
 * event is committed: today before this returns; with a journal, later, from the loop.
 * Until then the event must not run. Returns 0; a negative value means `cb` never runs
 * and `e` was refused and freed.
 * For a journal that completes later: the event's tables live in the VM that decoded it,
 * and reload frees a replaced VM once its task count is 0, so a waiting event must hold
 * its VM; its runs are already reserved against --max-pending (app->admitted).
 */
int lh_dispatch_accept(lh_event_t *e, lh_dispatch_accept_cb cb, void *data);

/**
 * Step 4. Starts every handler of an accepted event, each in its own task (a handler that
 * cannot start fails with outcome memory). From here the event owns itself: the
 * observer hears of each handler, the answer follows the last one with --ack handled,
 * then the "event" log line, event_done, and the event is freed — possibly before this
 * returns.
 */
void lh_dispatch_run(lh_event_t *e);

/** Every step in turn, each run continuing into the next. */
void lh_dispatch_submit(lh_app_t *app, const lh_dispatch_input_t *in);

/** serve's shorthand for lh_dispatch_submit: attempt 1, no action override, no observer. A
 *  big body's buffer is taken from `req` (lh_request_take_body), not copied. */
void lh_dispatch_event(lh_app_t *app, lh_request_t *req, const char *remote, lh_reply_cb reply,
                       void *data);

struct lh_journal_run_s;
/** The journal's deliverer (lh_journal_hooks_t.deliver; `data` is the app): runs one
 *  stored run again on the serving VM, as attempt run->attempt, under its stored delivery
 *  id; a handler id the VM no longer has is recorded as failed for good, never attached
 *  to another handler. */
void lh_dispatch_redeliver(void *data, const struct lh_journal_run_s *run);

/** The delivery id ("" before accept), borrowed from `e`. */
const char *lh_dispatch_event_id(const lh_event_t *e);
/** The action (after any override), borrowed from `e`. */
const char *lh_dispatch_event_action(const lh_event_t *e);

#endif
