#include "request.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <llhttp.h>
#include <uv.h>

/* A body buffer larger than this is not kept for the next request. */
#define BODY_KEEP_MAX (1024 * 1024)

typedef enum {
    P_BETWEEN = 0, /* no request begun (or the last one is complete) */
    P_HEAD,        /* a request begun: its line and headers are arriving */
    P_BODY,        /* the head is complete: body, chunk framing or trailers are arriving */
    P_ERROR,       /* refused: nothing more is parsed */
    P_UPGRADED,    /* after an Upgrade request: what follows is not HTTP/1.1 */
} phase_t;

/* where the head's last bytes went; H_COLON: a name is complete, its value not begun */
typedef enum { H_NONE = 0, H_NAME, H_COLON, H_VALUE } hpos_t;

struct lh_request_parser_s {
    llhttp_t llhttp;
    uint64_t max_header, max_body;
    phase_t phase;
    hpos_t hpos;
    lh_parse_result_t event; /* what the callbacks of the running feed reported */
    int skip_body;
    int has_body;
    uint64_t announced; /* the Content-Length of the current request; 0 if none */
    /* where the bytes being parsed sit in the stream, for error offsets */
    const char *base;
    uint64_t base_off;
    lh_request_error_t error;
    int offset_set;   /* a data callback set error.offset itself */
    const char *why;  /* our own reason for a 400 or 501; NULL: llhttp's */
    int line_end_due; /* the request line's version is parsed: its CR is the next byte */
    /* obs-fold: where the header's name and its value's last span ended, in the stream, and
    ** whether a line end came after the name in an earlier feed */
    uint64_t name_end, value_end;
    int lf_after_name;
    char last_byte; /* the last byte the previous feed used */
    char reason[160];
    /* the head: url, then header names and values, each NUL-terminated, then the path */
    char *head; /* owned */
    size_t head_len, head_cap;
    size_t url_len;
    struct {
        size_t name_off, name_len, value_off, value_len;
    } * hdr; /* owned */
    size_t nhdr, hdr_cap;
    lh_header_t *headers; /* owned; built when the head is complete */
    size_t headers_cap;
    char *body; /* owned */
    size_t body_len, body_cap;
    lh_request_t req;
    size_t bytes;      /* what the buffers hold */
    int64_t *buffered; /* borrowed, or NULL: parsers holding buffers (lh_request_parser_account) */
};

/* The buffers' bytes changed from `was` to `now`: the owner's count follows whether any
** are held (a count of parsers, not of bytes: the same request gives the same figure
** whatever its buffers' history, and /metrics' text stays cached). */
static void held(lh_request_parser_t *p, size_t was, size_t now)
{
    size_t before = p->bytes;
    p->bytes = p->bytes - was + now;
    if (p->buffered != NULL && (before == 0) != (p->bytes == 0))
        *p->buffered += p->bytes != 0 ? 1 : -1;
}

static lh_request_parser_t *parser_of(llhttp_t *l)
{
    return l->data;
}

/* Stops the parse with `status`; `at`, when not NULL, is the byte that made the request
** wrong (data callbacks know it; other callbacks leave it to llhttp's error position). */
static int refuse(lh_request_parser_t *p, int status, const char *at)
{
    p->error.status = status;
    if (at != NULL) {
        p->error.offset = p->base_off + (uint64_t)(at - p->base);
        p->offset_set = 1;
    }
    return -1;
}

/* As refuse, with a reason of our own (llhttp's would name only the callback). */
static int refuse_why(lh_request_parser_t *p, int status, const char *at, const char *why)
{
    p->why = why;
    return refuse(p, status, at);
}

static lh_method_t method_of(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return LH_METHOD_GET;
    case HTTP_HEAD:
        return LH_METHOD_HEAD;
    case HTTP_POST:
        return LH_METHOD_POST;
    case HTTP_PUT:
        return LH_METHOD_PUT;
    case HTTP_DELETE:
        return LH_METHOD_DELETE;
    case HTTP_PATCH:
        return LH_METHOD_PATCH;
    case HTTP_OPTIONS:
        return LH_METHOD_OPTIONS;
    default:
        return LH_METHOD_OTHER;
    }
}

