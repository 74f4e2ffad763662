#include "journal_int.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>

#include "journal_record.h"
#include "log.h"

/* How often the scheduler looks in the database for due runs (replay's "within a
** second"), and at most how many it takes at once. */
#define TAKE_EVERY_MS 500
#define TAKE_MAX      64
/* Retention passes, and how many deliveries one pass removes (the writer stays quick). */
#define PRUNE_EVERY_MS 30000
#define PRUNE_BATCH    500
#define PRUNE_STEP     8 /* over the size bound: deleted this many at a time */
/* The counts for /metrics, every this many takes. */
#define STATS_EVERY 4
/* The index (the database) takes the log's records in commits at most this often, or of at
** most this many records: fewer, fuller commits cost less per event, and fewer events are
** cut off from their runs' ends (below). A failed commit is tried again after INDEX_RETRY_MS. */
#define INDEX_EVERY_MS 50
#define INDEX_MAX      8192
#define INDEX_RETRY_MS 500
/* An event waits for its run's end before it goes to the index: the two in one commit are
** two rows written once; apart, the run and the status are written open, then rewritten (two
** more statements, and index entries made and removed again), which cost the writer 40 %
** more at 15 000 events a second. An end comes a log batch or two after its event: the wait
** is INDEX_HOLD_MS and four of the log's recent commit times, at most INDEX_HOLD_MAX_MS (a
** slow disk). A held event is looked at again every INDEX_LOOK_MS. */
#define INDEX_HOLD_MS     20
#define INDEX_HOLD_MAX_MS 500
#define INDEX_LOOK_MS     2
/* Segments looked at per retention pass. */
#define RETIRE_MAX 8

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ opening, recovery */

