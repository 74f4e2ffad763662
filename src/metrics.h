/*
** metrics — counters for /metrics in Prometheus text format.
** Per-action series are bounded: actions come from the network, so after
** LH_METRICS_MAX_ACTIONS distinct names the rest share the label "_other". Handler ids
** come from the scripts, but reloads can bring new ones for as long as the process lives:
** after LH_METRICS_MAX_HANDLERS of them the rest share the id "_other" too.
*/
#ifndef LH_METRICS_H
#define LH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define LH_METRICS_MAX_ACTIONS    64
#define LH_METRICS_BUCKETS        12
#define LH_METRICS_MAX_HANDLERS   256
#define LH_JOURNAL_COMMIT_BUCKETS 10

typedef enum {
    LH_OUTCOME_OK = 0,
    LH_OUTCOME_ERROR,
    LH_OUTCOME_TIMEOUT,
    LH_OUTCOME_MEMORY,
    LH_OUTCOME_COUNT_
} lh_outcome_t;

typedef enum {
    LH_REJECT_INVALID_JSON = 0,
    LH_REJECT_NOT_OBJECT,
    LH_REJECT_NO_ACTION,
    LH_REJECT_UNAUTHORIZED,
    LH_REJECT_TOO_LARGE,
    LH_REJECT_HEADERS_TOO_LARGE,
    LH_REJECT_METHOD,
    LH_REJECT_TIMEOUT,
    LH_REJECT_OVERLOAD,
    LH_REJECT_BAD_REQUEST,
    LH_REJECT_JOURNAL, /* the journal could not store the event (503) */
    LH_REJECT_COUNT_
} lh_reject_t;

/* The phases of a big body's work, as /metrics names them. */
typedef enum {
    LH_BIG_CHECK = 0, /* validation */
    LH_BIG_BUILD,     /* its tables, then its handlers' start */
    LH_BIG_COLLECT,   /* its garbage, collected after it */
} lh_big_phase_t;

typedef struct lh_action_stats_s {
    char *name; /* owned */
    size_t nlen;
    uint64_t received;
    uint64_t unhandled; /* events no handler took: the first is logged at info */
    uint64_t runs[LH_OUTCOME_COUNT_];
    uint64_t buckets[LH_METRICS_BUCKETS]; /* cumulative at render time, not here */
    double duration_sum;
    uint64_t duration_count;
} lh_action_stats_t;

/* The runs of one handler id, over every VM generation that had it. */
typedef struct lh_handler_stats_s {
    char *id;   /* owned */
    char *site; /* owned: a recipe instance's handler: "use-script:line recipe-file" of the
                   last VM that had it (the luahook_handler_info series); else NULL */
    uint64_t site_changes; /* the cache of /metrics compares `site` as a pointer, which a
                              new copy may reuse: this tells it the text changed */
    uint64_t runs[LH_OUTCOME_COUNT_];
} lh_handler_stats_t;

typedef struct lh_metrics_s {
    lh_action_stats_t actions[LH_METRICS_MAX_ACTIONS + 1]; /* last: "_other" */
    size_t nactions;
    lh_handler_stats_t handlers[LH_METRICS_MAX_HANDLERS + 1]; /* last: "_other" */
    size_t nhandlers;
    uint64_t rejected[LH_REJECT_COUNT_];
    int64_t connections_open;
    uint64_t connections_total;
    int64_t connections_buffered; /* holding request buffers (conn.c, request.c) */
    uint64_t vm_generation;
    uint64_t reloads_ok;
    uint64_t reloads_failed;
    double reload_seconds; /* how long the last reload took */
    /* store and state (store.c, state.c) */
    uint64_t store_keys;    /* keys in the store now */
    uint64_t store_refused; /* store calls refused at a bound (sizes, --store-max-keys) */
    uint64_t state_commits; /* the writer's transactions */
    uint64_t state_writes;  /* operations they carried */
    uint64_t state_failed;  /* transactions that failed (their writes are lost to the disk) */
    /* the journal (journal.c); journal_on: shown at all */
    int journal_on;
    uint64_t journal_runs[5];  /* by lh_run_state_t, at the last count */
    double journal_oldest_age; /* seconds since the oldest unfinished delivery arrived */
    uint64_t journal_retries;  /* attempts after the first, started */
    uint64_t journal_dead_total;
    uint64_t journal_bytes; /* the database's size */
    uint64_t journal_refused;
    uint64_t journal_pruned;
    uint64_t journal_log_writes;                                /* batches written to the log */
    uint64_t journal_commit_buckets[LH_JOURNAL_COMMIT_BUCKETS]; /* not cumulative here */
    double journal_commit_sum;
    uint64_t journal_commit_count;
    /* big bodies' slices of work (dispatch.c), by lh_big_phase_t: how long each held the loop
    ** (the loop thread's CPU time) */
    double big_slice_max[3]; /* seconds, the longest since start */
    double big_slice_sum[3];
    uint64_t big_slices[3];
    /* the cache of /metrics' text (lh_metrics_text); every field above this one is a number
    ** the text shows, compared as bytes: keep new numbers above */
    char *text; /* owned; NULL: not built yet */
    size_t text_len;
    unsigned char *text_of; /* owned: the bytes above `text` when it was built */
    uint64_t renders;       /* times the text was built */
} lh_metrics_t;

/* Upper bounds (seconds) of the journal's commit latency buckets. */
extern const double lh_metrics_commit_bounds[LH_JOURNAL_COMMIT_BUCKETS];

void lh_metrics_init(lh_metrics_t *m);
void lh_metrics_dispose(lh_metrics_t *m);

/** The stats of `action`, created on first use; never NULL (falls back to "_other"). */
lh_action_stats_t *lh_metrics_action(lh_metrics_t *m, const char *action, size_t len);

void lh_metrics_handler_done(lh_action_stats_t *a, lh_outcome_t outcome, double seconds);

/** The stats of handler id `id`, created on first use (at zero, so that it shows from the
 *  start); never NULL (falls back to "_other"). Kept when a reload removes the id. */
lh_handler_stats_t *lh_metrics_handler(lh_metrics_t *m, const char *id);
/** Says where handler `s` comes from (a recipe instance's use() site and recipe file), or
 *  nothing (NULL, NULL). Copied; out of memory keeps the old one. */
void lh_metrics_handler_site(lh_handler_stats_t *s, const char *site, const char *recipe);
const char *lh_metrics_reject_name(lh_reject_t r);
const char *lh_metrics_outcome_name(lh_outcome_t o);

/** Renders every series; returns a malloc'd NUL-terminated text (caller frees) or NULL. */
char *lh_metrics_render(const lh_metrics_t *m, size_t *len);

/**
 * /metrics' text: built again only when a number in `m` changed since the last time, else
 * the same text (a pipelining or over-eager scraper costs a comparison, and no scrape ever
 * sees a stale number). Borrowed: valid until the next call or lh_metrics_dispose. NULL
 * when out of memory.
 */
const char *lh_metrics_text(lh_metrics_t *m, size_t *len);

#endif