/* ------------------------------------------------------------------ the head buffer */

/* Makes room for `len` more bytes and a NUL; may move the buffer. `at` is where those
** bytes start in the input, or NULL when they are not input bytes. `limited`: the bytes
** count against max_header (the request's own bytes do; our copies of them do not). */
static int head_grow(lh_request_parser_t *p, size_t len, const char *at, int limited)
{
    if (limited && p->head_len + len + 1 > p->max_header) {
        /* the first byte that does not fit */
        uint64_t fit = p->max_header > p->head_len + 1 ? p->max_header - p->head_len - 1 : 0;
        return refuse(p, 431, at != NULL ? at + fit : NULL);
    }
    if (p->head_len + len + 1 > p->head_cap) {
        size_t cap = p->head_cap ? p->head_cap : 1024;
        while (cap < p->head_len + len + 1)
            cap *= 2;
        char *n = realloc(p->head, cap);
        if (n == NULL)
            return refuse(p, 500, NULL);
        held(p, p->head_cap, cap);
        p->head = n, p->head_cap = cap;
    }
    return 0;
}

static int head_reserve(lh_request_parser_t *p, size_t len, const char *at)
{
    return head_grow(p, len, at, 1);
}

/* `at` must not point into the head buffer itself (a reserve may move it). */
static int head_append(lh_request_parser_t *p, const char *at, size_t len, int lower)
{
    if (head_reserve(p, len, at) != 0)
        return -1;
    char *dst = p->head + p->head_len;
    if (lower) {
        for (size_t i = 0; i < len; i++)
            dst[i] = (char)tolower((unsigned char)at[i]);
    } else {
        memcpy(dst, at, len);
    }
    p->head_len += len;
    return 0;
}

static int head_terminate(lh_request_parser_t *p)
{
    if (head_reserve(p, 0, NULL) != 0)
        return -1;
    p->head[p->head_len++] = '\0';
    return 0;
}

/* ------------------------------------------------------------------ llhttp callbacks */

static int cb_message_begin(llhttp_t *l)
{
    lh_request_parser_t *p = parser_of(l);
    p->phase = P_HEAD;
    p->hpos = H_NONE;
    p->head_len = p->url_len = 0;
    p->nhdr = 0;
    p->body_len = 0;
    p->skip_body = p->has_body = 0;
    p->announced = 0;
    p->line_end_due = 0;
    /* the last request is over: a big body buffer is not kept for the next one */
    if (p->body_cap > BODY_KEEP_MAX) {
        held(p, p->body_cap, 0);
        free(p->body);
        p->body = NULL;
        p->body_cap = 0;
    }
    memset(&p->req, 0, sizeof(p->req));
    p->req.method = LH_METHOD_OTHER;
    p->req.method_name = "";
    return 0;
}

static int cb_url(llhttp_t *l, const char *at, size_t len)
{
    lh_request_parser_t *p = parser_of(l);
    p->url_len += len;
    return head_append(p, at, len, 0);
}

static int cb_url_complete(llhttp_t *l)
{
    return head_terminate(parser_of(l));
}

/* llhttp, even strict, ends the request line at a bare LF: the feed looks at the byte
** after the version itself, so it stops here. */
static int cb_version_complete(llhttp_t *l)
{
    parser_of(l)->line_end_due = 1;
    return HPE_PAUSED;
}

