#include "state.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "wal_gather.h"

/*
** The schema is an ordered list of steps; `PRAGMA user_version` is how many ran. A new
** binary runs the steps a database has not seen, each in its own transaction with the
** version bump, so a database of any earlier release upgrades and a crash mid-way leaves
** a consistent earlier version. Never change a released step: append one.
*/
static const char *const schema_steps[] = {
    /* 1: the store: one row per (namespace, key) */
    "CREATE TABLE store(ns TEXT NOT NULL, key TEXT NOT NULL, type INTEGER NOT NULL,"
    " value, expires REAL, PRIMARY KEY (ns, key)) WITHOUT ROWID;",
    /* 2: changes made by other processes (luahook store ...), which a running server
    ** picks up; expired rows found by index */
    "CREATE TABLE store_changes(seq INTEGER PRIMARY KEY AUTOINCREMENT, ns TEXT NOT NULL,"
    " key TEXT NOT NULL);"
    "CREATE INDEX store_expires ON store(expires) WHERE expires IS NOT NULL;",
    /* 3: the journal (journal.c): every accepted event, and one run per (event, handler).
    ** The body has its own table, keyed by the delivery's id: a run's end rewrites the
    ** delivery's status, and that must not copy the body into the WAL again. Runs and
    ** attempts are found by their key alone: no rowid b-tree beside it to write. */
    "CREATE TABLE deliveries(id INTEGER PRIMARY KEY, delivery TEXT NOT NULL UNIQUE,"
    " received REAL NOT NULL, path TEXT NOT NULL, remote TEXT, action TEXT, project INTEGER,"
    " headers TEXT NOT NULL, digest BLOB, duplicate_of INTEGER,"
    " status TEXT NOT NULL, finished REAL);"
    "CREATE TABLE bodies(id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
    "CREATE INDEX deliveries_digest ON deliveries(digest, received) WHERE digest IS NOT NULL;"
    "CREATE INDEX deliveries_finished ON deliveries(finished) WHERE finished IS NOT NULL;"
    "CREATE TABLE runs(delivery INTEGER NOT NULL, handler TEXT NOT NULL, state TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, next_at REAL, error TEXT, traceback TEXT,"
    " updated REAL NOT NULL, PRIMARY KEY(delivery, handler)) WITHOUT ROWID;"
    "CREATE INDEX runs_due ON runs(state, next_at);"
    "CREATE TABLE attempts(delivery INTEGER NOT NULL, handler TEXT NOT NULL, n INTEGER NOT NULL,"
    " started REAL NOT NULL, ended REAL, outcome TEXT, error TEXT, traceback TEXT,"
    " PRIMARY KEY(delivery, handler, n)) WITHOUT ROWID;",
    /* 4: for journal_query.c: the counts of /-/api/stats and a filter on a rare status (dead
    ** among 100 000 ok) read an index, not every row and its body; so does --since */
    "CREATE INDEX deliveries_status ON deliveries(status);"
    "CREATE INDEX deliveries_received ON deliveries(received);",
    /* 5: the write path's diet. Runs and deliveries that ended ok (nearly all) leave their
    ** state's index, so an ok event costs no index write for it at its end; queries for the
    ** others say `<> 'ok'` to use them, and ok is counted as what remains of the whole. A
    ** first attempt that ends ok keeps no attempts row: the run's own row holds its start
    ** (`started`) and end (`updated`). */
    "DROP INDEX runs_due;"
    "CREATE INDEX runs_open ON runs(state, next_at) WHERE state <> 'ok';"
    "DROP INDEX deliveries_status;"
    "CREATE INDEX deliveries_open ON deliveries(status) WHERE status <> 'ok';"
    "ALTER TABLE runs ADD COLUMN started REAL;",
    /* 6: the journal's log (jlog.c) is the point of durability and this its index: an
    ** event's body stays in the log, at body_at (`seg << 32 | offset`), and moves to
    ** `bodies` only when its segment goes before it does. `applied`: the log's position up
    ** to which this index holds every record; journal_segments: the deliveries of each
    ** segment (ids follow the log's order), for retention. */
    "ALTER TABLE deliveries ADD COLUMN body_at INTEGER;"
    "ALTER TABLE deliveries ADD COLUMN body_len INTEGER;"
    "CREATE TABLE journal_log(id INTEGER PRIMARY KEY CHECK (id = 1), applied INTEGER NOT NULL);"
    "INSERT INTO journal_log VALUES (1, 0);"
    "CREATE TABLE journal_segments(seg INTEGER PRIMARY KEY, first_id INTEGER, last_id INTEGER);",
};
#define NSTEPS ((int)(sizeof(schema_steps) / sizeof(schema_steps[0])))

/* A background pass (incremental vacuum) at most this often, in the writer. */
#define VACUUM_EVERY_NS (60 * 1000000000ull)
/* Under load (the last batch held more than one op) the writer waits up to GATHER_NS, or
** till GATHER_OPS are queued, or till the loop has nothing left to do, before its next
** commit: on a shared CPU every commit costs an fsync, a WAL append of the pages it
** touched and two thread switches, so fewer, fuller commits leave more CPU to the loop.
** Idle, an op is committed at once. */
#define GATHER_NS  1000000u
#define GATHER_OPS 64u
/* How often the writer looks for other processes' changes (PRAGMA data_version): when
** idle, every POLL_MS; when busy, after a batch, at most every POLL_BUSY_NS. */
#define POLL_MS      500
#define POLL_BUSY_NS 100000000u

enum { OP_PUT = 1, OP_DEL, OP_FLUSH, OP_EXTERNAL, OP_LOG, OP_CALL };

typedef struct op_s op_t;
struct op_s {
    op_t *next;
    int kind;
    uint64_t seq;     /* OP_PUT, OP_DEL: order of queueing; OP_EXTERNAL: committed seq */
    lh_state_row_t r; /* its strings point into `mem` */
    char *mem;        /* owned: ns, key, bytes (OP_LOG: the message) */
    void (*cb)(void *data, int status); /* OP_FLUSH, OP_CALL */
    int (*fn)(sqlite3 *db, void *data); /* OP_CALL: runs on the writer, in the batch */
    int unsynced; /* OP_CALL: what it writes can be made again (the journal's index) */
    void *data;
    int status;
    uint64_t since; /* OP_FLUSH: `seq` of the flush queued before it */
};

