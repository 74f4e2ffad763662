#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "json.h"
#include "log.h"
#include "task.h"
#include "vm.h"

typedef struct event_s event_t;

/* One handler run of an event: the task's `data`. */
typedef struct {
    event_t *e;
    size_t index; /* in run order */
} run_t;

/* One accepted event, alive until its last handler ended and its answer was given. */
struct event_s {
    lh_app_t *app;
    lh_action_stats_t *stats; /* borrowed from app->metrics */
    char id[24];
    char *action; /* owned */
    int running;  /* handlers not ended yet */
    int nhandlers;
    int nfailed;
    uint64_t start_ns;
    lh_reply_cb reply; /* NULL once answered */
    void *reply_data;
    char *failures; /* owned: JSON array members for --ack handled */
    size_t failures_len, failures_cap;
    size_t failures_whole;   /* failures_len after the last whole member */
    int failures_broken;     /* an allocation failed: members after it are left out */
    run_t *runs;             /* owned: one per handler */
    const lh_route_t *route; /* borrowed from the VM */
    lh_run_cb observe;       /* NULL: nobody watches the runs */
    void *observe_data;
};

typedef struct {
    const char *body;
    size_t len;
    char *err;
    size_t errlen;
    int rc;
} decode_args_t;

/* Under lua_pcall: memory exhaustion while building the tables is an error, not a panic. */
static int decode_body(lua_State *L)
{
    decode_args_t *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    a->rc = lh_json_decode(L, a->body, a->len, a->err, a->errlen);
    return a->rc == 0 ? 1 : 0;
}

static void reply_error(lh_app_t *app, const lh_request_t *req, const char *remote,
                        lh_reply_cb reply, void *data, int status, lh_reject_t reason,
                        const char *msg, const char *extra)
{
    char body[512];
    size_t j = 0;
    app->metrics.rejected[reason]++;
    j += (size_t)snprintf(body, sizeof(body), "{\"ok\":false,\"error\":\"");
    j += lh_json_escape(body + j, sizeof(body) - j - 3, msg, strlen(msg));
    j += (size_t)snprintf(body + j, sizeof(body) - j, "\"}");
    if (lh_log_enabled(LH_WARN)) {
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        lh_field_t f[] = {
            LH_FIELD_NUM("status", st), LH_FIELD("reason", lh_metrics_reject_name(reason)),
            LH_FIELD("remote", remote), LH_FIELDN("path", req->path, req->path_len),
            LH_FIELD("error", msg),
        };
        lh_log_fields(LH_WARN, "rejected", f, 5);
    }
    reply(data, status, extra, body, j);
}

/* Appends to the --ack handled failure list; `escape` writes s as JSON string content. */
static void failures_put(event_t *e, const char *s, int escape)
{
    size_t n = strlen(s), need = escape ? LH_JSON_ESCAPED_MAX(n) : n;
    if (e->failures_broken)
        return;
    if (e->failures_len + need + 1 > e->failures_cap) {
        size_t cap = (e->failures_cap + need + 64) * 2;
        char *p = realloc(e->failures, cap);
        if (p == NULL) { /* the answer still says which handlers failed by count */
            e->failures_broken = 1;
            return;
        }
        e->failures = p, e->failures_cap = cap;
    }
    if (escape) {
        e->failures_len += lh_json_escape(e->failures + e->failures_len, need, s, n);
    } else {
        memcpy(e->failures + e->failures_len, s, n);
        e->failures_len += n;
    }
}

static void event_free(event_t *e)
{
    free(e->action);
    free(e->failures);
    free(e->runs);
    free(e);
}

