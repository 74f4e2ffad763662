#include "console.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "embedded.h"
#include "log.h"
#include "proxy.h"
#include "urlencoded.h"

#define COOKIE      "lh_session"
#define MAX_DELAYED 1024 /* sign-in answers waiting on a timer, every address together */
#define MAX_FORM    8192 /* a sign-in or sign-out form is a few dozen bytes */
#define HTML        "text/html; charset=utf-8"
#define TEXT        "text/plain; charset=utf-8"
#define OFF_MESSAGE "console is off (--console off)\n"

typedef struct delayed_s delayed_t;
struct delayed_s { /* a sign-in answered later: the slow-down of wrong tokens */
    uv_timer_t timer;
    lh_console_t *con;
    lh_conn_t *c; /* a ref held until the close callback */
    int ok, https;
    delayed_t *prev, *next;
};

struct lh_console_s {
    lh_app_t *app; /* borrowed */
    lh_sessions_t sessions;
    lh_throttle_t throttle;
    uv_timer_t sweep; /* forgets quiet addresses, logs the bursts that ended */
    int sweep_open;
    delayed_t *delayed;
    size_t ndelayed;
    int closing;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* the slow-down's clock: monotonic, so that setting the wall clock back queues nothing */
static double mono_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

void lh_console_respond(lh_conn_t *c, int status, const char *extra, const char *ctype,
                        const char *body, size_t len)
{
    char head[1024];
    snprintf(head, sizeof(head), "%s%s", LH_CONSOLE_HEADERS, extra ? extra : "");
    lh_conn_respond(c, status, head, ctype, body, len);
}

static void text(lh_conn_t *c, int status, const char *extra, const char *msg)
{
    lh_console_respond(c, status, extra, TEXT, msg, strlen(msg));
}

static void json_error(lh_conn_t *c, int status, const char *msg)
{
    char body[512];
    /* the messages are ours: no quote or backslash to escape */
    snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s\"}", msg);
    lh_console_respond(c, status, NULL, "application/json", body, strlen(body));
}

