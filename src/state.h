/*
** state — the one owner of the state folder's database (DIR/luahook.db, SQLite in WAL
** mode). Opening checks and upgrades the schema; then one writer thread takes batches of
** operations queued by the loop and commits them together (group commit). The loop never
** waits on the disk: it learns that what it queued is durable through a uv_async_t.
** Every other user of the database (store, later the journal, the CLI) goes through here.
*/
#ifndef LH_STATE_H
#define LH_STATE_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>
#include <uv.h>

#include "metrics.h"

/* The database file inside the state folder. */
#define LH_STATE_DB_NAME "luahook.db"

typedef struct lh_state_s lh_state_t;

/* The kinds of a stored value (the `type` column; never renumber: they are on disk). */
typedef enum {
    LH_SV_BOOL = 1,
    LH_SV_INT = 2,
    LH_SV_FLOAT = 3,
    LH_SV_STRING = 4,
    LH_SV_JSON = 5, /* a table, as JSON text */
} lh_sv_type_t;

/* One store row as the database holds it. Everything is borrowed for the call it is
** passed to. A string or JSON value is in `bytes`/`len`, a float in `f`, a bool or an
** integer in `i`. `expires`: seconds since the epoch, 0 for never. */
typedef struct lh_state_row_s {
    const char *ns;
    const char *key;
    int type; /* lh_sv_type_t; 0 in an external change: the key was deleted */
    int64_t i;
    double f;
    const char *bytes;
    size_t len;
    double expires;
} lh_state_row_t;

/** Schema versions this binary knows: a database is upgraded to the last. */
int lh_state_schema_version(void);

/**
 * Opens (creating it, and DIR, when missing) the database of state folder `dir`: checks it
 * (PRAGMA quick_check), refuses a version newer than this binary knows, upgrades an older
 * one step by step. Blocking: for start-up and the CLI. Nothing is ever deleted or
 * recreated: a file that cannot be opened or fails the check is an error. Returns 0 and
 * *out, or -1 with a message naming the file and the problem in `err`.
 */
int lh_state_open(lh_state_t **out, const char *dir, char *err, size_t errlen);

/**
 * Claims the folder for this process (a server): an exclusive lock on DIR/luahook.lock,
 * held until lh_state_free. Returns 0, or -1 with a message when another process holds it.
 */
int lh_state_claim(lh_state_t *st, char *err, size_t errlen);

/** Opens at most up to schema version `upto` (tests make older databases with it). */
int lh_state_open_upto(lh_state_t **out, const char *dir, int upto, char *err, size_t errlen);

/** The connection, for blocking use before lh_state_start and by the CLI. Borrowed. */
sqlite3 *lh_state_db(lh_state_t *st);
const char *lh_state_path(const lh_state_t *st); /* DIR/luahook.db, borrowed */

/** Calls `row` for every store row not expired at `now` (start-up; blocking). Returns 0, or
 *  -1 with a message in `err`. Expired rows are queued for deletion. */
int lh_state_load_store(lh_state_t *st, double now, int (*row)(void *data, const lh_state_row_t *r),
                        void *data, char *err, size_t errlen);

/* What the writer tells the loop. */
typedef struct lh_state_hooks_s {
    /* a key changed by another process (luahook store ...); `committed` is the sequence
    ** number of the last operation of ours the database held when it was read: a local
    ** write newer than that wins */
    void (*external)(void *data, const lh_state_row_t *r, uint64_t committed);
    void *data;
} lh_state_hooks_t;

/**
 * Starts the writer thread; `hooks` (copied) run on `loop`. Returns 0 or a negative UV_E*.
 * From then on only the writer touches the connection.
 */
int lh_state_start(lh_state_t *st, uv_loop_t *loop, const lh_state_hooks_t *hooks);

/*
** The queue is one ordered list of operations, and one commit takes all of it: what is
** queued before an operation is durable no later than it. The journal will add its own
** kinds (an event accepted, a run done) to the same queue, so a handler's store writes,
** queued before its run is recorded as done, commit in the same transaction or earlier.
*/

/** Queues a store write (copied). Returns its sequence number, or 0 if out of memory (the
 *  write is then lost to the database: logged). Before lh_state_start, queued writes are
 *  committed by the first batch. */