static void event_ended(event_t *e)
{
    double ms = (double)(uv_hrtime() - e->start_ns) / 1e6;
    lh_level_t level = e->nhandlers ? LH_INFO : LH_DEBUG;
    if (lh_log_enabled(level)) {
        char n[16], d[32];
        snprintf(n, sizeof(n), "%d", e->nhandlers);
        snprintf(d, sizeof(d), "%.3f", ms);
        lh_field_t f[] = {
            LH_FIELD("id", e->id),
            LH_FIELD("action", e->action),
            LH_FIELD_NUM("handlers", n),
            LH_FIELD("outcome", e->nhandlers == 0 ? "none"
                                : e->nfailed      ? "error"
                                                  : "ok"),
            LH_FIELD_NUM("duration_ms", d),
        };
        lh_log_fields(level, "event", f, 5);
    }
    if (e->reply != NULL) {
        char *body;
        int len;
        if (e->nfailed == 0) {
            char buf[96];
            len = snprintf(buf, sizeof(buf), "{\"ok\":true,\"id\":\"%s\",\"handlers\":%d}", e->id,
                           e->nhandlers);
            e->reply(e->reply_data, 200, NULL, buf, (size_t)len);
        } else {
            size_t cap = e->failures_whole + 128;
            body = malloc(cap);
            if (body == NULL) {
                static const char oom[] = "{\"ok\":false,\"error\":\"out of memory\"}";
                e->reply(e->reply_data, 500, NULL, oom, sizeof(oom) - 1);
            } else {
                len = snprintf(
                    body, cap, "{\"ok\":false,\"id\":\"%s\",\"handlers\":%d,\"failed\":[%.*s]}",
                    e->id, e->nhandlers, (int)e->failures_whole, e->failures ? e->failures : "");
                e->reply(e->reply_data, 500, NULL, body, (size_t)len);
                free(body);
            }
        }
        e->reply = NULL;
    }
    event_free(e);
}

static void on_task_done(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    run_t *run = t->data;
    event_t *e = run->e;
    double secs = lh_task_seconds(t);

    lh_metrics_handler_done(e->stats, outcome, secs);
    if (e->observe != NULL)
        e->observe(e->observe_data, e->id, run->index, t->label, outcome, err);
    if (e->app->on_handler_done != NULL)
        e->app->on_handler_done(e->app->observer_data, t->label, outcome, err, secs);
    if (outcome != LH_OUTCOME_OK) {
        e->nfailed++;
        if (lh_log_enabled(LH_ERROR)) {
            char line[16];
            snprintf(line, sizeof(line), "%d", t->line);
            lh_field_t f[] = {
                LH_FIELD("id", e->id),
                LH_FIELD("action", e->action),
                LH_FIELD("script", t->script),
                LH_FIELD_NUM("line", line),
                LH_FIELD("outcome", lh_metrics_outcome_name(outcome)),
                LH_FIELD("error", err),
                LH_FIELD("traceback", tb ? tb : ""),
            };
            lh_log_fields(LH_ERROR, "handler failed", f, 7);
        }
        if (e->reply != NULL) { /* --ack handled: the answer lists the failures */
            failures_put(e, e->nfailed > 1 ? ",{\"handler\":\"" : "{\"handler\":\"", 0);
            failures_put(e, t->label, 1);
            failures_put(e, "\",\"error\":\"", 0);
            failures_put(e, err, 1);
            failures_put(e, "\"}", 0);
            if (!e->failures_broken)
                e->failures_whole = e->failures_len;
        }
    }
    if (--e->running == 0)
        event_ended(e);
}

/* Delivery ids: a random per-process prefix and a counter — unique across restarts and
** instances, ordered within one. */
static void next_id(lh_app_t *app, char *out, size_t len)
{
    if (app->id_prefix == 0) {
        uint32_t r = 0;
        if (uv_random(NULL, NULL, &r, sizeof(r), 0, NULL) != 0 || r == 0)
            r = (uint32_t)(uv_hrtime() ^ (uint64_t)uv_os_getpid()) | 1u;
        app->id_prefix = r;
    }
    snprintf(out, len, "%08x%012llx", app->id_prefix, (unsigned long long)++app->id_counter);
}