static const lh_header_t *header(const lh_request_t *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

/* The last header `name`: of a proxy's X-Forwarded-*, the one the nearest proxy added (a
** client's own come before it). */
static const lh_header_t *last_header(const lh_request_t *r, const char *name)
{
    for (size_t i = r->nheaders; i-- > 0;)
        if (strcmp(r->headers[i].name, name) == 0)
            return &r->headers[i];
    return NULL;
}

/* The last entry of a comma list (the one the nearest proxy added), trimmed. */
static const char *last_entry(const lh_header_t *h, size_t *len)
{
    const char *v = h->value, *e = v + h->value_len;
    const char *s = e;
    while (s > v && s[-1] != ',')
        s--;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *len = (size_t)(e - s);
    return s;
}

/* ------------------------------------------------------------------ who is asking */

void lh_console_client(lh_app_t *app, const lh_conn_t *c, lh_request_t *r)
{
    const lh_config_t *cfg = app->cfg;
    const lh_header_t *host = header(r, "host");
    size_t rl = strnlen(c->remote, sizeof(r->remote) - 1); /* a copy, not a printf: per event */
    memcpy(r->remote, c->remote, rl);
    r->remote[rl] = '\0';
    r->host = host ? host->value : NULL;
    r->host_len = host ? host->value_len : 0;
    r->https = 0;
    if (cfg->ntrusted_proxies == 0)
        return;
    char peer[64];
    lh_proxy_strip_port(c->remote, peer, sizeof(peer));
    if (!lh_cidr_match(cfg->trusted_proxies, cfg->ntrusted_proxies, peer))
        return; /* anyone else's X-Forwarded-* mean nothing */
    /* the last 16 X-Forwarded-For: a client's own come first, and enough of them must not
    ** push out the one its proxy added (read right to left, as lh_proxy_client does) */
    const char *xff[16];
    size_t xlen[16], n = 0;
    for (size_t i = r->nheaders; i-- > 0 && n < 16;)
        if (strcmp(r->headers[i].name, "x-forwarded-for") == 0) {
            xff[n] = r->headers[i].value;
            xlen[n++] = r->headers[i].value_len;
        }
    for (size_t i = 0; i < n / 2; i++) { /* back to the headers' order */
        const char *v = xff[i];
        size_t l = xlen[i];
        xff[i] = xff[n - 1 - i], xlen[i] = xlen[n - 1 - i];
        xff[n - 1 - i] = v, xlen[n - 1 - i] = l;
    }
    char client[64];
    if (n > 0 && lh_proxy_client(cfg->trusted_proxies, cfg->ntrusted_proxies, peer, xff, xlen, n,
                                 client, sizeof(client)))
        snprintf(r->remote, sizeof(r->remote), "%s", client);
    const lh_header_t *proto = last_header(r, "x-forwarded-proto");
    size_t len;
    if (proto != NULL) {
        const char *v = last_entry(proto, &len);
        r->https = len == 5 && strncasecmp(v, "https", 5) == 0;
    }
    const lh_header_t *fhost = last_header(r, "x-forwarded-host");
    if (fhost != NULL) {
        r->host = last_entry(fhost, &len);
        r->host_len = len;
    }
}

/* An Origin, when present, names this server: "http(s)://" and the Host asked for; "https"
** when a trusted proxy said so (an http page is another origin, and anyone on the path can
** write one). */
static int same_origin(const lh_request_t *r)
{
    const lh_header_t *o = header(r, "origin");
    if (o == NULL)
        return 1;
    if (r->host == NULL)
        return 0;
    const char *v = o->value;
    size_t n = o->value_len, skip;
    if (n > 7 && strncasecmp(v, "http://", 7) == 0 && !r->https)
        skip = 7;
    else if (n > 8 && strncasecmp(v, "https://", 8) == 0)
        skip = 8;
    else
        return 0; /* "null" and the like: a sandboxed or opaque origin */
    return n - skip == r->host_len && strncasecmp(v + skip, r->host, r->host_len) == 0;
}

/* The value of the lh_session cookie, or NULL. */
static const char *session_cookie(const lh_request_t *r, size_t *len)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, "cookie") != 0)
            continue;
        const char *p = r->headers[i].value, *e = p + r->headers[i].value_len;
        while (p < e) {
            const char *semi = memchr(p, ';', (size_t)(e - p));
            const char *end = semi ? semi : e;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            size_t n = (size_t)(end - p);
            if (n > sizeof(COOKIE) && memcmp(p, COOKIE "=", sizeof(COOKIE)) == 0) {
                *len = n - sizeof(COOKIE);
                return p + sizeof(COOKIE);
            }
            p = semi ? semi + 1 : e;
        }
    }
    return NULL;
}

static const lh_session_t *session_of(lh_console_t *con, const lh_request_t *r)
{
    size_t len;
    const char *v = session_cookie(r, &len);
    return v ? lh_sessions_find(&con->sessions, v, len, now_s()) : NULL;
}

/* ------------------------------------------------------------------ forms */

/* The value of form field `name` in a urlencoded body, decoded into out (outlen bytes):
** its length, or -1 when absent, badly escaped or too long. */
static long form_field(const char *body, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        while (i + k < n && body[i + k] != '&')
            k++;
        const char *part = body + i;
        i += k + 1;
        if (k <= nl || part[nl] != '=' || memcmp(part, name, nl) != 0)
            continue;
        return lh_url_decode(part + nl + 1, k - nl - 1, out, outlen);
    }
    return -1;
}

/* ------------------------------------------------------------------ pages */

int lh_console_owns(const lh_request_t *r)
{
    return r->path_len >= 3 && memcmp(r->path, "/-/", 3) == 0 &&
           !(r->path_len >= 7 && memcmp(r->path, "/-/api/", 7) == 0);
}