struct lh_state_s {
    sqlite3 *db;                      /* owned; the writer's alone once started */
    char *path;                       /* owned: DIR/luahook.db */
    int claim_fd;                     /* owned: DIR/luahook.lock, flock'ed by a server; -1: none */
    sqlite3_stmt *put, *del, *forget; /* owned, prepared lazily by the writer */
    uv_loop_t *loop;                  /* borrowed */
    uv_async_t async;                 /* wakes the loop: `done` has something */
    uv_prepare_t idle;                /* the loop is about to wait: a gathering writer goes */
    uv_thread_t thread;
    uv_mutex_t mu; /* guards q_*, done, stopping, stats */
    uv_cond_t cond;
    op_t *q_head, *q_tail; /* queued by the loop for the writer */
    op_t *done;            /* handed back to the loop, in reverse order */
    int stopping;
    int writer_waits; /* the writer sleeps on `cond`: what is queued must wake it */
    int gathering;    /* the writer waits for a fuller batch: wake it at GATHER_OPS queued */
    unsigned q_n;     /* ops queued */
    int started, async_open, idle_open, sync_init;
    int sync_full;        /* --sync full: commits are synced, but for unsynced calls alone */
    uint64_t seq;         /* last sequence number given (loop thread) */
    uint64_t write_seq;   /* that of the last store write queued (loop thread) */
    uint64_t flush_seq;   /* `seq` when the last flush was queued (loop thread) */
    uint64_t failed_seq;  /* writer: the last seq of the last batch that failed */
    int failed_status;    /* writer: and how it failed */
    uint64_t committed;   /* writer: last seq processed */
    int64_t data_version; /* writer: last seen */
    int64_t change_seq;   /* writer: last store_changes row applied */
    int64_t forget_upto;  /* writer: store_changes rows up to here can go */
    uint64_t last_vacuum, last_poll;
    lh_state_hooks_t hooks;
    lh_state_stats_t stats;
    lh_metrics_t *metrics; /* borrowed; NULL: none */
    char last_error[256];  /* the last failed batch's error (guarded by mu) */
    /* Checkpoints run on a thread and a connection of their own, so that no commit waits
    ** for one (SQLite's auto-checkpoint runs inside the commit that crosses the mark): a
    ** passive checkpoint copies the WAL into the database while the writer appends. */
    sqlite3 *ckpt_db; /* owned: the checkpointer's */
    uv_thread_t ckpt_thread;
    uv_cond_t ckpt_cond; /* guarded by mu */
    int ckpt_want;       /* the writer saw the WAL pass CHECKPOINT_FRAMES */
    int ckpt_copied;     /* frames the checkpointer's last pass had copied (of the WAL then) */
    int ckpt_stop, ckpt_started;
};

/* The WAL's size, in frames, past which the checkpointer copies it into the database
** (SQLite's default auto-checkpoint mark). */
#define CHECKPOINT_FRAMES 1000
/* ... and the writer copies the rest itself once no more than this is left. */
#define CHECKPOINT_TAIL 256

int lh_state_schema_version(void)
{
    return NSTEPS;
}

sqlite3 *lh_state_db(lh_state_t *st)
{
    return st->db;
}

const char *lh_state_path(const lh_state_t *st)
{
    return st->path;
}

/* ------------------------------------------------------------------ opening */

static int exec(sqlite3 *db, const char *sql, char *err, size_t errlen, const char *path)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* The first column of the first row of `sql` as an integer; -1 with a message on error. */
static int query_int(sqlite3 *db, const char *sql, int64_t *out, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK)
        snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Read-only checks of an existing file: nothing is written, whatever they find. */
static int check_existing(const char *path, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    char why[256];
    int64_t version = 0;
    char uri[PATH_MAX * 3 + 32], wal[PATH_MAX + 8];
    struct stat sb;
    /* without a WAL file beside it, read it as immutable: not even a -shm appears. With
    ** one (a server running, or one that crashed), open it for writing without creating
    ** anything: after a crash only such a connection may rebuild the WAL index (recovery
    ** touches the -wal and -shm files, never the database file itself) */
    snprintf(wal, sizeof(wal), "%s-wal", path);
    int immutable = stat(wal, &sb) != 0;
    size_t o = (size_t)snprintf(uri, sizeof(uri), "file:");
    for (const char *p = path; *p && o + 4 < sizeof(uri); p++) {
        if (*p == '%' || *p == '?' || *p == '#')
            o += (size_t)snprintf(uri + o, sizeof(uri) - o, "%%%02X", (unsigned char)*p);
        else
            uri[o++] = *p;
    }
    snprintf(uri + o, sizeof(uri) - o, "%s", immutable ? "?immutable=1" : "");
    int rc = sqlite3_open_v2(
        uri, &db, (immutable ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_URI,
        NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        goto fail;
    }
    sqlite3_busy_timeout(db, 5000);
    if (query_int(db, "PRAGMA user_version", &version, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, why);
        goto fail;
    }
    if (version > NSTEPS) {
        snprintf(err, errlen,
                 "%s has schema version %lld, newer than this luahook knows (%d): run the "
                 "luahook that wrote it",
                 path, (long long)version, NSTEPS);
        goto fail;
    }
    if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &s, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot check %s: %s", path, sqlite3_errmsg(db));
        goto fail;
    }
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        snprintf(err, errlen, "cannot check %s: %s", path, sqlite3_errmsg(db));
        goto fail;
    }
    const char *first = (const char *)sqlite3_column_text(s, 0);
    if (first == NULL || strcmp(first, "ok") != 0) {
        snprintf(err, errlen, "%s fails PRAGMA quick_check: %s", path, first ? first : "?");
        goto fail;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return 0;
fail:
    sqlite3_finalize(s);
    sqlite3_close(db);
    size_t n = strlen(err);
    if (n < errlen)
        snprintf(err + n, errlen - n,
                 " (nothing was changed: restore a backup, or move the "
                 "file away to start with an empty state)");
    return -1;
}

