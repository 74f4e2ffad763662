/*
** ingest — which request is what: health, metrics, or an event; the shared secret;
** the status codes. Gives events to dispatch and answers through conn.
*/
#ifndef LH_INGEST_H
#define LH_INGEST_H

#include "app.h"
#include "server.h"

/** The server callbacks that route requests for `app`. */
lh_server_handler_t lh_ingest_handler(lh_app_t *app);

/** 1 if `value` of the auth header carries `token` ("Token T", "Bearer T", or "T" alone),
 *  compared in constant time. */
int lh_ingest_token_ok(const char *value, size_t len, const char *token);

#endif
