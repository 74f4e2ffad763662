#include "http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "list.h"
#include "log.h"

struct lh_http_s {
    lh_transport_t base; /* first: lh_http_transport */
    uv_loop_t *loop;     /* borrowed */
    CURLM *multi;        /* owned; NULL until the first request (start_curl) */
    int global;          /* curl_global_init done */
    uv_timer_t timer;
    struct curl_s *active; /* requests in flight */
};

/* One request in flight: the curl side of a lh_http_req_t (its priv). */
typedef struct curl_s {
    lh_http_req_t *req;         /* borrowed: the request owns this */
    CURL *easy;                 /* owned */
    struct curl_slist *headers; /* owned; NULL or the request headers */
    char errbuf[CURL_ERROR_SIZE];
    int too_large; /* the body passed max_size */
    struct curl_s *prev, *next;
} curl_t;

/* One per socket curl watches; freed in its close callback. */
typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    lh_http_t *http;
} sock_t;

static void xfer_free(lh_http_t *h, curl_t *c)
{
    curl_multi_remove_handle(h->multi, c->easy);
    LH_LIST_REMOVE(h->active, c);
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    c->req->priv = NULL;
    c->req->started = 0;
    free(c);
}

/* What a failed transfer means, in the words every transport uses. */
static void set_error(lh_http_req_t *req, CURLcode result, const curl_t *c)
{
    switch (result) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        req->error = LH_HTTP_RESOLVE;
        break;
    case CURLE_COULDNT_CONNECT:
        req->error = LH_HTTP_CONNECT;
        break;
    case CURLE_OPERATION_TIMEDOUT:
        req->error = LH_HTTP_TIMEOUT;
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
        req->error = LH_HTTP_TLS_VERIFY;
        break;
    case CURLE_SSL_CONNECT_ERROR:
        req->error = LH_HTTP_TLS_HANDSHAKE;
        break;
    case CURLE_SSL_CACERT_BADFILE:
        req->error = LH_HTTP_TLS_CA_FILE;
        break;
    default:
        req->error =
            result == CURLE_WRITE_ERROR && c->too_large ? LH_HTTP_TOO_LARGE : LH_HTTP_OTHER;
        req->cause = curl_easy_strerror(result);
        break;
    }
    if (req->error != LH_HTTP_TOO_LARGE)
        snprintf(req->detail, sizeof(req->detail), "%s", c->errbuf);
}

static void check_done(lh_http_t *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_t *c = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg is invalid after remove_handle */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
        lh_http_req_t *req = c->req;
        if (result == CURLE_OK)
            curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
        else
            set_error(req, result, c);
        xfer_free(h, c);
        req->done(req);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_t *s = p->data;
    lh_http_t *h = s->http;
    int running, flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(h->multi, s->fd, flags, &running);
    check_done(h);
}

static void on_timeout(uv_timer_t *t)
{
    lh_http_t *h = t->data;
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static void sock_close_cb(uv_handle_t *handle)
{
    free(handle->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    lh_http_t *h = userp;
    sock_t *s = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, sock_close_cb);
            curl_multi_assign(h->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        if ((s = calloc(1, sizeof(*s))) == NULL)
            return -1;
        if (uv_poll_init_socket(h->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->http = h;
        s->poll.data = s;
        curl_multi_assign(h->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static int on_timer_change(CURLM *multi, long timeout_ms, void *userp)
{
    lh_http_t *h = userp;
    (void)multi;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else /* 0 means at once: never call curl from inside its own callback */
        uv_timer_start(&h->timer, on_timeout, timeout_ms == 0 ? 1 : (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *userp)
{
    curl_t *c = userp;
    lh_http_req_t *req = c->req;
    size_t len = size * n;
    if (req->resp_len + len > req->max_size)
        c->too_large = 1;
    /* a short count makes curl stop with CURLE_WRITE_ERROR */
    return lh_http_buf_append(&req->resp, &req->resp_len, &req->resp_cap, p, len, req->max_size)
               ? 0
               : len;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
    curl_t *c = userp;
    lh_http_req_t *req = c->req;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        req->head_len = 0; /* a new response (after 100 Continue or a redirect) */
    /* headers have no business being larger than 1 MiB */
    return lh_http_buf_append(&req->resp_head, &req->head_len, &req->head_cap, p, len, 1024 * 1024)
               ? 0
               : len;
}

/* curl takes 0 ms as "no timeout": anything under a millisecond is one; past 1e7 s is
** as good as forever (and keeps the conversion defined) */
static long timeout_ms(double seconds)
{
    double ms = seconds * 1000;
    return ms < 1 ? 1L : ms > 1e10 ? 10000000000L : (long)ms;
}

static int add_header(curl_t *c, const char *line)
{
    struct curl_slist *l = curl_slist_append(c->headers, line);
    if (l == NULL)
        return -1;
    c->headers = l;
    return 0;
}

/* The request's options on a new easy handle, with luahook's defaults (no signals, error
** buffer, body and header collection, http/https only, a user agent). */
static int setup(curl_t *c, const lh_http_req_t *req)
{
    CURL *e = c->easy;
    int failed = 0, has_ctype = 0;
    failed |= curl_easy_setopt(e, CURLOPT_PRIVATE, c) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_WRITEDATA, c) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_HEADERDATA, c) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_USERAGENT, "luahook/" LH_VERSION) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK;
    const char *method = req->method;
    if (strcmp(method, "GET") == 0 && req->body == NULL)
        failed |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    else if (strcmp(method, "HEAD") == 0)
        failed |= curl_easy_setopt(e, CURLOPT_NOBODY, 1L) != CURLE_OK;
    else if (strcmp(method, "POST") != 0)
        failed |= curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    for (size_t i = 0; i < req->nheaders; i++) {
        const lh_http_header_t *hd = &req->headers[i];
        size_t n = strlen(hd->name) + strlen(hd->value) + 3;
        char *line = malloc(n);
        if (line == NULL)
            return -1;
        if (strcasecmp(hd->name, "content-type") == 0)
            has_ctype = 1;
        /* curl sends "Name;" as a header with an empty value */
        if (hd->value[0] == '\0')
            snprintf(line, n, "%s;", hd->name);
        else
            snprintf(line, n, "%s: %s", hd->name, hd->value);
        failed |= add_header(c, line);
        free(line);
    }
    if (req->body != NULL) {
        failed |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len) != CURLE_OK;
        failed |= curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body) != CURLE_OK;
        if (req->json_body && !has_ctype)
            failed |= add_header(c, "Content-Type: application/json");
        /* curl's Expect: 100-continue costs a round trip, or a second with some servers */
        failed |= add_header(c, "Expect:");
    }
    if (c->headers != NULL)
        failed |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms(req->timeout)) != CURLE_OK;
    failed |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms(req->connect_timeout)) !=
              CURLE_OK;
    if (req->insecure) {
        failed |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK;
        failed |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
    }
    if (req->ca_file != NULL)
        failed |= curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file) != CURLE_OK;
    if (req->follow) {
        failed |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK;
        failed |= curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L) != CURLE_OK;
    }
    return failed ? -1 : 0;
}