uint64_t lh_state_put(lh_state_t *st, const lh_state_row_t *r);
/** Queues a store delete (copied); returns its sequence number or 0. */
uint64_t lh_state_delete(lh_state_t *st, const char *ns, const char *key);

/** `cb` runs exactly once on the loop, once everything queued before it is durable
 *  (status 0), or failed (negative: also when a write queued since the previous flush was
 *  lost in an earlier batch). Returns 0, or -1 (out of memory; `cb` never runs). */
int lh_state_flush(lh_state_t *st, void (*cb)(void *data, int status), void *data);

/**
 * Queues a call of `fn` on the writer, inside the transaction of the batch it falls in
 * (the journal's own operations). `fn` returns SQLITE_OK, or an error code that fails the
 * whole batch. `cb` runs once on the loop, after the batch committed (status 0) or failed
 * (UV_ENOSPC disk full, UV_EROFS read-only, UV_EIO, ...: lh_state_last_error says more).
 * Returns 0, or -1 (out of memory; neither runs).
 */
int lh_state_call(lh_state_t *st, int (*fn)(sqlite3 *db, void *data),
                  void (*cb)(void *data, int status), void *data);
/** The sequence number of the last store write (put, delete) queued, and of the last
 *  operation of any kind: a flush queued after it makes that write durable. Loop thread. */
uint64_t lh_state_last_write(const lh_state_t *st);
uint64_t lh_state_seq(const lh_state_t *st);

/** lh_state_call for writes that can be made again after a power cut (the journal's
 *  index, made from its log): with --sync full, a batch of these alone is committed
 *  without a sync; the next synced commit syncs it too. */
int lh_state_call_unsynced(lh_state_t *st, int (*fn)(sqlite3 *db, void *data),
                           void (*cb)(void *data, int status), void *data);

/** The message of the last failed batch (the loop side, after a failed status). */
void lh_state_last_error(lh_state_t *st, char *buf, size_t len);
/** PRAGMA synchronous FULL (`full`: fsync at every commit) or NORMAL (at checkpoints).
 *  Blocking: before lh_state_start. */
int lh_state_set_sync(lh_state_t *st, int full, char *err, size_t errlen);

/** Keeps the luahook_state_* series of `m` (borrowed) current, on the loop. */
void lh_state_observe(lh_state_t *st, lh_metrics_t *m);

/* Counters of the writer, read on the loop. */
typedef struct lh_state_stats_s {
    uint64_t commits;   /* transactions committed */
    uint64_t ops;       /* store writes committed (the journal counts its own) */
    uint64_t max_batch; /* most operations in one commit */
    uint64_t failures;  /* batches that failed (their operations are lost to the disk) */
} lh_state_stats_t;
void lh_state_stats(lh_state_t *st, lh_state_stats_t *out);

/**
 * Stops the writer after it committed everything queued (blocking, at exit), runs the
 * pending flush callbacks and closes the async handle. Safe without lh_state_start.
 */
void lh_state_stop(lh_state_t *st);

/** Closes the database and frees `st` (after lh_state_stop and after the loop ran the
 *  handle's close). NULL is a no-op. */
void lh_state_free(lh_state_t *st);

/**
 * Root and a state folder owned by another user: files root creates there (the WAL, a new
 * database) would stop the service that runs as that user. With `become_owner`, switches
 * this process to the folder's owner (user and group) and returns 0; without, returns -1
 * with a message saying whom to run as. Returns 0 when not root, or the folder is root's
 * or does not exist yet.
 */
int lh_state_check_owner(const char *dir, int become_owner, char *err, size_t errlen);

/* ---- for the CLI (luahook store): blocking, while a server may run beside ---- */

/** Calls `row` for every row whose "ns:key" starts with `prefix` ("" for all), in order. */
int lh_state_cli_list(lh_state_t *st, const char *prefix, double now,
                      int (*row)(void *data, const lh_state_row_t *r), void *data, char *err,
                      size_t errlen);
/** Writes (r->type != 0) or deletes (r->type == 0) one row and records the change so that a
 *  running server picks it up within a second. Returns 1 if a row was there before, 0 if
 *  not, -1 with a message on failure. */
int lh_state_cli_write(lh_state_t *st, const lh_state_row_t *r, char *err, size_t errlen);

#endif
