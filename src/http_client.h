/*
** http_client — the transport of serve and fire: one libcurl multi handle driven by libuv
** (sockets through uv_poll, curl's timer through a uv_timer), as in curl's multi-uv.c.
** Knows nothing of Lua: lib_http builds requests and turns answers into Lua values.
*/
#ifndef LH_HTTP_CLIENT_H
#define LH_HTTP_CLIENT_H

#include <curl/curl.h> /* main.c: curl_global_init */
#include <uv.h>

#include "transport.h"

typedef struct lh_http_s lh_http_t;

/** A client for `loop`; NULL when curl cannot start. */
lh_http_t *lh_http_new(uv_loop_t *loop);

/** The client as a transport (valid until lh_http_free). */
lh_transport_t *lh_http_transport(lh_http_t *h);

/** Cancels what is in flight (their callbacks never run; the requests stay their owners'),
 *  closes the handles; the memory goes in their close callbacks. NULL does nothing. */
void lh_http_free(lh_http_t *h);

#endif
