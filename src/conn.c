#include "conn.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_escape.h"
#include "list.h"
#include "log.h"
#include "reject.h"
#include "server.h"

/* How long a refused client may go on sending before the connection is dropped. */
#define LINGER_MS 2000

/* Answers in flight (queued, and those the kernel took whose write callbacks have not run)
** past these pause the parse and the reads until half of them are done: the memory one
** client can make the server hold, beyond its buffers. A bigger answer goes out alone. */
#define OUT_BYTES_MAX   (256 * 1024)
#define OUT_ANSWERS_MAX 64
/* Requests parsed from one read, or one resume, before the rest waits for a later loop
** turn: a client that pipelines thousands yields to the others. */
#define REQUESTS_PER_TURN 16
/* A body answered on its head (401, 405) is read and dropped to keep the connection, up
** to this much; past it the connection lingers and closes, so no client can make the
** server drain without end. A lingering connection drops as much again, then reads no
** more until its timer closes it. */
#define DISCARD_MAX (1024 * 1024)

typedef struct {
    uv_write_t req;
    lh_conn_t *conn;
    size_t len;
    char data[];
} wreq_t;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);
static void on_timer(uv_timer_t *t);
static void on_write(uv_write_t *req, int status);
static void conn_resume(lh_conn_t *c);
static void on_turn(uv_idle_t *t);

static const lh_config_t *cfg_of(const lh_conn_t *c)
{
    return c->server->app->cfg;
}

static lh_metrics_t *metrics_of(lh_conn_t *c)
{
    return &c->server->app->metrics;
}

static const char *status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 303:
        return "See Other";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* ------------------------------------------------------------------ states */

const char *lh_conn_state_name(lh_conn_state_t s)
{
    switch (s) {
    case LH_CONN_NEW:
        return "new";
    case LH_CONN_READING_HEAD:
        return "reading_head";
    case LH_CONN_READING_BODY:
        return "reading_body";
    case LH_CONN_DISCARDING_BODY:
        return "discarding_body";
    case LH_CONN_HANDLING:
        return "handling";
    case LH_CONN_WRITING:
        return "writing";
    case LH_CONN_IDLE:
        return "idle";
    case LH_CONN_FLUSHING:
        return "flushing";
    case LH_CONN_LINGERING:
        return "lingering";
    case LH_CONN_CLOSED:
        return "closed";
    }
    return "?";
}

#ifndef NDEBUG
#define TO(s) (1u << LH_CONN_##s)

/* The transitions set_state allows: allowed[from] has the bit of each `to`. */
static const unsigned allowed[] = {
    [LH_CONN_NEW] = TO(READING_HEAD) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_READING_HEAD] = TO(READING_BODY) | TO(DISCARDING_BODY) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_READING_BODY] = TO(HANDLING) | TO(WRITING) | TO(IDLE) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_DISCARDING_BODY] = TO(WRITING) | TO(IDLE) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_HANDLING] = TO(WRITING) | TO(IDLE) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_WRITING] = TO(IDLE) | TO(READING_HEAD) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_IDLE] = TO(READING_HEAD) | TO(FLUSHING) | TO(CLOSED),
    [LH_CONN_FLUSHING] = TO(LINGERING) | TO(CLOSED),
    [LH_CONN_LINGERING] = TO(CLOSED),
    [LH_CONN_CLOSED] = 0,
};
#endif

static uint64_t ms_of(double seconds)
{
    uint64_t ms = (uint64_t)(seconds * 1000 + 0.5);
    return ms ? ms : 1;
}

/* The deadline of `s` in milliseconds; 0: none. */
static uint64_t state_timeout(const lh_conn_t *c, lh_conn_state_t s)
{
    switch (s) {
    case LH_CONN_READING_HEAD: /* counted from accept, or from the request's first byte */
    case LH_CONN_READING_BODY: /* and the bodies: the longest pause between two reads */
    case LH_CONN_DISCARDING_BODY:
        return ms_of(cfg_of(c)->read_timeout);
    case LH_CONN_WRITING: /* the longest wait for a write to be taken by the client */
    case LH_CONN_FLUSHING:
    case LH_CONN_IDLE:
        return ms_of(cfg_of(c)->idle_timeout);
    case LH_CONN_LINGERING:
        return LINGER_MS;
    case LH_CONN_NEW:
    case LH_CONN_HANDLING: /* the handler timeout bounds it */
    case LH_CONN_CLOSED:
        break;
    }
    return 0;
}

