/*
** journal — the durable record of every accepted event and of its handler runs (issue 12).
**
** This is the one interface the rest of luahook uses. Today's backend writes every event
** and every attempt's end to an append-only log (jlog.c: the point of durability, group
** commit on a thread of its own) and builds the state folder's SQLite database from it as
** an index (through the state writer, a few ms behind; at open, from the log's records it
** lacks). A second backend (PostgreSQL, shared by several instances) implements the same
** calls, with its own commit as the point of durability:
**
**   accept      store an event and its runs (one per handler, "running"); answer later
**   run_ended   record an attempt's end; the run becomes ok, retrying (with its next_at),
**               pending (interrupted) or dead; the delivery's status follows
**   index_wait  a reader (the API) sees every event answered before it asked
**   take        (inside, on a timer) claim due runs — also those another process set to
**               pending (luahook replay) — and hand them to the deliverer
**   recover     at open: runs left "running" by a crash count as an interrupted attempt
**   prune       retention by age and size, off the loop
**
** The schema is the shared contract of src/state.c's steps 3 to 6 (deliveries, runs,
** attempts; bodies in the log, journal_log, journal_segments).
** Everything here runs on the loop thread; callbacks run on the loop.
*/
#ifndef LH_JOURNAL_H
#define LH_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "metrics.h"
#include "retry.h"
#include "state.h"

typedef struct lh_journal_s lh_journal_t;

typedef struct lh_journal_config_s {
    int sync_full;           /* --sync full (fsync at each commit) or normal */
    lh_retry_policy_t retry; /* --retries, --retry-first, --retry-cap */
    double dedup_window;     /* --dedup-window seconds; 0: off */
    double keep;             /* --keep: finished deliveries, seconds */
    double keep_dead;        /* --keep-dead: dead ones */
    uint64_t max_size;       /* --journal-max-size bytes; 0: no bound */
} lh_journal_config_t;

/** Opens the journal on `st` (blocking, before lh_state_start): sets the sync mode and
 *  recovers runs a crash left running. NULL with a message in `err`. */
lh_journal_t *lh_journal_open(lh_state_t *st, const lh_journal_config_t *cfg, char *err,
                              size_t errlen);

/* An event to store; everything is borrowed for the call, but `body`, borrowed until the
** accept's callback has run: the writer reads it from there, not from a copy. */
typedef struct lh_journal_event_s {
    const char *delivery; /* the delivery id (ctx.id) */
    double received;      /* unix seconds */
    const char *path;
    size_t path_len;
    const char *remote;
    const char *action;
    int has_project;
    int64_t project;
    const char *headers; /* a JSON object, without the secret's header */
    size_t headers_len;
    const char *body;
    size_t body_len;
    const char *const *handlers; /* stable handler ids: one run each */
    size_t nhandlers;
} lh_journal_event_t;

/* What an accept came to (besides a negative UV_E* when it could not be stored). */
enum {
    LH_JOURNAL_STORED = 0,    /* committed: its handlers may run */
    LH_JOURNAL_DUPLICATE = 1, /* committed as a duplicate (--dedup-window): nothing runs */
    LH_JOURNAL_CLOSED = 2,    /* committed while the server stops: runs at the next start */
};

/** `jid` identifies the stored delivery (deliveries.id); `err` is borrowed, set when
 *  status < 0. */
typedef void (*lh_journal_accept_cb)(void *data, int status, int64_t jid, const char *err);

/**
 * Stores `ev`; `cb` runs once on the loop when it is committed (or failed). Returns 0, or
 * -1 when the journal refuses at once (full, out of memory): `err` says why, `cb` never
 * runs.
 */
int lh_journal_accept(lh_journal_t *j, const lh_journal_event_t *ev, lh_journal_accept_cb cb,
                      void *data, char *err, size_t errlen);

/* One attempt's end. */
typedef struct lh_journal_end_s {
    int64_t jid;
    const char *handler;
    int attempt;    /* from 1 */
    double started; /* unix seconds */
    int retries;    /* the handler's own (on()'s retries option); -1: the journal's */
    int only_run;   /* the delivery has no other run: its state is the status (0 is always right) */
    lh_outcome_t outcome;
    lh_end_t how;
    const char *error; /* NULL on success */
    const char *traceback;
} lh_journal_end_t;

/** Records the end of an attempt (queued; committed with the next batch). */
void lh_journal_run_ended(lh_journal_t *j, const lh_journal_end_t *end);

/* A run taken up again (a retry, a replay, or one a crash interrupted). Borrowed for the
** deliverer's call. */
typedef struct lh_journal_run_s {
    int64_t jid;
    const char *delivery;
    const char *handler;
    int attempt; /* this attempt's number, from 1 */
    double received;
    const char *path;
    const char *remote;
    const char *headers; /* JSON object */
    size_t headers_len;
    const char *body;
    size_t body_len;
} lh_journal_run_t;

/** During the deliverer's call: the run's body (run->body), handed over — the caller frees
 *  it, run->body stays readable until the call returns. NULL when taken already. */
char *lh_journal_run_take_body(const lh_journal_run_t *run);

typedef struct lh_journal_hooks_s {
    /* runs the attempt; must end it with lh_journal_run_ended (also when it cannot start) */
    void (*deliver)(void *data, const lh_journal_run_t *run);
    /* how many runs may start now without starving new events */
    int (*room)(void *data);
    void *data;
} lh_journal_hooks_t;

/** Starts the scheduler and retention timers on `loop` (after lh_state_start). */
int lh_journal_start(lh_journal_t *j, uv_loop_t *loop, const lh_journal_hooks_t *hooks);

/**
 * Calls `cb` on the loop once the index (the database) holds every record the log had
 * written before this call — at once (returning 0, `cb` not called) when it does already,
 * or `j` is NULL. Returns 1 when `cb` will run. A failing index releases the waiters: they
 * read what the database has.
 */
int lh_journal_index_wait(lh_journal_t *j, void (*cb)(void *data), void *data);

/** Keeps the luahook_journal_* series of `m` current. */
void lh_journal_observe(lh_journal_t *j, lh_metrics_t *m);

/** Stops taking runs (shutdown, from the loop): commits that come back afterwards report
 *  LH_JOURNAL_CLOSED. Closes its timers. */
void lh_journal_close(lh_journal_t *j);

/** Frees `j` (after lh_state_stop ran every callback). NULL is a no-op. */
void lh_journal_free(lh_journal_t *j);

#endif
