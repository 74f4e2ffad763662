/*
** transport — where an outbound HTTP request goes once lib_http built it: libcurl's multi
** on the loop in serve and fire (http_client.c), the test's mocks in luahook test
** (testing.c). lib_http checks the arguments, builds the request and turns the outcome
** into Lua values and error texts; a transport only moves the request and fills in the
** outcome, so every transport's failures read alike. Knows nothing of Lua.
*/
#ifndef LH_TRANSPORT_H
#define LH_TRANSPORT_H

#include <stddef.h>

typedef struct lh_transport_s lh_transport_t;
typedef struct lh_http_req_s lh_http_req_t;

/** Why a request got no answer; the kind a handler can branch on (`nil, err, kind`). */
typedef enum {
    LH_HTTP_OK = 0,        /* an answer (any status) */
    LH_HTTP_RESOLVE,       /* "resolve": the host name did not resolve */
    LH_HTTP_CONNECT,       /* "connect": refused or unreachable */
    LH_HTTP_TIMEOUT,       /* "timeout": no complete answer within `timeout` */
    LH_HTTP_TLS_VERIFY,    /* "tls": the certificate was not trusted */
    LH_HTTP_TLS_HANDSHAKE, /* "tls" */
    LH_HTTP_TLS_CA_FILE,   /* "tls": ca_file could not be read */
    LH_HTTP_TOO_LARGE,     /* "too_large": the body passed max_size */
    LH_HTTP_OTHER,         /* "other": `cause` says what */
    LH_HTTP_RAISE,         /* luahook test: `detail` is raised in the caller (a broken mock) */
} lh_http_error_t;

/** The request ended (answer or failure). The request is the caller's to free. */
typedef void (*lh_http_done_cb)(lh_http_req_t *req);

typedef struct {
    char *name; /* owned, as given */
    char *value;
} lh_http_header_t;

struct lh_http_req_s {
    void *data; /* for `done` */
    lh_http_done_cb done;
    /* the request, set by lib_http (all owned) */
    char method[32];
    char *url; /* with the query */
    lh_http_header_t *headers;
    size_t nheaders;
    char *body; /* NULL: none */
    size_t body_len;
    int json_body; /* body is json = v: Content-Type defaults to application/json */
    double timeout, connect_timeout;
    int insecure, follow;
    char *ca_file;   /* NULL: the system's */
    size_t max_size; /* largest response body accepted */
    /* the outcome, set by the transport before `done` */
    lh_http_error_t error;
    const char *cause; /* static text; LH_HTTP_OTHER's cause */
    char detail[256];  /* the transport's own words; may be empty */
    long status;
    char *resp; /* owned; the response body, NUL-terminated */
    size_t resp_len, resp_cap;
    char *resp_head; /* owned; "Name: value" lines of the final response, CRLF-separated */
    size_t head_len, head_cap;
    /* the transport's own */
    lh_transport_t *transport; /* borrowed; set by lh_transport_start */
    int started;               /* in flight: set by lh_transport_start, cleared before `done` */
    void *priv;
};

struct lh_transport_s {
    /** Starts `req`; `req->done` runs exactly once, later. Returns 0, or -1 (then `done`
     *  never runs and `req` is still the caller's). */
    int (*start)(lh_transport_t *tp, lh_http_req_t *req);
    /** Stops a started request whose `done` has not run; `done` never runs. */
    void (*cancel)(lh_transport_t *tp, lh_http_req_t *req);
};

/** A request with nothing set. NULL when out of memory. */
lh_http_req_t *lh_http_req_new(void);

/** Starts `req` on `tp` (see lh_transport_t.start). */
int lh_transport_start(lh_transport_t *tp, lh_http_req_t *req, lh_http_done_cb done, void *data);

/** Frees a request; one in flight is cancelled first (its `done` never runs). NULL does
 *  nothing. */
void lh_http_req_free(lh_http_req_t *req);

/** Appends n bytes to a growing NUL-terminated buffer (the response body or head).
 *  Returns 0, or -1 when out of memory or when it would pass `limit`. */
int lh_http_buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t limit);

#endif