/* A uv_* call (or an allocation) failed: the connection cannot go on in a known state.
** Logs it (at debug level when the client just went away) and closes. */
static void conn_fail(lh_conn_t *c, const char *what, int err)
{
    int gone = err == UV_ECONNRESET || err == UV_EPIPE || err == UV_ENOTCONN ||
               err == UV_ETIMEDOUT || err == UV_ECONNABORTED;
    lh_level_t level = gone ? LH_DEBUG : LH_WARN;
    if (lh_log_enabled(level)) {
        lh_field_t f[] = {
            LH_FIELD("remote", c->remote),
            LH_FIELD("state", lh_conn_state_name(c->state)),
            LH_FIELD("call", what),
            LH_FIELD("error", uv_strerror(err)),
        };
        lh_log_fields(level, "connection failed", f, 4);
    }
    lh_conn_close(c);
}

/* Sets the deadline of the current state: on entry, and on progress (a read of a body, a
** write taken). Lazily, as nginx does: a timer due no later than the new deadline is left
** as it is, and when it fires early it moves on to the deadline (on_timer). A keep-alive
** request then costs one timer start (its head's shorter deadline), not four. */
static int arm_timer(lh_conn_t *c)
{
    uint64_t ms = state_timeout(c, c->state);
    c->deadline = ms ? uv_now(c->timer.loop) + ms : 0;
    if (ms == 0 || (uv_is_active((uv_handle_t *)&c->timer) && uv_timer_get_due_in(&c->timer) <= ms))
        return 0;
    int r = uv_timer_start(&c->timer, on_timer, ms, 0);
    if (r != 0)
        conn_fail(c, "uv_timer_start", r);
    return r;
}

/* Refused, or on its way out: it keeps no one out (--max-connections). */
static int is_closing(lh_conn_state_t s)
{
    return s == LH_CONN_FLUSHING || s == LH_CONN_LINGERING || s == LH_CONN_CLOSED;
}

/* The one place a connection changes state. Returns 0, or a negative UV_E* once the
** connection is closed because the new state's timer could not be armed. */
static int set_state(lh_conn_t *c, lh_conn_state_t to)
{
    assert(c->state != to && (allowed[c->state] & (1u << to)));
    switch (to) {
    case LH_CONN_HANDLING: /* the request's bytes are all in: nothing is read for now */
        assert(!lh_request_parser_started(c->parser) && !c->throttled);
        break;
    case LH_CONN_WRITING: /* an answer was just queued */
        assert(c->writes_pending > 0);
        break;
    case LH_CONN_IDLE: /* nothing owed, nothing begun */
        assert(c->writes_pending == 0 && !c->throttled && !lh_request_parser_started(c->parser));
        if (!c->yielded && c->pending == NULL)
            lh_request_parser_idle(c->parser); /* an idle keep-alive connection holds no buffer */
        break;
    case LH_CONN_LINGERING: /* the last answer is written */
        assert(c->writes_pending == 0);
        break;
    default:
        break;
    }
    if (is_closing(to) && !is_closing(c->state))
        c->server->nclosing++; /* until out of the list */
    c->state = to;
    if (to == LH_CONN_CLOSED)
        return 0; /* uv_close stops the timer */
    return arm_timer(c);
}

/* ------------------------------------------------------------------ lifetime */

static void conn_free(lh_conn_t *c)
{
    lh_request_parser_free(c->parser);
    free(c->pending);
    free(c);
}

void lh_conn_ref(lh_conn_t *c)
{
    c->refs++;
}

