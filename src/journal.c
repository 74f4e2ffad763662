#include "journal.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <sqlite3.h>

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

/* Statements of the writer thread, prepared on first use. */
enum {
    S_DUP,
    S_INS_DELIVERY,
    S_INS_RUN,
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
    S_INS_BODY,
    S_COUNT_
};

static const char *const sql[S_COUNT_] = {
    [S_DUP] = "SELECT id FROM deliveries WHERE digest = ?1 AND received >= ?2"
              " AND duplicate_of IS NULL ORDER BY id LIMIT 1",
    [S_INS_DELIVERY] = "INSERT INTO deliveries(delivery, received, path, remote, action, project,"
                       " headers, digest, duplicate_of, status, finished)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?9, ?10, ?11, ?12)",
    [S_INS_BODY] = "INSERT INTO bodies(id, body) VALUES (?1, ?2)",
    [S_INS_RUN] =
        "INSERT OR REPLACE INTO runs(delivery, handler, state, attempts, next_at, updated)"
        " VALUES (?1, ?2, 'running', 1, NULL, ?3)",
    [S_INS_ATTEMPT] = "INSERT OR REPLACE INTO attempts(delivery, handler, n, started, ended,"
                      " outcome, error, traceback) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [S_END_RUN] = "UPDATE runs SET state = ?4, next_at = ?5, error = ?6, traceback = ?7,"
                  " updated = ?8, started = ?9 WHERE delivery = ?1 AND handler = ?2"
                  " AND attempts = ?3"
                  " AND state = 'running'",
    [S_COUNT_RUNS] = "SELECT count(*), total(state = 'retrying'),"
                     " total(state IN ('pending', 'running')), total(state = 'dead')"
                     " FROM runs WHERE delivery = ?1",
    [S_SET_STATUS] = "UPDATE deliveries SET status = ?2, finished = ?3"
                     " WHERE id = ?1 AND status <> 'duplicate'",
    [S_DUE] = "SELECT r.delivery, r.handler, r.attempts, d.delivery, d.received, d.path,"
              " d.remote, d.headers, b.body FROM runs r JOIN deliveries d ON d.id = r.delivery"
              " JOIN bodies b ON b.id = d.id"
              " WHERE r.state <> 'ok' AND r.state IN ('pending', 'retrying') AND r.next_at <= ?1"
              " ORDER BY r.next_at LIMIT ?2",
    [S_CLAIM] = "UPDATE runs SET state = 'running', attempts = attempts + 1, updated = ?3"
                " WHERE delivery = ?1 AND handler = ?2 AND state IN ('pending', 'retrying')",
    [S_NEXT_DUE] = "SELECT min(next_at) FROM runs WHERE state <> 'ok'"
                   " AND state IN ('pending', 'retrying')",
    /* never the newest delivery: ids are rowids (no AUTOINCREMENT), and with the highest
    ** gone the next event would take an id a log, a ticket or a replay script still names */
    [S_PRUNABLE_AGE] = "SELECT id FROM deliveries WHERE finished IS NOT NULL AND finished < ?1"
                       " AND (status <> 'dead' OR finished < ?2)"
                       " AND id < (SELECT max(id) FROM deliveries) ORDER BY finished LIMIT ?3",
    [S_PRUNABLE_SIZE] = "SELECT id FROM deliveries WHERE finished IS NOT NULL"
                        " AND id < (SELECT max(id) FROM deliveries) ORDER BY finished LIMIT ?1",
    [S_DEL_ATTEMPTS] = "DELETE FROM attempts WHERE delivery = ?1",
    [S_DEL_RUNS] = "DELETE FROM runs WHERE delivery = ?1",
    [S_DEL_DELIVERY] = "DELETE FROM deliveries WHERE id = ?1",
    [S_DEL_BODY] = "DELETE FROM bodies WHERE id = ?1",
};

