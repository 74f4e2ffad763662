/*
** conn — one client connection: llhttp parsing, request assembly, limits, timeouts,
** answers in request order. Knows sockets and HTTP, nothing of Lua.
*/
#ifndef LH_CONN_H
#define LH_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>
#include <uv.h>

typedef struct lh_server_s lh_server_t;
typedef struct lh_conn_s lh_conn_t;

typedef struct {
    const char *name; /* lower-case; NUL-terminated */
    const char *value;
    size_t name_len, value_len;
} lh_header_t;

/* A complete request. Everything is borrowed from the connection: valid until the
** answer to this request is given (lh_conn_respond), or the connection closes. */
typedef struct lh_request_s {
    int method; /* llhttp_method_t */
    const char *method_name;
    const char *path; /* without the query; NUL-terminated */
    size_t path_len;
    const char *url; /* as sent */
    size_t url_len;
    lh_header_t *headers;
    size_t nheaders;
    char *body; /* NUL-terminated for convenience; may hold NULs */
    size_t body_len;
    int keep_alive;
    uint64_t received_ns; /* uv_hrtime() when the head was complete */
    double received_at;   /* seconds since the epoch, same moment */
} lh_request_t;

struct lh_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown;
    llhttp_t parser;
    lh_server_t *server; /* borrowed */
    lh_conn_t *prev, *next;
    int refs;    /* lh_conn_ref holders + 1 while open */
    int closing; /* uv_close called, or will be after the last write */
    int close_after_write;
    int busy;       /* a request is complete and not answered yet */
    int in_request; /* bytes of a request have arrived, not all of it */
    int skip_body;  /* the answer was given on the head */
    int in_body;    /* past the head: trailers must not touch the request */
    int discarding; /* reading a body nobody will see */
    int throttled;  /* reading stopped until the answers drain */
    int linger;     /* after the last answer: FIN, then read and drop until EOF or timeout */
    int lingering;
    int in_parse_flag; /* inside llhttp_execute: answers must not re-enter it */
    int hstate;        /* 0 between headers, 1 in a name, 2 in a value */
    int error_status;  /* why a parser callback stopped: 413, 431, 500 */
    size_t writes_pending;
    int timer_state;
    int handles_closed;
    /* request assembly */
    char *head; /* owned: url, then header names and values, NUL-separated */
    size_t head_len, head_cap;
    size_t url_off, url_len;
    struct {
        size_t name_off, name_len, value_off, value_len;
    } * hdr; /* owned */
    size_t nhdr, hdr_cap;
    int last_was_value;
    lh_header_t *headers; /* owned; built at head completion */
    char *body;           /* owned */
    size_t body_len, body_cap;
    lh_request_t req;
    /* bytes read past a request while it was being answered */
    char *pending; /* owned */
    size_t pending_len, pending_off;
    char remote[64];
};

/** Takes over an accepted client (already uv_tcp_init'ed by the server, uv_accept'ed). */
int lh_conn_start(lh_conn_t *c);

/** Allocates a connection and inits its handles on the server's loop. NULL on failure. */
lh_conn_t *lh_conn_new(lh_server_t *s);

/**
 * Answers the current request: `status`, extra header lines (each ending in "\r\n", or
 * NULL), a body of `len` bytes (copied) with `content_type`. Pipelined requests behind
 * it are parsed after this. A no-op on a closed connection.
 */
void lh_conn_respond(lh_conn_t *c, int status, const char *extra_headers, const char *content_type,
                     const char *body, size_t len);

/** As lh_conn_respond, and closes the connection once the answer is written. */
void lh_conn_respond_close(lh_conn_t *c, int status, const char *extra_headers,
                           const char *content_type, const char *body, size_t len);

/** Closes now; answers not yet written are dropped. */
void lh_conn_close(lh_conn_t *c);

/** Closes if idle (no request in progress or waiting), else after its current answer. */
void lh_conn_shutdown(lh_conn_t *c);

/** Keeps the memory valid past a close, for answers given later. */
void lh_conn_ref(lh_conn_t *c);
void lh_conn_unref(lh_conn_t *c);
int lh_conn_is_open(const lh_conn_t *c);

#endif
