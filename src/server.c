#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reject.h"

/* A connection that cannot be taken on: accepted anyway, so that the loop does not spin
** on it, and closed at once. */
static void drop_connection(lh_server_t *s, uv_stream_t *l)
{
    uv_tcp_t *t = malloc(sizeof(*t));
    if (t == NULL)
        return;
    if (uv_tcp_init(s->app->loop, t) != 0) {
        free(t);
        return;
    }
    (void)uv_accept(l, (uv_stream_t *)t); /* closed either way */
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* Refused and closing connections keep no new one out, but each still holds a descriptor
** and its last answers: when as many are closing as may be live, the oldest goes, so a
** client that makes every connection close at once cannot hold more than that. */
static void make_room(lh_server_t *s)
{
    lh_conn_t *oldest = NULL;
    uint64_t closing = 0;
    for (lh_conn_t *c = s->conns; c != NULL; c = c->next) /* newest first */
        if (lh_conn_is_closing(c))
            closing++, oldest = c;
    if (oldest != NULL && closing >= s->app->cfg->max_connections)
        lh_conn_close(oldest);
}

static void on_connection(uv_stream_t *l, int status)
{
    lh_server_t *s = l->data;
    if (status < 0) {
        LH_LOG(LH_WARN, "accept failed: %s", uv_strerror(status));
        return;
    }
    int r = 0;
    lh_conn_t *c = lh_conn_new(s, &r);
    if (c == NULL) {
        LH_LOG(LH_ERROR, "cannot take a connection: %s", uv_strerror(r));
        drop_connection(s, l);
        return;
    }
    if ((r = uv_accept(l, (uv_stream_t *)&c->tcp)) != 0) {
        LH_LOG(LH_WARN, "accept failed: %s", uv_strerror(r));
        lh_conn_close(c);
        return;
    }
    /* refused and closing connections linger a little (their last answer, FIN, then
    ** what the client still sends is dropped): they must not keep a new one out */
    uint64_t max = s->app->cfg->max_connections;
    if (s->nconns - s->nclosing > max || s->app->stopping) {
        static const char body[] = "{\"ok\":false,\"error\":\"too many connections, retry later\"}";
        s->app->metrics.rejected[LH_REJECT_OVERLOAD]++;
        if (lh_log_enabled(LH_WARN)) { /* a flood of these is rate-limited like the rest */
            char open[24], lim[24];
            snprintf(open, sizeof(open), "%zu", s->nconns - s->nclosing - 1);
            snprintf(lim, sizeof(lim), "%llu", (unsigned long long)max);
            lh_field_t f[] = {
                LH_FIELD_NUM("status", s->nclosing >= max ? "0" : "503"),
                LH_FIELD("reason", lh_metrics_reject_name(LH_REJECT_OVERLOAD)),
                LH_FIELD_NUM("connections", open),
                LH_FIELD_NUM("max_connections", lim),
            };
            lh_reject_log(s->app, f, 4);
        }
        if (s->nclosing >= max) { /* a flood: no answer, no linger, no memory held */
            lh_conn_close(c);
            return;
        }
        lh_conn_respond_close(c, 503, "Retry-After: 1\r\n", "application/json", body,
                              sizeof(body) - 1);
        return;
    }
    if (s->nclosing >= max) /* counts those closed already too: look closer */
        make_room(s);
    lh_conn_start(c); /* on failure it is closed, and logged */
}

int lh_server_start(lh_server_t *s, lh_app_t *app, const lh_server_handler_t *h)
{
    const lh_config_t *cfg = app->cfg;
    struct sockaddr_storage addr;
    int r;

    memset(s, 0, sizeof(*s));
    s->app = app;
    s->handler = *h;
    if (strchr(cfg->listen_host, ':') != NULL)
        r = uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&addr);
    else
        r = uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&addr);
    if (r != 0) {
        LH_LOG(LH_ERROR, "cannot listen on %s:%d: not an IP address", cfg->listen_host,
               cfg->listen_port);
        return r;
    }
    if ((r = uv_tcp_init(app->loop, &s->listener)) != 0)
        return r;
    s->listener.data = s;
    if ((r = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) != 0 ||
        (r = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection)) != 0) {
        LH_LOG(LH_ERROR, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
               uv_strerror(r));
        uv_close((uv_handle_t *)&s->listener, NULL);
        return r;
    }
    s->listening = 1;

    char ip[INET6_ADDRSTRLEN] = "?", address[INET6_ADDRSTRLEN + 16];
    int len = sizeof(addr);
    if ((r = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len)) != 0) {
        LH_LOG(LH_ERROR, "cannot listen on %s:%d: %s", cfg->listen_host, cfg->listen_port,
               uv_strerror(r));
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, NULL);
        return r;
    }
    if (addr.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&addr, ip, sizeof(ip));
        snprintf(address, sizeof(address), "[%s]:%d", ip,
                 ntohs(((struct sockaddr_in6 *)&addr)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&addr, ip, sizeof(ip));
        snprintf(address, sizeof(address), "%s:%d", ip,
                 ntohs(((struct sockaddr_in *)&addr)->sin_port));
    }
    /* the start-up line: what an operator needs to know about this process at once */
    char pid[24];
    snprintf(pid, sizeof(pid), "%ld", (long)getpid());
    lh_field_t f[3 + LH_FIELDSET_MAX] = {LH_FIELD("version", LH_VERSION), LH_FIELD_NUM("pid", pid),
                                         LH_FIELD("address", address)};
    memcpy(f + 3, app->startup.fields, app->startup.n * sizeof(f[0]));
    lh_log_fields(LH_INFO, "listening", f, 3 + app->startup.n);
    /* Label Studio's only authentication is the shared secret */
    int loopback = strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0;
    if (cfg->token == NULL && !loopback)
        LH_LOG(LH_WARN,
               "listening on %s without --token: anyone who reaches this port can "
               "post events",
               address);
    return 0;
}

void lh_server_stop(lh_server_t *s, void (*drained)(lh_server_t *s))
{
    if (s->listening) {
        s->listening = 0;
        uv_close((uv_handle_t *)&s->listener, NULL);
    }
    s->on_drained = drained;
    lh_conn_t *c = s->conns;
    while (c != NULL) {
        lh_conn_t *next = c->next; /* close may unlink c, never before its close callback */
        lh_conn_shutdown(c);
        c = next;
    }
    if (s->nconns == 0 && drained != NULL)
        drained(s);
}

void lh_server_close_all(lh_server_t *s)
{
    for (lh_conn_t *c = s->conns; c != NULL; c = c->next)
        lh_conn_close(c);
}