struct lh_journal_s {
    lh_state_t *st; /* borrowed */
    lh_journal_config_t cfg;
    sqlite3_stmt *s[S_COUNT_]; /* the writer's */
    uv_loop_t *loop;
    uv_timer_t take_timer, prune_timer;
    int timers_open, closed;
    lh_journal_hooks_t hooks;
    lh_metrics_t *metrics; /* borrowed; NULL: none */
    /* the loop's view */
    int taking, pruning;       /* an op of that kind is queued */
    unsigned takes;            /* take ops sent: every STATS_EVERY-th also counts */
    double next_due;           /* earliest next_at the loop knows of; 0: none */
    uint64_t used_bytes;       /* database pages in use, at the last count, plus accepts since */
    int full;                  /* over --journal-max-size, and the last prune found nothing */
    uint64_t prune_every;      /* ms between retention passes */
    struct end_s *failed_ends; /* ends whose commit failed, to queue again */
};

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The writer's statement `k`, reset and unbound. NULL when it cannot be prepared. */
static sqlite3_stmt *stmt(lh_journal_t *j, sqlite3 *db, int k)
{
    if (j->s[k] == NULL &&
        sqlite3_prepare_v3(db, sql[k], -1, SQLITE_PREPARE_PERSISTENT, &j->s[k], NULL) != SQLITE_OK)
        return NULL;
    return j->s[k];
}

static int step_done(sqlite3 *db, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(db);
}

