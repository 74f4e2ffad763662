/*
** journal_query — what the operator sees of the journal and how a run is queued again:
** listing deliveries, one delivery with its runs and attempts, status counts, replay. The
** one implementation behind `luahook events`, `luahook replay` and /-/api/. Uses its own
** connection to the state folder's database, beside the server's writer (WAL: readers
** never wait for it; a replay's short write waits for its lock at most a few seconds).
** Blocking: run it in a CLI or on a worker thread, never on the loop.
*/
#ifndef LH_JOURNAL_QUERY_H
#define LH_JOURNAL_QUERY_H

#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

/* ---- a growable text buffer for JSON and tables ---- */

typedef struct lh_jbuf_s {
    char *p; /* owned; NUL-terminated once something was added */
    size_t len, cap;
    int oom; /* an addition failed: the text is incomplete */
} lh_jbuf_t;

void lh_jbuf_add(lh_jbuf_t *b, const char *s, size_t n);
void lh_jbuf_adds(lh_jbuf_t *b, const char *s);
void lh_jbuf_addf(lh_jbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** A JSON string (quotes included); bytes that are not UTF-8 become U+FFFD. NULL: null. */
void lh_jbuf_str(lh_jbuf_t *b, const char *s, size_t n);
/** A number of seconds as JSON (fraction kept to the microsecond); NAN: null. */
void lh_jbuf_time(lh_jbuf_t *b, double t);
void lh_jbuf_free(lh_jbuf_t *b);

/**
 * Writes the JSON text s[0..n) pretty-printed (indent > 0: that many spaces a level) or
 * compact (indent 0), with every `token` and `task_data_password` member of an object
 * found under a `project` key replaced by "***". Returns 0, or -1 when the text is not
 * JSON (nothing is written then, and `why` says what is wrong).
 */
int lh_jq_json_masked(lh_jbuf_t *b, const char *s, size_t n, int indent, char *why, size_t whylen);

/**
 * Writes s[0..n), which is not JSON, as one JSON string (quotes included; bytes that are
 * not UTF-8 as U+FFFD), the value after every "token" or "task_data_password" name
 * followed by ':' replaced by "***" wherever it is: what cannot be parsed is masked by
 * its look.
 */
void lh_jq_text_masked(lh_jbuf_t *b, const char *s, size_t n);

/**
 * "90s", "30m", "1h", "7d" (ago), a plain number of seconds (ago), or a UTC date
 * "2026-11-27" / "2026-11-27T18:00:00Z" → unix seconds in *out. Returns 0 or -1.
 */
int lh_jq_parse_since(const char *s, double now, double *out);

/* ---- the connection ---- */

typedef struct lh_jq_s {
    sqlite3 *db; /* owned */
    char path[4096];
} lh_jq_t;

/**
 * Opens DIR/luahook.db (never creating it) for reading, or with `write` for replays too.
 * Returns 0, or -1 with a message saying what is missing (the file, the journal tables).
 */
int lh_jq_open(lh_jq_t *q, const char *db_path, int write, char *err, size_t errlen);
void lh_jq_close(lh_jq_t *q);

/* ---- listing ---- */

typedef struct lh_jq_filter_s {
    const char *status;  /* pending|ok|retrying|dead|duplicate|none; NULL: any */
    const char *action;  /* NULL: any */
    const char *handler; /* deliveries with a run of this handler; NULL: any */
    double since;        /* received at or after; 0: any */
    int64_t before;      /* id below this (the paging cursor); 0: from the newest */
    const char *search;  /* a delivery id, or the start of one (or a numeric id); NULL: any */
    int limit;           /* 1..LH_JQ_MAX_LIMIT */
} lh_jq_filter_t;

#define LH_JQ_DEFAULT_LIMIT 50
#define LH_JQ_MAX_LIMIT     1000

/** The statuses a delivery can have, NULL-terminated (for validating filters). */
extern const char *const lh_jq_statuses[];

/* One delivery in a list; strings borrowed for the callback. */
typedef struct lh_jq_event_s {
    int64_t id;
    const char *delivery, *path, *remote, *action, *status;
    double received, finished; /* finished: NAN when not final */
    int64_t project;           /* -1: none */
    int64_t duplicate_of;      /* 0: none */
    int64_t body_bytes;
    int runs, failed, attempts; /* failed: runs retrying or dead; attempts: of every run */
} lh_jq_event_t;

/**
 * Calls `row` for the deliveries matching `f`, newest first, at most f->limit; *more is
 * set when older ones match too (page on with before = the last id). 0, or -1 + err.
 */
int lh_jq_list(lh_jq_t *q, const lh_jq_filter_t *f, int (*row)(void *data, const lh_jq_event_t *e),
               void *data, int *more, char *err, size_t errlen);

/** The event as a JSON object of the list's fields. */
void lh_jq_event_json(lh_jbuf_t *b, const lh_jq_event_t *e);

/* ---- one delivery ---- */

typedef struct lh_jq_attempt_s {
    int n;
    double started, ended; /* ended: NAN while running (or cut short by a crash) */
    const char *outcome, *error, *traceback;
} lh_jq_attempt_t;

typedef struct lh_jq_run_s {
    const char *handler, *state, *error, *traceback;
    int attempts;
    double next_at, updated; /* next_at: NAN when none */
} lh_jq_run_t;

typedef struct lh_jq_show_s {
    void *data;
    /* the delivery, its headers (JSON text) and body; then each run followed by its
    ** attempts in order */
    int (*event)(void *data, const lh_jq_event_t *e, const char *headers, const char *body,
                 size_t body_len);
    int (*run)(void *data, const lh_jq_run_t *r);
    int (*attempt)(void *data, const lh_jq_run_t *r, const lh_jq_attempt_t *a);
} lh_jq_show_t;

/**
 * Shows the delivery named `key` (its delivery id, or its numeric id). Returns 1 when
 * shown, 0 when there is no such delivery, -1 with a message on failure.
 */
int lh_jq_show(lh_jq_t *q, const char *key, const lh_jq_show_t *cb, char *err, size_t errlen);

/** The whole delivery as the API's JSON object (body masked, see lh_jq_json_masked). */
int lh_jq_show_json(lh_jq_t *q, const char *key, lh_jbuf_t *b, char *err, size_t errlen);

/* What the console shows of a body at most; the whole is a download (api.c) */
#define LH_JQ_BODY_SHOWN (256 * 1024)

/** As lh_jq_show_json, with "body_size"; a body over `max` bytes (0: no bound) is shown as
 *  "body": null, "body_truncated": true and "body_text": its first `max` bytes, masked. */
int lh_jq_show_json_max(lh_jq_t *q, const char *key, size_t max, lh_jbuf_t *b, char *err,
                        size_t errlen);

/** {"deliveries":{"total":N, and N by status},"runs":{N by state},"handlers":[{"handler":
 *  NAME, N by state other than ok}, for the handlers with such runs],"oldest_due":T|null}. */
int lh_jq_stats_json(lh_jq_t *q, lh_jbuf_t *b, char *err, size_t errlen);

/* ---- replay ---- */

typedef struct lh_jq_replay_s {
    const char *const *keys; /* delivery ids or numeric ids; NULL with `dead` */
    size_t nkeys;
    int dead;            /* every dead run instead of keys */
    int all;             /* with keys: every run, not only the failed (retrying, dead) ones */
    double since;        /* with dead: of deliveries received at or after; 0: any */
    const char *handler; /* only this handler's runs; NULL: any */
    /* each run queued, before the commit (NULL: not told); strings borrowed for the call */
    void (*queued)(void *data, int64_t id, const char *delivery, const char *handler);
    void *data;
} lh_jq_replay_t;

/**
 * Sets the chosen runs to pending, due now (their delivery to pending), in one
 * transaction, and writes the result as JSON into `out`:
 * {"queued":N,"deliveries":[{"id":..,"delivery":"..","handlers":["h",..]},..]}.
 * Unknown keys queue nothing: returns -2 with their list in `unknown` (JSON array text)
 * and a message naming them in `err`. Returns the number of runs queued (>= 0), or -1 with
 * a message in `err`. `now`: unix seconds.
 */
int lh_jq_replay(lh_jq_t *q, const lh_jq_replay_t *r, double now, lh_jbuf_t *out,
                 lh_jbuf_t *unknown, char *err, size_t errlen);

#endif
