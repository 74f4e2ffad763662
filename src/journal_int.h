/*
** journal_int — what journal.c (the loop's side) and journal_index.c (the database's side,
** on the state writer) share: the journal's state and its statements. Not for other parts.
*/
#ifndef LH_JOURNAL_INT_H
#define LH_JOURNAL_INT_H

#include <sqlite3.h>
#include <uv.h>

#include "jlog.h"
#include "journal.h"
#include "journal_dedup.h"

/* Statements of the writer thread, prepared on first use (journal_index.c). */
enum {
    S_INS_DELIVERY,
    S_INS_RUN,
    S_INS_RUN_ENDED,
    S_INS_ATTEMPT,
    S_END_RUN,
    S_COUNT_RUNS,
    S_SET_STATUS,
    S_DUE,
    S_CLAIM,
    S_NEXT_DUE,
    S_PRUNABLE_AGE,
    S_PRUNABLE_SIZE,
    S_DEL_ATTEMPTS,
    S_DEL_RUNS,
    S_DEL_DELIVERY,
    S_DEL_BODY,
    S_APPLIED,
    S_SEG_NOTE,
    S_SEGS,
    S_SEG_BODIES,
    S_MOVE_BODY,
    S_BODY_MOVED,
    S_SEG_GONE,
    S_COUNT_
};


typedef struct end_s end_t;

struct lh_journal_s {
    lh_state_t *st; /* borrowed */
    lh_jlog_t *log; /* owned: the point of durability */
    int spares;     /* the log's segments are made ahead (lh_jlog_use_spares) */
    char *dir;      /* owned: the state folder */
    lh_journal_config_t cfg;
    sqlite3_stmt *s[S_COUNT_]; /* the writer's */
    uv_loop_t *loop;
    uv_timer_t take_timer, prune_timer, index_timer;
    int timers_open, closed;
    lh_journal_hooks_t hooks;
    lh_metrics_t *metrics; /* borrowed; NULL: none */
    /* the loop's view */
    int taking, pruning;  /* an op of that kind is queued */
    unsigned takes;       /* take ops sent: every STATS_EVERY-th also counts */
    double next_due;      /* earliest next_at the loop knows of; 0: none */
    uint64_t used_bytes;  /* database pages in use, at the last count, plus accepts since */
    uint64_t db_bytes;    /* the database file, at the last count */
    int full;             /* over --journal-max-size, and the last prune found nothing */
    uint64_t prune_every; /* ms between retention passes */
    int64_t next_jid;     /* ids are given here, in the log's order */
    end_t *failed_ends;   /* ends the log could not take, to append again */
    /* ends waiting for the store writes made before them (lh_state_flush) */
    end_t *waiting;
    int flushing;
    uint64_t flush_target, store_durable;
    /* records written to the log, not yet in the index */
    lh_jlog_rec_t *ix_head, *ix_tail;
    size_t ix_n;
    uint64_t ix_pushed, ix_applied; /* records given to the index, and applied (or failed) */
    struct ix_waiter_s *waiters;    /* lh_journal_index_wait */
    int ix_busy;                    /* an index op is queued */
    uint64_t ix_last;               /* uv_now of the last index commit's end */
    double commit_ms;               /* the log's commit time per event, averaged */
    lh_dedup_t dedup;               /* --dedup-window */
};

typedef struct index_op_s {
    lh_journal_t *j;
    lh_jlog_rec_t *recs; /* in the log's order */
    size_t n;
} index_op_t;

/** The writer's statement `k`, reset and unbound; NULL when it cannot be prepared. */
sqlite3_stmt *lh_jx_stmt(lh_journal_t *j, sqlite3 *db, int k);
/** Steps `s` to its end and resets it: SQLITE_OK or the error code. */
int lh_jx_step(sqlite3 *db, sqlite3_stmt *s);
/** Sets a delivery's status (and finished time, `final`). */
int lh_jx_set_status(lh_journal_t *j, sqlite3 *db, int64_t id, const char *status, int final,
                     double now);
/** A delivery's status made again from its runs. */
int lh_jx_refresh_status(lh_journal_t *j, sqlite3 *db, int64_t id, double now);
/** Applies an index_op_t's records (an lh_state_call function). */
int lh_jx_apply(sqlite3 *db, void *op);
/** At open: the index takes up the log's records after its applied position. */
int lh_jx_replay(lh_journal_t *j, sqlite3 *db, char *err, size_t errlen);

#endif
