/*
** live — the console's live picture (GET /-/api/live): the counters the loop already has
** (metrics), the last hour of them in one-minute buckets (a ring the loop rolls once a
** minute: a subtraction, no database), the VM's scripts, instances and handlers, and the
** last reload. Nothing here reads the disk.
*/
#ifndef LH_LIVE_H
#define LH_LIVE_H

#include "app.h"
#include "journal_query.h"

#define LH_LIVE_MINUTES 60

typedef struct lh_live_s lh_live_t;

/** Starts the minute ring of `app` (its metrics); NULL when out of memory. */
lh_live_t *lh_live_new(lh_app_t *app);

/** Closes its timer; the loop runs the close callback. Idempotent; NULL is a no-op. */
void lh_live_close(lh_live_t *l);

/** After the loop ran out. NULL is a no-op. */
void lh_live_free(lh_live_t *l);

/** The live picture of `app` as JSON into `b` (series of zeros without app->live). */
void lh_live_json(lh_app_t *app, lh_jbuf_t *b);

#endif