/* libcurl (and the TLS and other libraries it starts) is started at the first request: a
** server whose handlers never call out does not carry it (about 2 MB of resident pages). */
static int start_curl(lh_http_t *h)
{
    if (h->multi != NULL)
        return 0;
    if (!h->global && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    h->global = 1;
    if ((h->multi = curl_multi_init()) == NULL)
        return -1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return 0;
}

static int curl_start(lh_transport_t *tp, lh_http_req_t *req)
{
    lh_http_t *h = (lh_http_t *)tp;
    curl_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->req = req;
    if (start_curl(h) != 0 || (c->easy = curl_easy_init()) == NULL || setup(c, req) != 0 ||
        curl_multi_add_handle(h->multi, c->easy) != CURLM_OK) {
        curl_easy_cleanup(c->easy);
        curl_slist_free_all(c->headers);
        free(c);
        return -1;
    }
    req->priv = c;
    LH_LIST_PUSH(h->active, c);
    return 0;
}

static void curl_cancel(lh_transport_t *tp, lh_http_req_t *req)
{
    if (req->priv != NULL)
        xfer_free((lh_http_t *)tp, req->priv);
}

lh_http_t *lh_http_new(uv_loop_t *loop)
{
    lh_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base.start = curl_start;
    h->base.cancel = curl_cancel;
    h->loop = loop;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    return h;
}

lh_transport_t *lh_http_transport(lh_http_t *h)
{
    return h ? &h->base : NULL;
}

static void http_close_cb(uv_handle_t *handle)
{
    free(handle->data);
}

void lh_http_free(lh_http_t *h)
{
    if (h == NULL)
        return;
    while (h->active != NULL)
        xfer_free(h, h->active);
    /* closes the connection cache; its sockets come back through CURL_POLL_REMOVE */
    if (h->multi != NULL)
        curl_multi_cleanup(h->multi);
    if (h->global)
        curl_global_cleanup();
    uv_close((uv_handle_t *)&h->timer, http_close_cb);
}

/* {====================================================== requests (transport.h) */

lh_http_req_t *lh_http_req_new(void)
{
    return calloc(1, sizeof(lh_http_req_t));
}

int lh_transport_start(lh_transport_t *tp, lh_http_req_t *req, lh_http_done_cb done, void *data)
{
    req->done = done;
    req->data = data;
    req->transport = tp;
    if (tp->start(tp, req) != 0)
        return -1;
    req->started = 1;
    return 0;
}

void lh_http_req_free(lh_http_req_t *req)
{
    if (req == NULL)
        return;
    if (req->started)
        req->transport->cancel(req->transport, req);
    for (size_t i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->headers);
    free(req->url);
    free(req->body);
    free(req->ca_file);
    free(req->resp);
    free(req->resp_head);
    free(req);
}

int lh_http_buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t limit)
{
    if (*len + n > limit)
        return -1;
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (nb == NULL)
            return -1;
        *buf = nb, *cap = ncap;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
    return 0;
}

/* }====================================================== */
