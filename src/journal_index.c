#include "journal_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal_record.h"
#include "log.h"

/* Records applied per transaction when the index catches up at start-up. */
#define REPLAY_BATCH 1000

static const char *const sql[S_COUNT_] = {
    [S_INS_DELIVERY] = "INSERT OR IGNORE INTO deliveries(id, delivery, received, path, remote,"
                       " action, project, headers, digest, duplicate_of, status, finished,"
                       " body_at, body_len)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [S_INS_RUN] = "INSERT OR IGNORE INTO runs(delivery, handler, state, attempts, next_at, updated)"
                  " VALUES (?1, ?2, 'running', 1, NULL, ?3)",
    [S_INS_RUN_ENDED] = "INSERT OR IGNORE INTO runs(delivery, handler, state, attempts, next_at,"
                        " error, traceback, updated, started)"
                        " VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8)",
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
    /* the body: in `bodies` when its segment went before it, else in the log */
    [S_DUE] = "SELECT r.delivery, r.handler, r.attempts, d.delivery, d.received, d.path,"
              " d.remote, d.headers, b.body, d.body_at, d.body_len FROM runs r"
              " JOIN deliveries d ON d.id = r.delivery LEFT JOIN bodies b ON b.id = d.id"
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
    [S_APPLIED] = "UPDATE journal_log SET applied = ?1 WHERE id = 1 AND applied < ?1",
    [S_SEG_NOTE] = "INSERT INTO journal_segments(seg, first_id, last_id) VALUES (?1, ?2, ?3)"
                   " ON CONFLICT(seg) DO UPDATE SET first_id = coalesce(first_id, ?2),"
                   " last_id = coalesce(?3, last_id)",
    [S_SEGS] = "SELECT seg, first_id, last_id FROM journal_segments WHERE seg < ?1 ORDER BY seg"
               " LIMIT ?2",
    [S_SEG_BODIES] = "SELECT id, body_at, body_len, received FROM deliveries"
                     " WHERE id BETWEEN ?1 AND ?2 AND body_at IS NOT NULL",
    [S_MOVE_BODY] = "INSERT OR REPLACE INTO bodies(id, body) VALUES (?1, ?2)",
    [S_BODY_MOVED] = "UPDATE deliveries SET body_at = NULL WHERE id = ?1",
    [S_SEG_GONE] = "DELETE FROM journal_segments WHERE seg = ?1",
};

/* The writer's statement `k`, reset and unbound. NULL when it cannot be prepared. */
sqlite3_stmt *lh_jx_stmt(lh_journal_t *j, sqlite3 *db, int k)
{
    if (j->s[k] == NULL &&
        sqlite3_prepare_v3(db, sql[k], -1, SQLITE_PREPARE_PERSISTENT, &j->s[k], NULL) != SQLITE_OK)
        return NULL;
    return j->s[k];
}

int lh_jx_step(sqlite3 *db, sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : sqlite3_errcode(db);
}

