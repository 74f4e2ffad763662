/*
** app — the state of one loop: passed to every part, never global, so that a later
** --workers N can run one app per thread.
*/
#ifndef LH_APP_H
#define LH_APP_H

#include <uv.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "reject.h"

typedef struct lh_vm_s lh_vm_t;
typedef struct lh_http_s lh_http_t;
typedef struct lh_clock_s lh_clock_t;
typedef struct lh_transport_s lh_transport_t;
typedef struct lh_app_s lh_app_t;
typedef struct lh_state_s lh_state_t;
typedef struct lh_store_s lh_store_t;
typedef struct lh_api_s lh_api_t;
typedef struct lh_journal_s lh_journal_t;
typedef struct lh_console_s lh_console_t;
typedef struct lh_live_s lh_live_t;

#define LH_RELOAD_PROBLEMS_KEPT 8
/* The last reload's outcome, for the console's live picture (reload fills it). */
typedef struct lh_reload_result_s {
    double at;     /* Unix seconds; 0: no reload yet */
    int ok;        /* the new scripts serve */
    int nproblems; /* all of them; the first LH_RELOAD_PROBLEMS_KEPT are kept */
    char problems[LH_RELOAD_PROBLEMS_KEPT][256];
} lh_reload_result_t;

struct lh_app_s {
    uv_loop_t *loop;        /* borrowed */
    const lh_config_t *cfg; /* borrowed */
    lh_metrics_t metrics;
    lh_vm_t *vm;     /* the VM that takes new events */
    lh_http_t *http; /* owned; outbound HTTP; NULL where there is no loop to run it */
    /* luahook test's own; NULL: the real ones (the loop's clock, `http`'s curl) */
    lh_clock_t *clock;         /* borrowed */
    lh_transport_t *transport; /* borrowed */
    lh_state_t *state;         /* owned: the state folder's database; NULL: state lives in memory */
    lh_store_t *store;     /* owned: handlers' store and locks, outliving every VM; NULL: none */
    lh_journal_t *journal; /* owned: accepted events and their runs (serve with --state-dir) */
    lh_api_t *api;         /* owned: /-/api/, made at its first request; NULL: none yet */
    lh_console_t *console; /* owned: the console's sessions (serve); NULL: none */
    lh_live_t *live;       /* owned: the last hour's counts, per minute (serve); NULL: none */
    lh_reload_result_t last_reload;
    /* the "rejected" lines' rate limit (reject.c) */
    lh_reject_log_t reject_log;
    uint32_t id_prefix; /* delivery ids: random per process, then a counter */
    uint64_t id_counter;
    /* the start-up line's fields after version, pid and address, in order: main adds
    ** scripts, handlers, secret and state ("not kept" until a part keeps state: that part
    ** sets "state" to where it keeps it, with lh_fieldset_set) */
    lh_fieldset_t startup;
    int tasks;    /* handler runs alive on every VM, the serving one and replaced ones */
    int admitted; /* handler runs of admitted events not started yet (dispatch) */
    int retrying; /* of `tasks`: runs the journal started again (retries, replays) */
    int stopping;
    int finished; /* past the stop's wait (deadline, second signal): nothing new runs */
    /* runs when `tasks` drops to 0, inside the ending task's caller (defer real work);
    ** NULL: nobody waits for that */
    void (*on_tasks_drained)(lh_app_t *app);
    void *drained_data; /* for on_tasks_drained */
};

#endif
