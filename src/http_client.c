#include "http_client.h"

#include <stdlib.h>
#include <string.h>

#include "list.h"
#include "log.h"

struct lh_http_s {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    lh_http_req_t *active;
    int closing;
};

/* One per socket curl watches; freed in its close callback. */
typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    lh_http_t *http;
} sock_t;

static void check_done(lh_http_t *h)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        lh_http_req_t *req = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg is invalid after remove_handle */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
        curl_multi_remove_handle(h->multi, easy);
        req->started = 0;
        LH_LIST_REMOVE(h->active, req);
        req->result = result;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &req->status);
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

lh_http_t *lh_http_new(uv_loop_t *loop)
{
    lh_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    if ((h->multi = curl_multi_init()) == NULL) {
        free(h);
        return NULL;
    }
    h->loop = loop;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer_change);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    return h;
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
        lh_http_req_free(h->active);
    /* closes the connection cache; its sockets come back through CURL_POLL_REMOVE */
    curl_multi_cleanup(h->multi);
    uv_close((uv_handle_t *)&h->timer, http_close_cb);
}

/* Appends n bytes to a growing, NUL-terminated buffer. Returns 0, or -1 when out of
** memory or when it would pass `limit`. */
static int buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n, size_t limit)
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

static size_t on_body(char *p, size_t size, size_t n, void *userp)
{
    lh_http_req_t *req = userp;
    size_t len = size * n;
    if (req->resp_len + len > req->max_size)
        req->too_large = 1;
    /* a short count makes curl stop with CURLE_WRITE_ERROR */
    return buf_append(&req->resp, &req->resp_len, &req->resp_cap, p, len, req->max_size) ? 0 : len;
}

static size_t on_header(char *p, size_t size, size_t n, void *userp)
{
    lh_http_req_t *req = userp;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        req->head_len = 0; /* a new response (after 100 Continue or a redirect) */
    /* headers have no business being larger than 1 MiB */
    return buf_append(&req->resp_head, &req->head_len, &req->head_cap, p, len, 1024 * 1024) ? 0
                                                                                            : len;
}

lh_http_req_t *lh_http_req_new(lh_http_t *h, size_t max_size)
{
    lh_http_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    if ((req->easy = curl_easy_init()) == NULL) {
        free(req);
        return NULL;
    }
    req->http = h;
    req->max_size = max_size;
    CURL *e = req->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "luahook/" LH_VERSION);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    return req;
}

int lh_http_req_start(lh_http_req_t *req, lh_http_done_cb done, void *data)
{
    lh_http_t *h = req->http;
    req->done = done;
    req->data = data;
    if (curl_multi_add_handle(h->multi, req->easy) != CURLM_OK)
        return -1;
    req->started = 1;
    LH_LIST_PUSH(h->active, req);
    return 0;
}

void lh_http_req_free(lh_http_req_t *req)
{
    if (req == NULL)
        return;
    if (req->started) {
        lh_http_t *h = req->http;
        curl_multi_remove_handle(h->multi, req->easy);
        LH_LIST_REMOVE(h->active, req);
    }
    curl_easy_cleanup(req->easy);
    curl_slist_free_all(req->headers);
    free(req->body);
    free(req->resp);
    free(req->resp_head);
    free(req);
}