/* Runs a crash (or a stop mid-commit) left "running": that attempt counts as interrupted,
** and the run is due at once when it was its first attempt, else after the backoff — or
** dead, with no retry left. Blocking, at start-up. */
static int recover(lh_journal_t *j, sqlite3 *db, char *err, size_t errlen)
{
    double now = now_unix();
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", 0, 0, 0);
    int n = 0;
    if (rc != SQLITE_OK)
        goto fail;
    /* replayed runs with no time set are due now */
    rc = sqlite3_exec(db,
                      "UPDATE runs SET next_at = 0 WHERE state <> 'ok'"
                      " AND state IN ('pending', 'retrying')"
                      " AND next_at IS NULL",
                      0, 0, 0);
    if (rc != SQLITE_OK)
        goto fail;
    rc = sqlite3_prepare_v2(db,
                            "SELECT delivery, handler, attempts, updated FROM runs"
                            " WHERE state <> 'ok' AND state = 'running'",
                            -1, &s, NULL);
    while (rc == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(s, 0);
        const char *handler = (const char *)sqlite3_column_text(s, 1);
        int attempts = sqlite3_column_int(s, 2);
        double started = sqlite3_column_double(s, 3);
        lh_run_state_t next =
            lh_retry_next(&j->cfg.retry, attempts, LH_OUTCOME_ERROR, LH_END_INTERRUPTED);
        const char *why = "interrupted: the server stopped during this attempt (a crash, "
                          "kill -9 or power loss)";
        sqlite3_stmt *a = lh_jx_stmt(j, db, S_INS_ATTEMPT), *r = lh_jx_stmt(j, db, S_END_RUN);
        if (a == NULL || r == NULL) {
            rc = sqlite3_errcode(db);
            break;
        }
        sqlite3_bind_int64(a, 1, id);
        sqlite3_bind_text(a, 2, handler, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(a, 3, attempts);
        sqlite3_bind_double(a, 4, started);
        sqlite3_bind_double(a, 5, now);
        sqlite3_bind_text(a, 6, "interrupted", -1, SQLITE_STATIC);
        sqlite3_bind_text(a, 7, why, -1, SQLITE_STATIC);
        sqlite3_bind_null(a, 8);
        if ((rc = lh_jx_step(db, a)) != SQLITE_OK)
            break;
        sqlite3_bind_int64(r, 1, id);
        sqlite3_bind_text(r, 2, handler, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(r, 3, attempts);
        sqlite3_bind_text(r, 4, lh_run_state_name(next), -1, SQLITE_STATIC);
        if (next == LH_RUN_DEAD) {
            sqlite3_bind_null(r, 5);
        } else if (attempts <= 1) {
            sqlite3_bind_double(r, 5, now);
        } else {
            /* cut short again: the backoff, so that a crash loop does not spend a day's
            ** retries in seconds */
            uint32_t rnd = 0;
            uv_random(NULL, NULL, &rnd, sizeof(rnd), 0, NULL);
            sqlite3_bind_double(
                r, 5, now + lh_retry_delay(&j->cfg.retry, attempts, (double)rnd / 4294967296.0));
        }
        sqlite3_bind_text(r, 6, why, -1, SQLITE_STATIC);
        sqlite3_bind_null(r, 7);
        sqlite3_bind_double(r, 8, now);
        sqlite3_bind_double(r, 9, started);
        if ((rc = lh_jx_step(db, r)) != SQLITE_OK ||
            (rc = lh_jx_refresh_status(j, db, id, now)) != 0)
            break;
        n++;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc != SQLITE_OK || (rc = sqlite3_exec(db, "COMMIT", 0, 0, 0)) != SQLITE_OK)
        goto fail;
    if (n > 0) {
        char cnt[16];
        snprintf(cnt, sizeof(cnt), "%d", n);
        lh_field_t f[] = {LH_FIELD_NUM("runs", cnt)};
        lh_log_fields(LH_WARN, "journal: runs interrupted by the last stop run again", f, 1);
    }
    return 0;
fail:
    snprintf(err, errlen, "journal recovery in %s: %s", lh_state_path(j->st), sqlite3_errmsg(db));
    sqlite3_finalize(s);
    sqlite3_exec(db, "ROLLBACK", 0, 0, 0);
    return -1;
}

/* ------------------------------------------------------------------ the index (loop) */

static void index_kick(lh_journal_t *j);
static void on_index_timer(uv_timer_t *h);

static void free_recs(lh_jlog_rec_t *r)
{
    while (r) {
        lh_jlog_rec_t *next = r->next;
        free(r);
        r = next;
    }
}

typedef struct ix_waiter_s {
    struct ix_waiter_s *next;
    uint64_t upto; /* ix_pushed when it came */
    void (*cb)(void *data);
    void *data;
} ix_waiter_t;

/* Calls the waiters the index has caught up with (`all`: every one). */
static void release_waiters(lh_journal_t *j, int all)
{
    ix_waiter_t **p = &j->waiters, *ready = NULL, **tail = &ready;
    while (*p) {
        ix_waiter_t *w = *p;
        if (all || w->upto <= j->ix_applied) {
            *p = w->next;
            w->next = NULL;
            *tail = w, tail = &w->next;
        } else {
            p = &w->next;
        }
    }
    while (ready) {
        ix_waiter_t *w = ready;
        ready = w->next;
        w->cb(w->data);
        free(w);
    }
}

static void index_done(void *data, int status)
{
    index_op_t *op = data;
    lh_journal_t *j = op->j;
    j->ix_busy = 0;
    j->ix_last = uv_now(j->loop);
    j->ix_applied += op->n;
    if (j->metrics != NULL)
        j->metrics->journal_log_writes = lh_jlog_stats(j->log).batches;
    if (status < 0) {
        /* the disk refused: the records stay in the log, and go to the index again */
        lh_jlog_rec_t *tail = op->recs;
        while (tail->next)
            tail = tail->next;
        tail->next = j->ix_head;
        j->ix_head = op->recs;
        if (j->ix_tail == NULL)
            j->ix_tail = tail;
        j->ix_n += op->n;
        char msg[256];
        lh_state_last_error(j->st, msg, sizeof(msg));
        lh_field_t f[] = {LH_FIELD("error", msg)};
        lh_log_fields(LH_WARN, "journal: the index could not take the log's records: tried again",
                      f, 1);
        if (j->timers_open && !j->closed)
            uv_timer_start(&j->index_timer, on_index_timer, INDEX_RETRY_MS, 0);
    } else {
        free_recs(op->recs);
    }
    free(op);
    release_waiters(j, status < 0);
    if (status >= 0)
        index_kick(j);
}

/* How long an event may wait for its run's end (ms). */
static uint64_t index_hold(const lh_journal_t *j)
{
    double ms = INDEX_HOLD_MS + 4 * j->commit_ms;
    return ms < INDEX_HOLD_MAX_MS ? (uint64_t)ms : INDEX_HOLD_MAX_MS;
}

/* The slot of `id` in `ids`, an open-addressed table of `cap` (a power of two): where it is,
** or the empty one (0) where it would go. */
static size_t id_slot(const int64_t *ids, size_t cap, int64_t id)
{
    size_t i = (size_t)id & (cap - 1);
    while (ids[i] != 0 && ids[i] != id)
        i = (i + 1) & (cap - 1);
    return i;
}

/* How many records may go to the index now, the last of them in *last: those before the
** first event younger than index_hold() whose run's end has not come (`all`: every one).
** What the index holds is always a prefix of the log. */
static size_t index_ripe(lh_journal_t *j, int all, lh_jlog_rec_t **last)
{
    size_t n = 0, cap = 16;
    while (cap < j->ix_n * 2)
        cap *= 2;
    int64_t *ends = all ? NULL : calloc(cap, sizeof(*ends)); /* ids of the ends, hashed */
    uint64_t now = j->loop != NULL ? uv_now(j->loop) : 0, hold = index_hold(j);
    for (lh_jlog_rec_t *r = j->ix_head; ends && r; r = r->next) {
        int64_t id = r->type == LH_JLOG_END ? lh_jrec_id(r->meta, r->meta_len) : 0;
        if (id > 0)
            ends[id_slot(ends, cap, id)] = id;
    }
    for (lh_jlog_rec_t *r = j->ix_head; r; r = r->next) {
        if (ends != NULL && r->type == LH_JLOG_EVENT && r->mark + hold > now) {
            int64_t id = lh_jrec_id(r->meta, r->meta_len);
            if (ends[id_slot(ends, cap, id)] != id)
                break;
        }
        *last = r;
        n++;
    }
    free(ends);
    return n;
}

/* Sends what may go (index_ripe); how many records went. */
static size_t index_send(lh_journal_t *j, int all)
{
    lh_jlog_rec_t *last = NULL;
    size_t n = index_ripe(j, all, &last);
    if (n == 0)
        return 0;
    index_op_t *op = malloc(sizeof(*op));
    if (op == NULL) {
        release_waiters(j, 1);
        return 0; /* tried again with the next record */
    }
    op->j = j;
    op->recs = j->ix_head;
    op->n = n;
    lh_jlog_rec_t *rest = last->next;
    last->next = NULL;
    if (lh_state_call_unsynced(j->st, lh_jx_apply, index_done, op) != 0) {
        last->next = rest;
        free(op);
        release_waiters(j, 1);
        return 0;
    }
    j->ix_head = rest;
    if (rest == NULL)
        j->ix_tail = NULL;
    j->ix_n -= n;
    j->ix_busy = 1;
    return n;
}

/* Sends what waits for the index: at most every INDEX_EVERY_MS, up to an event that waits for
** its end (index_ripe); everything at once when someone waits for it. */
static void index_kick(lh_journal_t *j)
{
    if (j->ix_busy || j->ix_head == NULL)
        return;
    if (j->loop == NULL || j->closed || !j->timers_open || j->ix_n >= INDEX_MAX ||
        j->waiters != NULL) {
        index_send(j, 1);
        return;
    }
    if (uv_is_active((uv_handle_t *)&j->index_timer))
        return; /* a look is due */
    uint64_t now = uv_now(j->loop), since = now - j->ix_last;
    if (since < INDEX_EVERY_MS) {
        uv_timer_start(&j->index_timer, on_index_timer, INDEX_EVERY_MS - since, 0);
        return;
    }
    if (index_send(j, 0) == 0) { /* the first record is an event waiting for its end */
        uint64_t ripe = j->ix_head->mark + index_hold(j);
        uint64_t wait = ripe > now ? ripe - now : 1;
        uv_timer_start(&j->index_timer, on_index_timer, wait < INDEX_LOOK_MS ? wait : INDEX_LOOK_MS,
                       0);
    }
}

int lh_journal_index_wait(lh_journal_t *j, void (*cb)(void *data), void *data)
{
    if (j == NULL || j->ix_applied >= j->ix_pushed)
        return 0;
    ix_waiter_t *w = malloc(sizeof(*w));
    if (w == NULL)
        return 0; /* reads what the database has */
    *w = (ix_waiter_t){j->waiters, j->ix_pushed, cb, data};
    j->waiters = w;
    if (j->timers_open && uv_is_active((uv_handle_t *)&j->index_timer))
        uv_timer_stop(&j->index_timer);
    index_kick(j);
    return 1;
}

static void index_push(lh_journal_t *j, lh_jlog_rec_t *r)
{
    j->ix_pushed++;
    r->next = NULL;
    r->mark = j->loop != NULL ? uv_now(j->loop) : 0;
    if (j->ix_tail)
        j->ix_tail->next = r;
    else
        j->ix_head = r;
    j->ix_tail = r;
    j->ix_n++;
    index_kick(j);
}

/* ------------------------------------------------------------------ accept */

typedef struct accept_s {
    lh_journal_t *j;
    lh_journal_accept_cb cb;
    void *data;
    uint64_t queued_ns;
    int64_t id, dup_of;
} accept_t;

static void prune_now(lh_journal_t *j);

static void accept_done(void *data, lh_jlog_rec_t *r)
{
    accept_t *a = data;
    lh_journal_t *j = a->j;
    char why[400];
    double secs = (double)(uv_hrtime() - a->queued_ns) / 1e9;
    if (r->status == 0) /* a moving average, for index_hold */
        j->commit_ms += (secs * 1000 - j->commit_ms) / 16;
    if (j->metrics != NULL && r->status == 0) {
        lh_metrics_t *m = j->metrics;
        for (int i = 0; i < LH_JOURNAL_COMMIT_BUCKETS; i++)
            if (secs <= lh_metrics_commit_bounds[i]) {
                m->journal_commit_buckets[i]++;
                break;
            }
        m->journal_commit_sum += secs;
        m->journal_commit_count++;
    }
    if (r->status < 0) {
        char msg[256];
        lh_jlog_last_error(j->log, msg, sizeof(msg));
        snprintf(why, sizeof(why), "the journal could not store the event (%s): %s",
                 r->status == UV_ENOSPC  ? "disk full"
                 : r->status == UV_EROFS ? "read-only"
                 : r->status == UV_EIO   ? "I/O error"
                                         : uv_err_name(r->status),
                 msg);
        if (j->metrics != NULL)
            j->metrics->journal_refused++;
        lh_dedup_drop(&j->dedup, a->id);
        int status = r->status;
        free(r);
        a->cb(a->data, status, 0, why);
    } else {
        /* the index takes it first: a handler's end must find its run */
        index_push(j, r);
        a->cb(a->data,
              a->dup_of   ? LH_JOURNAL_DUPLICATE
              : j->closed ? LH_JOURNAL_CLOSED
                          : LH_JOURNAL_STORED,
              a->id, NULL);
    }
    free(a);
}

int lh_journal_accept(lh_journal_t *j, const lh_journal_event_t *ev, lh_journal_accept_cb cb,
                      void *data, char *err, size_t errlen)
{
    if (j->cfg.max_size != 0 && j->used_bytes >= j->cfg.max_size) {
        if (j->full) {
            snprintf(err, errlen,
                     "the journal is full: --journal-max-size %llu bytes reached and no finished "
                     "delivery is left to prune",
                     (unsigned long long)j->cfg.max_size);
            if (j->metrics != NULL)
                j->metrics->journal_refused++;
            return -1;
        }
        prune_now(j);
    }
    unsigned char digest[32];
    int has_digest = 0;
    int64_t dup_of = 0;
    if (j->cfg.dedup_window > 0) {
        /* path and body, with a separator no path holds */
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int n = 0;
        has_digest = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
                     EVP_DigestUpdate(md, ev->path, ev->path_len) == 1 &&
                     EVP_DigestUpdate(md, "\n", 1) == 1 &&
                     EVP_DigestUpdate(md, ev->body, ev->body_len) == 1 &&
                     EVP_DigestFinal_ex(md, digest, &n) == 1 && n == 32;
        EVP_MD_CTX_free(md);
        if (has_digest)
            dup_of = lh_dedup_find(&j->dedup, digest, ev->received);
    }
    lh_jrec_event_t rec = {.id = j->next_jid,
                           .received = ev->received,
                           .has_project = ev->has_project,
                           .project = ev->project,
                           .dup_of = dup_of,
                           .digest = has_digest ? digest : NULL,
                           .delivery = ev->delivery,
                           .delivery_len = strlen(ev->delivery),
                           .path = ev->path,
                           .path_len = ev->path_len,
                           .remote = ev->remote,
                           .remote_len = ev->remote ? strlen(ev->remote) : 0,
                           .action = ev->action,
                           .action_len = ev->action ? strlen(ev->action) : 0,
                           .headers = ev->headers,
                           .headers_len = ev->headers_len,
                           .nhandlers = (uint32_t)ev->nhandlers,
                           .handlers = ev->handlers};
    accept_t *a = malloc(sizeof(*a));
    lh_jlog_rec_t *r = lh_jlog_rec_new(LH_JLOG_EVENT, lh_jrec_event_size(&rec));
    if (a == NULL || r == NULL) {
        free(a);
        free(r);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int64_t id = j->next_jid++;
    lh_jrec_event_write(r->meta, &rec);
    *a = (accept_t){j, cb, data, uv_hrtime(), id, dup_of};
    r->body = ev->body; /* the caller's till accept_done: a body may be megabytes */
    r->body_len = ev->body_len;
    r->done = accept_done;
    r->data = a;
    if (has_digest && dup_of == 0)
        lh_dedup_add(&j->dedup, digest, id, ev->received);
    lh_jlog_append(j->log, r);
    j->used_bytes += ev->body_len + ev->headers_len + 256;
    return 0;
}

/* ------------------------------------------------------------------ a run's end */

struct end_s {
    lh_journal_t *j;
    int64_t jid;
    int attempt;
    int only_run;                   /* the delivery has this run alone: its state is the status */
    end_t *next;                    /* failed_ends, waiting */
    uint64_t store_write;           /* the last store write queued before it */
    double started, ended, next_at; /* next_at 0: none */
    lh_run_state_t state;
    const char *outcome;               /* static */
    char *handler, *error, *traceback; /* into mem (error: or static, see end_send) */
    char mem[];
};

static void end_send(lh_journal_t *j, end_t *e);

/* An error line about run end `e`: `what`, its handler and the storage's `error`. */
static void log_end_error(const end_t *e, const char *error, const char *what)
{
    lh_field_t f[] = {LH_FIELD("handler", e->handler), LH_FIELD("error", error)};
    lh_log_fields(LH_ERROR, what, f, 2);
}

static void end_done(void *data, lh_jlog_rec_t *r)
{
    end_t *e = data;
    lh_journal_t *j = e->j;
    if (r->status < 0) {
        char msg[256];
        lh_jlog_last_error(j->log, msg, sizeof(msg));
        log_end_error(e, msg,
                      "journal: a run's end could not be stored: tried again with the next look "
                      "(a restart runs it again if it never is)");
        free(r);
        if (!j->closed) { /* a full disk may have room again in a moment */
            e->next = j->failed_ends;
            j->failed_ends = e;
            return;
        }
        free(e);
        return;
    }
    index_push(j, r);
    free(e);
}

/* Writes `e` to the log now (its store writes are durable, or known lost). */
static void end_append(lh_journal_t *j, end_t *e)
{
    lh_jrec_end_t rec = {.id = e->jid,
                         .attempt = e->attempt,
                         .only_run = e->only_run,
                         .started = e->started,
                         .ended = e->ended,
                         .next_at = e->next_at,
                         .state = e->state,
                         .handler = e->handler,
                         .handler_len = strlen(e->handler),
                         .outcome = e->outcome,
                         .outcome_len = strlen(e->outcome),
                         .error = e->error,
                         .error_len = e->error ? strlen(e->error) : 0,
                         .traceback = e->traceback,
                         .traceback_len = e->traceback ? strlen(e->traceback) : 0};
    lh_jlog_rec_t *r = lh_jlog_rec_new(LH_JLOG_END, lh_jrec_end_size(&rec));
    if (r == NULL) {
        LH_LOG(LH_ERROR,
               "journal: out of memory recording a run of %s: it runs again after a "
               "restart",
               e->handler);
        free(e);
        return;
    }
    lh_jrec_end_write(r->meta, &rec);
    r->done = end_done;
    r->data = e;
    lh_jlog_append(j->log, r);
}

static void store_flushed(void *data, int status);

static void flush_store(lh_journal_t *j)
{
    j->flush_target = lh_state_last_write(j->st);
    if (lh_state_flush(j->st, store_flushed, j) == 0)
        j->flushing = 1;
    else
        store_flushed(j, UV_ENOMEM);
}

/* The store writes made before the waiting ends are durable (or lost, status < 0). */
static void store_flushed(void *data, int status)
{
    lh_journal_t *j = data;
    uint64_t target = j->flush_target;
    j->flushing = 0;
    if (status == 0 && target > j->store_durable)
        j->store_durable = target;
    end_t *w = j->waiting, *later = NULL;
    j->waiting = NULL;
    while (w) {
        end_t *e = w;
        w = e->next;
        e->next = NULL;
        if (e->store_write > target) { /* made after the flush went: the next one */
            e->next = later, later = e;
            continue;
        }
        if (status < 0 && e->state == LH_RUN_OK) {
            /* the handler's store writes may be lost: not ok, an interrupted attempt, run
            ** again once its end is stored */
            char msg[256];
            lh_state_last_error(j->st, msg, sizeof(msg));
            log_end_error(e, msg,
                          "journal: a run's store writes could not be stored: it counts as "
                          "interrupted and runs again");
            e->state = LH_RUN_PENDING;
            e->next_at = e->ended;
            e->outcome = "interrupted";
            e->error = "the run's store writes could not be stored: run again";
        }
        end_append(j, e);
    }
    j->waiting = later;
    if (later != NULL)
        flush_store(j);
}

/* A run's end goes to the log after the store writes made before it: a run recorded as
** done never lost what it wrote. */
static void end_send(lh_journal_t *j, end_t *e)
{
    e->store_write = lh_state_last_write(j->st);
    if (e->store_write <= j->store_durable) {
        end_append(j, e);
        return;
    }
    e->next = j->waiting;
    j->waiting = e;
    if (!j->flushing)
        flush_store(j);
}

/* Ends the log refused, sent again (loop side). */
static void retry_failed_ends(lh_journal_t *j)
{
    end_t *e = j->failed_ends;
    j->failed_ends = NULL;
    while (e) {
        end_t *next = e->next;
        e->next = NULL;
        end_send(j, e);
        e = next;
    }
}

static void arm_take(lh_journal_t *j, double due);

void lh_journal_run_ended(lh_journal_t *j, const lh_journal_end_t *x)
{
    const lh_retry_policy_t *p = &j->cfg.retry;
    lh_retry_policy_t own;
    if (x->retries >= 0) {
        own = *p;
        own.retries = x->retries;
        p = &own;
    }
    size_t hl = strlen(x->handler) + 1, el = x->error ? strlen(x->error) + 1 : 0,
           tl = x->traceback ? strlen(x->traceback) + 1 : 0;
    end_t *e = malloc(sizeof(*e) + hl + el + tl);
    if (e == NULL) {
        LH_LOG(LH_ERROR,
               "journal: out of memory recording a run of %s: it runs again after a "
               "restart",
               x->handler);
        return;
    }
    memset(e, 0, sizeof(*e));
    e->j = j;
    e->jid = x->jid;
    e->attempt = x->attempt;
    e->only_run = x->only_run;
    e->started = x->started;
    e->ended = now_unix();
    e->state = lh_retry_next(p, x->attempt, x->outcome, x->how);
    e->outcome = lh_retry_outcome_name(x->outcome, x->how);
    char *q = e->mem;
    memcpy(q, x->handler, hl), e->handler = q, q += hl;
    if (el)
        memcpy(q, x->error, el), e->error = q, q += el;
    if (tl)
        memcpy(q, x->traceback, tl), e->traceback = q;
    if (e->state == LH_RUN_RETRYING) {
        uint32_t r = 0;
        uv_random(NULL, NULL, &r, sizeof(r), 0, NULL);
        e->next_at = e->ended + lh_retry_delay(p, x->attempt, (double)r / 4294967296.0);
    } else if (e->state == LH_RUN_PENDING) {
        e->next_at = e->ended; /* interrupted by a shutdown: due at the next start */
    }
    if (j->metrics != NULL && e->state == LH_RUN_DEAD)
        j->metrics->journal_dead_total++;
    if (e->state == LH_RUN_DEAD && x->outcome != LH_OUTCOME_OK) {
        char n[16];
        snprintf(n, sizeof(n), "%d", x->attempt);
        lh_field_t f[] = {LH_FIELD("handler", x->handler), LH_FIELD_NUM("attempts", n),
                          LH_FIELD("outcome", e->outcome)};
        lh_log_fields(LH_WARN, "run dead: no more retries", f, 3);
    }
    double next_at = e->next_at;
    int retrying = e->state == LH_RUN_RETRYING;
    end_send(j, e); /* e may be gone after it */
    if (retrying && !j->closed)
        arm_take(j, next_at);
}

/* ------------------------------------------------------------------ opening */

/* Segment files no row names are left from a retention a crash cut short, or empty. */
static void drop_orphans(lh_journal_t *j, sqlite3 *db)
{
    char path[4200], why[256];
    uint32_t *segs = NULL;
    size_t n = 0;
    sqlite3_stmt *s = NULL;
    if (lh_jlog_segments(j->dir, &segs, &n, why, sizeof(why)) != 0 ||
        sqlite3_prepare_v2(db, "SELECT 1 FROM journal_segments WHERE seg = ?1", -1, &s, NULL) !=
            SQLITE_OK) {
        free(segs);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(s, 1, segs[i]);
        int named = sqlite3_step(s) == SQLITE_ROW;
        sqlite3_reset(s);
        if (!named) {
            lh_jlog_segment_path(j->dir, segs[i], path, sizeof(path));
            unlink(path);
        }
    }
    sqlite3_finalize(s);
    free(segs);
}

static int load_state(lh_journal_t *j, sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM deliveries", -1, &s, NULL) !=
            SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW) {
        sqlite3_finalize(s);
        return -1;
    }
    j->next_jid = sqlite3_column_int64(s, 0) + 1;
    sqlite3_finalize(s);
    if (j->cfg.dedup_window <= 0)
        return 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT digest, id, received FROM deliveries WHERE digest IS NOT NULL"
                           " AND duplicate_of IS NULL AND received >= ?1 ORDER BY id",
                           -1, &s, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_double(s, 1, now_unix() - j->cfg.dedup_window);
    while (sqlite3_step(s) == SQLITE_ROW)
        if (sqlite3_column_bytes(s, 0) == 32)
            lh_dedup_add(&j->dedup, sqlite3_column_blob(s, 0), sqlite3_column_int64(s, 1),
                         sqlite3_column_double(s, 2));
    sqlite3_finalize(s);
    return 0;
}

lh_journal_t *lh_journal_open(lh_state_t *st, const lh_journal_config_t *cfg, char *err,
                              size_t errlen)
{
    lh_journal_t *j = calloc(1, sizeof(*j));
    const char *db_path = lh_state_path(st);
    const char *slash = strrchr(db_path, '/');
    size_t dl = slash ? (size_t)(slash - db_path) : 1;
    if (j == NULL || (j->dir = malloc(dl + 1)) == NULL) {
        free(j);
        snprintf(err, errlen, "journal: out of memory");
        return NULL;
    }
    memcpy(j->dir, slash ? db_path : ".", dl);
    j->dir[dl] = '\0';
    j->st = st;
    j->cfg = *cfg;
    lh_dedup_init(&j->dedup, cfg->dedup_window);
    /* a short --keep is kept to, within a quarter of it */
    double every = cfg->keep < cfg->keep_dead ? cfg->keep : cfg->keep_dead;
    every = every / 4 * 1000;
    j->prune_every = every < 100 ? 100 : every > PRUNE_EVERY_MS ? PRUNE_EVERY_MS : (uint64_t)every;
    sqlite3 *db = lh_state_db(st);
    /* a small bound gets small segments, or one would hold most of it */
    uint64_t seg_max = cfg->max_size ? cfg->max_size / 16 : 0;
    if (seg_max != 0 && seg_max < (256u << 10))
        seg_max = 256u << 10;
    if (seg_max > LH_JLOG_MAX_SEG)
        seg_max = LH_JLOG_MAX_SEG;
    /* a spare counts against the bound as the segment it will be: made ahead only where it
    ** is a sixteenth of it at most (below 4 MiB the segments' floor makes it more, and
    ** retention would prune what the bound has room for) */
    j->spares = cfg->max_size == 0 || seg_max <= cfg->max_size / 16;
    /* the WAL is cut back after each checkpoint: it cannot grow without bound */
    if (lh_state_set_sync(st, cfg->sync_full, err, errlen) != 0 ||
        sqlite3_exec(db, "PRAGMA journal_size_limit = 16777216", 0, 0, 0) != SQLITE_OK ||
        lh_jx_replay(j, db, err, errlen) != 0 || recover(j, db, err, errlen) != 0) {
        lh_journal_free(j);
        return NULL;
    }
    if (load_state(j, db) != 0) {
        snprintf(err, errlen, "journal: reading %s: %s", db_path, sqlite3_errmsg(db));
        lh_journal_free(j);
        return NULL;
    }
    drop_orphans(j, db);
    if (lh_jlog_open(&j->log, j->dir, cfg->sync_full, seg_max, err, errlen) != 0) {
        lh_journal_free(j);
        return NULL;
    }
    /* the statements recovery prepared belong to the writer from here */
    return j;
}

/* The first segment written over zeros made ahead: small, so that a server started for a
** moment writes little; the log doubles them up to the segment size (jlog.h). */
#define SPARE_FIRST (1u << 20)

/* ------------------------------------------------------------------ taking due runs */

typedef struct taken_s {
    struct taken_s *next;
    lh_journal_run_t run;
    char *body; /* owned, apart: the deliverer may take it (a big body is not copied again) */
    char mem[];
} taken_t;

typedef struct take_s {
    lh_journal_t *j;
    int limit, with_stats, full; /* full: took `limit` runs, more may be due */
    double now, next_due;
    taken_t *runs, **tail;
    /* counts, with_stats */
    int64_t by_state[5]; /* lh_run_state_t */
    double oldest;       /* received of the oldest unfinished delivery; 0: none */
    int64_t page_count, freelist, page_size;
} take_t;

static taken_t *taken_new(lh_journal_t *j, sqlite3_stmt *s)
{
    const char *delivery = (const char *)sqlite3_column_text(s, 3),
               *handler = (const char *)sqlite3_column_text(s, 1),
               *path = (const char *)sqlite3_column_text(s, 5),
               *remote = (const char *)sqlite3_column_text(s, 6);
    const void *headers = sqlite3_column_text(s, 7);
    size_t hdl = (size_t)sqlite3_column_bytes(s, 7);
    const void *body = sqlite3_column_blob(s, 8);
    size_t bl = (size_t)sqlite3_column_bytes(s, 8);
    int in_log =
        sqlite3_column_type(s, 8) == SQLITE_NULL && sqlite3_column_type(s, 9) != SQLITE_NULL;
    if (in_log)
        bl = (size_t)sqlite3_column_int64(s, 10);
    if (delivery == NULL || handler == NULL || path == NULL)
        return NULL;
    size_t dl = strlen(delivery) + 1, hl = strlen(handler) + 1, pl = strlen(path) + 1,
           rl = remote ? strlen(remote) + 1 : 1;
    taken_t *t = malloc(sizeof(*t) + dl + hl + pl + rl + hdl + 1);
    char *bp = malloc(bl + 1);
    if (t == NULL || bp == NULL) {
        free(t);
        free(bp);
        return NULL;
    }
    memset(t, 0, sizeof(*t));
    char *p = t->mem;
    memcpy(p, delivery, dl), t->run.delivery = p, p += dl;
    memcpy(p, handler, hl), t->run.handler = p, p += hl;
    memcpy(p, path, pl), t->run.path = p, p += pl;
    if (remote)
        memcpy(p, remote, rl);
    else
        *p = '\0';
    t->run.remote = p, p += rl;
    if (hdl)
        memcpy(p, headers, hdl);
    p[hdl] = '\0';
    t->run.headers = p, t->run.headers_len = hdl;
    char why[512];
    if (in_log && bl &&
        lh_jlog_read(j->dir, (uint64_t)sqlite3_column_int64(s, 9), bp, bl, why, sizeof(why)) != 0) {
        lh_field_t f[] = {LH_FIELD("id", delivery), LH_FIELD("error", why)};
        lh_log_fields(LH_ERROR, "journal: a run's body could not be read from the log", f, 2);
        free(t);
        free(bp);
        return NULL;
    }
    if (bl && !in_log)
        memcpy(bp, body, bl);
    bp[bl] = '\0';
    t->body = bp;
    t->run.body = bp, t->run.body_len = bl;
    t->run.jid = sqlite3_column_int64(s, 0);
    t->run.attempt = sqlite3_column_int(s, 2) + 1;
    t->run.received = sqlite3_column_double(s, 4);
    return t;
}

char *lh_journal_run_take_body(const lh_journal_run_t *run)
{
    taken_t *t = (taken_t *)((char *)run - offsetof(taken_t, run));
    char *body = t->body;
    t->body = NULL;
    return body;
}

static int64_t count_of(sqlite3 *db, const char *q)
{
    sqlite3_stmt *s = NULL;
    int64_t n = 0;
    if (sqlite3_prepare_v2(db, q, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return n;
}

static void take_stats(take_t *t, sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    /* by the index, never over the ok runs, which may be millions */
    if (sqlite3_prepare_v2(db,
                           "SELECT state, count(*) FROM runs WHERE state <> 'ok' AND state"
                           " IN ('pending', 'running', 'retrying', 'dead') GROUP BY state",
                           -1, &s, NULL) == SQLITE_OK) {
        while (sqlite3_step(s) == SQLITE_ROW) {
            const char *st = (const char *)sqlite3_column_text(s, 0);
            for (int k = 0; st != NULL && k < 5; k++)
                if (strcmp(st, lh_run_state_name((lh_run_state_t)k)) == 0)
                    t->by_state[k] = sqlite3_column_int64(s, 1);
        }
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT min(d.received) FROM runs r JOIN deliveries d ON d.id ="
                           " r.delivery WHERE r.state <> 'ok'"
                           " AND r.state IN ('pending', 'running', 'retrying')",
                           -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        t->oldest = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
}

static void take_sizes(take_t *t, sqlite3 *db)
{
    t->page_count = count_of(db, "PRAGMA page_count");
    t->freelist = count_of(db, "PRAGMA freelist_count");
    t->page_size = count_of(db, "PRAGMA page_size");
}

static int w_take(sqlite3 *db, void *data)
{
    take_t *t = data;
    lh_journal_t *j = t->j;
    int rc = SQLITE_OK, n = 0;
    t->tail = &t->runs;
    if (t->limit > 0) {
        sqlite3_stmt *s = lh_jx_stmt(j, db, S_DUE), *c = lh_jx_stmt(j, db, S_CLAIM);
        if (s == NULL || c == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_double(s, 1, t->now);
        sqlite3_bind_int(s, 2, t->limit);
        while (sqlite3_step(s) == SQLITE_ROW) {
            taken_t *x = taken_new(j, s);
            if (x == NULL)
                break;
            *t->tail = x, t->tail = &x->next;
            n++;
        }
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        for (taken_t *x = t->runs; x && rc == SQLITE_OK; x = x->next) {
            sqlite3_bind_int64(c, 1, x->run.jid);
            sqlite3_bind_text(c, 2, x->run.handler, -1, SQLITE_STATIC);
            sqlite3_bind_double(c, 3, t->now);
            if ((rc = lh_jx_step(db, c)) == SQLITE_OK)
                rc = lh_jx_refresh_status(j, db, x->run.jid, t->now);
        }
        t->full = n >= t->limit;
    }
    sqlite3_stmt *d = lh_jx_stmt(j, db, S_NEXT_DUE);
    if (d != NULL && sqlite3_step(d) == SQLITE_ROW)
        t->next_due = sqlite3_column_double(d, 0);
    if (d != NULL)
        sqlite3_reset(d);
    if (t->with_stats)
        take_stats(t, db);
    take_sizes(t, db);
    return rc;
}

static void free_taken(taken_t *x)
{
    while (x) {
        taken_t *n = x->next;
        free(x->body);
        free(x);
        x = n;
    }
}

static void take_done(void *data, int status)
{
    take_t *t = data;
    lh_journal_t *j = t->j;
    j->taking = 0;
    if (status == 0) {
        j->used_bytes =
            (uint64_t)((t->page_count - t->freelist) * t->page_size) + lh_jlog_stats(j->log).bytes;
        if (j->cfg.max_size != 0 && j->used_bytes < j->cfg.max_size)
            j->full = 0;
        if (j->cfg.max_size != 0 && j->used_bytes > j->cfg.max_size / 10 * 8)
            prune_now(j); /* also what finished since the last pass */
        if (j->metrics != NULL)
            j->metrics->journal_bytes =
                (uint64_t)(t->page_count * t->page_size) + lh_jlog_stats(j->log).bytes;
        if (j->metrics != NULL && t->with_stats) {
            lh_metrics_t *m = j->metrics;
            for (int k = 0; k < 5; k++)
                m->journal_runs[k] = (uint64_t)t->by_state[k];
            m->journal_oldest_age = t->oldest > 0 ? now_unix() - t->oldest : 0;
        }
    }
    if (status == 0 && !j->closed) {
        for (taken_t *x = t->runs; x; x = x->next) {
            if (j->metrics != NULL && x->run.attempt > 1)
                j->metrics->journal_retries++;
            j->hooks.deliver(j->hooks.data, &x->run);
        }
        j->next_due = t->next_due;
        if (t->full)
            arm_take(j, 0.001); /* more are due: soon, after what the loop has to do */
        else if (t->next_due > 0 && t->limit > 0) /* no room: the regular look comes back */
            arm_take(j, t->next_due);
    }
    /* with status < 0 nothing was claimed: the runs stay due for the next take */
    free_taken(t->runs);
    free(t);
}

static void take(lh_journal_t *j)
{
    if (j->taking || j->closed)
        return;
    retry_failed_ends(j);
    int room = j->hooks.room != NULL ? j->hooks.room(j->hooks.data) : TAKE_MAX;
    take_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return;
    t->j = j;
    t->limit = room < TAKE_MAX ? room : TAKE_MAX;
    t->now = now_unix();
    t->with_stats = j->takes++ % STATS_EVERY == 0;
    if (lh_state_call(j->st, w_take, take_done, t) != 0) {
        free(t);
        return;
    }
    j->taking = 1;
}

static void on_take_timer(uv_timer_t *h)
{
    lh_journal_t *j = h->data;
    take(j);
    /* the regular look at the database, for runs other processes set due */
    uv_timer_start(&j->take_timer, on_take_timer, TAKE_EVERY_MS, 0);
}

/* Takes sooner than the regular look when a run falls due before it. `due`: unix seconds,
** or a small number for "now". */
static void arm_take(lh_journal_t *j, double due)
{
    if (!j->timers_open || j->closed)
        return;
    double wait = due - now_unix();
    uint64_t ms = wait <= 0 ? 0 : (uint64_t)ceil(wait * 1000);
    uint64_t left = uv_timer_get_due_in(&j->take_timer);
    if (uv_is_active((uv_handle_t *)&j->take_timer) && left <= ms)
        return;
    uv_timer_start(&j->take_timer, on_take_timer, ms, 0);
}

/* ------------------------------------------------------------------ retention */

typedef struct prune_s {
    lh_journal_t *j;
    double now;
    int64_t removed;
    int more;      /* a full batch went: another pass soon */
    uint64_t used; /* bytes in use after the pass: database pages and log segments */
    /* segments retired: their files go once the pass is committed */
    uint32_t gone[RETIRE_MAX];
    uint64_t gone_bytes[RETIRE_MAX];
    int ngone;
} prune_t;

static uint64_t used_bytes(sqlite3 *db)
{
    int64_t pages = count_of(db, "PRAGMA page_count"), fl = count_of(db, "PRAGMA freelist_count"),
            ps = count_of(db, "PRAGMA page_size");
    return pages > fl ? (uint64_t)((pages - fl) * ps) : 0;
}

/* What the pass leaves in use: the database's pages and the segments not retired. */
static uint64_t pass_used(prune_t *p, sqlite3 *db)
{
    uint64_t log = lh_jlog_stats(p->j->log).bytes;
    for (int i = 0; i < p->ngone; i++)
        log = log > p->gone_bytes[i] ? log - p->gone_bytes[i] : 0;
    return used_bytes(db) + log;
}

static int delete_delivery(lh_journal_t *j, sqlite3 *db, int64_t id)
{
    static const int ks[] = {S_DEL_ATTEMPTS, S_DEL_RUNS, S_DEL_BODY, S_DEL_DELIVERY};
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
        sqlite3_stmt *s = lh_jx_stmt(j, db, ks[i]);
        int rc;
        if (s == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_int64(s, 1, id);
        if ((rc = lh_jx_step(db, s)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Moves the body of delivery `id` out of the log into `bodies`. */
static int move_body(lh_journal_t *j, sqlite3 *db, int64_t id, uint64_t at, size_t len)
{
    char why[512];
    char *buf = malloc(len ? len : 1);
    int rc;
    if (buf == NULL)
        return SQLITE_NOMEM;
    if (lh_jlog_read(j->dir, at, buf, len, why, sizeof(why)) != 0) {
        free(buf);
        LH_LOG(LH_ERROR, "journal: retention could not read a body from the log: %s", why);
        return SQLITE_IOERR;
    }
    sqlite3_stmt *m = lh_jx_stmt(j, db, S_MOVE_BODY), *u = lh_jx_stmt(j, db, S_BODY_MOVED);
    if (m == NULL || u == NULL) {
        free(buf);
        return sqlite3_errcode(db);
    }
    sqlite3_bind_int64(m, 1, id);
    sqlite3_bind_blob(m, 2, buf, (int)len, SQLITE_STATIC);
    rc = lh_jx_step(db, m);
    free(buf);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_int64(u, 1, id);
    return lh_jx_step(db, u);
}

/* A segment holding no more than this many live bodies may go before they do (over the
** size bound): they move into the database. */
#define RETIRE_MOVE_MAX 64

/*
** Segments go, oldest first, once no delivery's body is left in them. A segment whose every
** event is older than --keep also goes when some are kept longer (dead ones, runs still
** retrying): their bodies move into `bodies` first. Over the size bound, so does one with a
** few bodies left. Never the segment the log writes, nor one the index has not passed.
*/
static int retire_segments(prune_t *p, sqlite3 *db, int over)
{
    lh_journal_t *j = p->j;
    int64_t applied = count_of(db, "SELECT applied FROM journal_log WHERE id = 1");
    sqlite3_stmt *s = lh_jx_stmt(j, db, S_SEGS);
    if (s == NULL)
        return sqlite3_errcode(db);
    uint32_t segs[RETIRE_MAX];
    int64_t first[RETIRE_MAX], last[RETIRE_MAX];
    int n = 0, rc = SQLITE_OK;
    sqlite3_bind_int64(s, 1, applied >> 32);
    sqlite3_bind_int(s, 2, RETIRE_MAX - p->ngone);
    while (n < RETIRE_MAX - p->ngone && sqlite3_step(s) == SQLITE_ROW) {
        segs[n] = (uint32_t)sqlite3_column_int64(s, 0);
        first[n] = sqlite3_column_int64(s, 1);
        last[n] = sqlite3_column_int64(s, 2);
        n++;
    }
    sqlite3_reset(s);
    for (int i = 0; i < n && rc == SQLITE_OK; i++) {
        int64_t ids[RETIRE_MOVE_MAX];
        uint64_t ats[RETIRE_MOVE_MAX];
        size_t lens[RETIRE_MOVE_MAX];
        int live = 0, young = 0;
        if (first[i] > 0) {
            sqlite3_stmt *b = lh_jx_stmt(j, db, S_SEG_BODIES);
            if (b == NULL)
                return sqlite3_errcode(db);
            sqlite3_bind_int64(b, 1, first[i]);
            sqlite3_bind_int64(b, 2, last[i]);
            while (sqlite3_step(b) == SQLITE_ROW) {
                if (live < RETIRE_MOVE_MAX) {
                    ids[live] = sqlite3_column_int64(b, 0);
                    ats[live] = (uint64_t)sqlite3_column_int64(b, 1);
                    lens[live] = (size_t)sqlite3_column_int64(b, 2);
                }
                live++;
                young |= sqlite3_column_double(b, 3) >= p->now - j->cfg.keep;
            }
            sqlite3_reset(b);
        }
        if (live > 0 && (live > RETIRE_MOVE_MAX || (young && !over)))
            break; /* kept: so are the younger ones after it */
        for (int k = 0; k < live && rc == SQLITE_OK; k++)
            rc = move_body(j, db, ids[k], ats[k], lens[k]);
        sqlite3_stmt *g = lh_jx_stmt(j, db, S_SEG_GONE);
        if (rc != SQLITE_OK || g == NULL)
            return rc != SQLITE_OK ? rc : sqlite3_errcode(db);
        sqlite3_bind_int64(g, 1, segs[i]);
        if ((rc = lh_jx_step(db, g)) != SQLITE_OK)
            return rc;
        char path[4200];
        struct stat sb;
        lh_jlog_segment_path(j->dir, segs[i], path, sizeof(path));
        p->gone[p->ngone] = segs[i];
        p->gone_bytes[p->ngone] = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        p->ngone++;
    }
    return rc;
}

static int w_prune(sqlite3 *db, void *data)
{
    prune_t *p = data;
    lh_journal_t *j = p->j;
    int64_t ids[PRUNE_BATCH];
    int n = 0, rc = SQLITE_OK;
    /* by age first; then, over the size bound, the oldest finished whatever their age */
    sqlite3_stmt *s = lh_jx_stmt(j, db, S_PRUNABLE_AGE);
    if (s == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_double(s, 1, p->now - j->cfg.keep);
    sqlite3_bind_double(s, 2, p->now - j->cfg.keep_dead);
    sqlite3_bind_int(s, 3, PRUNE_BATCH);
    while (n < PRUNE_BATCH && sqlite3_step(s) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    uint64_t target = j->cfg.max_size / 10 * 8;
    if (n == 0 && j->cfg.max_size != 0) {
        /* the oldest finished, a few at a time, until under 80 % of the bound: deleted
        ** pages go to the free list and emptied segments go, so what is in use falls */
        while (rc == SQLITE_OK && n < PRUNE_BATCH && pass_used(p, db) > target) {
            int got = 0;
            int64_t some[PRUNE_STEP];
            if ((s = lh_jx_stmt(j, db, S_PRUNABLE_SIZE)) == NULL)
                return sqlite3_errcode(db);
            sqlite3_bind_int(s, 1, PRUNE_STEP);
            while (got < PRUNE_STEP && sqlite3_step(s) == SQLITE_ROW)
                some[got++] = sqlite3_column_int64(s, 0);
            sqlite3_reset(s);
            for (int i = 0; i < got && rc == SQLITE_OK; i++)
                rc = delete_delivery(j, db, some[i]);
            if (rc == SQLITE_OK && p->ngone < RETIRE_MAX)
                rc = retire_segments(p, db, 1);
            n += got;
            if (got < PRUNE_STEP)
                break; /* nothing finished left */
        }
        p->more = n >= PRUNE_BATCH;
    } else {
        p->more = n == PRUNE_BATCH;
        for (int i = 0; i < n && rc == SQLITE_OK; i++)
            rc = delete_delivery(j, db, ids[i]);
    }
    if (rc == SQLITE_OK && p->ngone < RETIRE_MAX)
        rc = retire_segments(p, db, j->cfg.max_size != 0 && pass_used(p, db) > target);
    p->removed = n;
    /* the space goes back to the file system at once, not at the writer's next pass */
    if (rc == SQLITE_OK && n > 0)
        sqlite3_exec(db, "PRAGMA incremental_vacuum", 0, 0, 0);
    p->used = pass_used(p, db);
    return rc;
}

static void unlinked(uv_fs_t *req)
{
    uv_fs_req_cleanup(req);
    free(req);
}

/* A retired segment's file goes (its retirement is committed), on the pool: a big file's
** unlink takes a while. */
static void unlink_segment(lh_journal_t *j, uint32_t seg, uint64_t bytes)
{
    char path[4200];
    lh_jlog_segment_path(j->dir, seg, path, sizeof(path));
    lh_jlog_forget(j->log, bytes);
    uv_fs_t *req = malloc(sizeof(*req));
    if (req == NULL || uv_fs_unlink(j->loop, req, path, unlinked) != 0) {
        free(req);
        unlink(path);
    }
}

static void prune_timer_start(lh_journal_t *j, uint64_t ms);

static void prune_done(void *data, int status)
{
    prune_t *p = data;
    lh_journal_t *j = p->j;
    j->pruning = 0;
    for (int i = 0; status == 0 && i < p->ngone; i++)
        unlink_segment(j, p->gone[i], p->gone_bytes[i]);
    if (status == 0) {
        /* full: over the bound with nothing finished left to remove; new events get 503 */
        j->used_bytes = p->used;
        j->full = j->cfg.max_size != 0 && p->used >= j->cfg.max_size && p->removed == 0;
    }
    if (status == 0 && p->removed > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%lld", (long long)p->removed);
        lh_field_t f[] = {LH_FIELD_NUM("deliveries", n)};
        lh_log_fields(LH_DEBUG, "journal pruned", f, 1);
        if (j->metrics != NULL)
            j->metrics->journal_pruned += (uint64_t)p->removed;
    }
    if (status == 0 && p->more)
        prune_timer_start(j, 10);
    /* a fresh count of what is in use follows with the next take */
    if (!j->closed)
        arm_take(j, 0.001);
    free(p);
}

static void prune_now(lh_journal_t *j)
{
    if (j->pruning || j->closed)
        return;
    prune_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return;
    p->j = j;
    p->now = now_unix();
    if (lh_state_call(j->st, w_prune, prune_done, p) != 0) {
        free(p);
        return;
    }
    j->pruning = 1;
}

static void on_prune_timer(uv_timer_t *h)
{
    lh_journal_t *j = h->data;
    prune_now(j);
    prune_timer_start(j, j->prune_every);
}

static void prune_timer_start(lh_journal_t *j, uint64_t ms)
{
    if (j->timers_open && !j->closed)
        uv_timer_start(&j->prune_timer, on_prune_timer, ms, 0);
}

/* ------------------------------------------------------------------ life */

static void on_index_timer(uv_timer_t *h)
{
    index_kick(h->data);
}

int lh_journal_start(lh_journal_t *j, uv_loop_t *loop, const lh_journal_hooks_t *hooks)
{
    int rc;
    j->loop = loop;
    j->hooks = *hooks;
    if ((rc = uv_timer_init(loop, &j->take_timer)) != 0)
        return rc;
    if ((rc = uv_timer_init(loop, &j->prune_timer)) != 0) {
        uv_close((uv_handle_t *)&j->take_timer, NULL);
        return rc;
    }
    if ((rc = uv_timer_init(loop, &j->index_timer)) != 0) {
        uv_close((uv_handle_t *)&j->take_timer, NULL);
        uv_close((uv_handle_t *)&j->prune_timer, NULL);
        return rc;
    }
    j->take_timer.data = j->prune_timer.data = j->index_timer.data = j;
    j->timers_open = 1;
    /* timers never keep the loop alive: a stopping server does not wait for retries */
    uv_unref((uv_handle_t *)&j->take_timer);
    uv_unref((uv_handle_t *)&j->prune_timer);
    uv_unref((uv_handle_t *)&j->index_timer);
    if (j->spares)
        lh_jlog_use_spares(j->log, SPARE_FIRST, LH_JLOG_ZERO_RATE);
    if ((rc = lh_jlog_start(j->log, loop)) != 0)
        return rc;
    uv_timer_start(&j->take_timer, on_take_timer, 0, 0); /* what was due at start-up */
    uv_timer_start(&j->prune_timer, on_prune_timer, j->prune_every, 0);
    return 0;
}

void lh_journal_observe(lh_journal_t *j, lh_metrics_t *m)
{
    j->metrics = m;
    m->journal_on = 1;
}

void lh_journal_close(lh_journal_t *j)
{
    if (j == NULL || j->closed)
        return;
    j->closed = 1;
    if (j->timers_open) {
        uv_close((uv_handle_t *)&j->take_timer, NULL);
        uv_close((uv_handle_t *)&j->prune_timer, NULL);
        uv_close((uv_handle_t *)&j->index_timer, NULL);
        j->timers_open = 0;
    }
    /* what the log still holds is written, its accepts answered (stored, not run); from here
    ** appends are written at once, and the index takes every record as it comes */
    lh_jlog_stop(j->log);
    index_kick(j);
}

void lh_journal_free(lh_journal_t *j)
{
    if (j == NULL)
        return;
    for (int k = 0; k < S_COUNT_; k++)
        sqlite3_finalize(j->s[k]);
    end_t *lists[] = {j->failed_ends, j->waiting};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
        while (lists[i]) {
            end_t *e = lists[i];
            lists[i] = e->next;
            free(e);
        }
    free_recs(j->ix_head);
    while (j->waiters) {
        ix_waiter_t *w = j->waiters;
        j->waiters = w->next;
        free(w);
    }
    lh_dedup_free(&j->dedup);
    lh_jlog_free(j->log);
    free(j->dir);
    free(j);
}
