#include "conn.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "json_escape.h"
#include "list.h"
#include "log.h"
#include "server.h"

enum { T_NONE = 0, T_IDLE, T_HEAD, T_BODY, T_LINGER, T_WRITE };

/* How long a refused client may go on sending before the connection is dropped. */
#define LINGER_MS 2000

#define WRITE_QUEUE_MAX (1024 * 1024)

typedef struct {
    uv_write_t req;
    lh_conn_t *conn;
    size_t len;
    char data[];
} wreq_t;

static const llhttp_settings_t *parser_settings(void);
static void conn_feed(lh_conn_t *c, const char *data, size_t len);
static void conn_resume(lh_conn_t *c);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

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
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

/* ------------------------------------------------------------------ lifetime */

static void conn_free(lh_conn_t *c)
{
    free(c->head);
    free(c->hdr);
    free(c->headers);
    free(c->body);
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
    return !c->closing;
}

/* Two handles close; the second close callback drops the connection's own ref. */
static void handle_close_cb(uv_handle_t *h)
{
    lh_conn_t *c = h->data;
    if (++c->handles_closed < 2)
        return;
    lh_server_t *s = c->server;
    LH_LIST_REMOVE(s->conns, c);
    s->nconns--;
    s->app->metrics.connections_open--;
    lh_conn_unref(c);
    if (s->on_drained != NULL && s->nconns == 0)
        s->on_drained(s);
}

void lh_conn_close(lh_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, handle_close_cb);
    uv_close((uv_handle_t *)&c->timer, handle_close_cb);
}

lh_conn_t *lh_conn_new(lh_server_t *s)
{
    lh_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->server = s;
    c->refs = 1;
    uv_tcp_init(s->app->loop, &c->tcp);
    uv_timer_init(s->app->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    LH_LIST_PUSH(s->conns, c);
    s->nconns++;
    s->app->metrics.connections_open++;
    s->app->metrics.connections_total++;
    return c;
}

/* ------------------------------------------------------------------ timers */

static void reject_log(lh_conn_t *c, int status, lh_reject_t reason)
{
    metrics_of(c)->rejected[reason]++;
    if (lh_log_enabled(LH_WARN)) {
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        /* the path as far as it arrived: the url starts the head buffer */
        size_t plen = 0;
        while (plen < c->url_len && plen < c->head_len && c->head[plen] != '?')
            plen++;
        lh_field_t f[] = {
            LH_FIELD_NUM("status", st),
            LH_FIELD("reason", lh_metrics_reject_name(reason)),
            LH_FIELD("remote", c->remote),
            LH_FIELDN("path", plen ? c->head : "", plen),
        };
        lh_log_fields(LH_WARN, "rejected", f, 4);
    }
}

static void on_timer(uv_timer_t *t)
{
    lh_conn_t *c = t->data;
    /* idle, lingering, a client that does not read its answers, or one whose request
    ** was already answered: nothing more to say */
    if (c->timer_state == T_IDLE || c->timer_state == T_LINGER || c->timer_state == T_WRITE ||
        c->linger || c->skip_body) {
        lh_conn_close(c);
        return;
    }
    reject_log(c, 408, LH_REJECT_TIMEOUT);
    static const char body[] = "{\"ok\":false,\"error\":\"request not received in time\"}";
    c->busy = 0;
    lh_conn_respond_close(c, 408, NULL, "application/json", body, sizeof(body) - 1);
}

static void timer_set(lh_conn_t *c, int state, double seconds)
{
    if (c->closing || c->lingering)
        return;
    c->timer_state = state;
    if (state == T_NONE)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, (uint64_t)(seconds * 1000 + 0.5), 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    lh_conn_t *c = req->data;
    if (status < 0 && !c->closing)
        lh_conn_close(c);
    lh_conn_unref(c);
}

/* A refused client may still be sending: closing with unread data would reset the
** connection and could destroy the answer before it is read. Send FIN instead, drop
** what arrives until the client closes, or LINGER_MS passes (like nginx's lingering
** close). */
static void start_linger(lh_conn_t *c)
{
    c->lingering = 1;
    c->timer_state = T_LINGER;
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
    c->shutdown.data = c;
    lh_conn_ref(c);
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        lh_conn_unref(c);
        lh_conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ------------------------------------------------------------------ writing */

static void on_write(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    lh_conn_t *c = w->conn;
    free(w);
    c->writes_pending--;
    if (c->throttled && !c->closing && c->tcp.write_queue_size <= WRITE_QUEUE_MAX / 2) {
        c->throttled = 0;
        if (!c->busy)
            conn_resume(c);
    }
    if (status < 0 && !c->closing) {
        lh_conn_close(c);
    } else if (c->close_after_write && c->writes_pending == 0 && !c->busy) {
        if (c->linger && !c->lingering)
            start_linger(c);
        else if (!c->linger)
            lh_conn_close(c);
    } else if (c->writes_pending == 0 && !c->busy && !c->closing && !c->in_request &&
               (c->timer_state == T_NONE || c->timer_state == T_WRITE)) {
        timer_set(c, T_IDLE, cfg_of(c)->idle_timeout);
    } else if (c->writes_pending > 0 && c->timer_state == T_WRITE) {
        timer_set(c, T_WRITE, cfg_of(c)->idle_timeout); /* progress: restart */
    }
    lh_conn_unref(c);
}

static void write_raw(lh_conn_t *c, wreq_t *w)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)w->len);
    w->conn = c;
    lh_conn_ref(c);
    c->writes_pending++;
    /* a client that never reads its answers must not hold them forever */
    if (c->timer_state == T_NONE || c->timer_state == T_IDLE)
        timer_set(c, T_WRITE, cfg_of(c)->idle_timeout);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->writes_pending--;
        free(w);
        lh_conn_unref(c);
        lh_conn_close(c);
    }
}

