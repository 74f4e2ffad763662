/*
** request — an HTTP/1.1 request, and its assembly from bytes. The parser (llhttp, kept
** inside request.c) is fed whatever arrived, in pieces of any size; it stops at each
** complete head, each complete request and the first error, which carries the status
** to answer (400, 413, 431, 500, 501). Knows nothing of sockets, timers or Lua: conn feeds it
** from a socket, fire builds a request by hand, dispatch reads one.
*/
#ifndef LH_REQUEST_H
#define LH_REQUEST_H

#include <stddef.h>
#include <stdint.h>

/* The methods luahook tells apart; any other is LH_METHOD_OTHER (its name is in
** lh_request_t.method_name). */
typedef enum {
    LH_METHOD_OTHER = 0,
    LH_METHOD_GET,
    LH_METHOD_HEAD,
    LH_METHOD_POST,
    LH_METHOD_PUT,
    LH_METHOD_DELETE,
    LH_METHOD_PATCH,
    LH_METHOD_OPTIONS,
} lh_method_t;

typedef struct {
    const char *name; /* lower-case; NUL-terminated */
    const char *value;
    size_t name_len, value_len;
} lh_header_t;

/* A request. From a parser everything is borrowed from it: valid until the parser is fed
** again or freed (conn feeds it no more until this request is answered). */
typedef struct lh_request_s {
    lh_method_t method;
    const char *method_name; /* "POST", "PROPFIND", ...; "" until the head is complete */
    const char *path;        /* without the query; NUL-terminated */
    size_t path_len;
    const char *url; /* as sent */
    size_t url_len;
    lh_header_t *headers;
    size_t nheaders;
    char *body; /* NUL-terminated for convenience; may hold NULs; NULL until complete */
    size_t body_len;
    int keep_alive;      /* another request may follow on the connection (0 for an Upgrade) */
    int expect_continue; /* Expect: 100-continue with a body: the client waits for a 100 */
    /* who sent it, as believed (set on the head by ingest): the peer "ip:port", or the
    ** bare address a --trusted-proxy peer named in X-Forwarded-For; "" until then */
    char remote[64];
    int https;        /* a trusted proxy said X-Forwarded-Proto: https */
    const char *host; /* the Host asked for (a trusted proxy's X-Forwarded-Host); may be NULL */
    size_t host_len;
    uint64_t received_ns; /* uv_hrtime() when the head was complete */
    double received_at;   /* seconds since the epoch, same moment */
    void *body_owner;     /* the parser whose buffer `body` is; NULL: built by hand */
} lh_request_t;

typedef struct lh_request_parser_s lh_request_parser_t;

typedef enum {
    LH_PARSE_MORE = 0, /* every byte was used; no head or request completed */
    LH_PARSE_HEAD,     /* a head is complete (lh_request_parser_request); its body follows */
    LH_PARSE_DONE,     /* the request is complete, body included */
    LH_PARSE_ERROR,    /* lh_request_parser_error says why; the parser takes nothing more */
} lh_parse_result_t;

typedef struct {
    int status;         /* 400 malformed, 413 body too large, 431 head too large, 500 memory,
                        ** 501 a transfer coding other than chunked */
    const char *reason; /* for a person: "body larger than the limit of 1024 bytes" */
    uint64_t offset;    /* bytes of the stream (since the parser's first) accepted before the
                        ** refusal: for a limit, the offset of the first byte over it */
} lh_request_error_t;

/**
 * A parser for the requests of one connection. `max_header` bounds the request line and
 * headers as kept (url, names, values, one NUL each), `max_body` the body (a larger
 * Content-Length is refused on the head). NULL when out of memory.
 */
lh_request_parser_t *lh_request_parser_new(uint64_t max_header, uint64_t max_body);

/** Frees the parser and every request it assembled. NULL is a no-op. */
void lh_request_parser_free(lh_request_parser_t *p);

/** From now on `*buffered` counts this parser while it holds buffers (head, headers,
 *  body): 1 added when it allocates its first, taken off when it frees or hands over its
 *  last. Call it before the first feed. Borrowed: `buffered` must outlive the parser. */
void lh_request_parser_account(lh_request_parser_t *p, int64_t *buffered);

/**
 * Between two requests (none begun), frees the buffers so that an idle keep-alive
 * connection holds none; the next request allocates them again. The current request,
 * answered, is emptied: nothing may read it after this. A no-op in any other phase.
 */
void lh_request_parser_idle(lh_request_parser_t *p);

/**
 * Parses `data` up to the first head complete, request complete or error, and says which;
 * `*used` gets the bytes consumed (all of them for LH_PARSE_MORE). Feed the rest next,
 * after LH_PARSE_HEAD even when nothing is left (a request without a body then completes).
 * The previous request's memory is reused once the next one begins.
 */
lh_parse_result_t lh_request_parser_feed(lh_request_parser_t *p, const char *data, size_t len,
                                         size_t *used);

/** The current request: its head once LH_PARSE_HEAD was returned, all of it after DONE. */
lh_request_t *lh_request_parser_request(lh_request_parser_t *p);

/** After LH_PARSE_DONE: the body's buffer, handed over (the caller frees it; the parser
 *  starts another), so that a big body is never copied. NULL for a request built by hand or
 *  when taken already. */
char *lh_request_take_body(lh_request_t *req);

/** After LH_PARSE_HEAD: the body is read and dropped (the request was answered on its
 *  head); no LH_PARSE_ERROR for its size. */
void lh_request_parser_skip_body(lh_request_parser_t *p);

/** 1 while a request is begun and not complete (between its first byte and DONE). */
int lh_request_parser_started(const lh_request_parser_t *p);

/** 1 after LH_PARSE_HEAD while bytes of that request's body are still to come. */
int lh_request_parser_body_pending(const lh_request_parser_t *p);

/** The path of the current request as far as it arrived (for logs); `*len` may be 0. */
const char *lh_request_parser_path(const lh_request_parser_t *p, size_t *len);

/** After LH_PARSE_ERROR: why. */
const lh_request_error_t *lh_request_parser_error(const lh_request_parser_t *p);

#endif