/* ctx: what the handler knows of the delivery. One table per event, shared by its handlers. */
static void push_ctx(lua_State *L, const event_t *e, const lh_request_t *req, const char *remote)
{
    lua_createtable(L, 0, 7); /* ctx */
    lua_pushstring(L, e->id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, e->action);
    lua_setfield(L, -2, "action");
    lua_pushlstring(L, req->path, req->path_len);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, remote);
    lua_setfield(L, -2, "remote");
    lua_pushnumber(L, req->received_at);
    lua_setfield(L, -2, "received_at");
    lua_pushlstring(L, req->body, req->body_len);
    lua_setfield(L, -2, "body");
    lua_createtable(L, 0, (int)req->nheaders); /* ctx headers */
    for (size_t i = 0; i < req->nheaders; i++) {
        const lh_header_t *h = &req->headers[i];
        lua_pushlstring(L, h->name, h->name_len); /* ctx headers k */
        /* a repeated header keeps every value, joined as HTTP allows */
        if (lua_rawget(L, -2) == LUA_TSTRING) { /* ctx headers old */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3); /* ctx headers joined */
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len); /* ctx headers v */
        }
        lua_pushlstring(L, h->name, h->name_len);
        lua_insert(L, -2); /* ctx headers k v */
        lua_rawset(L, -3); /* ctx headers */
    }
    lua_setfield(L, -2, "headers"); /* ctx */
}

static void start_failed(lh_vm_t *vm, event_t *e, size_t index)
{
    const lh_handler_t *h = &vm->handlers[e->route->handlers[index]];
    lh_task_t fake = {.vm = vm,
                      .label = h->label,
                      .script = h->script,
                      .line = h->line,
                      .data = &e->runs[index],
                      .start_ns = lh_clock_now(vm->clock)};
    on_task_done(&fake, LH_OUTCOME_MEMORY, "could not start the handler: not enough memory", NULL);
}

typedef struct {
    lh_vm_t *vm;
    event_t *e;
    const lh_route_t *route;
    const lh_request_t *req;
    const char *remote;
    size_t started; /* handler runs started so far */
} start_t;

/* Under lua_pcall: building ctx and the coroutines allocates on the host's side, and a
** real out-of-memory there must fail the runs, not abort the server. Stack: a ev. */
static int start_handlers(lua_State *L)
{
    start_t *a = lua_touserdata(L, 1);
    push_ctx(L, a->e, a->req, a->remote); /* a ev ctx */
    for (; a->started < a->route->n; a->started++) {
        const lh_handler_t *h = &a->vm->handlers[a->route->handlers[a->started]];
        if (lh_task_spawn(a->vm, h->fn_ref, h->label, h->script, h->line, 2, on_task_done,
                          &a->e->runs[a->started], a->e->id, a->e->action) != 0)
            start_failed(a->vm, a->e, a->started);
    }
    return 0;
}

void lh_dispatch_event(lh_app_t *app, const lh_request_t *req, const char *remote,
                       lh_reply_cb reply, void *data)
{
    lh_dispatch_event_observed(app, req, remote, reply, data, NULL, NULL);
}