static int cb_header_field(llhttp_t *l, const char *at, size_t len)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->phase != P_HEAD)
        return 0; /* chunked trailers: the request's pointers must stay valid */
    if (p->hpos != H_NAME) {
        if (p->nhdr == p->hdr_cap) {
            size_t cap = p->hdr_cap ? p->hdr_cap * 2 : 16;
            void *n = realloc(p->hdr, cap * sizeof(*p->hdr));
            if (n == NULL)
                return refuse(p, 500, NULL);
            held(p, p->hdr_cap * sizeof(*p->hdr), cap * sizeof(*p->hdr));
            p->hdr = n, p->hdr_cap = cap;
        }
        p->hdr[p->nhdr].name_off = p->head_len;
        p->hdr[p->nhdr].value_off = 0;
        p->hdr[p->nhdr].value_len = 0;
        p->nhdr++;
        p->hpos = H_NAME;
        p->lf_after_name = 0;
    }
    p->name_end = p->base_off + (uint64_t)(at - p->base) + len;
    return head_append(p, at, len, 1);
}

static int cb_header_field_complete(llhttp_t *l)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->phase != P_HEAD)
        return 0;
    p->hdr[p->nhdr - 1].name_len = p->head_len - p->hdr[p->nhdr - 1].name_off;
    p->hpos = H_COLON;
    return head_terminate(p);
}

static int cb_header_value(llhttp_t *l, const char *at, size_t len)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->phase != P_HEAD)
        return 0;
    if (len == 0)
        return 0; /* llhttp's span of an empty value sits after its line end */
    uint64_t off = p->base_off + (uint64_t)(at - p->base); /* in the stream */
    /* A value goes on in one span, cut only where a feed ends, and only the colon and
    ** blanks come before it: a line end in a gap is a line folded onto the next
    ** (obs-fold), which llhttp takes into the value, framing headers included, where a
    ** proxy may read it otherwise (RFC 9112 5.2 allows a 400). */
    int fold;
    if (p->hpos == H_VALUE) {
        fold = off != p->value_end;
    } else {
        uint64_t from = p->name_end > p->base_off ? p->name_end : p->base_off;
        fold = p->lf_after_name ||
               (off > from && memchr(p->base + (from - p->base_off), '\n', off - from) != NULL);
    }
    if (fold)
        return refuse_why(p, 400, at, "a header line folded onto the next (obs-fold)");
    if (p->hpos != H_VALUE) {
        p->hdr[p->nhdr - 1].value_off = p->head_len;
        p->hpos = H_VALUE;
    }
    p->value_end = off + len;
    return head_append(p, at, len, 0);
}

static int cb_header_value_complete(llhttp_t *l)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->phase != P_HEAD)
        return 0;
    if (p->hpos != H_VALUE) /* an empty value has no data callback */
        p->hdr[p->nhdr - 1].value_off = p->head_len;
    p->hdr[p->nhdr - 1].value_len = p->head_len - p->hdr[p->nhdr - 1].value_off;
    p->hpos = H_NONE;
    return head_terminate(p);
}

static const lh_header_t *find_header(const lh_request_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

/* 1 if every Transfer-Encoding header lists only "chunked" (llhttp checks that it is last
** and that it comes once): a body in gzip or any other coding would be read as plain. */
static int only_chunked(const lh_request_t *r)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, "transfer-encoding") != 0)
            continue;
        const char *v = r->headers[i].value, *end = v + r->headers[i].value_len;
        while (v < end) {
            const char *comma = memchr(v, ',', (size_t)(end - v));
            const char *e = comma != NULL ? comma : end;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            const char *t = e;
            while (t > v && (t[-1] == ' ' || t[-1] == '\t'))
                t--;
            if (t > v && !((size_t)(t - v) == 7 && strncasecmp(v, "chunked", 7) == 0))
                return 0;
            v = comma != NULL ? comma + 1 : end;
        }
    }
    return 1;
}