void lh_conn_unref(lh_conn_t *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

int lh_conn_is_open(const lh_conn_t *c)
{
    return c->state != LH_CONN_CLOSED;
}

int lh_conn_is_closing(const lh_conn_t *c)
{
    return c->state == LH_CONN_FLUSHING || c->state == LH_CONN_LINGERING;
}

/* Three handles close; the last close callback drops the connection's own ref. */
static void on_handle_closed(uv_handle_t *h)
{
    lh_conn_t *c = h->data;
    if (++c->handles_closed < 3)
        return;
    lh_server_t *s = c->server;
    LH_LIST_REMOVE(s->conns, c);
    s->nconns--;
    s->nclosing--;
    s->app->metrics.connections_open--;
    lh_conn_unref(c);
    if (s->on_drained != NULL && s->nconns == 0)
        s->on_drained(s);
}

void lh_conn_close(lh_conn_t *c)
{
    if (c->state == LH_CONN_CLOSED)
        return;
    set_state(c, LH_CONN_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->turn, on_handle_closed);
}

/* lh_conn_new failed after uv_tcp_init: the handles are closed, then the memory freed. */
static void on_unborn_closed(uv_handle_t *h)
{
    lh_conn_t *c = h->data;
    if (--c->refs == 0)
        conn_free(c);
}

lh_conn_t *lh_conn_new(lh_server_t *s, int *err)
{
    const lh_config_t *cfg = s->app->cfg;
    int r = UV_ENOMEM;
    lh_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        goto fail;
    c->server = s;
    c->refs = 1;
    c->state = LH_CONN_NEW;
    snprintf(c->remote, sizeof(c->remote), "?");
    if ((c->parser = lh_request_parser_new(cfg->max_header, cfg->max_body)) == NULL)
        goto fail;
    lh_request_parser_account(c->parser, &s->app->metrics.connections_buffered);
    if ((r = uv_tcp_init(s->app->loop, &c->tcp)) != 0)
        goto fail;
    c->tcp.data = c;
    if ((r = uv_timer_init(s->app->loop, &c->timer)) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_unborn_closed);
        *err = r;
        return NULL;
    }
    c->timer.data = c;
    if ((r = uv_idle_init(s->app->loop, &c->turn)) != 0) {
        c->refs = 2;
        uv_close((uv_handle_t *)&c->tcp, on_unborn_closed);
        uv_close((uv_handle_t *)&c->timer, on_unborn_closed);
        *err = r;
        return NULL;
    }
    c->turn.data = c;
    LH_LIST_PUSH(s->conns, c);
    s->nconns++;
    s->app->metrics.connections_open++;
    s->app->metrics.connections_total++;
    return c;

fail:
    if (c != NULL)
        conn_free(c);
    *err = r;
    return NULL;
}

/* ------------------------------------------------------------------ logging */

static void reject_log(lh_conn_t *c, int status, lh_reject_t reason)
{
    metrics_of(c)->rejected[reason]++;
    if (lh_log_enabled(LH_WARN)) {
        char st[8];
        size_t plen = 0;
        const char *path = lh_request_parser_path(c->parser, &plen); /* as far as it arrived */
        snprintf(st, sizeof(st), "%d", status);
        lh_field_t f[] = {
            LH_FIELD_NUM("status", st),
            LH_FIELD("reason", lh_metrics_reject_name(reason)),
            LH_FIELD("remote", c->remote),
            LH_FIELDN("path", path, plen),
        };
        lh_reject_log(c->server->app, f, 4);
    }
}

/* ------------------------------------------------------------------ closing */

static void on_shutdown(uv_shutdown_t *req, int status)
{
    lh_conn_t *c = req->data;
    if (status < 0)
        lh_conn_close(c);
    lh_conn_unref(c);
}

/* A refused client may still be sending: closing with unread data would reset the
** connection and could destroy the answer before it is read. Send FIN instead, drop
** what arrives until the client closes, or LINGER_MS passes (like nginx's lingering
** close). */
static void start_linger(lh_conn_t *c)
{
    if (set_state(c, LH_CONN_LINGERING) != 0)
        return;
    c->discarded = 0;
    c->shutdown.data = c;
    int r = uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown);
    if (r != 0) {
        conn_fail(c, "uv_shutdown", r);
        return;
    }
    lh_conn_ref(c); /* until on_shutdown */
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0 && r != UV_EALREADY)
        conn_fail(c, "uv_read_start", r);
}

/* FLUSHING is over: every answer is written. */
static void flushed(lh_conn_t *c)
{
    assert(c->state == LH_CONN_FLUSHING && c->writes_pending == 0);
    if (c->linger)
        start_linger(c);
    else
        lh_conn_close(c);
}