static void bind_text_or_null(sqlite3_stmt *s, int i, const char *v)
{
    if (v != NULL)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static int set_status(lh_journal_t *j, sqlite3 *db, int64_t id, const char *status, int final,
                      double now)
{
    sqlite3_stmt *u = stmt(j, db, S_SET_STATUS);
    if (u == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(u, 1, id);
    sqlite3_bind_text(u, 2, status, -1, SQLITE_STATIC);
    if (final)
        sqlite3_bind_double(u, 3, now);
    else
        sqlite3_bind_null(u, 3);
    return step_done(db, u);
}

/* A delivery's status from its runs (the contract's derived column), on the writer. */
static int refresh_status(lh_journal_t *j, sqlite3 *db, int64_t id, double now)
{
    sqlite3_stmt *c = stmt(j, db, S_COUNT_RUNS);
    if (c == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(c, 1, id);
    int rc = sqlite3_step(c);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(c);
        return sqlite3_errcode(db);
    }
    int64_t n = sqlite3_column_int64(c, 0);
    double retrying = sqlite3_column_double(c, 1), pending = sqlite3_column_double(c, 2),
           dead = sqlite3_column_double(c, 3);
    sqlite3_reset(c);
    const char *status = n == 0       ? "none"
                         : retrying   ? "retrying"
                         : pending    ? "pending"
                         : dead > 0.5 ? "dead"
                                      : "ok";
    return set_status(j, db, id, status, !retrying && !pending, now);
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
        sqlite3_stmt *a = stmt(j, db, S_INS_ATTEMPT), *r = stmt(j, db, S_END_RUN);
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
        if ((rc = step_done(db, a)) != SQLITE_OK)
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
        if ((rc = step_done(db, r)) != SQLITE_OK || (rc = refresh_status(j, db, id, now)) != 0)
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

lh_journal_t *lh_journal_open(lh_state_t *st, const lh_journal_config_t *cfg, char *err,
                              size_t errlen)
{
    lh_journal_t *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        snprintf(err, errlen, "journal: out of memory");
        return NULL;
    }
    j->st = st;
    j->cfg = *cfg;
    /* a short --keep is kept to, within a quarter of it */
    double every = cfg->keep < cfg->keep_dead ? cfg->keep : cfg->keep_dead;
    every = every / 4 * 1000;
    j->prune_every = every < 100 ? 100 : every > PRUNE_EVERY_MS ? PRUNE_EVERY_MS : (uint64_t)every;
    sqlite3 *db = lh_state_db(st);
    /* the WAL is cut back after each checkpoint: it cannot grow without bound */
    if (lh_state_set_sync(st, cfg->sync_full, err, errlen) != 0 ||
        sqlite3_exec(db, "PRAGMA journal_size_limit = 16777216", 0, 0, 0) != SQLITE_OK ||
        recover(j, db, err, errlen) != 0) {
        lh_journal_free(j);
        return NULL;
    }
    /* the statements recovery prepared belong to the writer from here */
    return j;
}

/* ------------------------------------------------------------------ accept */

typedef struct accept_s {
    lh_journal_t *j;
    lh_journal_accept_cb cb;
    void *data;
    uint64_t queued_ns;
    double received;
    int has_project, has_digest;
    int64_t project;
    int64_t jid, dup_of; /* the writer's answers */
    unsigned char digest[32];
    const char *delivery, *path, *remote, *action, *headers; /* into mem */
    const char *body;                                        /* borrowed */
    size_t path_len, headers_len, body_len;
    char **handlers; /* into mem */
    size_t nhandlers;
    char mem[];
} accept_t;

static int w_accept(sqlite3 *db, void *data)
{
    accept_t *a = data;
    lh_journal_t *j = a->j;
    int rc;
    a->dup_of = 0;
    if (a->has_digest) {
        sqlite3_stmt *d = stmt(j, db, S_DUP);
        if (d == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_blob(d, 1, a->digest, sizeof(a->digest), SQLITE_STATIC);
        sqlite3_bind_double(d, 2, a->received - j->cfg.dedup_window);
        if (sqlite3_step(d) == SQLITE_ROW)
            a->dup_of = sqlite3_column_int64(d, 0);
        sqlite3_reset(d);
        sqlite3_clear_bindings(d);
    }
    sqlite3_stmt *s = stmt(j, db, S_INS_DELIVERY);
    if (s == NULL)
        return sqlite3_errcode(db);
    int final = a->dup_of != 0 || a->nhandlers == 0;
    sqlite3_bind_text(s, 1, a->delivery, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, a->received);
    sqlite3_bind_text(s, 3, a->path, (int)a->path_len, SQLITE_STATIC);
    bind_text_or_null(s, 4, a->remote);
    bind_text_or_null(s, 5, a->action);
    if (a->has_project)
        sqlite3_bind_int64(s, 6, a->project);
    sqlite3_bind_text(s, 7, a->headers, (int)a->headers_len, SQLITE_STATIC);
    if (a->has_digest)
        sqlite3_bind_blob(s, 9, a->digest, sizeof(a->digest), SQLITE_STATIC);
    if (a->dup_of != 0)
        sqlite3_bind_int64(s, 10, a->dup_of);
    sqlite3_bind_text(s, 11,
                      a->dup_of      ? "duplicate"
                      : a->nhandlers ? "pending"
                                     : "none",
                      -1, SQLITE_STATIC);
    if (final)
        sqlite3_bind_double(s, 12, a->received);
    if ((rc = step_done(db, s)) != SQLITE_OK)
        return rc;
    a->jid = sqlite3_last_insert_rowid(db);
    sqlite3_stmt *b = stmt(j, db, S_INS_BODY);
    if (b == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(b, 1, a->jid);
    sqlite3_bind_blob(b, 2, a->body, (int)a->body_len, SQLITE_STATIC);
    if ((rc = step_done(db, b)) != SQLITE_OK)
        return rc;
    if (a->dup_of != 0)
        return SQLITE_OK;
    sqlite3_stmt *r = stmt(j, db, S_INS_RUN);
    if (r == NULL)
        return sqlite3_errcode(db);
    for (size_t i = 0; i < a->nhandlers; i++) {
        sqlite3_bind_int64(r, 1, a->jid);
        sqlite3_bind_text(r, 2, a->handlers[i], -1, SQLITE_STATIC);
        sqlite3_bind_double(r, 3, a->received);
        if ((rc = step_done(db, r)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static void accept_done(void *data, int status)
{
    accept_t *a = data;
    lh_journal_t *j = a->j;
    char why[400];
    double secs = (double)(uv_hrtime() - a->queued_ns) / 1e9;
    if (j->metrics != NULL && status == 0) {
        lh_metrics_t *m = j->metrics;
        for (int i = 0; i < LH_JOURNAL_COMMIT_BUCKETS; i++)
            if (secs <= lh_metrics_commit_bounds[i]) {
                m->journal_commit_buckets[i]++;
                break;
            }
        m->journal_commit_sum += secs;
        m->journal_commit_count++;
    }
    if (status < 0) {
        char msg[256];
        lh_state_last_error(j->st, msg, sizeof(msg));
        snprintf(why, sizeof(why), "the journal could not store the event (%s): %s",
                 status == UV_ENOSPC  ? "disk full"
                 : status == UV_EROFS ? "read-only"
                                      : uv_err_name(status),
                 msg);
        if (j->metrics != NULL)
            j->metrics->journal_refused++;
        a->cb(a->data, status, 0, why);
    } else {
        a->cb(a->data,
              a->dup_of   ? LH_JOURNAL_DUPLICATE
              : j->closed ? LH_JOURNAL_CLOSED
                          : LH_JOURNAL_STORED,
              a->jid, NULL);
    }
    free(a);
}

static void prune_now(lh_journal_t *j);

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
    size_t dl = strlen(ev->delivery) + 1, rl = ev->remote ? strlen(ev->remote) + 1 : 0,
           al = ev->action ? strlen(ev->action) + 1 : 0, hl = 0;
    for (size_t i = 0; i < ev->nhandlers; i++)
        hl += strlen(ev->handlers[i]) + 1;
    size_t need = sizeof(accept_t) + ev->nhandlers * sizeof(char *) + dl + rl + al + hl +
                  ev->path_len + 1 + ev->headers_len + 1;
    accept_t *a = malloc(need);
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(a, 0, sizeof(*a));
    a->j = j;
    a->cb = cb;
    a->data = data;
    a->queued_ns = uv_hrtime();
    a->received = ev->received;
    a->has_project = ev->has_project;
    a->project = ev->project;
    a->handlers = (char **)(void *)a->mem;
    a->nhandlers = ev->nhandlers;
    char *p = a->mem + ev->nhandlers * sizeof(char *);
#define PUT(dst, src, n)                                                                           \
    do {                                                                                           \
        memcpy(p, (src), (n));                                                                     \
        p[(n)] = '\0';                                                                             \
        (dst) = p;                                                                                 \
        p += (n) + 1;                                                                              \
    } while (0)
    PUT(a->delivery, ev->delivery, dl - 1);
    if (ev->remote)
        PUT(a->remote, ev->remote, rl - 1);
    if (ev->action)
        PUT(a->action, ev->action, al - 1);
    for (size_t i = 0; i < ev->nhandlers; i++) {
        size_t n = strlen(ev->handlers[i]);
        memcpy(p, ev->handlers[i], n + 1);
        a->handlers[i] = p;
        p += n + 1;
    }
    PUT(a->path, ev->path, ev->path_len);
    PUT(a->headers, ev->headers, ev->headers_len);
#undef PUT
    a->body = ev->body; /* the caller's till accept_done: a body may be megabytes */
    a->path_len = ev->path_len;
    a->headers_len = ev->headers_len;
    a->body_len = ev->body_len;
    if (j->cfg.dedup_window > 0) {
        /* path and body, with a separator no path holds */
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned int n = 0;
        a->has_digest = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
                        EVP_DigestUpdate(md, ev->path, ev->path_len) == 1 &&
                        EVP_DigestUpdate(md, "\n", 1) == 1 &&
                        EVP_DigestUpdate(md, ev->body, ev->body_len) == 1 &&
                        EVP_DigestFinal_ex(md, a->digest, &n) == 1 && n == 32;
        EVP_MD_CTX_free(md);
    }
    if (lh_state_call(j->st, w_accept, accept_done, a) != 0) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->used_bytes += ev->body_len + ev->headers_len + 256;
    return 0;
}

/* ------------------------------------------------------------------ a run's end */

typedef struct end_s {
    lh_journal_t *j;
    int64_t jid;
    int attempt;
    int only_run;                   /* the delivery has this run alone: its state is the status */
    struct end_s *next_failed;      /* lh_journal_t.failed_ends */
    double started, ended, next_at; /* next_at 0: none */
    lh_run_state_t state;
    const char *outcome;               /* static */
    char *handler, *error, *traceback; /* into mem (error: or static, see end_done) */
    char mem[];
} end_t;

static int w_end(sqlite3 *db, void *data)
{
    end_t *e = data;
    lh_journal_t *j = e->j;
    sqlite3_stmt *a = stmt(j, db, S_INS_ATTEMPT), *r = stmt(j, db, S_END_RUN);
    int rc;
    if (a == NULL || r == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(r, 1, e->jid);
    sqlite3_bind_text(r, 2, e->handler, -1, SQLITE_STATIC);
    sqlite3_bind_int(r, 3, e->attempt);
    sqlite3_bind_text(r, 4, lh_run_state_name(e->state), -1, SQLITE_STATIC);
    if (e->next_at > 0)
        sqlite3_bind_double(r, 5, e->next_at);
    bind_text_or_null(r, 6, e->error);
    bind_text_or_null(r, 7, e->traceback);
    sqlite3_bind_double(r, 8, e->ended);
    sqlite3_bind_double(r, 9, e->started);
    if ((rc = step_done(db, r)) != SQLITE_OK)
        return rc;
    int ended = sqlite3_changes(db) == 1;
    /* the common case, a first attempt that ended ok, is told by its run's row alone
    ** (journal_query shows it as attempt 1): one row fewer to write per event */
    if (e->attempt != 1 || e->state != LH_RUN_OK || !ended) {
        sqlite3_bind_int64(a, 1, e->jid);
        sqlite3_bind_text(a, 2, e->handler, -1, SQLITE_STATIC);
        sqlite3_bind_int(a, 3, e->attempt);
        sqlite3_bind_double(a, 4, e->started);
        sqlite3_bind_double(a, 5, e->ended);
        sqlite3_bind_text(a, 6, e->outcome, -1, SQLITE_STATIC);
        bind_text_or_null(a, 7, e->error);
        bind_text_or_null(a, 8, e->traceback);
        if ((rc = step_done(db, a)) != SQLITE_OK)
            return rc;
    }
    if (e->only_run && ended) /* no count to make */
        return set_status(j, db, e->jid, lh_run_state_name(e->state),
                          e->state == LH_RUN_OK || e->state == LH_RUN_DEAD, e->ended);
    return refresh_status(j, db, e->jid, e->ended);
}

static void end_done(void *data, int status)
{
    end_t *e = data;
    lh_journal_t *j = e->j;
    if (status < 0) {
        char msg[256];
        lh_state_last_error(j->st, msg, sizeof(msg));
        lh_field_t f[] = {LH_FIELD("handler", e->handler), LH_FIELD("error", msg)};
        lh_log_fields(LH_ERROR,
                      "journal: a run's end could not be stored: tried again with the next look "
                      "(a restart runs it again if it never is)",
                      f, 2);
        if (e->state == LH_RUN_OK) {
            /* the handler's store writes were in that batch or before it, and may be lost
            ** with it: not ok, an interrupted attempt, run again once the end is stored */
            e->state = LH_RUN_PENDING;
            e->next_at = e->ended;
            e->outcome = "interrupted";
            e->error = "the run's end could not be stored, nor perhaps its store writes: run again";
        }
        if (!j->closed) { /* a full disk may have room again in a moment */
            e->next_failed = j->failed_ends;
            j->failed_ends = e;
            return;
        }
    }
    free(e);
}

/* Ends whose commit failed, queued again (loop side). */
static void retry_failed_ends(lh_journal_t *j)
{
    end_t *e = j->failed_ends;
    j->failed_ends = NULL;
    while (e) {
        end_t *next = e->next_failed;
        e->next_failed = NULL;
        if (lh_state_call(j->st, w_end, end_done, e) != 0)
            free(e);
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
    if (lh_state_call(j->st, w_end, end_done, e) != 0) {
        free(e);
        LH_LOG(LH_ERROR, "journal: out of memory recording a run of %s", x->handler);
        return;
    }
    if (e->state == LH_RUN_RETRYING && !j->closed)
        arm_take(j, e->next_at); /* e is the writer's now: next_at was read before */
}

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

static taken_t *taken_new(sqlite3_stmt *s)
{
    const char *delivery = (const char *)sqlite3_column_text(s, 3),
               *handler = (const char *)sqlite3_column_text(s, 1),
               *path = (const char *)sqlite3_column_text(s, 5),
               *remote = (const char *)sqlite3_column_text(s, 6);
    const void *headers = sqlite3_column_text(s, 7);
    size_t hdl = (size_t)sqlite3_column_bytes(s, 7);
    const void *body = sqlite3_column_blob(s, 8);
    size_t bl = (size_t)sqlite3_column_bytes(s, 8);
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
    if (bl)
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
        sqlite3_stmt *s = stmt(j, db, S_DUE), *c = stmt(j, db, S_CLAIM);
        if (s == NULL || c == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_double(s, 1, t->now);
        sqlite3_bind_int(s, 2, t->limit);
        while (sqlite3_step(s) == SQLITE_ROW) {
            taken_t *x = taken_new(s);
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
            if ((rc = step_done(db, c)) == SQLITE_OK)
                rc = refresh_status(j, db, x->run.jid, t->now);
        }
        t->full = n >= t->limit;
    }
    sqlite3_stmt *d = stmt(j, db, S_NEXT_DUE);
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
        j->used_bytes = (uint64_t)((t->page_count - t->freelist) * t->page_size);
        if (j->cfg.max_size != 0 && j->used_bytes < j->cfg.max_size)
            j->full = 0;
        if (j->cfg.max_size != 0 && j->used_bytes > j->cfg.max_size / 10 * 8)
            prune_now(j); /* also what finished since the last pass */
        if (j->metrics != NULL)
            j->metrics->journal_bytes = (uint64_t)(t->page_count * t->page_size);
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
    uint64_t used; /* bytes of pages in use after the pass */
} prune_t;

static uint64_t used_bytes(sqlite3 *db)
{
    int64_t pages = count_of(db, "PRAGMA page_count"), fl = count_of(db, "PRAGMA freelist_count"),
            ps = count_of(db, "PRAGMA page_size");
    return pages > fl ? (uint64_t)((pages - fl) * ps) : 0;
}

static int delete_delivery(lh_journal_t *j, sqlite3 *db, int64_t id)
{
    static const int ks[] = {S_DEL_ATTEMPTS, S_DEL_RUNS, S_DEL_BODY, S_DEL_DELIVERY};
    for (size_t i = 0; i < sizeof(ks) / sizeof(ks[0]); i++) {
        sqlite3_stmt *s = stmt(j, db, ks[i]);
        int rc;
        if (s == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_int64(s, 1, id);
        if ((rc = step_done(db, s)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int w_prune(sqlite3 *db, void *data)
{
    prune_t *p = data;
    lh_journal_t *j = p->j;
    int64_t ids[PRUNE_BATCH];
    int n = 0, rc = SQLITE_OK;
    /* by age first; then, over the size bound, the oldest finished whatever their age */
    sqlite3_stmt *s = stmt(j, db, S_PRUNABLE_AGE);
    if (s == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_double(s, 1, p->now - j->cfg.keep);
    sqlite3_bind_double(s, 2, p->now - j->cfg.keep_dead);
    sqlite3_bind_int(s, 3, PRUNE_BATCH);
    while (n < PRUNE_BATCH && sqlite3_step(s) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (n == 0 && j->cfg.max_size != 0) {
        /* the oldest finished, a few at a time, until under 80 % of the bound: deleted
        ** pages go to the free list, so the count of pages in use falls as they go */
        uint64_t target = j->cfg.max_size / 10 * 8;
        while (rc == SQLITE_OK && n < PRUNE_BATCH && used_bytes(db) > target) {
            int got = 0;
            int64_t some[PRUNE_STEP];
            if ((s = stmt(j, db, S_PRUNABLE_SIZE)) == NULL)
                return sqlite3_errcode(db);
            sqlite3_bind_int(s, 1, PRUNE_STEP);
            while (got < PRUNE_STEP && sqlite3_step(s) == SQLITE_ROW)
                some[got++] = sqlite3_column_int64(s, 0);
            sqlite3_reset(s);
            for (int i = 0; i < got && rc == SQLITE_OK; i++)
                rc = delete_delivery(j, db, some[i]);
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
    p->removed = n;
    /* the space goes back to the file system at once, not at the writer's next pass */
    if (rc == SQLITE_OK && n > 0)
        sqlite3_exec(db, "PRAGMA incremental_vacuum", 0, 0, 0);
    p->used = used_bytes(db);
    return rc;
}

static void prune_timer_start(lh_journal_t *j, uint64_t ms);

static void prune_done(void *data, int status)
{
    prune_t *p = data;
    lh_journal_t *j = p->j;
    j->pruning = 0;
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
    j->take_timer.data = j->prune_timer.data = j;
    j->timers_open = 1;
    /* timers never keep the loop alive: a stopping server does not wait for retries */
    uv_unref((uv_handle_t *)&j->take_timer);
    uv_unref((uv_handle_t *)&j->prune_timer);
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
    }
}

void lh_journal_free(lh_journal_t *j)
{
    if (j == NULL)
        return;
    for (int k = 0; k < S_COUNT_; k++)
        sqlite3_finalize(j->s[k]);
    while (j->failed_ends) {
        struct end_s *e = j->failed_ends;
        j->failed_ends = e->next_failed;
        free(e);
    }
    free(j);
}