static int cb_headers_complete(llhttp_t *l)
{
    lh_request_parser_t *p = parser_of(l);
    lh_request_t *r = &p->req;

    /* the path, without the query, after the url in the head buffer */
    size_t plen = 0;
    while (plen < p->url_len && p->head[plen] != '?' && p->head[plen] != '#')
        plen++;
    size_t path_off = p->head_len;
    if (head_grow(p, plen + 1, NULL, 0) != 0) /* a copy: the url counted once already */
        return -1;
    memcpy(p->head + p->head_len, p->head, plen); /* after the reserve: it may move head */
    p->head_len += plen;
    p->head[p->head_len++] = '\0';

    if (p->nhdr > p->headers_cap) {
        lh_header_t *h = realloc(p->headers, p->nhdr * sizeof(*h));
        if (h == NULL)
            return refuse(p, 500, NULL);
        held(p, p->headers_cap * sizeof(*h), p->nhdr * sizeof(*h));
        p->headers = h, p->headers_cap = p->nhdr;
    }
    for (size_t i = 0; i < p->nhdr; i++) {
        p->headers[i].name = p->head + p->hdr[i].name_off;
        p->headers[i].name_len = p->hdr[i].name_len;
        p->headers[i].value = p->head + p->hdr[i].value_off;
        p->headers[i].value_len = p->hdr[i].value_len;
    }
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->method = method_of(l->method);
    r->method_name = llhttp_method_name((llhttp_method_t)l->method);
    r->url = p->head;
    r->url_len = p->url_len;
    r->path = p->head + path_off;
    r->path_len = plen;
    r->headers = p->headers;
    r->nheaders = p->nhdr;
    r->keep_alive = llhttp_should_keep_alive(l) && !l->upgrade;
    r->remote[0] = '\0';
    r->https = 0;
    r->host = NULL;
    r->host_len = 0;
    r->received_ns = uv_hrtime();
    r->received_at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;

    p->has_body = (l->flags & F_CHUNKED) || ((l->flags & F_CONTENT_LENGTH) && l->content_length);
    p->announced = (l->flags & F_CONTENT_LENGTH) ? l->content_length : 0;
    const lh_header_t *expect = find_header(r, "expect");
    r->expect_continue = p->has_body && expect != NULL && expect->value_len == 12 &&
                         strncasecmp(expect->value, "100-continue", 12) == 0;
    if (!only_chunked(r))
        return refuse_why(p, 501, NULL, "a transfer coding other than chunked");
    if ((l->flags & F_CONTENT_LENGTH) && l->content_length > p->max_body)
        return refuse(p, 413, NULL);
    p->phase = P_BODY;
    p->event = LH_PARSE_HEAD;
    return HPE_PAUSED; /* the owner looks at the head before the body is read */
}

static int cb_body(llhttp_t *l, const char *at, size_t len)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->skip_body)
        return 0;
    if (p->body_len + len > p->max_body)
        return refuse(p, 413, at + (p->max_body - p->body_len));
    if (p->body_len + len + 1 > p->body_cap) {
        size_t cap = p->body_cap ? p->body_cap : 4096;
        if (p->announced + 1 > cap)
            cap = (size_t)p->announced + 1; /* all of it at once */
        while (cap < p->body_len + len + 1)
            cap *= 2;
        char *b = realloc(p->body, cap);
        if (b == NULL)
            return refuse(p, 500, NULL);
        held(p, p->body_cap, cap);
        p->body = b, p->body_cap = cap;
    }
    memcpy(p->body + p->body_len, at, len);
    p->body_len += len;
    return 0;
}

