#include "ingest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "console.h"
#include "dispatch.h"
#include "log.h"
#include "reject.h"

static const char json_type[] = "application/json";

static int path_is(const lh_request_t *r, const char *p)
{
    size_t n = strlen(p);
    return r->path_len == n && memcmp(r->path, p, n) == 0;
}

/* Constant time in the secret's content: every byte is compared whatever differs. */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* The value may be "Token SECRET", "Bearer SECRET" or the bare SECRET: Label Studio's
** header value is free text, and operators paste the secret alone. Both readings are
** compared, every time, so the time taken says nothing about which one matched. */
int lh_ingest_token_ok(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token), skip = 0;
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    if (len > 6 && strncasecmp(v, "Token", 5) == 0 && (v[5] == ' ' || v[5] == '\t'))
        skip = 5;
    else if (len > 7 && strncasecmp(v, "Bearer", 6) == 0 && (v[6] == ' ' || v[6] == '\t'))
        skip = 6;
    /* RFC 7235 allows any run of spaces (1*SP) after the scheme; tabs cost nothing more */
    while (skip > 0 && skip < len && (v[skip] == ' ' || v[skip] == '\t'))
        skip++;
    int prefixed = skip > 0 && same_secret(v + skip, len - skip, token, tlen);
    int bare = same_secret(v, len, token, tlen);
    return prefixed | bare;
}

static void rejected(lh_app_t *app, lh_conn_t *c, const lh_request_t *r, int status,
                     lh_reject_t reason)
{
    app->metrics.rejected[reason]++;
    if (lh_log_enabled(LH_WARN)) {
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        lh_field_t f[] = {
            LH_FIELD_NUM("status", st),
            LH_FIELD("reason", lh_metrics_reject_name(reason)),
            LH_FIELD("remote", r->remote[0] ? r->remote : c->remote),
            LH_FIELD("method", r->method_name),
            LH_FIELDN("path", r->path, r->path_len),
        };
        lh_reject_log(app, f, 5);
    }
}

static void answer_json(lh_conn_t *c, int status, const char *extra, const char *body)
{
    lh_conn_respond(c, status, extra, json_type, body, strlen(body));
}

/* under /-/: with the console's headers (no caching, no sniffing, the CSP) */
static void answer_own(lh_conn_t *c, int status, const char *extra, const char *body)
{
    lh_console_respond(c, status, extra, json_type, body, strlen(body));
}

static int secret_ok(const lh_config_t *cfg, const lh_request_t *r)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcmp(r->headers[i].name, cfg->auth_header) == 0)
            return lh_ingest_token_ok(r->headers[i].value, r->headers[i].value_len, cfg->token);
    return 0;
}

/* With a secret configured, a request without it is answered 401 here: 1 if so. */
static int refuse_secret(lh_app_t *app, lh_conn_t *c, const lh_request_t *r)
{
    const lh_config_t *cfg = app->cfg;
    if (cfg->token == NULL)
        return 0;
    const lh_header_t *h = NULL;
    for (size_t i = 0; i < r->nheaders && h == NULL; i++)
        if (strcmp(r->headers[i].name, cfg->auth_header) == 0)
            h = &r->headers[i];
    if (h != NULL && lh_ingest_token_ok(h->value, h->value_len, cfg->token))
        return 0;
    char body[160];
    rejected(app, c, r, 401, LH_REJECT_UNAUTHORIZED);
    snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"%s secret in the %s header\"}",
             h == NULL ? "missing" : "wrong", cfg->auth_header);
    if (lh_api_owns(r))
        answer_own(c, 401, NULL, body);
    else
        answer_json(c, 401, NULL, body);
    return 1;
}

static int on_head(void *data, lh_conn_t *c, lh_request_t *r)
{
    lh_app_t *app = data;
    const lh_config_t *cfg = app->cfg;
    int is_health = path_is(r, "/healthz"), is_metrics = path_is(r, "/metrics");

    lh_console_client(app, c, r); /* ctx.remote and the logs: a trusted proxy's client */

    if (is_health || is_metrics) {
        /* HEAD: the same head, no body (conn drops it), as RFC 9110 asks of every GET */
        if (r->method != LH_METHOD_GET && r->method != LH_METHOD_HEAD) {
            rejected(app, c, r, 405, LH_REJECT_METHOD);
            answer_json(c, 405, "Allow: GET, HEAD\r\n",
                        "{\"ok\":false,\"error\":\"method not allowed: use GET or HEAD\"}");
            return 1;
        }
        if (is_health) {
            answer_json(c, 200, NULL,
                        app->stopping ? "{\"ok\":true,\"stopping\":true}" : "{\"ok\":true}");
            return 1;
        }
        size_t len = 0;
        const char *text = lh_metrics_text(&app->metrics, &len); /* cached while unchanged */
        if (text == NULL) {
            answer_json(c, 500, NULL, "{\"ok\":false,\"error\":\"out of memory\"}");
            return 1;
        }
        lh_conn_respond(c, 200, NULL, "text/plain; version=0.0.4; charset=utf-8", text, len);
        return 1;
    }
    /* luahook's own: never an event; only with a secret, and behind it */
    if (lh_api_owns(r)) {
        if (cfg->token == NULL) {
            answer_own(c, 404, NULL,
                       "{\"ok\":false,\"error\":\"/-/ (luahook's console and API) is served "
                       "only to a server started with --token\"}");
            return 1;
        }
        if (lh_console_owns(r))
            return lh_console_head(app, c, r);
        /* the token (scripts), else the session cookie (the console's page, with CSRF) */
        if (secret_ok(cfg, r))
            return lh_api_head(app, c, r, NULL);
        const lh_session_t *s = NULL;
        int rc = lh_console_api_auth(app, c, r, &s);
        if (rc >= 0)
            return rc == 1 || lh_api_head(app, c, r, s);
        return refuse_secret(app, c, r);
    }
    if (r->method != LH_METHOD_POST) {
        rejected(app, c, r, 405, LH_REJECT_METHOD);
        answer_json(c, 405, "Allow: POST\r\n",
                    "{\"ok\":false,\"error\":\"method not allowed: events are POSTed\"}");
        return 1;
    }
    return refuse_secret(app, c, r);
}

static void reply_to_conn(void *data, int status, const char *extra, const char *body, size_t len)
{
    lh_conn_t *c = data;
    if (lh_conn_is_open(c))
        lh_conn_respond(c, status, extra, json_type, body, len);
    lh_conn_unref(c);
}

static void on_request(void *data, lh_conn_t *c, lh_request_t *r)
{
    lh_app_t *app = data;
    if (lh_console_owns(r)) {
        lh_console_request(app, c, r);
        return;
    }
    if (lh_api_owns(r)) {
        lh_api_request(app, c, r);
        return;
    }
    lh_conn_ref(c); /* the answer may come after the connection closed */
    lh_dispatch_event(app, r, r->remote[0] ? r->remote : c->remote, reply_to_conn, c);
}

lh_server_handler_t lh_ingest_handler(lh_app_t *app)
{
    lh_server_handler_t h = {on_head, on_request, app};
    return h;
}