int lh_jx_set_status(lh_journal_t *j, sqlite3 *db, int64_t id, const char *status, int final,
                     double now)
{
    sqlite3_stmt *u = lh_jx_stmt(j, db, S_SET_STATUS);
    if (u == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(u, 1, id);
    sqlite3_bind_text(u, 2, status, -1, SQLITE_STATIC);
    if (final)
        sqlite3_bind_double(u, 3, now);
    else
        sqlite3_bind_null(u, 3);
    return lh_jx_step(db, u);
}

/* A delivery's status from its runs (the contract's derived column), on the writer. */
int lh_jx_refresh_status(lh_journal_t *j, sqlite3 *db, int64_t id, double now)
{
    sqlite3_stmt *c = lh_jx_stmt(j, db, S_COUNT_RUNS);
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
    return lh_jx_set_status(j, db, id, status, !retrying && !pending, now);
}


/* ------------------------------------------------------------------ records into rows */

static void bind_str(sqlite3_stmt *s, int i, const char *v, size_t n)
{
    if (v != NULL)
        sqlite3_bind_text(s, i, v, (int)n, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

/* ------------------------------------------------------------------ the index (writer) */

static int insert_attempt(lh_journal_t *j, sqlite3 *db, const lh_jrec_end_t *e);

/* An event record into deliveries and runs. `fin`: the end of its one run's first attempt,
** from the same batch: the rows are written as they end up, not written twice. */
static int apply_event(lh_journal_t *j, sqlite3 *db, const lh_jrec_event_t *v, uint64_t body_at,
                       size_t body_len, const lh_jrec_end_t *fin)
{
    int rc;
    sqlite3_stmt *s = lh_jx_stmt(j, db, S_INS_DELIVERY);
    if (s == NULL)
        return sqlite3_errcode(db);
    int dup = v->dup_of != 0, final = dup || v->nhandlers == 0;
    if (dup || v->nhandlers != 1)
        fin = NULL;
    sqlite3_bind_int64(s, 1, v->id);
    sqlite3_bind_text(s, 2, v->delivery, (int)v->delivery_len, SQLITE_STATIC);
    sqlite3_bind_double(s, 3, v->received);
    sqlite3_bind_text(s, 4, v->path, (int)v->path_len, SQLITE_STATIC);
    bind_str(s, 5, v->remote, v->remote_len);
    bind_str(s, 6, v->action, v->action_len);
    if (v->has_project)
        sqlite3_bind_int64(s, 7, v->project);
    sqlite3_bind_text(s, 8, v->headers, (int)v->headers_len, SQLITE_STATIC);
    if (v->digest != NULL)
        sqlite3_bind_blob(s, 9, v->digest, 32, SQLITE_STATIC);
    if (dup)
        sqlite3_bind_int64(s, 10, v->dup_of);
    sqlite3_bind_text(s, 11,
                      dup            ? "duplicate"
                      : fin          ? lh_run_state_name(fin->state)
                      : v->nhandlers ? "pending"
                                     : "none",
                      -1, SQLITE_STATIC);
    if (final)
        sqlite3_bind_double(s, 12, v->received);
    else if (fin && (fin->state == LH_RUN_OK || fin->state == LH_RUN_DEAD))
        sqlite3_bind_double(s, 12, fin->ended);
    sqlite3_bind_int64(s, 13, (int64_t)body_at);
    sqlite3_bind_int64(s, 14, (int64_t)body_len);
    if ((rc = lh_jx_step(db, s)) != SQLITE_OK || dup)
        return rc;
    if (fin != NULL) {
        sqlite3_stmt *f = lh_jx_stmt(j, db, S_INS_RUN_ENDED);
        if (f == NULL)
            return sqlite3_errcode(db);
        sqlite3_bind_int64(f, 1, v->id);
        sqlite3_bind_text(f, 2, fin->handler, (int)fin->handler_len, SQLITE_STATIC);
        sqlite3_bind_text(f, 3, lh_run_state_name(fin->state), -1, SQLITE_STATIC);
        if (fin->next_at > 0)
            sqlite3_bind_double(f, 4, fin->next_at);
        bind_str(f, 5, fin->error, fin->error_len);
        bind_str(f, 6, fin->traceback, fin->traceback_len);
        sqlite3_bind_double(f, 7, fin->ended);
        sqlite3_bind_double(f, 8, fin->started);
        if ((rc = lh_jx_step(db, f)) != SQLITE_OK)
            return rc;
        return fin->state == LH_RUN_OK ? SQLITE_OK : insert_attempt(j, db, fin);
    }
    sqlite3_stmt *r = lh_jx_stmt(j, db, S_INS_RUN);
    if (r == NULL)
        return sqlite3_errcode(db);
    lh_jrec_event_t h = *v;
    for (uint32_t i = 0; i < v->nhandlers; i++) {
        size_t hl;
        const char *name = lh_jrec_event_handler(&h, &hl);
        if (name == NULL)
            return SQLITE_CORRUPT;
        sqlite3_bind_int64(r, 1, v->id);
        sqlite3_bind_text(r, 2, name, (int)hl, SQLITE_STATIC);
        sqlite3_bind_double(r, 3, v->received);
        if ((rc = lh_jx_step(db, r)) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

static int insert_attempt(lh_journal_t *j, sqlite3 *db, const lh_jrec_end_t *e)
{
    sqlite3_stmt *a = lh_jx_stmt(j, db, S_INS_ATTEMPT);
    if (a == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(a, 1, e->id);
    sqlite3_bind_text(a, 2, e->handler, (int)e->handler_len, SQLITE_STATIC);
    sqlite3_bind_int(a, 3, e->attempt);
    sqlite3_bind_double(a, 4, e->started);
    sqlite3_bind_double(a, 5, e->ended);
    sqlite3_bind_text(a, 6, e->outcome, (int)e->outcome_len, SQLITE_STATIC);
    bind_str(a, 7, e->error, e->error_len);
    bind_str(a, 8, e->traceback, e->traceback_len);
    return lh_jx_step(db, a);
}

/* An attempt's end record into runs, attempts and the delivery's status. */
static int apply_end(lh_journal_t *j, sqlite3 *db, const lh_jrec_end_t *e)
{
    sqlite3_stmt *r = lh_jx_stmt(j, db, S_END_RUN);
    int rc;
    if (r == NULL)
        return sqlite3_errcode(db);
    sqlite3_bind_int64(r, 1, e->id);
    sqlite3_bind_text(r, 2, e->handler, (int)e->handler_len, SQLITE_STATIC);
    sqlite3_bind_int(r, 3, e->attempt);
    sqlite3_bind_text(r, 4, lh_run_state_name(e->state), -1, SQLITE_STATIC);
    if (e->next_at > 0)
        sqlite3_bind_double(r, 5, e->next_at);
    bind_str(r, 6, e->error, e->error_len);
    bind_str(r, 7, e->traceback, e->traceback_len);
    sqlite3_bind_double(r, 8, e->ended);
    sqlite3_bind_double(r, 9, e->started);
    if ((rc = lh_jx_step(db, r)) != SQLITE_OK)
        return rc;
    int ended = sqlite3_changes(db) == 1;
    /* the common case, a first attempt that ended ok, is told by its run's row alone
    ** (journal_query shows it as attempt 1): one row fewer to write per event */
    if ((e->attempt != 1 || e->state != LH_RUN_OK || !ended) &&
        (rc = insert_attempt(j, db, e)) != SQLITE_OK)
        return rc;
    if (e->only_run && ended) /* no count to make */
        return lh_jx_set_status(j, db, e->id, lh_run_state_name(e->state),
                                e->state == LH_RUN_OK || e->state == LH_RUN_DEAD, e->ended);
    return lh_jx_refresh_status(j, db, e->id, e->ended);
}

/* What one index transaction applies: the ids each segment's events took. */
typedef struct seg_note_s {
    uint32_t seg;
    int64_t first, last; /* 0: no event in it */
} seg_note_t;

typedef struct apply_s {
    seg_note_t notes[8];
    int nnotes;
    uint64_t applied; /* the end of the last record applied */
} apply_t;

static void note_segment(apply_t *x, uint32_t seg, int64_t id)
{
    seg_note_t *n = x->nnotes ? &x->notes[x->nnotes - 1] : NULL;
    if (n == NULL || n->seg != seg) {
        if (x->nnotes == (int)(sizeof(x->notes) / sizeof(x->notes[0]))) {
            n = &x->notes[x->nnotes - 1]; /* a batch over 8 segments: keep the span */
            n->seg = seg;
        } else {
            n = &x->notes[x->nnotes++];
            *n = (seg_note_t){seg, 0, 0};
        }
    }
    if (id > 0) {
        if (n->first == 0)
            n->first = id;
        n->last = id;
    }
}

static int apply_record(lh_journal_t *j, sqlite3 *db, apply_t *x, uint32_t type,
                        const unsigned char *meta, size_t meta_len, uint64_t at, uint64_t body_at,
                        size_t body_len, uint64_t end)
{
    int rc = SQLITE_OK;
    if (type == LH_JLOG_EVENT) {
        lh_jrec_event_t v;
        if (lh_jrec_event_read(meta, meta_len, &v) != 0)
            return SQLITE_CORRUPT;
        rc = apply_event(j, db, &v, body_at, body_len, NULL);
        note_segment(x, (uint32_t)(at >> 32), v.id);
    } else if (type == LH_JLOG_END) {
        lh_jrec_end_t e;
        if (lh_jrec_end_read(meta, meta_len, &e) != 0)
            return SQLITE_CORRUPT;
        rc = apply_end(j, db, &e);
        note_segment(x, (uint32_t)(at >> 32), 0);
    }
    if (end > x->applied)
        x->applied = end;
    return rc;
}

/* The position applied up to, and the segments' ids, in the same transaction. */
static int apply_finish(lh_journal_t *j, sqlite3 *db, apply_t *x)
{
    int rc;
    sqlite3_stmt *s = lh_jx_stmt(j, db, S_SEG_NOTE), *a = lh_jx_stmt(j, db, S_APPLIED);
    if (s == NULL || a == NULL)
        return sqlite3_errcode(db);
    for (int i = 0; i < x->nnotes; i++) {
        sqlite3_bind_int64(s, 1, x->notes[i].seg);
        if (x->notes[i].first > 0) {
            sqlite3_bind_int64(s, 2, x->notes[i].first);
            sqlite3_bind_int64(s, 3, x->notes[i].last);
        }
        if ((rc = lh_jx_step(db, s)) != SQLITE_OK)
            return rc;
    }
    sqlite3_bind_int64(a, 1, (int64_t)x->applied);
    return lh_jx_step(db, a);
}

/* The ends of first attempts of one-run events in a batch, by event id: such an event and
** its end, committed together, are written once as they end up. */
typedef struct fin_s {
    int64_t id;
    const lh_jlog_rec_t *rec;
    int used;
} fin_t;

static fin_t *fin_find(fin_t *t, size_t cap, int64_t id)
{
    for (size_t k = (size_t)id & (cap - 1);; k = (k + 1) & (cap - 1))
        if (t[k].rec == NULL || t[k].id == id)
            return &t[k];
}

int lh_jx_apply(sqlite3 *db, void *data)
{
    index_op_t *op = data;
    lh_journal_t *j = op->j;
    apply_t x = {0};
    int rc = SQLITE_OK;
    size_t cap = 16;
    while (cap < op->n * 2)
        cap *= 2;
    fin_t *fins = calloc(cap, sizeof(*fins)); /* NULL: each record alone */
    for (lh_jlog_rec_t *r = op->recs; fins && r; r = r->next) {
        lh_jrec_end_t e;
        if (r->type == LH_JLOG_END && lh_jrec_end_read(r->meta, r->meta_len, &e) == 0 &&
            e.attempt == 1 && e.only_run) {
            fin_t *f = fin_find(fins, cap, e.id);
            if (f->rec == NULL)
                *f = (fin_t){e.id, r, 0};
        }
    }
    for (lh_jlog_rec_t *r = op->recs; r && rc == SQLITE_OK; r = r->next) {
        lh_jrec_event_t v;
        lh_jrec_end_t e;
        fin_t *f = NULL;
        if (fins && r->type == LH_JLOG_EVENT && lh_jrec_event_read(r->meta, r->meta_len, &v) == 0 &&
            (f = fin_find(fins, cap, v.id))->rec != NULL &&
            lh_jrec_end_read(f->rec->meta, f->rec->meta_len, &e) == 0) {
            rc = apply_event(j, db, &v, r->body_at, r->body_len, &e);
            f->used = v.nhandlers == 1 && v.dup_of == 0;
            note_segment(&x, (uint32_t)(r->at >> 32), v.id);
            x.applied = lh_jlog_rec_end(r);
            continue;
        }
        if (fins && r->type == LH_JLOG_END && lh_jrec_end_read(r->meta, r->meta_len, &e) == 0 &&
            (f = fin_find(fins, cap, e.id))->rec == r && f->used) {
            note_segment(&x, (uint32_t)(r->at >> 32), 0); /* written with its event */
            x.applied = lh_jlog_rec_end(r);
            continue;
        }
        rc = apply_record(j, db, &x, r->type, r->meta, r->meta_len, r->at, r->body_at, r->body_len,
                          lh_jlog_rec_end(r));
        if (rc == SQLITE_CORRUPT) { /* our own bytes: cannot be, but never stop the index */
            LH_LOG(LH_ERROR, "journal: a log record at %llu could not be read: left out",
                   (unsigned long long)r->at);
            rc = SQLITE_OK;
        }
    }
    free(fins);
    return rc == SQLITE_OK ? apply_finish(j, db, &x) : rc;
}

typedef struct replay_s {
    lh_journal_t *j;
    sqlite3 *db;
    apply_t x;
    int in_tx, n, rc;
    int64_t records;
} replay_t;

static int replay_commit(replay_t *p)
{
    if (!p->in_tx)
        return SQLITE_OK;
    int rc = apply_finish(p->j, p->db, &p->x);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(p->db, "COMMIT", 0, 0, 0);
    p->in_tx = 0;
    p->n = 0;
    memset(&p->x, 0, sizeof(p->x));
    return rc;
}

static int replay_one(void *data, const lh_jlog_found_t *f)
{
    replay_t *p = data;
    if (!p->in_tx) {
        if ((p->rc = sqlite3_exec(p->db, "BEGIN IMMEDIATE", 0, 0, 0)) != SQLITE_OK)
            return 1;
        p->in_tx = 1;
    }
    p->rc = apply_record(p->j, p->db, &p->x, f->type, f->meta, f->meta_len, f->at, f->body_at,
                         f->body_len, f->end);
    if (p->rc == SQLITE_CORRUPT) {
        LH_LOG(LH_ERROR, "journal: a log record at %llu could not be read: left out",
               (unsigned long long)f->at);
        p->rc = SQLITE_OK;
    }
    if (p->rc != SQLITE_OK)
        return 1;
    p->records++;
    if (++p->n >= REPLAY_BATCH && (p->rc = replay_commit(p)) != SQLITE_OK)
        return 1;
    return 0;
}

/* The index catches up with the log: records a crash left out of it are applied. */
int lh_jx_replay(lh_journal_t *j, sqlite3 *db, char *err, size_t errlen)
{
    int64_t applied = 0;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, "SELECT applied FROM journal_log WHERE id = 1", -1, &s, NULL) ==
            SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        applied = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    replay_t p = {.j = j, .db = db};
    char why[512] = "";
    int rc = lh_jlog_scan(j->dir, (uint64_t)applied, replay_one, &p, NULL, why, sizeof(why));
    if (rc == 0 && p.rc == SQLITE_OK)
        p.rc = replay_commit(&p);
    if (rc < 0 || p.rc != SQLITE_OK) {
        if (p.in_tx)
            sqlite3_exec(db, "ROLLBACK", 0, 0, 0);
        snprintf(err, errlen, "journal: bringing %s up to date with its log: %s",
                 lh_state_path(j->st), rc < 0 ? why : sqlite3_errmsg(db));
        return -1;
    }
    if (p.records > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%lld", (long long)p.records);
        lh_field_t f[] = {LH_FIELD_NUM("records", n)};
        lh_log_fields(LH_INFO, "journal: the index took up the log's last records", f, 1);
    }
    return 0;
}
