/*
** server — the listener, the set of connections, their limits and the graceful stop.
** It knows sockets and HTTP, nothing of Lua: complete requests go to the callbacks
** in lh_server_handler_t.
*/
#ifndef LH_SERVER_H
#define LH_SERVER_H

#include <uv.h>

#include "app.h"
#include "conn.h"

typedef struct lh_server_handler_s {
    /** The request head is complete (body not read yet). Return 0 to read the body, or
     *  answer at once with lh_conn_respond (the body is then skipped) and return 1. */
    int (*on_head)(void *data, lh_conn_t *c, lh_request_t *req);
    /** The request is complete. Answer with lh_conn_respond, now or later. */
    void (*on_request)(void *data, lh_conn_t *c, lh_request_t *req);
    void *data;
} lh_server_handler_t;

struct lh_server_s {
    uv_tcp_t listener;
    lh_app_t *app; /* borrowed */
    lh_server_handler_t handler;
    lh_conn_t *conns; /* every open connection, a doubly linked list */
    size_t nconns;
    size_t nclosing;  /* of those, the ones refused or closing: they keep no one out */
    char rbuf[65536]; /* read buffer shared by all connections: reads are handled at once */
    int listening;
    void (*on_drained)(lh_server_t *s); /* stop: the last connection closed */
};

/**
 * Binds and listens on the configured address. Returns 0 or a negative UV_E*; on error
 * nothing is left open. Logs "listening" with the bound address (a port 0 is resolved).
 */
int lh_server_start(lh_server_t *s, lh_app_t *app, const lh_server_handler_t *h);

/** Graceful stop: closes the listener and idle connections; busy ones close after their
 *  answer. `drained` runs once no connection is left (maybe before this returns). */
void lh_server_stop(lh_server_t *s, void (*drained)(lh_server_t *s));

/** Closes every connection now (the shutdown deadline passed). */
void lh_server_close_all(lh_server_t *s);

#endif
