/*
** conn — one client connection: the socket, its state and timer, the answers written in
** request order. Requests are assembled by request.c from what the socket reads. Knows
** sockets and HTTP, nothing of Lua.
*/
#ifndef LH_CONN_H
#define LH_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "request.h"

typedef struct lh_server_s lh_server_t;
typedef struct lh_conn_s lh_conn_t;

/*
** A connection's life, one state at a time, changed only by set_state() in conn.c. Each
** state arms the one timer it needs (in brackets):
**
**   NEW ──start──▶ READING_HEAD [read-timeout, from accept or from the request's first byte]
**   READING_HEAD ──head──▶ READING_BODY [read-timeout, again at each read]
**                ──answered on its head──▶ DISCARDING_BODY [read-timeout, again at each read]
**   READING_BODY ──complete──▶ HANDLING [none: the handler timeout bounds it]
**   HANDLING, READING_BODY (answered at once), DISCARDING_BODY (complete)
**                ──answer queued──▶ WRITING [idle-timeout, again at each write done]
**                ──answer taken by the socket at once──▶ IDLE
**   WRITING, DISCARDING_BODY ──all written──▶ IDLE [idle-timeout]
**   IDLE, WRITING ──a request's first byte──▶ READING_HEAD
**   any of those ──answer that closes, refusal, EOF with answers owed, stop──▶
**                FLUSHING [idle-timeout, again at each write done]
**   FLUSHING ──written, after a refusal or with a body unread──▶ LINGERING [2 s: FIN
**                sent, reads dropped, 1 MiB at most, then none]
**
** Between two requests, the parse stops (reads too) while the answers in flight hold
** too much (throttled, until half is written), or after REQUESTS_PER_TURN requests of one
** read (yielded, until a later loop turn): a pipelining client costs a bounded memory
** and holds the loop for a bounded time. FLUSHING, LINGERING and CLOSED connections do not
** count against --max-connections.
**   any ──error, timeout, EOF──▶ CLOSED (uv_close called; freed once unreferenced)
*/
typedef enum {
    LH_CONN_NEW = 0,         /* accepted, not started */
    LH_CONN_READING_HEAD,    /* waiting for a request, or reading its line and headers */
    LH_CONN_READING_BODY,    /* reading the body of a request the application will see */
    LH_CONN_DISCARDING_BODY, /* the request was answered on its head: its body is dropped */
    LH_CONN_HANDLING,        /* a complete request is with the application; bytes read
                                meanwhile are kept (reads then pause) */
    LH_CONN_WRITING,         /* answered; waiting for the client to take the answers */
    LH_CONN_IDLE,            /* keep-alive between requests, every answer taken */
    LH_CONN_FLUSHING,        /* writing the last answers; then LINGERING or CLOSED */
    LH_CONN_LINGERING,       /* FIN sent after a refusal: drop what arrives until EOF */
    LH_CONN_CLOSED,          /* uv_close called */
} lh_conn_state_t;

struct lh_conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;  /* due at `deadline`, or before it (then it moves on: arm_timer) */
    uint64_t deadline; /* of the current state, in the loop's ms; 0: none */
    uv_idle_t turn;    /* a later loop turn, to parse the rest of a read (yielded) */
    uv_shutdown_t shutdown;
    lh_server_t *server; /* borrowed */
    lh_conn_t *prev, *next;
    lh_conn_state_t state;
    int refs;              /* lh_conn_ref holders + 1 until both handles are closed */
    int handles_closed;    /* 3: the connection is out of the server's list */
    int last_request;      /* read no request after the current one: close once it is answered */
    int linger;            /* FLUSHING ends in LINGERING (a refusal), not a plain close */
    int throttled;         /* reads paused while the answers pile up unread (backpressure) */
    int yielded;           /* requests paused until a later loop turn: others go first */
    int read_eof;          /* the client half-closed while its request was handled */
    size_t writes_pending; /* answers queued whose write callbacks have not run */
    size_t out_bytes;      /* their bytes, sent or not: what the answers in flight hold */
    size_t discarded; /* bytes dropped in DISCARDING_BODY, or LINGERING (each <= DISCARD_MAX) */
    lh_request_parser_t *parser; /* owned; its current request is the one being answered */
    /* bytes read past a request while it was handled (or reads were throttled) */
    char *pending; /* owned */
    size_t pending_len, pending_off;
    char remote[64];
};

/** The name of a state, for logs: "reading_head", ... */
const char *lh_conn_state_name(lh_conn_state_t s);

/**
 * Starts reading an accepted client (lh_conn_new, then uv_accept'ed by the server).
 * Returns 0 or a negative UV_E*; on error the connection is closed (and the failure logged).
 */
int lh_conn_start(lh_conn_t *c);

/**
 * Allocates a connection, inits its handles on the server's loop and puts it in the
 * server's list. NULL on failure (nothing is left open); `*err` gets why: UV_ENOMEM or
 * the uv_*_init error.
 */
lh_conn_t *lh_conn_new(lh_server_t *s, int *err);

/**
 * Answers the current request: `status`, extra header lines (each ending in "\r\n", or
 * NULL), a body of `len` bytes (copied) with `content_type`. Given from on_head, the
 * request's body is dropped; pipelined requests behind it are parsed after this. Once
 * per request; a no-op on a connection that is closing (FLUSHING, LINGERING, CLOSED).
 */
void lh_conn_respond(lh_conn_t *c, int status, const char *extra_headers, const char *content_type,
                     const char *body, size_t len);

/** As lh_conn_respond, then closes: once the answer is written, FIN, and what the client
 *  still sends is dropped until it closes too or 2 s pass (lingering close). */
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
/** 1 while refused or closing (FLUSHING, LINGERING): not counted as live, not yet closed. */
int lh_conn_is_closing(const lh_conn_t *c);

#endif