static int migrate(sqlite3 *db, const char *path, int upto, char *err, size_t errlen)
{
    int64_t v;
    char why[256];
    if (query_int(db, "PRAGMA user_version", &v, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return -1;
    }
    for (int step = (int)v; step < upto; step++) {
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d;", step + 1);
        if (exec(db, "BEGIN IMMEDIATE;", err, errlen, path) != 0)
            return -1;
        if (exec(db, schema_steps[step], err, errlen, path) != 0 ||
            exec(db, bump, err, errlen, path) != 0 || exec(db, "COMMIT;", err, errlen, path) != 0) {
            sqlite3_exec(db, "ROLLBACK;", NULL, NULL, NULL);
            return -1;
        }
    }
    return 0;
}

/* When the folder cannot be written, says why in the words an operator looks for: SQLite
** only says "unable to open database file". Appends to err; nothing when it is writable. */
static void say_if_read_only(const char *dir, char *err, size_t errlen)
{
    struct statvfs vfs;
    size_t n = strlen(err);

    if (statvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY))
        snprintf(err + n, errlen - n, " (the state folder %s is on a read-only file system)", dir);
    else if (access(dir, W_OK) != 0)
        snprintf(err + n, errlen - n, " (the state folder %s is read-only for this user: %s)", dir,
                 strerror(errno));
}

int lh_state_open_upto(lh_state_t **out, const char *dir, int upto, char *err, size_t errlen)
{
    lh_state_t *st = NULL;
    struct stat sb;
    int64_t v;
    char why[256];

    *out = NULL;
    if (upto > NSTEPS)
        upto = NSTEPS;
    if (stat(dir, &sb) != 0) {
        if (errno != ENOENT || mkdir(dir, 0750) != 0) {
            snprintf(err, errlen, "state folder %s: %s", dir, strerror(errno));
            return -1;
        }
    } else if (!S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "state folder %s: not a folder", dir);
        return -1;
    }
    if ((st = calloc(1, sizeof(*st))) == NULL)
        goto oom;
    if (uv_mutex_init(&st->mu) != 0)
        goto oom;
    if (uv_cond_init(&st->cond) != 0) {
        uv_mutex_destroy(&st->mu);
        goto oom;
    }
    st->sync_init = 1;
    st->claim_fd = -1;
    size_t n = strlen(dir) + sizeof(LH_STATE_DB_NAME) + 2;
    if ((st->path = malloc(n)) == NULL)
        goto oom;
    snprintf(st->path, n, "%s/%s", dir, LH_STATE_DB_NAME);
    int exists = stat(st->path, &sb) == 0 && sb.st_size > 0;
    if (exists && check_existing(st->path, err, errlen) != 0)
        goto fail;
    if (!exists) {
        /* the journal holds raw bodies (project tokens): no reading by others, in a folder
        ** others may enter; SQLite gives its -wal and -shm files the same mode */
        int fd = open(st->path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
        if (fd >= 0)
            close(fd);
    }
    int rc = sqlite3_open_v2(st->path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             lh_wal_gather_vfs());
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", st->path,
                 st->db ? sqlite3_errmsg(st->db) : "no memory");
        say_if_read_only(dir, err, errlen);
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* a new file: free pages can be given back (incremental auto-vacuum must come first) */
    /* 4 KiB pages: a commit rewrites every page it touches, in the WAL and again at the
    ** checkpoint; with larger pages each small index entry costs more than a body's
    ** overflow chain saves (measured: 29 % fewer instructions, 36 % fewer bytes) */
    if (!exists && exec(st->db, "PRAGMA page_size = 4096; PRAGMA auto_vacuum = INCREMENTAL;", err,
                        errlen, st->path) != 0)
        goto fail;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(s, 0), "wal") != 0) {
        snprintf(err, errlen, "%s: cannot switch to WAL mode: %s", st->path,
                 sqlite3_errmsg(st->db));
        say_if_read_only(dir, err, errlen);
        sqlite3_finalize(s);
        goto fail;
    }
    sqlite3_finalize(s);
    /* a commit the writer reports is on the disk, also across a power cut */
    if (exec(st->db, "PRAGMA synchronous = FULL;", err, errlen, st->path) != 0 ||
        migrate(st->db, st->path, upto, err, errlen) != 0)
        goto fail;
    if (query_int(st->db, "PRAGMA data_version", &v, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", st->path, why);
        goto fail;
    }
    st->data_version = v;
    *out = st;
    return 0;
oom:
    snprintf(err, errlen, "state folder %s: out of memory", dir);
fail:
    lh_state_free(st);
    return -1;
}

int lh_state_open(lh_state_t **out, const char *dir, char *err, size_t errlen)
{
    return lh_state_open_upto(out, dir, NSTEPS, err, errlen);
}