static int cb_message_complete(llhttp_t *l)
{
    lh_request_parser_t *p = parser_of(l);
    if (p->body == NULL) {
        if ((p->body = malloc(64)) == NULL)
            return refuse(p, 500, NULL);
        held(p, 0, 64);
        p->body_cap = 64;
    }
    p->body[p->body_len] = '\0';
    if (!p->skip_body) {
        p->req.body = p->body;
        p->req.body_len = p->body_len;
        p->req.body_owner = p;
    }
    p->phase = P_BETWEEN;
    p->event = LH_PARSE_DONE;
    return HPE_PAUSED; /* one request at a time: the owner answers it before the next */
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
        s.on_version_complete = cb_version_complete;
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

/* ------------------------------------------------------------------ the parser */

lh_request_parser_t *lh_request_parser_new(uint64_t max_header, uint64_t max_body)
{
    lh_request_parser_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    llhttp_init(&p->llhttp, HTTP_REQUEST, parser_settings());
    p->llhttp.data = p;
    p->max_header = max_header;
    p->max_body = max_body;
    p->req.method_name = "";
    return p;
}

/* Frees the buffers; the request, whose pointers went into them, is emptied. */
static void drop_buffers(lh_request_parser_t *p)
{
    held(p,
         p->head_cap + p->hdr_cap * sizeof(*p->hdr) + p->headers_cap * sizeof(*p->headers) +
             p->body_cap,
         0);
    free(p->head);
    free(p->hdr);
    free(p->headers);
    free(p->body);
    p->head = NULL, p->head_cap = p->head_len = p->url_len = 0;
    p->hdr = NULL, p->hdr_cap = p->nhdr = 0;
    p->headers = NULL, p->headers_cap = 0;
    p->body = NULL, p->body_cap = p->body_len = 0;
    memset(&p->req, 0, sizeof(p->req));
    p->req.method = LH_METHOD_OTHER;
    p->req.method_name = "";
}

void lh_request_parser_free(lh_request_parser_t *p)
{
    if (p == NULL)
        return;
    drop_buffers(p);
    free(p);
}

void lh_request_parser_account(lh_request_parser_t *p, int64_t *buffered)
{
    assert(p->bytes == 0); /* counted from no buffer on */
    p->buffered = buffered;
}

void lh_request_parser_idle(lh_request_parser_t *p)
{
    if (p->phase == P_BETWEEN)
        drop_buffers(p);
}

static void set_reason(lh_request_parser_t *p)
{
    switch (p->error.status) {
    case 413:
        snprintf(p->reason, sizeof(p->reason), "body larger than the limit of %llu bytes",
                 (unsigned long long)p->max_body);
        break;
    case 431:
        snprintf(p->reason, sizeof(p->reason),
                 "request line and headers larger than the limit of %llu bytes",
                 (unsigned long long)p->max_header);
        break;
    case 500:
        snprintf(p->reason, sizeof(p->reason), "out of memory");
        break;
    case 501:
        snprintf(p->reason, sizeof(p->reason), "not implemented: %s", p->why);
        break;
    default: {
        const char *why = p->why != NULL ? p->why : llhttp_get_error_reason(&p->llhttp);
        if (why == NULL)
            why = llhttp_errno_name(llhttp_get_errno(&p->llhttp));
        p->error.status = 400;
        snprintf(p->reason, sizeof(p->reason), "malformed HTTP request: %s", why);
        break;
    }
    }
    p->error.reason = p->reason;
}

/* The request is refused (refuse() set the status, and maybe the offset). */
static void feed_failed(lh_request_parser_t *p)
{
    p->phase = P_ERROR;
    p->event = LH_PARSE_ERROR;
    set_reason(p);
}

lh_parse_result_t lh_request_parser_feed(lh_request_parser_t *p, const char *data, size_t len,
                                         size_t *used)
{
    if (p->phase == P_ERROR) {
        *used = 0;
        return LH_PARSE_ERROR;
    }
    if (p->phase == P_UPGRADED) { /* not HTTP: dropped */
        *used = len;
        return LH_PARSE_MORE;
    }
    if (data == NULL) /* llhttp wants a pointer even for no bytes */
        data = "";
    p->event = LH_PARSE_MORE;
    p->base = data;
    size_t n = 0;
    for (;;) {
        if (p->line_end_due && n < len) {
            if (data[n] != '\r') {
                refuse_why(p, 400, data + n, "the request line does not end in CRLF");
                feed_failed(p);
                break;
            }
            p->line_end_due = 0;
        }
        /* A head is fed no more bytes than it has room for: llhttp hands a span to its
        ** callback (where the room is checked) only when the span or the feed ends, so a
        ** bad byte later in a long span would else be found first, and the same bytes
        ** would get 400 or 431 as TCP cut them. */
        size_t lim = len - n;
        if ((p->phase == P_BETWEEN || p->phase == P_HEAD) && p->max_header > 0) {
            /* a value's NUL comes with the byte after its line end, from this feed */
            int nul_due = p->hpos == H_VALUE || p->hpos == H_COLON;
            uint64_t used_room = p->phase == P_HEAD ? p->head_len + (uint64_t)nul_due : 0;
            uint64_t room = used_room < p->max_header ? p->max_header - used_room : 1;
            if (room < lim)
                lim = (size_t)room;
        }
        llhttp_errno_t err = llhttp_execute(&p->llhttp, data + n, lim);
        const char *pos = llhttp_get_error_pos(&p->llhttp);
        size_t at = err == HPE_OK || pos == NULL ? n + lim : (size_t)(pos - data);
        if (err == HPE_PAUSED && p->line_end_due && p->event == LH_PARSE_MORE) {
            llhttp_resume(&p->llhttp); /* at the version's end: look at the next byte */
            n = at;
            if (n < len)
                continue;
            break; /* the next feed begins with it */
        }
        n = at;
        switch (err) {
        case HPE_OK:
            if (n < len)
                continue; /* a head fed up to its room: the rest */
            break;
        case HPE_PAUSED: /* at a head or a request complete: the callbacks set p->event */
            llhttp_resume(&p->llhttp);
            /* llhttp takes a bare LF for the empty line that ends the head, too */
            if (p->event == LH_PARSE_HEAD && (n >= 2 ? data[n - 2] : p->last_byte) != '\r') {
                refuse_why(p, 400, data + n - 1, "the head does not end in an empty line (CRLF)");
                feed_failed(p);
            }
            break;
        case HPE_PAUSED_UPGRADE:
            p->phase = P_UPGRADED;
            n = len;
            break;
        default:
            if (!p->offset_set)
                p->error.offset = p->base_off + n;
            feed_failed(p);
            break;
        }
        break;
    }
    if (p->phase == P_HEAD && p->hpos == H_COLON && !p->lf_after_name) {
        /* the value may begin in a later feed: what came after the name here counts too */
        uint64_t from = p->name_end > p->base_off ? p->name_end : p->base_off;
        size_t i = (size_t)(from - p->base_off);
        p->lf_after_name = i < n && memchr(data + i, '\n', n - i) != NULL;
    }
    if (n > 0)
        p->last_byte = data[n - 1];
    p->base_off += n;
    *used = n;
    return p->event;
}

lh_request_t *lh_request_parser_request(lh_request_parser_t *p)
{
    return &p->req;
}

char *lh_request_take_body(lh_request_t *req)
{
    lh_request_parser_t *p = req->body_owner;
    if (p == NULL || req->body != p->body)
        return NULL;
    req->body_owner = NULL;
    held(p, p->body_cap, 0);
    p->body = NULL;
    p->body_cap = 0;
    return req->body;
}

void lh_request_parser_skip_body(lh_request_parser_t *p)
{
    p->skip_body = 1;
}

int lh_request_parser_started(const lh_request_parser_t *p)
{
    return p->phase == P_HEAD || p->phase == P_BODY;
}

int lh_request_parser_body_pending(const lh_request_parser_t *p)
{
    return p->phase == P_BODY && p->has_body;
}

const char *lh_request_parser_path(const lh_request_parser_t *p, size_t *len)
{
    if (p->req.path != NULL) {
        *len = p->req.path_len;
        return p->req.path;
    }
    /* the head so far: the url starts the buffer */
    size_t n = 0;
    while (n < p->url_len && n < p->head_len && p->head[n] != '?' && p->head[n] != '#')
        n++;
    *len = n;
    return n ? p->head : "";
}

const lh_request_error_t *lh_request_parser_error(const lh_request_parser_t *p)
{
    return &p->error;
}