void lh_dispatch_event_observed(lh_app_t *app, const lh_request_t *req, const char *remote,
                                lh_reply_cb reply, void *data, lh_run_cb observe,
                                void *observe_data)
{
    lh_vm_t *vm = app->vm;
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    char err[256];
    decode_args_t args = {req->body, req->body_len, err, sizeof(err), 0};

    err[0] = '\0';
    lua_pushcfunction(L, decode_body);
    lua_pushlightuserdata(L, &args);
    int saved_limit = vm->limit_on;
    vm->limit_on = 1;               /* a body too big for --memory-limit is refused, not a crash */
    int st = lua_pcall(L, 1, 1, 0); /* ev | errobj */
    vm->limit_on = saved_limit;
    if (st != LUA_OK) {
        lua_settop(L, top);
        lua_gc(L, LUA_GCCOLLECT);
        reply_error(app, req, remote, reply, data, 503, LH_REJECT_OVERLOAD,
                    "not enough memory to decode the body (--memory-limit)", "Retry-After: 1\r\n");
        return;
    }
    if (args.rc != 0) {
        lua_settop(L, top);
        reply_error(app, req, remote, reply, data, 400, LH_REJECT_INVALID_JSON, err, NULL);
        return;
    }
    /* an object, not an array: both decode to tables, so look at the text */
    size_t i = 0;
    while (i < req->body_len && (req->body[i] == ' ' || req->body[i] == '\t' ||
                                 req->body[i] == '\r' || req->body[i] == '\n'))
        i++;
    if (!lua_istable(L, -1) || req->body[i] != '{') {
        const char *what = lua_istable(L, -1) ? "an array" : luaL_typename(L, -1);
        if (lua_touserdata(L, -1) == NULL && lua_type(L, -1) == LUA_TLIGHTUSERDATA)
            what = "null";
        snprintf(err, sizeof(err),
                 "the body is not a JSON object (it is %s%s): an event is "
                 "an object with a string \"action\"",
                 what, lua_istable(L, -1) ? "" : " value");
        lua_settop(L, top);
        reply_error(app, req, remote, reply, data, 400, LH_REJECT_NOT_OBJECT, err, NULL);
        return;
    }
    int ev = lua_gettop(L);
    if (app->action_override != NULL) { /* fire --action: the body's bytes stay as sent */
        lua_pushstring(L, app->action_override);
        lua_setfield(L, ev, "action");
    }
    int at = lua_getfield(L, ev, "action"); /* ev action */
    size_t alen;
    const char *action = lua_tolstring(L, -1, &alen);
    if (at != LUA_TSTRING) {
        if (at == LUA_TNIL)
            snprintf(err, sizeof(err),
                     "the event has no \"action\": an event is an object "
                     "with a string \"action\"");
        else
            snprintf(err, sizeof(err), "\"action\" must be a string, not %s",
                     at == LUA_TLIGHTUSERDATA ? "null" : lua_typename(L, at));
        lua_settop(L, top);
        reply_error(app, req, remote, reply, data, 400, LH_REJECT_NO_ACTION, err, NULL);
        return;
    }
    const lh_route_t *route = lh_vm_route(vm); /* ev action */
    if (route->n > 0 && (uint64_t)app->tasks + route->n > app->cfg->max_pending) {
        snprintf(err, sizeof(err), "too many handler runs in flight (%d, --max-pending %llu)",
                 app->tasks, (unsigned long long)app->cfg->max_pending);
        lua_settop(L, top);
        reply_error(app, req, remote, reply, data, 503, LH_REJECT_OVERLOAD, err,
                    "Retry-After: 1\r\n");
        return;
    }
    event_t *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->action = malloc(alen + 1)) == NULL ||
        (e->runs = calloc(route->n + 1, sizeof(*e->runs))) == NULL) {
        if (e != NULL)
            free(e->action);
        free(e);
        lua_settop(L, top);
        reply_error(app, req, remote, reply, data, 503, LH_REJECT_OVERLOAD, "out of memory",
                    "Retry-After: 1\r\n");
        return;
    }
    memcpy(e->action, action, alen + 1);
    e->app = app;
    e->route = route;
    e->observe = observe;
    e->observe_data = observe_data;
    for (size_t r = 0; r < route->n; r++)
        e->runs[r] = (run_t){e, r};
    e->stats = lh_metrics_action(&app->metrics, action, alen);
    e->stats->received++;
    e->nhandlers = (int)route->n;
    e->running = e->nhandlers + 1; /* +1: held while the tasks start */
    e->start_ns = req->received_ns;
    next_id(app, e->id, sizeof(e->id));
    e->reply = reply;
    e->reply_data = data;

    if (app->cfg->ack == LH_ACK_ACCEPT || route->n == 0) {
        /* answered before any handler runs: neither their I/O nor their CPU delays it */
        char buf[96];
        int len = snprintf(buf, sizeof(buf), "{\"ok\":true,\"id\":\"%s\",\"handlers\":%d}", e->id,
                           e->nhandlers);
        reply(data, 200, NULL, buf, (size_t)len);
        e->reply = NULL;
    }
    if (route->n > 0) {
        start_t a = {vm, e, route, req, remote, 0};
        lua_pop(L, 1); /* ev */
        lua_pushcfunction(L, start_handlers);
        lua_insert(L, -2); /* start ev */
        lua_pushlightuserdata(L, &a);
        lua_insert(L, -2); /* start a ev */
        if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
            /* out of memory building ctx or a coroutine: the runs not started fail, so
            ** no handler goes missing silently */
            for (; a.started < route->n; a.started++)
                start_failed(vm, e, a.started);
        }
    }
    lua_settop(L, top);
    if (--e->running == 0)
        event_ended(e);
}