/* No request is read any more: the answers owed are written, then the connection
** lingers (after a refusal, or with a body still coming) or closes. */
static void conn_flush(lh_conn_t *c, int linger)
{
    c->linger = linger;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (set_state(c, LH_CONN_FLUSHING) == 0 && c->writes_pending == 0)
        flushed(c);
}

void lh_conn_shutdown(lh_conn_t *c)
{
    switch (c->state) {
    case LH_CONN_NEW:
        lh_conn_close(c);
        break;
    case LH_CONN_IDLE:
        /* every answer is written, but pipelined bytes may wait unread (a later turn, bytes
        ** kept): a close with bytes unread resets the answers away */
        if (c->yielded || c->pending != NULL)
            conn_flush(c, 1);
        else
            lh_conn_close(c);
        break;
    case LH_CONN_READING_HEAD: /* a request begun is answered, then the connection closes */
        if (!lh_request_parser_started(c->parser))
            lh_conn_close(c);
        else
            c->last_request = 1;
        break;
    case LH_CONN_READING_BODY:
    case LH_CONN_DISCARDING_BODY:
    case LH_CONN_HANDLING:
        c->last_request = 1;
        break;
    case LH_CONN_WRITING:
        /* reads paused (answers in flight, a later turn, bytes kept): the client sent more
        ** than was read, and a close with bytes unread resets the answers away */
        conn_flush(c, c->throttled || c->yielded || c->pending != NULL);
        break;
    case LH_CONN_FLUSHING:
    case LH_CONN_LINGERING:
    case LH_CONN_CLOSED:
        break;
    }
}

/* ------------------------------------------------------------------ writing */

/* Queues `w` (data, len) on the socket. Returns 0, or a negative UV_E* once the connection
** is closed; `w` is freed either way once done with. */
static int write_buf(lh_conn_t *c, wreq_t *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)w->len);
    w->conn = c;
    size_t len = w->len; /* w may be freed by a failed write */
    int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r != 0) {
        free(w);
        conn_fail(c, "uv_write", r);
        return r;
    }
    lh_conn_ref(c); /* until on_write */
    c->writes_pending++;
    c->out_bytes += len;
    return 0;
}

/* A write is done: the client takes its answers. */
static void written(lh_conn_t *c)
{
    if (c->throttled && c->out_bytes <= OUT_BYTES_MAX / 2 &&
        c->writes_pending <= OUT_ANSWERS_MAX / 2) {
        c->throttled = 0;
        conn_resume(c);
    }
    switch (c->state) {
    case LH_CONN_WRITING:
        if (c->writes_pending == 0)
            set_state(c, LH_CONN_IDLE);
        else
            arm_timer(c); /* progress */
        break;
    case LH_CONN_FLUSHING:
        if (c->writes_pending == 0)
            flushed(c);
        else
            arm_timer(c);
        break;
    default:
        break;
    }
}

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    lh_conn_t *c = w->conn;
    c->out_bytes -= w->len;
    free(w);
    c->writes_pending--;
    if (c->state != LH_CONN_CLOSED) {
        if (status < 0)
            conn_fail(c, "write", status);
        else
            written(c);
    }
    lh_conn_unref(c);
}