static const char *type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", HTML},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
    };
    for (size_t i = 0; dot != NULL && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

/* console/NAME from the binary, or 404 */
static void serve_file(lh_conn_t *c, const char *name, size_t n)
{
    char path[128];
    const lh_embedded_t *f = NULL;
    const char *type = NULL;
    /* one plain name: no folder, no dot file, nothing but the files of console/ */
    if (n > 0 && n < 96 && name[0] != '.' && memchr(name, '/', n) == NULL &&
        memchr(name, '\\', n) == NULL) {
        snprintf(path, sizeof(path), "console/%.*s", (int)n, name);
        if ((type = type_of(path)) != NULL)
            f = lh_embedded_find(path);
    }
    if (f == NULL) {
        text(c, 404, NULL, "no such file\n");
        return;
    }
    lh_console_respond(c, 200, NULL, type, f->data, f->len);
}

static void serve_page(lh_conn_t *c, const char *file)
{
    serve_file(c, file, strlen(file));
}

static int is_get(const lh_request_t *r)
{
    return r->method == LH_METHOD_GET || r->method == LH_METHOD_HEAD;
}

static int path_is(const lh_request_t *r, const char *p)
{
    size_t n = strlen(p);
    return r->path_len == n && memcmp(r->path, p, n) == 0;
}

static lh_console_t *console_of(lh_app_t *app)
{
    return app->console;
}

int lh_console_head(lh_app_t *app, lh_conn_t *c, lh_request_t *r)
{
    lh_console_t *con = console_of(app);
    int signin = path_is(r, "/-/signin"), signout = path_is(r, "/-/signout");
    if (app->cfg->console_off) {
        text(c, 404, NULL, OFF_MESSAGE);
        return 1;
    }
    if (con == NULL) {
        text(c, 503, NULL, "the console is not running\n");
        return 1;
    }
    if (path_is(r, "/-/")) {
        if (!is_get(r))
            text(c, 405, "Allow: GET, HEAD\r\n", "method not allowed: use GET\n");
        else /* the page holds no data: its script asks the API, with the cookie */
            serve_page(c, session_of(con, r) != NULL ? "index.html" : "signin.html");
        return 1;
    }
    if (r->path_len > 10 && memcmp(r->path, "/-/static/", 10) == 0) {
        if (!is_get(r))
            text(c, 405, "Allow: GET, HEAD\r\n", "method not allowed: use GET\n");
        else
            serve_file(c, r->path + 10, r->path_len - 10);
        return 1;
    }
    if (signin && is_get(r)) {
        serve_page(c, "signin.html");
        return 1;
    }
    if (signin || signout) {
        if (r->method != LH_METHOD_POST) {
            text(c, 405, signin ? "Allow: GET, HEAD, POST\r\n" : "Allow: POST\r\n",
                 "method not allowed\n");
            return 1;
        }
        if (!same_origin(r)) {
            text(c, 403, NULL, "cross-origin form refused: its Origin is not this server\n");
            return 1;
        }
        const lh_header_t *cl = header(r, "content-length");
        if (cl != NULL && strtoull(cl->value, NULL, 10) > MAX_FORM) {
            text(c, 413, NULL, "a sign-in form is a few dozen bytes\n");
            return 1;
        }
        return 0; /* the form is read: lh_console_request */
    }
    text(c, 404, NULL, "no such page: the console is at /-/\n");
    return 1;
}

/* ------------------------------------------------------------------ sign-in */

static void answer_signin(lh_console_t *con, lh_conn_t *c, int ok, int https)
{
    if (!ok) { /* the page says so itself (signin.js reads failed=1): nothing put in HTML */
        text(c, 303, "Location: /-/signin?failed=1\r\n", "wrong token\n");
        return;
    }
    const lh_session_t *s = lh_sessions_new(&con->sessions, now_s());
    if (s == NULL) {
        text(c, 500, NULL, "no random bytes for a session: try again\n");
        return;
    }
    char extra[256];
    snprintf(extra, sizeof(extra),
             "Location: /-/\r\nSet-Cookie: " COOKIE
             "=%s; Path=/-/; HttpOnly; SameSite=Strict%s\r\n",
             s->id, https ? "; Secure" : "");
    text(c, 303, extra, "signed in\n");
}

static void delayed_close_cb(uv_handle_t *h)
{
    delayed_t *d = h->data;
    lh_conn_unref(d->c);
    free(d);
}

static void unlink_delayed(lh_console_t *con, delayed_t *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        con->delayed = d->next;
    if (d->next)
        d->next->prev = d->prev;
    con->ndelayed--;
}

static void on_delayed(uv_timer_t *t)
{
    delayed_t *d = t->data;
    unlink_delayed(d->con, d);
    if (lh_conn_is_open(d->c))
        answer_signin(d->con, d->c, d->ok, d->https);
    uv_close((uv_handle_t *)&d->timer, delayed_close_cb);
}

static void log_burst(const lh_throttle_burst_t *b)
{
    char n[16], secs[32];
    snprintf(n, sizeof(n), "%u", b->fails);
    snprintf(secs, sizeof(secs), "%.1f", b->last - b->first);
    lh_field_t f[] = {LH_FIELD("remote", b->addr), LH_FIELD_NUM("wrong_tokens", n),
                      LH_FIELD_NUM("seconds", secs)};
    lh_log_fields(LH_WARN, "sign-in: a burst of wrong tokens, answers were slowed down", f, 3);
}

static void signin(lh_console_t *con, lh_conn_t *c, const lh_request_t *r)
{
    const lh_config_t *cfg = con->app->cfg;
    char token[4096], addr[64];
    long n = r->body ? form_field(r->body, r->body_len, "token", token, sizeof(token)) : -1;
    if (n < 0) {
        text(c, 400, NULL,
             "the sign-in form needs its field 'token' (application/x-www-form-urlencoded)\n");
        return;
    }
    char ip[64];
    lh_proxy_strip_port(r->remote, ip, sizeof(ip));
    lh_proxy_client_key(ip, addr, sizeof(addr));
    double now = mono_s();
    if (lh_throttle_refused(&con->throttle, addr, now)) {
        text(c, 429, "Retry-After: 60\r\n", "too many wrong tokens: try again in a minute\n");
        return;
    }
    int ok = lh_session_same(token, (size_t)n, cfg->token, strlen(cfg->token));
    memset(token, 0, sizeof(token));
    lh_throttle_burst_t ended;
    int has_ended;
    double wait = lh_throttle_attempt(&con->throttle, addr, ok, now, &ended, &has_ended);
    if (has_ended)
        log_burst(&ended);
    if (!ok && lh_log_enabled(LH_DEBUG)) { /* a burst is logged once, when it ends */
        lh_field_t f[] = {LH_FIELD("remote", addr)};
        lh_log_fields(LH_DEBUG, "sign-in: wrong token", f, 1);
    }
    if (wait <= 0) {
        answer_signin(con, c, ok, r->https);
        return;
    }
    if (con->closing) {
        text(c, 503, NULL, "the server is stopping\n");
        return;
    }
    if (con->ndelayed >= MAX_DELAYED) { /* many addresses at once: a bound on the timers */
        text(c, 429, "Retry-After: 60\r\n", "too many wrong tokens: try again in a minute\n");
        return;
    }
    delayed_t *d = calloc(1, sizeof(*d));
    if (d == NULL || uv_timer_init(con->app->loop, &d->timer) != 0) {
        free(d);
        text(c, 500, NULL, "out of memory\n");
        return;
    }
    d->timer.data = d;
    d->con = con;
    d->c = c;
    d->ok = ok;
    d->https = r->https;
    lh_conn_ref(c);
    d->next = con->delayed;
    if (d->next)
        d->next->prev = d;
    con->delayed = d;
    con->ndelayed++;
    uv_timer_start(&d->timer, on_delayed, (uint64_t)(wait * 1000 + 0.5), 0);
}

static void signout(lh_console_t *con, lh_conn_t *c, const lh_request_t *r)
{
    static const char clear[] = "Location: /-/\r\nSet-Cookie: " COOKIE
                                "=; Path=/-/; Max-Age=0; HttpOnly; SameSite=Strict\r\n";
    const lh_session_t *s = session_of(con, r);
    if (s == NULL) { /* nothing to end */
        text(c, 303, clear, "signed out\n");
        return;
    }
    const lh_header_t *h = header(r, "x-csrf-token");
    char csrf[128];
    long n = -1;
    if (h == NULL && r->body != NULL)
        n = form_field(r->body, r->body_len, "csrf", csrf, sizeof(csrf));
    int ok = h != NULL ? lh_session_csrf_ok(s, h->value, h->value_len)
                       : n >= 0 && lh_session_csrf_ok(s, csrf, (size_t)n);
    if (!ok) {
        text(c, 403, NULL,
             "sign-out needs the session's CSRF token (X-CSRF-Token, or the form field csrf)\n");
        return;
    }
    lh_sessions_end(&con->sessions, s);
    text(c, 303, clear, "signed out\n");
}

void lh_console_request(lh_app_t *app, lh_conn_t *c, lh_request_t *r)
{
    lh_console_t *con = console_of(app);
    if (path_is(r, "/-/signin"))
        signin(con, c, r);
    else
        signout(con, c, r);
}

/* ------------------------------------------------------------------ the API's cookie */

int lh_console_api_auth(lh_app_t *app, lh_conn_t *c, const lh_request_t *r,
                        const lh_session_t **out)
{
    lh_console_t *con = console_of(app);
    size_t len;
    const char *v = session_cookie(r, &len);
    if (v == NULL || con == NULL || app->cfg->console_off)
        return -1; /* --console off: no sign-in, so no session; the token is what is missing */
    const lh_session_t *s = lh_sessions_find(&con->sessions, v, len, now_s());
    if (s == NULL) {
        json_error(c, 401,
                   "the session ended (it expired, was signed out, or the server "
                   "restarted): sign in again at /-/");
        return 1;
    }
    if (!is_get(r)) {
        if (!same_origin(r)) {
            json_error(c, 403, "cross-origin request refused: its Origin is not this server");
            return 1;
        }
        const lh_header_t *h = header(r, "x-csrf-token");
        if (h == NULL || !lh_session_csrf_ok(s, h->value, h->value_len)) {
            json_error(c, 403,
                       h == NULL ? "missing X-CSRF-Token: read it from GET /-/api/session"
                                 : "wrong X-CSRF-Token: read it from GET /-/api/session");
            return 1;
        }
    }
    *out = s;
    return 0;
}

/* ------------------------------------------------------------------ life */

static void on_sweep(uv_timer_t *t)
{
    lh_console_t *con = t->data;
    lh_throttle_burst_t b;
    while (lh_throttle_sweep(&con->throttle, mono_s(), &b))
        log_burst(&b);
}

lh_console_t *lh_console_new(lh_app_t *app)
{
    lh_console_t *con = calloc(1, sizeof(*con));
    if (con == NULL)
        return NULL;
    con->app = app;
    if (lh_sessions_init(&con->sessions, LH_SESSION_MAX, LH_SESSION_TTL) != 0 ||
        lh_throttle_init(&con->throttle, LH_THROTTLE_MAX) != 0 ||
        uv_timer_init(app->loop, &con->sweep) != 0) {
        lh_sessions_dispose(&con->sessions);
        lh_throttle_dispose(&con->throttle);
        free(con);
        return NULL;
    }
    con->sweep_open = 1;
    con->sweep.data = con;
    uint64_t every = (uint64_t)(LH_THROTTLE_QUIET * 1000);
    uv_timer_start(&con->sweep, on_sweep, every, every);
    uv_unref((uv_handle_t *)&con->sweep); /* never what keeps the loop alive */
    return con;
}

void lh_console_close(lh_console_t *con)
{
    if (con == NULL || con->closing)
        return;
    con->closing = 1;
    if (con->sweep_open)
        uv_close((uv_handle_t *)&con->sweep, NULL);
    while (con->delayed != NULL) { /* stopping: told so now, not after their delay */
        delayed_t *d = con->delayed;
        unlink_delayed(con, d);
        if (lh_conn_is_open(d->c))
            text(d->c, 503, NULL, "the server is stopping\n");
        uv_close((uv_handle_t *)&d->timer, delayed_close_cb);
    }
}

void lh_console_free(lh_console_t *con)
{
    if (con == NULL)
        return;
    lh_sessions_dispose(&con->sessions);
    lh_throttle_dispose(&con->throttle);
    free(con);
}
