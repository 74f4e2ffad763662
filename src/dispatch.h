/*
** dispatch — the one part that knows both sides: a request body becomes an event table,
** the event becomes handler tasks, their outcomes become an answer, a log line and
** metrics. "Accepted event → handler runs" stays behind lh_dispatch_event so that a
** journal can slide in later.
*/
#ifndef LH_DISPATCH_H
#define LH_DISPATCH_H

#include <stddef.h>

#include "app.h"
#include "request.h"

/** The answer to an event: runs exactly once, now or later. `body` is borrowed. */
typedef void (*lh_reply_cb)(void *data, int status, const char *extra_headers, const char *body,
                            size_t len);

/**
 * Decodes `req`'s body, checks it is an event, and runs its handlers on app->vm.
 * `reply` runs once: at once with 400/503 for a refused body, at once with 200 once the
 * handlers are started (--ack accept), or once they all ended (--ack handled).
 */
void lh_dispatch_event(lh_app_t *app, const lh_request_t *req, const char *remote,
                       lh_reply_cb reply, void *data);

#endif