/* Sends head + body: at once when the socket takes all of it (one writev, no request, no
** callback; libuv would else re-arm the socket's epoll entry when its write queue drains),
** else what is left is queued. Returns 0, or a negative UV_E* once the connection is
** closed. */
static int send_answer(lh_conn_t *c, const char *head, size_t hn, const char *body, size_t len)
{
    uv_buf_t b[2] = {uv_buf_init((char *)head, (unsigned int)hn),
                     uv_buf_init((char *)body, (unsigned int)len)};
    int n = uv_try_write((uv_stream_t *)&c->tcp, b, len ? 2 : 1);
    if (n < 0 && n != UV_EAGAIN) {
        conn_fail(c, "write", n);
        return n;
    }
    size_t sent = n < 0 ? 0 : (size_t)n;
    if (sent == hn + len)
        return 0;
    /* the client reads slowly (or others are queued): the rest goes in request order */
    size_t rest = hn + len - sent;
    wreq_t *w = malloc(sizeof(*w) + rest);
    if (w == NULL) {
        conn_fail(c, "malloc", UV_ENOMEM);
        return UV_ENOMEM;
    }
    size_t hrest = sent < hn ? hn - sent : 0;
    memcpy(w->data, head + (hn - hrest), hrest);
    if (rest > hrest)
        memcpy(w->data + hrest, body + (len - (rest - hrest)), rest - hrest);
    w->len = rest;
    return write_buf(c, w);
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_str(char *p, const char *s)
{
    return put(p, s, strlen(s));
}

static char *put_uint(char *p, uint64_t v)
{
    char d[24];
    size_t n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = d[--n];
    return p;
}

/* Writes the answer to the current request, then moves on: to DISCARDING_BODY when it is
** given on the head, to WRITING (IDLE when the socket took it at once), or to FLUSHING when
** the connection closes after it. */
static void answer(lh_conn_t *c, int status, const char *extra, const char *ctype, const char *body,
                   size_t len, int refusal)
{
    lh_conn_state_t was = c->state;
    switch (was) {
    case LH_CONN_FLUSHING:
    case LH_CONN_LINGERING:
    case LH_CONN_CLOSED:
        return;                /* closing: the answer has nowhere to go */
    case LH_CONN_NEW:          /* refused at accept */
    case LH_CONN_READING_HEAD: /* from on_head, or refused */
    case LH_CONN_READING_BODY: /* from on_request, or refused */
    case LH_CONN_HANDLING:     /* later */
        break;
    case LH_CONN_DISCARDING_BODY:
    case LH_CONN_WRITING:
    case LH_CONN_IDLE:
        assert(!"an answer with no request to answer");
        return;
    }
    const lh_request_t *req = lh_request_parser_request(c->parser);
    int on_head = was == LH_CONN_READING_HEAD && !refusal;
    int body_coming = on_head && lh_request_parser_body_pending(c->parser);
    /* answered on its head, a client waiting for 100-continue sends no body: no request
    ** could be told from the next one */
    int close = refusal || c->last_request || !req->keep_alive || (on_head && req->expect_continue);
    /* the head, by hand: printf's parsing costs more than the rest of the answer */
    static const char close_line[] = "Connection: close\r\n";
    const char *text = status_text(status);
    size_t tlen = strlen(text), clen = strlen(ctype), elen = extra ? strlen(extra) : 0;
    char head[1536]; /* the console's answers carry a CSP, a cookie and a Location */
    if (64 + tlen + clen + sizeof(close_line) + elen > sizeof(head) || status < 100 ||
        status > 999) {
        conn_fail(c, "answer head", UV_E2BIG);
        return;
    }
    char *p = put(head, "HTTP/1.1 ", 9);
    p = put_uint(p, (uint64_t)status);
    *p++ = ' ';
    p = put(p, text, tlen);
    p = put_str(p, "\r\nContent-Type: ");
    p = put(p, ctype, clen);
    p = put_str(p, "\r\nContent-Length: ");
    p = put_uint(p, len);
    p = put(p, "\r\n", 2);
    if (close)
        p = put(p, close_line, sizeof(close_line) - 1);
    if (elen)
        p = put(p, extra, elen);
    p = put(p, "\r\n", 2);
    if (req->method == LH_METHOD_HEAD && !refusal)
        len = 0; /* HEAD: the headers say what a GET would get, no body follows */
    if (send_answer(c, head, (size_t)(p - head), body, len) != 0)
        return;

    if (close) {
        /* unread bytes at close would reset the connection and could take the answer with
        ** them: linger when some may be there (a body, bytes kept, or a keep-alive client
        ** that may have pipelined more while reads were stopped for a shutdown) */
        conn_flush(c, refusal || body_coming || c->pending != NULL ||
                          (c->last_request && req->keep_alive));
    } else if (was == LH_CONN_READING_HEAD) {
        lh_request_parser_skip_body(c->parser);
        c->discarded = 0;
        set_state(c, LH_CONN_DISCARDING_BODY);
    } else if (set_state(c, c->writes_pending ? LH_CONN_WRITING : LH_CONN_IDLE) == 0 &&
               was == LH_CONN_HANDLING) {
        conn_resume(c); /* from READING_BODY, the parse loop that called on_request goes on */
    }
}

void lh_conn_respond(lh_conn_t *c, int status, const char *extra, const char *ctype,
                     const char *body, size_t len)
{
    answer(c, status, extra, ctype, body, len, 0);
}

void lh_conn_respond_close(lh_conn_t *c, int status, const char *extra, const char *ctype,
                           const char *body, size_t len)
{
    answer(c, status, extra, ctype, body, len, 1);
}

/* ------------------------------------------------------------------ requests */

/* A head is complete: the application may answer on it (its body is then dropped);
** otherwise the body is read, after a 100 Continue if the client waits for one. */
static void head_complete(lh_conn_t *c)
{
    lh_request_t *req = lh_request_parser_request(c->parser);
    lh_server_handler_t *h = &c->server->handler;
    assert(c->state == LH_CONN_READING_HEAD);
    int answered = h->on_head(h->data, c, req);
    if (c->state != LH_CONN_READING_HEAD)
        return; /* answered (or failed) */
    assert(!answered);
    (void)answered;
    if (req->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        wreq_t *w = malloc(sizeof(*w) + sizeof(cont) - 1);
        if (w == NULL) {
            conn_fail(c, "malloc", UV_ENOMEM);
            return;
        }
        memcpy(w->data, cont, sizeof(cont) - 1);
        w->len = sizeof(cont) - 1;
        if (write_buf(c, w) != 0)
            return;
    }
    set_state(c, LH_CONN_READING_BODY);
}

/* A request is complete: to the application, unless it was answered on its head. */
static void request_complete(lh_conn_t *c)
{
    if (c->state == LH_CONN_DISCARDING_BODY) {
        if (c->last_request)
            conn_flush(c, 0);
        else
            set_state(c, c->writes_pending ? LH_CONN_WRITING : LH_CONN_IDLE);
        return;
    }
    assert(c->state == LH_CONN_READING_BODY);
    lh_server_handler_t *h = &c->server->handler;
    h->on_request(h->data, c, lh_request_parser_request(c->parser));
    if (c->state == LH_CONN_READING_BODY) /* not answered yet: reads wait for the answer */
        set_state(c, LH_CONN_HANDLING);
}

/* The bytes are not a request, or not one we take: answer why and close. */
static void refused(lh_conn_t *c)
{
    const lh_request_error_t *e = lh_request_parser_error(c->parser);
    if (c->state == LH_CONN_DISCARDING_BODY) {
        conn_flush(c, 1); /* the request was answered on its head: nothing more to say */
        return;
    }
    switch (e->status) {
    case 413:
        reject_log(c, 413, LH_REJECT_TOO_LARGE);
        break;
    case 431:
        reject_log(c, 431, LH_REJECT_HEADERS_TOO_LARGE);
        break;
    case 500:
        break;
    default:
        reject_log(c, e->status, LH_REJECT_BAD_REQUEST);
        break;
    }
    char body[256];
    size_t n = (size_t)snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"");
    n += lh_json_escape(body + n, sizeof(body) - n - 3, e->reason, strlen(e->reason));
    n += (size_t)snprintf(body + n, sizeof(body) - n, "\"}");
    lh_conn_respond_close(c, e->status, NULL, "application/json", body, n);
}

