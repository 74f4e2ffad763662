/*
** app — the state of one loop: passed to every part, never global, so that a later
** --workers N can run one app per thread.
*/
#ifndef LH_APP_H
#define LH_APP_H

#include <uv.h>

#include "config.h"
#include "metrics.h"

typedef struct lh_server_s lh_server_t;
typedef struct lh_vm_s lh_vm_t;
typedef struct lh_http_s lh_http_t;
typedef struct lh_clock_s lh_clock_t;
typedef struct lh_transport_s lh_transport_t;

typedef struct lh_app_s {
    uv_loop_t *loop;        /* borrowed */
    const lh_config_t *cfg; /* borrowed */
    lh_metrics_t metrics;
    lh_server_t *server; /* owned; NULL outside serve */
    lh_vm_t *vm;         /* the VM that takes new events */
    lh_http_t *http;     /* owned; outbound HTTP; NULL where there is no loop to run it */
    /* luahook test's own; NULL: the real ones (the loop's clock, `http`'s curl) */
    lh_clock_t *clock;         /* borrowed */
    lh_transport_t *transport; /* borrowed */
    uint32_t id_prefix;        /* delivery ids: random per process, then a counter */
    uint64_t id_counter;
    int tasks; /* handler runs alive on every VM, the serving one and replaced ones */
    int stopping;
    /* fire: told of every handler run that ends (NULL when serving) */
    void (*on_handler_done)(void *data, const char *label, lh_outcome_t outcome, const char *err,
                            double seconds);
    void *observer_data;
    const char *action_override; /* fire --action: replaces each event's action */
} lh_app_t;

#endif
