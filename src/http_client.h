/*
** http_client — outbound HTTP on the loop: one libcurl multi handle driven by libuv
** (sockets through uv_poll, curl's timer through a uv_timer), as in curl's multi-uv.c.
** Knows nothing of Lua: lib_http builds requests and turns answers into Lua values.
*/
#ifndef LH_HTTP_CLIENT_H
#define LH_HTTP_CLIENT_H

#include <stddef.h>

#include <curl/curl.h>
#include <uv.h>

typedef struct lh_http_s lh_http_t;
typedef struct lh_http_req_s lh_http_req_t;

/** The request ended (answer or failure). The request is the caller's to free. */
typedef void (*lh_http_done_cb)(lh_http_req_t *req);

struct lh_http_req_s {
    lh_http_t *http;            /* borrowed */
    CURL *easy;                 /* owned; set the request's own options on it */
    struct curl_slist *headers; /* owned; NULL or the request headers */
    char *body;                 /* owned; the request body (may be NULL) */
    size_t body_len;
    size_t max_size; /* largest response body accepted */
    /* the outcome */
    CURLcode result;
    long status;
    int too_large; /* the body passed max_size */
    char *resp;    /* owned; the response body, NUL-terminated */
    size_t resp_len, resp_cap;
    char *resp_head; /* owned; header lines of the final response, CRLF-separated */
    size_t head_len, head_cap;
    char errbuf[CURL_ERROR_SIZE];
    lh_http_done_cb done;
    void *data; /* for `done` */
    int started;
    lh_http_req_t *prev, *next; /* in flight */
};

/** A client for `loop`; NULL when curl cannot start. */
lh_http_t *lh_http_new(uv_loop_t *loop);

/** Cancels what is in flight (their callbacks never run; the requests are freed), closes
 *  the handles; the memory goes in their close callbacks. NULL does nothing. */
void lh_http_free(lh_http_t *h);

/** A request with luahook's defaults set (no signals, error buffer, body and header
 *  collection, http/https only, a user agent). NULL on memory failure. */
lh_http_req_t *lh_http_req_new(lh_http_t *h, size_t max_size);

/** Starts `req`; `done` runs exactly once, later. Returns 0, or -1 (then `done` never
 *  runs and `req` is still the caller's). */
int lh_http_req_start(lh_http_req_t *req, lh_http_done_cb done, void *data);

/** Frees a request; one in flight is cancelled first (its `done` never runs). */
void lh_http_req_free(lh_http_req_t *req);

#endif