/* Parses data[0, len) while the connection takes requests; returns the bytes used. Stops
** early when a request goes to the application, the answers in flight hold too much,
** REQUESTS_PER_TURN requests were parsed, or the connection closes: the caller keeps the
** rest for later, or drops it. */
static size_t conn_parse(lh_conn_t *c, const char *data, size_t len)
{
    size_t off = 0;
    int head = 0; /* a head was just parsed: feed again, even with nothing left */
    int done = 0; /* requests complete in this call */
    assert(!c->throttled);
    while (off < len || head) {
        switch (c->state) {
        case LH_CONN_READING_HEAD:
        case LH_CONN_READING_BODY:
        case LH_CONN_DISCARDING_BODY:
            break;
        case LH_CONN_WRITING: /* between two requests: the one place to pause */
            if (c->out_bytes > OUT_BYTES_MAX || c->writes_pending >= OUT_ANSWERS_MAX) {
                c->throttled = 1; /* until half the answers are taken (written) */
                if (lh_log_enabled(LH_DEBUG)) {
                    char n[24], b[24];
                    snprintf(n, sizeof(n), "%zu", c->writes_pending);
                    snprintf(b, sizeof(b), "%zu", c->out_bytes);
                    lh_field_t f[] = {LH_FIELD("remote", c->remote), LH_FIELD_NUM("answers", n),
                                      LH_FIELD_NUM("bytes", b)};
                    lh_log_fields(LH_DEBUG, "reads paused: answers in flight", f, 3);
                }
                return off;
            }
            /* fallthrough */
        case LH_CONN_IDLE:
            if (done >= REQUESTS_PER_TURN) {
                int r = uv_idle_start(&c->turn, on_turn);
                if (r != 0) {
                    conn_fail(c, "uv_idle_start", r);
                    return off;
                }
                c->yielded = 1;
                return off;
            }
            break;
        default:
            return off;
        }
        size_t used;
        lh_parse_result_t r = lh_request_parser_feed(c->parser, data + off, len - off, &used);
        off += used;
        head = 0;
        if ((c->state == LH_CONN_IDLE || c->state == LH_CONN_WRITING) &&
            (r != LH_PARSE_MORE || lh_request_parser_started(c->parser))) {
            /* a request begins: its head has --read-timeout from this first byte */
            if (set_state(c, LH_CONN_READING_HEAD) != 0)
                return off;
        }
        switch (r) {
        case LH_PARSE_MORE:
            break;
        case LH_PARSE_HEAD:
            head_complete(c);
            head = 1;
            break;
        case LH_PARSE_DONE:
            done++;
            request_complete(c);
            break;
        case LH_PARSE_ERROR:
            refused(c);
            return off;
        }
    }
    return off;
}