static void respond(lh_conn_t *c, int status, const char *extra, const char *ctype,
                    const char *body, size_t len, int close)
{
    char head[512];
    if (c->closing)
        return;
    if (close || !c->req.keep_alive)
        c->close_after_write = 1;
    int hn = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
                      status, status_text(status), ctype, len,
                      c->close_after_write ? "Connection: close\r\n" : "", extra ? extra : "");
    if (hn < 0 || (size_t)hn >= sizeof(head)) {
        lh_conn_close(c);
        return;
    }
    wreq_t *w = malloc(sizeof(*w) + (size_t)hn + len);
    if (w == NULL) {
        lh_conn_close(c);
        return;
    }
    if (c->req.method == HTTP_HEAD)
        len = 0; /* HEAD: the headers say what a GET would get, no body follows */
    memcpy(w->data, head, (size_t)hn);
    if (len)
        memcpy(w->data + hn, body, len);
    w->len = (size_t)hn + len;
    write_raw(c, w);
}

/* Parsing stopped while an answer was outstanding: go on with what was read past it. */
static void conn_resume(lh_conn_t *c)
{
    if (c->closing || c->close_after_write)
        return;
    llhttp_resume(&c->parser);
    char *buf = c->pending;
    size_t off = c->pending_off, len = c->pending_len;
    c->pending = NULL;
    c->pending_len = c->pending_off = 0;
    if (buf != NULL) {
        conn_feed(c, buf + off, len - off);
        free(buf);
    }
    if (!c->busy && !c->closing && !c->close_after_write && !c->throttled)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void lh_conn_respond(lh_conn_t *c, int status, const char *extra, const char *ctype,
                     const char *body, size_t len)
{
    int was_busy = c->busy;
    respond(c, status, extra, ctype, body, len, 0);
    c->busy = 0;
    if (was_busy && !c->in_parse_flag)
        conn_resume(c);
}

void lh_conn_respond_close(lh_conn_t *c, int status, const char *extra, const char *ctype,
                           const char *body, size_t len)
{
    respond(c, status, extra, ctype, body, len, 1);
    c->busy = 0;
    c->linger = 1;
    if (!c->closing)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

void lh_conn_shutdown(lh_conn_t *c)
{
    if (!c->busy && !c->in_request && c->writes_pending == 0)
        lh_conn_close(c);
    else
        c->close_after_write = 1;
}

/* ------------------------------------------------------------------ request assembly */

/* Makes room for len more bytes (and a NUL) in the head buffer; may move it. */
static int head_reserve(lh_conn_t *c, size_t len)
{
    if (c->head_len + len + 1 > cfg_of(c)->max_header) {
        c->error_status = 431;
        return -1;
    }
    if (c->head_len + len + 1 > c->head_cap) {
        size_t cap = c->head_cap ? c->head_cap : 1024;
        while (cap < c->head_len + len + 1)
            cap *= 2;
        char *p = realloc(c->head, cap);
        if (p == NULL) {
            c->error_status = 500;
            return -1;
        }
        c->head = p, c->head_cap = cap;
    }
    return 0;
}

/* `at` must not point into the head buffer itself (a reserve may move it). */
static int head_append(lh_conn_t *c, const char *at, size_t len, int lower)
{
    if (head_reserve(c, len) != 0)
        return -1;
    char *dst = c->head + c->head_len;
    if (lower) {
        for (size_t i = 0; i < len; i++)
            dst[i] = (char)tolower((unsigned char)at[i]);
    } else {
        memcpy(dst, at, len);
    }
    c->head_len += len;
    return 0;
}

static int head_terminate(lh_conn_t *c)
{
    if (head_append(c, "", 0, 0) != 0)
        return -1;
    c->head[c->head_len++] = '\0';
    return 0;
}

static lh_conn_t *conn_of(llhttp_t *p)
{
    return p->data;
}

static int cb_message_begin(llhttp_t *p)
{
    lh_conn_t *c = conn_of(p);
    c->in_request = 1;
    c->head_len = c->url_len = 0;
    c->nhdr = 0;
    c->hstate = 0;
    c->body_len = 0;
    c->skip_body = c->discarding = 0;
    /* the last request was answered: a big body buffer is not kept for the next one */
    if (c->body_cap > 1024 * 1024) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
    c->in_body = 0;
    c->req.method = -1; /* until the head says: answers to a broken head carry a body */
    c->error_status = 0;
    timer_set(c, T_HEAD, cfg_of(c)->read_timeout);
    return 0;
}

static int cb_url(llhttp_t *p, const char *at, size_t len)
{
    lh_conn_t *c = conn_of(p);
    c->url_len += len;
    return head_append(c, at, len, 0);
}

static int cb_url_complete(llhttp_t *p)
{
    return head_terminate(conn_of(p));
}

static int cb_header_field(llhttp_t *p, const char *at, size_t len)
{
    lh_conn_t *c = conn_of(p);
    if (c->in_body)
        return 0; /* chunked trailers: the request's pointers must stay valid */
    if (c->hstate != 1) {
        if (c->nhdr == c->hdr_cap) {
            size_t cap = c->hdr_cap ? c->hdr_cap * 2 : 16;
            void *np = realloc(c->hdr, cap * sizeof(*c->hdr));
            if (np == NULL) {
                c->error_status = 500;
                return -1;
            }
            c->hdr = np, c->hdr_cap = cap;
        }
        c->hdr[c->nhdr].name_off = c->head_len;
        c->hdr[c->nhdr].value_off = 0;
        c->hdr[c->nhdr].value_len = 0;
        c->nhdr++;
        c->hstate = 1;
    }
    return head_append(c, at, len, 1);
}

static int cb_header_field_complete(llhttp_t *p)
{
    lh_conn_t *c = conn_of(p);
    if (c->in_body)
        return 0; /* chunked trailers: the request's pointers must stay valid */
    c->hdr[c->nhdr - 1].name_len = c->head_len - c->hdr[c->nhdr - 1].name_off;
    return head_terminate(c);
}

static int cb_header_value(llhttp_t *p, const char *at, size_t len)
{
    lh_conn_t *c = conn_of(p);
    if (c->in_body)
        return 0; /* chunked trailers: the request's pointers must stay valid */
    if (c->hstate != 2) {
        c->hdr[c->nhdr - 1].value_off = c->head_len;
        c->hstate = 2;
    }
    return head_append(c, at, len, 0);
}

static int cb_header_value_complete(llhttp_t *p)
{
    lh_conn_t *c = conn_of(p);
    if (c->in_body)
        return 0;       /* chunked trailers: the request's pointers must stay valid */
    if (c->hstate != 2) /* an empty value has no data callback */
        c->hdr[c->nhdr - 1].value_off = c->head_len;
    c->hdr[c->nhdr - 1].value_len = c->head_len - c->hdr[c->nhdr - 1].value_off;
    c->hstate = 0;
    return head_terminate(c);
}

static const lh_header_t *find_header(const lh_conn_t *c, const char *name)
{
    for (size_t i = 0; i < c->req.nheaders; i++)
        if (strcmp(c->req.headers[i].name, name) == 0)
            return &c->req.headers[i];
    return NULL;
}

static int cb_headers_complete(llhttp_t *p)
{
    lh_conn_t *c = conn_of(p);
    lh_request_t *r = &c->req;
    const lh_config_t *cfg = cfg_of(c);

    /* the path, without the query, after the url in the head buffer */
    size_t plen = 0;
    while (plen < c->url_len && c->head[plen] != '?' && c->head[plen] != '#')
        plen++;
    size_t path_off = c->head_len;
    if (head_reserve(c, plen) != 0)
        return -1;
    memcpy(c->head + c->head_len, c->head, plen); /* after the reserve: it may move head */
    c->head_len += plen;
    if (head_terminate(c) != 0)
        return -1;

    if (c->nhdr > 0) {
        lh_header_t *h = realloc(c->headers, c->nhdr * sizeof(*h));
        if (h == NULL) {
            c->error_status = 500;
            return -1;
        }
        c->headers = h;
    }
    for (size_t i = 0; i < c->nhdr; i++) {
        c->headers[i].name = c->head + c->hdr[i].name_off;
        c->headers[i].name_len = c->hdr[i].name_len;
        c->headers[i].value = c->head + c->hdr[i].value_off;
        c->headers[i].value_len = c->hdr[i].value_len;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->method = p->method;
    r->method_name = llhttp_method_name((llhttp_method_t)p->method);
    r->url = c->head;
    r->url_len = c->url_len;
    r->path = c->head + path_off;
    r->path_len = plen;
    r->headers = c->headers;
    r->nheaders = c->nhdr;
    r->body = NULL;
    r->body_len = 0;
    r->keep_alive = llhttp_should_keep_alive(p);
    r->received_ns = uv_hrtime();
    r->received_at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;

    int has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    c->in_body = 1;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > cfg->max_body) {
        c->error_status = 413;
        return -1;
    }
    lh_server_handler_t *h = &c->server->handler;
    if (h->on_head(h->data, c, r)) {
        c->skip_body = 1;
        c->discarding = 1;
        if (has_body)
            timer_set(c, T_BODY, cfg->read_timeout);
        /* a client waiting for 100-continue will not send the body: do not wait for it */
        if (has_body && find_header(c, "expect") != NULL)
            c->close_after_write = 1;
        if (c->close_after_write || c->closing)
            return HPE_PAUSED;
        return 0;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length + 1 > c->body_cap) {
        char *b = realloc(c->body, p->content_length + 1);
        if (b == NULL) {
            c->error_status = 500;
            return -1;
        }
        c->body = b, c->body_cap = p->content_length + 1;
    }
    const lh_header_t *expect = find_header(c, "expect");
    if (expect != NULL && expect->value_len == 12 &&
        strncasecmp(expect->value, "100-continue", 12) == 0 && has_body) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        wreq_t *w = malloc(sizeof(*w) + sizeof(cont) - 1);
        if (w == NULL) {
            c->error_status = 500;
            return -1;
        }
        memcpy(w->data, cont, sizeof(cont) - 1);
        w->len = sizeof(cont) - 1;
        write_raw(c, w);
    }
    if (has_body)
        timer_set(c, T_BODY, cfg->read_timeout);
    return 0;
}

static int cb_body(llhttp_t *p, const char *at, size_t len)
{
    lh_conn_t *c = conn_of(p);
    if (c->discarding)
        return 0;
    if (c->body_len + len > cfg_of(c)->max_body) {
        c->error_status = 413;
        return -1;
    }
    if (c->body_len + len + 1 > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len + 1)
            cap *= 2;
        char *b = realloc(c->body, cap);
        if (b == NULL) {
            c->error_status = 500;
            return -1;
        }
        c->body = b, c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

/* A request was answered at once: go on parsing, unless the answers pile up unread
** (pipelined requests answered on their head would otherwise grow without bound). */
static int after_answer(lh_conn_t *c)
{
    if (c->tcp.write_queue_size > WRITE_QUEUE_MAX) {
        c->throttled = 1;
        timer_set(c, T_WRITE, cfg_of(c)->idle_timeout);
        return HPE_PAUSED;
    }
    /* idle from now on, or waiting for the client to take its answers */
    timer_set(c, c->writes_pending == 0 ? T_IDLE : T_WRITE, cfg_of(c)->idle_timeout);
    return 0;
}

static int cb_message_complete(llhttp_t *p)
{
    lh_conn_t *c = conn_of(p);
    c->in_request = 0;
    timer_set(c, T_NONE, 0);
    if (c->skip_body) {
        c->skip_body = c->discarding = 0;
        if (c->close_after_write || c->closing)
            return HPE_PAUSED;
        return after_answer(c);
    }
    if (c->body == NULL) {
        if ((c->body = malloc(64)) == NULL) {
            c->error_status = 500;
            return -1;
        }
        c->body_cap = 64;
    }
    c->body[c->body_len] = '\0';
    c->req.body = c->body;
    c->req.body_len = c->body_len;
    c->busy = 1;
    lh_server_handler_t *h = &c->server->handler;
    h->on_request(h->data, c, &c->req);
    if (c->busy || c->close_after_write || c->closing)
        return HPE_PAUSED;
    return after_answer(c);
}

static const llhttp_settings_t *parser_settings(void)
{
    static llhttp_settings_t s;
    static int ready;
    if (!ready) {
        llhttp_settings_init(&s);
        s.on_message_begin = cb_message_begin;
        s.on_url = cb_url;
        s.on_url_complete = cb_url_complete;
        s.on_header_field = cb_header_field;
        s.on_header_field_complete = cb_header_field_complete;
        s.on_header_value = cb_header_value;
        s.on_header_value_complete = cb_header_value_complete;
        s.on_headers_complete = cb_headers_complete;
        s.on_body = cb_body;
        s.on_message_complete = cb_message_complete;
        ready = 1;
    }
    return &s;
}

/* ------------------------------------------------------------------ reading */

static void parse_failed(lh_conn_t *c, llhttp_errno_t err)
{
    char body[256];
    int n;
    int status = c->error_status;
    if (status == 413) {
        reject_log(c, 413, LH_REJECT_TOO_LARGE);
        n = snprintf(body, sizeof(body),
                     "{\"ok\":false,\"error\":\"body larger than the limit of %llu bytes\"}",
                     (unsigned long long)cfg_of(c)->max_body);
    } else if (status == 431) {
        reject_log(c, 431, LH_REJECT_HEADERS_TOO_LARGE);
        n = snprintf(body, sizeof(body),
                     "{\"ok\":false,\"error\":\"request line and headers larger than the limit "
                     "of %llu bytes\"}",
                     (unsigned long long)cfg_of(c)->max_header);
    } else if (status == 500) {
        n = snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"out of memory\"}");
    } else {
        status = 400;
        reject_log(c, 400, LH_REJECT_BAD_REQUEST);
        const char *why = llhttp_get_error_reason(&c->parser);
        if (why == NULL)
            why = llhttp_errno_name(err);
        size_t j = (size_t)snprintf(body, sizeof(body),
                                    "{\"ok\":false,\"error\":\"malformed HTTP request: ");
        j += lh_json_escape(body + j, sizeof(body) - j - 3, why, strlen(why));
        j += (size_t)snprintf(body + j, sizeof(body) - j, "\"}");
        n = (int)j;
    }
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    c->busy = 0;
    lh_conn_respond_close(c, status, NULL, "application/json", body, (size_t)n);
}

static void conn_feed(lh_conn_t *c, const char *data, size_t len)
{
    c->in_parse_flag = 1;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    c->in_parse_flag = 0;
    if (err == HPE_OK || c->closing)
        return;
    if (err == HPE_PAUSED_UPGRADE) { /* answered as plain HTTP; nothing follows on it */
        c->close_after_write = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
        if (c->writes_pending == 0 && !c->busy)
            lh_conn_close(c);
        return;
    }
    if (err == HPE_PAUSED) {
        if (c->close_after_write) { /* nothing more will be read */
            uv_read_stop((uv_stream_t *)&c->tcp);
            if (c->writes_pending == 0 && !c->busy)
                lh_conn_close(c);
            return;
        }
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (!c->busy && !c->throttled) { /* answered while paused, e.g. in a nested resume */
            llhttp_resume(&c->parser);
            conn_feed(c, data + used, len - used);
            return;
        }
        if (used < len) {
            char *copy = malloc(len - used);
            if (copy == NULL) {
                lh_conn_close(c);
                return;
            }
            memcpy(copy, data + used, len - used);
            c->pending = copy;
            c->pending_len = len - used;
            c->pending_off = 0;
        }
        uv_read_stop((uv_stream_t *)&c->tcp);
        return;
    }
    parse_failed(c, err);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    lh_conn_t *c = h->data;
    lh_server_t *s = c->server;
    (void)hint;
    /* every read is parsed before the next alloc, so one buffer serves all */
    buf->base = s->rbuf;
    buf->len = sizeof(s->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    lh_conn_t *c = stream->data;
    if (c->lingering) {
        if (nread < 0)
            lh_conn_close(c);
        return;
    }
    if (nread > 0) {
        if (c->timer_state == T_BODY)
            timer_set(c, T_BODY, cfg_of(c)->read_timeout);
        conn_feed(c, buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or error. A client that half-closes after its request still gets its answer. */
    uv_read_stop(stream);
    if (nread == UV_EOF && (c->busy || c->writes_pending) && !c->in_request)
        c->close_after_write = 1;
    else
        lh_conn_close(c);
}

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
    }
    snprintf(c->remote, sizeof(c->remote), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip,
             port);
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, parser_settings());
    c->parser.data = c;
    timer_set(c, T_IDLE, cfg_of(c)->idle_timeout);
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