int lh_state_check_owner(const char *dir, int become_owner, char *err, size_t errlen)
{
    struct stat sb;
    if (geteuid() != 0 || stat(dir, &sb) != 0 || sb.st_uid == 0)
        return 0;
    struct passwd *pw = getpwuid(sb.st_uid);
    char who[64];
    if (pw != NULL)
        snprintf(who, sizeof(who), "%s", pw->pw_name);
    else
        snprintf(who, sizeof(who), "#%u", (unsigned)sb.st_uid);
    if (!become_owner) {
        snprintf(err, errlen,
                 "state folder %s belongs to user %s: run luahook as that user (sudo -u %s "
                 "luahook ...), not as root, so that no file of root's is left there",
                 dir, who, who);
        return -1;
    }
    if (setgroups(0, NULL) != 0 || setgid(sb.st_gid) != 0 || setuid(sb.st_uid) != 0) {
        snprintf(err, errlen, "state folder %s belongs to user %s: cannot switch to it: %s", dir,
                 who, strerror(errno));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ rows */

static void row_from(sqlite3_stmt *s, int col, lh_state_row_t *r)
{
    r->type = sqlite3_column_int(s, col);
    r->i = 0, r->f = 0, r->bytes = NULL, r->len = 0;
    switch (r->type) {
    case LH_SV_BOOL:
    case LH_SV_INT:
        r->i = sqlite3_column_int64(s, col + 1);
        break;
    case LH_SV_FLOAT:
        r->f = sqlite3_column_double(s, col + 1);
        break;
    default:
        r->bytes = sqlite3_column_blob(s, col + 1);
        r->len = (size_t)sqlite3_column_bytes(s, col + 1);
        if (r->bytes == NULL)
            r->bytes = "";
        break;
    }
    r->expires = sqlite3_column_double(s, col + 2);
}

static int bind_row(sqlite3_stmt *s, const lh_state_row_t *r)
{
    int rc = sqlite3_bind_text(s, 1, r->ns, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(s, 2, r->key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(s, 3, r->type);
    if (rc == SQLITE_OK) {
        if (r->type == LH_SV_BOOL || r->type == LH_SV_INT)
            rc = sqlite3_bind_int64(s, 4, r->i);
        else if (r->type == LH_SV_FLOAT)
            rc = sqlite3_bind_double(s, 4, r->f);
        else
            rc = sqlite3_bind_blob64(s, 4, r->bytes, r->len, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK)
        rc = r->expires > 0 ? sqlite3_bind_double(s, 5, r->expires) : sqlite3_bind_null(s, 5);
    return rc;
}

static const char put_sql[] =
    "INSERT OR REPLACE INTO store(ns, key, type, value, expires) VALUES (?, ?, ?, ?, ?)";
static const char del_sql[] = "DELETE FROM store WHERE ns = ? AND key = ?";

int lh_state_load_store(lh_state_t *st, double now, int (*row)(void *data, const lh_state_row_t *r),
                        void *data, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc = 0;
    /* changes other processes made while no server ran are in `store` already */
    if (exec(st->db, "DELETE FROM store_changes;", err, errlen, st->path) != 0)
        return -1;
    if (sqlite3_prepare_v2(st->db, "SELECT ns, key, type, value, expires FROM store", -1, &s,
                           NULL) != SQLITE_OK)
        goto fail;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        lh_state_row_t r;
        r.ns = (const char *)sqlite3_column_text(s, 0);
        r.key = (const char *)sqlite3_column_text(s, 1);
        row_from(s, 2, &r);
        if (r.ns == NULL || r.key == NULL)
            continue;
        if (r.expires > 0 && r.expires <= now) {
            lh_state_delete(st, r.ns, r.key);
            continue;
        }
        if (row(data, &r) != 0) {
            snprintf(err, errlen, "%s: the store holds more keys than --store-max-keys", st->path);
            sqlite3_finalize(s);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    int64_t v;
    char why[128];
    if (query_int(st->db, "PRAGMA data_version", &v, why, sizeof(why)) == 0)
        st->data_version = v;
    return 0;
fail:
    snprintf(err, errlen, "%s: cannot read the store: %s", st->path, sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    return -1;
}

/* ------------------------------------------------------------------ queue (loop side) */

static op_t *op_new(int kind, const char *ns, const char *key, const char *bytes, size_t len)
{
    size_t nl = ns ? strlen(ns) + 1 : 0, kl = key ? strlen(key) + 1 : 0;
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->kind = kind;
    if (nl + kl + len > 0) {
        if ((op->mem = malloc(nl + kl + len + 1)) == NULL) {
            free(op);
            return NULL;
        }
        char *p = op->mem;
        if (ns)
            memcpy(p, ns, nl), op->r.ns = p, p += nl;
        if (key)
            memcpy(p, key, kl), op->r.key = p, p += kl;
        if (len > 0)
            memcpy(p, bytes, len);
        p[len] = '\0';
        op->r.bytes = p;
        op->r.len = len;
    }
    return op;
}

static void op_free(op_t *op)
{
    free(op->mem);
    free(op);
}

static void enqueue(lh_state_t *st, op_t *op)
{
    uv_mutex_lock(&st->mu);
    if (st->q_tail)
        st->q_tail->next = op;
    else
        st->q_head = op;
    st->q_tail = op;
    st->q_n++;
    /* a busy writer takes it with its next batch: no wake-up call */
    if (st->writer_waits && (!st->gathering || st->q_n >= GATHER_OPS))
        uv_cond_signal(&st->cond);
    uv_mutex_unlock(&st->mu);
}

uint64_t lh_state_put(lh_state_t *st, const lh_state_row_t *r)
{
    int has_bytes = r->type == LH_SV_STRING || r->type == LH_SV_JSON;
    op_t *op = op_new(OP_PUT, r->ns, r->key, has_bytes ? r->bytes : NULL, has_bytes ? r->len : 0);
    if (op == NULL)
        return 0;
    op->r.type = r->type;
    op->r.i = r->i;
    op->r.f = r->f;
    op->r.expires = r->expires;
    uint64_t seq = op->seq = st->write_seq = ++st->seq;
    enqueue(st, op); /* the writer may commit and free op at once: not read after this */
    return seq;
}

uint64_t lh_state_delete(lh_state_t *st, const char *ns, const char *key)
{
    op_t *op = op_new(OP_DEL, ns, key, NULL, 0);
    if (op == NULL)
        return 0;
    uint64_t seq = op->seq = st->write_seq = ++st->seq;
    enqueue(st, op); /* as in lh_state_put: op is the writer's from here */
    return seq;
}

int lh_state_flush(lh_state_t *st, void (*cb)(void *data, int status), void *data)
{
    op_t *op = op_new(OP_FLUSH, NULL, NULL, NULL, 0);
    if (op == NULL)
        return -1;
    op->cb = cb;
    op->data = data;
    op->since = st->flush_seq;
    op->seq = st->flush_seq = st->seq;
    enqueue(st, op);
    return 0;
}

uint64_t lh_state_last_write(const lh_state_t *st)
{
    return st->write_seq;
}

uint64_t lh_state_seq(const lh_state_t *st)
{
    return st->seq;
}

static int call_op(lh_state_t *st, int (*fn)(sqlite3 *db, void *data),
                   void (*cb)(void *data, int status), void *data, int unsynced)
{
    op_t *op = op_new(OP_CALL, NULL, NULL, NULL, 0);
    if (op == NULL)
        return -1;
    op->fn = fn;
    op->unsynced = unsynced;
    op->cb = cb;
    op->data = data;
    op->seq = ++st->seq;
    enqueue(st, op);
    return 0;
}

int lh_state_call(lh_state_t *st, int (*fn)(sqlite3 *db, void *data),
                  void (*cb)(void *data, int status), void *data)
{
    return call_op(st, fn, cb, data, 0);
}

int lh_state_call_unsynced(lh_state_t *st, int (*fn)(sqlite3 *db, void *data),
                           void (*cb)(void *data, int status), void *data)
{
    return call_op(st, fn, cb, data, 1);
}

void lh_state_last_error(lh_state_t *st, char *buf, size_t len)
{
    uv_mutex_lock(&st->mu);
    snprintf(buf, len, "%s", st->last_error[0] ? st->last_error : "unknown error");
    uv_mutex_unlock(&st->mu);
}

int lh_state_set_sync(lh_state_t *st, int full, char *err, size_t errlen)
{
    int rc = exec(st->db, full ? "PRAGMA synchronous = FULL;" : "PRAGMA synchronous = NORMAL;", err,
                  errlen, st->path);
    lh_wal_gather_set(full); /* a commit without a sync must not leave its frames unwritten */
    st->sync_full = full;
    return rc;
}

void lh_state_stats(lh_state_t *st, lh_state_stats_t *out)
{
    uv_mutex_lock(&st->mu);
    *out = st->stats;
    uv_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------------------ the writer */

static op_t *log_op(const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, a, b);
    return op_new(OP_LOG, NULL, NULL, msg, strlen(msg));
}

/* A failed batch's SQLite code as what the loop is told. */
static int uv_status(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return UV_ENOSPC;
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return UV_EROFS;
    case SQLITE_NOMEM:
        return UV_ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return UV_EBUSY;
    default:
        return UV_EIO;
    }
}

/* Commits the PUT/DEL/CALL ops of `batch` in one transaction; moves FLUSH ops (with the status)
** to *done and frees the rest. Runs on the writer (or at stop, on the caller). */
static void commit_batch(lh_state_t *st, op_t *batch, op_t **done)
{
    uint64_t nops = 0, nstore = 0, last = 0, synced = 0;
    int rc = SQLITE_OK;
    const char *what = "";
    for (op_t *op = batch; op; op = op->next)
        if (op->kind == OP_PUT || op->kind == OP_DEL || op->kind == OP_CALL) {
            nops++, last = op->seq > last ? op->seq : last;
            nstore += op->kind != OP_CALL; /* the journal counts its own */
            synced += op->kind != OP_CALL || !op->unsynced;
        }
    /* a batch of unsynced calls alone is not synced: the journal's index, which its log
    ** makes again after a power cut; the next synced commit syncs it with its own */
    int unsynced = st->sync_full && nops > 0 && synced == 0 && st->forget_upto == 0;
    if (unsynced && sqlite3_exec(st->db, "PRAGMA synchronous = NORMAL", 0, 0, 0) == SQLITE_OK)
        lh_wal_gather_set(0);
    else
        unsynced = 0;
    if (nops > 0 || st->forget_upto > 0) {
        if (st->put == NULL &&
            ((rc = sqlite3_prepare_v2(st->db, put_sql, -1, &st->put, NULL)) != SQLITE_OK ||
             (rc = sqlite3_prepare_v2(st->db, del_sql, -1, &st->del, NULL)) != SQLITE_OK ||
             (rc = sqlite3_prepare_v2(st->db, "DELETE FROM store_changes WHERE seq <= ?", -1,
                                      &st->forget, NULL)) != SQLITE_OK))
            what = "prepare";
        if (rc == SQLITE_OK && (rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", 0, 0, 0)) != SQLITE_OK)
            what = "begin";
        for (op_t *op = batch; rc == SQLITE_OK && op; op = op->next) {
            if (op->kind == OP_CALL) {
                if ((rc = op->fn(st->db, op->data)) != SQLITE_OK)
                    what = "write";
                continue;
            }
            sqlite3_stmt *s = op->kind == OP_PUT ? st->put : op->kind == OP_DEL ? st->del : NULL;
            if (s == NULL)
                continue;
            rc = op->kind == OP_PUT ? bind_row(s, &op->r)
                                    : sqlite3_bind_text(s, 1, op->r.ns, -1, SQLITE_STATIC);
            if (rc == SQLITE_OK && op->kind == OP_DEL)
                rc = sqlite3_bind_text(s, 2, op->r.key, -1, SQLITE_STATIC);
            if (rc == SQLITE_OK)
                rc = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(st->db);
            sqlite3_reset(s);
            sqlite3_clear_bindings(s);
            if (rc != SQLITE_OK)
                what = "write";
        }
        if (rc == SQLITE_OK && st->forget_upto > 0) {
            sqlite3_bind_int64(st->forget, 1, st->forget_upto);
            rc = sqlite3_step(st->forget) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(st->db);
            sqlite3_reset(st->forget);
            if (rc != SQLITE_OK)
                what = "write";
        }
        if (rc == SQLITE_OK && (rc = sqlite3_exec(st->db, "COMMIT", 0, 0, 0)) != SQLITE_OK)
            what = "commit";
        if (unsynced) {
            lh_wal_gather_set(1);
            sqlite3_exec(st->db, "PRAGMA synchronous = FULL", 0, 0, 0);
        }
        if (rc != SQLITE_OK) {
            op_t *l = log_op("state: %s failed, the batch is lost to the disk: %s", what,
                             sqlite3_errmsg(st->db));
            uv_mutex_lock(&st->mu);
            snprintf(st->last_error, sizeof(st->last_error), "%s", sqlite3_errmsg(st->db));
            uv_mutex_unlock(&st->mu);
            sqlite3_exec(st->db, "ROLLBACK", 0, 0, 0);
            if (l != NULL)
                l->next = *done, *done = l;
        } else {
            st->forget_upto = 0;
        }
    }
    uv_mutex_lock(&st->mu);
    if (nops > 0) {
        if (rc == SQLITE_OK) {
            st->stats.commits++;
            st->stats.ops += nstore;
            if (nops > st->stats.max_batch)
                st->stats.max_batch = nops;
        } else {
            st->stats.failures++;
        }
    }
    uv_mutex_unlock(&st->mu);
    if (last > st->committed)
        st->committed = last;
    if (rc != SQLITE_OK && nops > 0) {
        st->failed_seq = last;
        st->failed_status = uv_status(rc);
    }
    while (batch) {
        op_t *op = batch;
        batch = op->next;
        if (op->kind == OP_FLUSH) {
            /* a write queued since the last flush was lost in an earlier batch: so said */
            op->status = rc != SQLITE_OK              ? uv_status(rc)
                         : st->failed_seq > op->since ? st->failed_status
                                                      : 0;
            op->next = *done, *done = op;
        } else if (op->kind == OP_CALL) {
            op->status = rc == SQLITE_OK ? 0 : uv_status(rc);
            op->next = *done, *done = op;
        } else {
            op_free(op);
        }
    }
}

/* Other processes' changes (luahook store ...): noticed by PRAGMA data_version, read from
** store_changes in one read transaction, handed to the loop. */
static void poll_external(lh_state_t *st, op_t **done)
{
    int64_t v;
    char why[128];
    sqlite3_stmt *c = NULL, *r = NULL;
    if (query_int(st->db, "PRAGMA data_version", &v, why, sizeof(why)) != 0 ||
        v == st->data_version)
        return;
    st->data_version = v;
    if (sqlite3_exec(st->db, "BEGIN", 0, 0, 0) != SQLITE_OK)
        return;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT seq, ns, key FROM store_changes WHERE seq > ? ORDER BY seq", -1,
                           &c, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(st->db,
                           "SELECT type, value, expires FROM store WHERE ns = ? AND key = ?", -1,
                           &r, NULL) != SQLITE_OK)
        goto done;
    sqlite3_bind_int64(c, 1, st->change_seq);
    while (sqlite3_step(c) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(c, 0);
        const char *ns = (const char *)sqlite3_column_text(c, 1);
        const char *key = (const char *)sqlite3_column_text(c, 2);
        lh_state_row_t row = {0};
        if (ns == NULL || key == NULL)
            continue;
        sqlite3_bind_text(r, 1, ns, -1, SQLITE_STATIC);
        sqlite3_bind_text(r, 2, key, -1, SQLITE_STATIC);
        if (sqlite3_step(r) == SQLITE_ROW)
            row_from(r, 0, &row);
        int has_bytes = row.type == LH_SV_STRING || row.type == LH_SV_JSON;
        op_t *op =
            op_new(OP_EXTERNAL, ns, key, has_bytes ? row.bytes : NULL, has_bytes ? row.len : 0);
        sqlite3_reset(r);
        if (op == NULL)
            break;
        op->r.type = row.type;
        op->r.i = row.i;
        op->r.f = row.f;
        op->r.expires = row.expires;
        op->seq = st->committed;
        op->next = *done, *done = op;
        st->change_seq = seq;
        st->forget_upto = seq;
    }
done:
    sqlite3_finalize(c);
    sqlite3_finalize(r);
    sqlite3_exec(st->db, "COMMIT", 0, 0, 0);
}

static void vacuum(lh_state_t *st)
{
    int64_t free_pages;
    char why[128];
    if (query_int(st->db, "PRAGMA freelist_count", &free_pages, why, sizeof(why)) == 0 &&
        free_pages > 64)
        sqlite3_exec(st->db, "PRAGMA incremental_vacuum(1000)", 0, 0, 0);
}

/* Puts the list `done` in front of what the loop has still to take; st->mu is held. */
static void give_done_locked(lh_state_t *st, op_t *done)
{
    op_t *tail = done;
    while (tail->next)
        tail = tail->next;
    tail->next = st->done;
    st->done = done;
}

/* Gives `done` to the loop and wakes it; `wake`: also with nothing to give (the counters
** changed). */
static void hand_back(lh_state_t *st, op_t *done, int wake)
{
    if (done == NULL) {
        if (wake)
            uv_async_send(&st->async);
        return;
    }
    uv_mutex_lock(&st->mu);
    give_done_locked(st, done);
    uv_mutex_unlock(&st->mu);
    uv_async_send(&st->async);
}

/* After each commit of the writer's connection: how large the WAL is. */
/* After each commit of the writer's connection, with the WAL's size in frames. The
** checkpointer copies the bulk while the writer appends, but only a checkpoint that copies
** everything lets the next transaction start the WAL over, and with the writer appending
** the checkpointer never gets to the end: the writer copies the last few frames itself,
** in its commit, when the checkpointer has done the rest. */
static int on_wal(void *data, sqlite3 *db, const char *name, int frames)
{
    lh_state_t *st = data;
    (void)name;
    if (frames < CHECKPOINT_FRAMES)
        return SQLITE_OK;
    uv_mutex_lock(&st->mu);
    int left = frames - st->ckpt_copied;
    if (left > CHECKPOINT_TAIL && !st->ckpt_want) {
        st->ckpt_want = 1;
        uv_cond_signal(&st->ckpt_cond);
    }
    int busy = st->ckpt_want;
    uv_mutex_unlock(&st->mu);
    if (left <= CHECKPOINT_TAIL && !busy) {
        int log = 0, copied = 0;
        if (sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied) ==
                SQLITE_OK &&
            log == copied) {
            uv_mutex_lock(&st->mu);
            st->ckpt_copied = 0; /* the next transaction starts the WAL over */
            uv_mutex_unlock(&st->mu);
        }
    }
    return SQLITE_OK;
}

static void checkpointer_main(void *arg)
{
    lh_state_t *st = arg;
    prctl(PR_SET_NAME, "luahook-ckpt", 0, 0, 0); /* as top -H and perf show it */
    uv_mutex_lock(&st->mu);
    for (;;) {
        while (!st->ckpt_want && !st->ckpt_stop)
            uv_cond_wait(&st->ckpt_cond, &st->mu);
        if (st->ckpt_stop)
            break;
        uv_mutex_unlock(&st->mu);
        /* passive: never waits for a reader or the writer; what it cannot copy now, the
        ** next one does. Its errors are the writer's to meet, if they are the disk's. */
        int log = 0, copied = 0;
        if (sqlite3_wal_checkpoint_v2(st->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
                                      &copied) != SQLITE_OK)
            copied = 0;
        uv_mutex_lock(&st->mu);
        st->ckpt_copied = copied;
        st->ckpt_want = 0;
    }
    uv_mutex_unlock(&st->mu);
}

/* Moves checkpoints off the writer's commits; without a second connection, they stay
** there (SQLite's auto-checkpoint). Before the writer starts. */
static void start_checkpointer(lh_state_t *st)
{
    if (sqlite3_open_v2(st->path, &st->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        lh_wal_gather_vfs()) != SQLITE_OK ||
        uv_cond_init(&st->ckpt_cond) != 0) {
        sqlite3_close(st->ckpt_db);
        st->ckpt_db = NULL;
        return;
    }
    sqlite3_busy_timeout(st->ckpt_db, 5000);
    /* a connection finds the WAL at its first read: before it, a checkpoint is a no-op */
    if (sqlite3_exec(st->ckpt_db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) !=
        SQLITE_OK) {
        sqlite3_close(st->ckpt_db);
        st->ckpt_db = NULL;
        uv_cond_destroy(&st->ckpt_cond);
        return;
    }
    sqlite3_wal_hook(st->db, on_wal, st); /* and with it no auto-checkpoint */
    if (uv_thread_create(&st->ckpt_thread, checkpointer_main, st) != 0) {
        sqlite3_wal_autocheckpoint(st->db, CHECKPOINT_FRAMES);
        uv_cond_destroy(&st->ckpt_cond);
        sqlite3_close(st->ckpt_db);
        st->ckpt_db = NULL;
        return;
    }
    st->ckpt_started = 1;
}

static void stop_checkpointer(lh_state_t *st)
{
    if (!st->ckpt_started)
        return;
    uv_mutex_lock(&st->mu);
    st->ckpt_stop = 1;
    uv_cond_signal(&st->ckpt_cond);
    uv_mutex_unlock(&st->mu);
    uv_thread_join(&st->ckpt_thread);
    uv_cond_destroy(&st->ckpt_cond);
    sqlite3_close(st->ckpt_db);
    st->ckpt_db = NULL;
    sqlite3_wal_autocheckpoint(st->db, CHECKPOINT_FRAMES); /* closing checkpoints too */
    st->ckpt_started = 0;
}

static void writer_main(void *arg)
{
    lh_state_t *st = arg;
    prctl(PR_SET_NAME, "luahook-state", 0, 0, 0);
    unsigned last_n = 0; /* ops in the last batch */
    for (;;) {
        uv_mutex_lock(&st->mu);
        if (last_n > 1 && st->q_n < GATHER_OPS && !st->stopping) {
            st->writer_waits = st->gathering = 1;
            uv_cond_timedwait(&st->cond, &st->mu, GATHER_NS);
            st->writer_waits = st->gathering = 0;
        }
        if (st->q_head == NULL && !st->stopping) {
            st->writer_waits = 1;
            uv_cond_timedwait(&st->cond, &st->mu, (uint64_t)POLL_MS * 1000000u);
            st->writer_waits = 0;
        }
        op_t *batch = st->q_head;
        last_n = st->q_n;
        st->q_head = st->q_tail = NULL;
        st->q_n = 0;
        int stopping = st->stopping;
        uv_mutex_unlock(&st->mu);

        op_t *done = NULL;
        int wake = batch != NULL;
        commit_batch(st, batch, &done); /* the group commit: everything queued till now */
        uint64_t now = uv_hrtime();
        if (batch == NULL || now - st->last_poll > POLL_BUSY_NS) {
            st->last_poll = now;
            poll_external(st, &done);
        }
        if (now - st->last_vacuum > VACUUM_EVERY_NS) {
            st->last_vacuum = now;
            vacuum(st);
        }
        hand_back(st, done, wake);
        if (stopping) {
            uv_mutex_lock(&st->mu);
            int empty = st->q_head == NULL;
            uv_mutex_unlock(&st->mu);
            if (empty)
                return;
        }
    }
}

/* ------------------------------------------------------------------ the loop side */

void lh_state_observe(lh_state_t *st, lh_metrics_t *m)
{
    st->metrics = m;
}

/* Runs what the writer handed back, oldest first. */
static void run_done(lh_state_t *st)
{
    uv_mutex_lock(&st->mu);
    op_t *list = st->done;
    st->done = NULL;
    if (st->metrics != NULL) {
        st->metrics->state_commits = st->stats.commits;
        st->metrics->state_writes = st->stats.ops;
        st->metrics->state_failed = st->stats.failures;
    }
    uv_mutex_unlock(&st->mu);
    op_t *rev = NULL;
    while (list) {
        op_t *op = list;
        list = op->next;
        op->next = rev, rev = op;
    }
    while (rev) {
        op_t *op = rev;
        rev = op->next;
        if (op->kind == OP_FLUSH || op->kind == OP_CALL)
            op->cb(op->data, op->status);
        else if (op->kind == OP_EXTERNAL && st->hooks.external != NULL)
            st->hooks.external(st->hooks.data, &op->r, op->seq);
        else if (op->kind == OP_LOG)
            lh_log_printf(LH_ERROR, "%s", op->r.bytes);
        op_free(op);
    }
}

static void on_async(uv_async_t *a)
{
    run_done(a->data);
}

/* Before the loop waits for I/O: what it queued is all there is for now, so a writer
** gathering a fuller batch would only leave the CPU idle. */
static void on_idle(uv_prepare_t *p)
{
    lh_state_t *st = p->data;
    uv_mutex_lock(&st->mu);
    if (st->gathering && st->q_n > 0)
        uv_cond_signal(&st->cond);
    uv_mutex_unlock(&st->mu);
}

static void close_handles(lh_state_t *st)
{
    if (st->async_open && !uv_is_closing((uv_handle_t *)&st->async))
        uv_close((uv_handle_t *)&st->async, NULL);
    if (st->idle_open && !uv_is_closing((uv_handle_t *)&st->idle))
        uv_close((uv_handle_t *)&st->idle, NULL);
}

int lh_state_start(lh_state_t *st, uv_loop_t *loop, const lh_state_hooks_t *hooks)
{
    int rc;
    if (st->started)
        return UV_EALREADY;
    st->loop = loop;
    if (hooks)
        st->hooks = *hooks;
    if ((rc = uv_async_init(loop, &st->async, on_async)) != 0)
        return rc;
    st->async.data = st;
    st->async_open = 1;
    uv_unref((uv_handle_t *)&st->async); /* queued work never keeps the loop alive */
    if ((rc = uv_prepare_init(loop, &st->idle)) != 0) {
        close_handles(st);
        return rc;
    }
    st->idle.data = st;
    st->idle_open = 1;
    uv_prepare_start(&st->idle, on_idle);
    uv_unref((uv_handle_t *)&st->idle);
    st->last_vacuum = uv_hrtime();
    start_checkpointer(st);
    if ((rc = uv_thread_create(&st->thread, writer_main, st)) != 0) {
        stop_checkpointer(st);
        close_handles(st);
        return rc;
    }
    st->started = 1;
    return 0;
}

void lh_state_stop(lh_state_t *st)
{
    if (st == NULL)
        return;
    if (st->started) {
        uv_mutex_lock(&st->mu);
        st->stopping = 1;
        uv_cond_signal(&st->cond);
        uv_mutex_unlock(&st->mu);
        uv_thread_join(&st->thread);
        stop_checkpointer(st);
        st->started = 0;
    }
    /* what is queued commits here, on the caller: also what the callbacks queue (the
    ** journal's index takes the log's last records) */
    for (int round = 0; st->db != NULL && round < 64; round++) {
        op_t *done = NULL;
        run_done(st);
        uv_mutex_lock(&st->mu);
        op_t *batch = st->q_head;
        st->q_head = st->q_tail = NULL;
        st->q_n = 0;
        uv_mutex_unlock(&st->mu);
        if (batch == NULL)
            break;
        commit_batch(st, batch, &done);
        uv_mutex_lock(&st->mu);
        if (done)
            give_done_locked(st, done);
        uv_mutex_unlock(&st->mu);
    }
    run_done(st);
    close_handles(st);
}

void lh_state_free(lh_state_t *st)
{
    if (st == NULL)
        return;
    assert(!st->started);
    op_t *q = st->q_head;
    while (q) {
        op_t *op = q;
        q = op->next;
        op_free(op);
    }
    sqlite3_finalize(st->put);
    sqlite3_finalize(st->del);
    sqlite3_finalize(st->forget);
    if (st->db != NULL && sqlite3_close(st->db) != SQLITE_OK)
        fprintf(stderr, "luahook: closing %s: %s\n", st->path, sqlite3_errmsg(st->db));
    if (st->sync_init) {
        uv_cond_destroy(&st->cond);
        uv_mutex_destroy(&st->mu);
    }
    if (st->claim_fd >= 0)
        close(st->claim_fd);
    free(st->path);
    free(st);
}

int lh_state_claim(lh_state_t *st, char *err, size_t errlen)
{
    /* a file of its own: closing any descriptor of the database would drop SQLite's
    ** POSIX locks */
    size_t n = strlen(st->path);
    char lock[PATH_MAX + 16];
    snprintf(lock, sizeof(lock), "%.*s.lock", (int)(n - 3), st->path); /* luahook.db → .lock */
    int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", lock, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            snprintf(err, errlen,
                     "another luahook server uses the state folder of %s (%s is "
                     "locked)",
                     st->path, lock);
        else
            snprintf(err, errlen, "%s: %s", lock, strerror(e));
        return -1;
    }
    st->claim_fd = fd;
    return 0;
}

/* ------------------------------------------------------------------ the CLI */

int lh_state_cli_list(lh_state_t *st, const char *prefix, double now,
                      int (*row)(void *data, const lh_state_row_t *r), void *data, char *err,
                      size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int rc;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT ns, key, type, value, expires FROM store"
                           " WHERE substr(ns || ':' || key, 1, length(?1)) = ?1"
                           " AND (expires IS NULL OR expires > ?2) ORDER BY ns, key",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(s, 1, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, now);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        lh_state_row_t r;
        r.ns = (const char *)sqlite3_column_text(s, 0);
        r.key = (const char *)sqlite3_column_text(s, 1);
        row_from(s, 2, &r);
        if (r.ns != NULL && r.key != NULL && row(data, &r) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    return 0;
fail:
    snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    return -1;
}

int lh_state_cli_write(lh_state_t *st, const lh_state_row_t *r, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    int existed = 0, rc;
    if (exec(st->db, "BEGIN IMMEDIATE", err, errlen, st->path) != 0)
        return -1;
    if ((rc = sqlite3_prepare_v2(st->db, "SELECT 1 FROM store WHERE ns = ? AND key = ?", -1, &s,
                                 NULL)) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(s, 1, r->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r->key, -1, SQLITE_STATIC);
    existed = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_finalize(s);
    s = NULL;
    if ((rc = sqlite3_prepare_v2(st->db, r->type ? put_sql : del_sql, -1, &s, NULL)) != SQLITE_OK)
        goto fail;
    rc = r->type ? bind_row(s, r) : sqlite3_bind_text(s, 1, r->ns, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK && !r->type)
        rc = sqlite3_bind_text(s, 2, r->key, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK || sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    s = NULL;
    if ((rc = sqlite3_prepare_v2(st->db, "INSERT INTO store_changes(ns, key) VALUES (?, ?)", -1, &s,
                                 NULL)) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(s, 1, r->ns, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, r->key, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    if (exec(st->db, "COMMIT", err, errlen, st->path) != 0) {
        sqlite3_exec(st->db, "ROLLBACK", 0, 0, 0);
        return -1;
    }
    return existed;
fail:
    snprintf(err, errlen, "%s: %s", st->path, sqlite3_errmsg(st->db));
    sqlite3_finalize(s);
    sqlite3_exec(st->db, "ROLLBACK", 0, 0, 0);
    return -1;
}