/* Reads while the connection takes bytes: not while a request is with the application,
** answers pile up unread, or bytes already read wait in `pending`. */
static void conn_reading(lh_conn_t *c)
{
    int want = 0;
    switch (c->state) {
    case LH_CONN_READING_HEAD:
    case LH_CONN_READING_BODY:
    case LH_CONN_DISCARDING_BODY:
    case LH_CONN_HANDLING: /* reads go on until bytes arrive: they are kept, then reads stop
                           ** (a stop and start for each request would cost system calls) */
    case LH_CONN_WRITING:
    case LH_CONN_IDLE:
        want = !c->throttled && !c->yielded && c->pending == NULL && !c->read_eof;
        break;
    case LH_CONN_LINGERING: /* reads on, to drop what arrives */
    case LH_CONN_CLOSED:
        return;
    case LH_CONN_NEW:
    case LH_CONN_FLUSHING:
        break;
    }
    if (!want) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    int r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0 && r != UV_EALREADY)
        conn_fail(c, "uv_read_start", r);
}

/* The connection may take requests again (answered, unthrottled, its turn come): parses
** what was read past the last request, then reads on. */
static void conn_resume(lh_conn_t *c)
{
    if (c->yielded)
        return; /* on_turn resumes */
    if (c->pending != NULL) {
        size_t used = conn_parse(c, c->pending + c->pending_off, c->pending_len - c->pending_off);
        c->pending_off += used;
        if (c->pending_off == c->pending_len) {
            free(c->pending);
            c->pending = NULL;
            c->pending_len = c->pending_off = 0;
        }
    }
    conn_reading(c);
}

/* A later loop turn: the requests that yielded go on. */
static void on_turn(uv_idle_t *t)
{
    lh_conn_t *c = t->data;
    uv_idle_stop(t);
    c->yielded = 0;
    if (!c->throttled)
        conn_resume(c);
}

/* ------------------------------------------------------------------ reading */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    lh_conn_t *c = h->data;
    lh_server_t *s = c->server;
    (void)hint;
    /* every read is parsed before the next alloc, so one buffer serves all */
    buf->base = s->rbuf;
    buf->len = sizeof(s->rbuf);
}

static void on_eof(lh_conn_t *c, ssize_t err)
{
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (err == UV_EOF && c->state == LH_CONN_HANDLING) {
        /* a client that half-closes after its request still gets its answer */
        c->read_eof = 1;
        c->last_request = 1;
        return;
    }
    if (err == UV_EOF && c->writes_pending > 0)
        conn_flush(c, 0); /* a client that half-closes after its requests gets its answers */
    else
        lh_conn_close(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    lh_conn_t *c = stream->data;
    if (nread == 0)
        return;
    if (c->state == LH_CONN_LINGERING) {
        if (nread < 0)
            lh_conn_close(c);
        else if ((c->discarded += (size_t)nread) > DISCARD_MAX)
            uv_read_stop(stream); /* TCP's window stops the client; the timer closes */
        return;
    }
    if (nread < 0) {
        on_eof(c, nread);
        return;
    }
    assert(c->pending == NULL && !c->throttled && !c->yielded);
    if (c->state == LH_CONN_READING_BODY || c->state == LH_CONN_DISCARDING_BODY)
        arm_timer(c); /* a body may take long, but never pause longer than --read-timeout */
    if (c->state == LH_CONN_DISCARDING_BODY && (c->discarded += (size_t)nread) > DISCARD_MAX) {
        conn_flush(c, 1);
        return;
    }
    size_t used = conn_parse(c, buf->base, (size_t)nread);
    size_t rest = (size_t)nread - used;
    if (rest > 0 && (c->state == LH_CONN_HANDLING || c->throttled || c->yielded)) {
        /* read past a request that waits for its answer: kept for later */
        if ((c->pending = malloc(rest)) == NULL) {
            conn_fail(c, "malloc", UV_ENOMEM);
            return;
        }
        memcpy(c->pending, buf->base + used, rest);
        c->pending_len = rest;
        c->pending_off = 0;
    }
    conn_reading(c);
}

/* ------------------------------------------------------------------ timer */

static void on_timer(uv_timer_t *t)
{
    lh_conn_t *c = t->data;
    if (c->deadline == 0)
        return; /* the state has none: the timer waits for the next one */
    uint64_t now = uv_now(c->timer.loop);
    if (now < c->deadline) {
        int r = uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        if (r != 0)
            conn_fail(c, "uv_timer_start", r);
        return;
    }
    switch (c->state) {
    case LH_CONN_READING_HEAD:
        if (!lh_request_parser_started(c->parser)) {
            /* connected and sent nothing: there is no request to answer (nginx and h2o
            ** close such a connection silently too) */
            if (lh_log_enabled(LH_DEBUG)) {
                lh_field_t f[] = {LH_FIELD("remote", c->remote)};
                lh_log_fields(LH_DEBUG, "closed a connection that sent nothing", f, 1);
            }
            lh_conn_close(c);
            return;
        }
        /* fallthrough */
    case LH_CONN_READING_BODY: {
        static const char body[] = "{\"ok\":false,\"error\":\"request not received in time\"}";
        reject_log(c, 408, LH_REJECT_TIMEOUT);
        lh_conn_respond_close(c, 408, NULL, "application/json", body, sizeof(body) - 1);
        return;
    }
    case LH_CONN_DISCARDING_BODY: /* answered already: nothing more to say */
    case LH_CONN_WRITING:         /* the client does not take its answers */
    case LH_CONN_IDLE:
    case LH_CONN_FLUSHING:
    case LH_CONN_LINGERING:
        lh_conn_close(c);
        return;
    case LH_CONN_NEW:
    case LH_CONN_HANDLING:
    case LH_CONN_CLOSED:
        break;
    }
    assert(!"a timer fired in a state that has none");
}

/* ------------------------------------------------------------------ start */

int lh_conn_start(lh_conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
        snprintf(c->remote, sizeof(c->remote), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip,
                 port);
    } /* else the client is already gone: the first read says so */
    int r = uv_tcp_nodelay(&c->tcp, 1);
    if (r != 0) {
        conn_fail(c, "uv_tcp_nodelay", r);
        return r;
    }
    if ((r = set_state(c, LH_CONN_READING_HEAD)) != 0)
        return r;
    r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (r != 0)
        conn_fail(c, "uv_read_start", r);
    return r;
}
