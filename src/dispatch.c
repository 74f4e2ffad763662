#include "dispatch.h"

#include <assert.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <uv.h>

#include "journal.h"
#include "json.h"
#include "log.h"
#include "reject.h"
#include "task.h"
#include "vm.h"

typedef enum {
    STAGE_DECODED = 0,
    STAGE_ADMITTED,
    STAGE_ACCEPTED, /* committed: it may run */
    STAGE_RUNNING,
} stage_t;

/* One event, from its decoding until its last handler ended and its answer was given. */
struct lh_event_s {
    lh_app_t *app;
    lh_vm_t *vm;              /* borrowed: the VM whose tables ev and ctx are */
    int ev_ref, ctx_ref;      /* registry refs in vm->L */
    const lh_route_t *route;  /* borrowed from vm */
    lh_action_stats_t *stats; /* borrowed from app->metrics; NULL before accept */
    stage_t stage;
    char id[24];  /* "" until accepted */
    char *action; /* owned; NUL-terminated (and may hold NULs) */
    size_t action_len;
    char *path; /* owned: for the "rejected" log line */
    char remote[64];
    int reserved; /* runs counted in app->admitted for this event */
    int running;  /* handlers not ended yet */
    int nhandlers;
    int nfailed;
    uint64_t start_ns;
    lh_reply_cb reply; /* NULL once answered */
    void *reply_data;
    const lh_dispatch_observer_t *observer; /* borrowed; may be NULL */
    char *failures;                         /* owned: JSON array members for --ack handled */
    size_t failures_len, failures_cap;
    size_t failures_whole; /* failures_len after the last whole member */
    int failures_broken;   /* an allocation failed: members after it are left out */
    /* the journal (serve with --state-dir) */
    int journal;               /* to be stored at accept */
    int64_t jid;               /* deliveries.id once stored; 0: not journaled */
    int attempt;               /* ctx.attempt */
    double run_started;        /* unix seconds, when its handlers started */
    int held;                  /* holds vm (vm->tasks) while the journal commits */
    lh_dispatch_accept_cb acb; /* while the journal commits */
    void *adata;
    lh_route_t own_route; /* a redelivered run: its one handler (counted in app->retrying) */
    int own_handler;
    int redelivered;
    struct big_s *big; /* owned: a big body's slices (NULL: decoded in one pass) */
    int has_project;   /* a big body's project.id, for the journal before its tables exist */
    int64_t project;
    /* a big body: its bytes in C memory, owned by a userdata (ctx.body is made from them on
    ** first read); NULL: ctx.body holds the body */
    const char *body;
    size_t body_len;
    int body_ref; /* registry ref to that userdata: the bytes live while the event does */
    /* a small event: the copy of its request's headers and body that ctx reads them from
    ** (ctx's __index upvalue, alive as ctx is); the journal reads it too, so it never makes
    ** ctx.headers or ctx.body itself */
    const struct req_copy_s *req;
};

/* ------------------------------------------------------------------ answers */

/*
** The one place an answer body is written. With `error`, a refusal:
** {"ok":false,"error":...}. Otherwise the event's outcome: {"ok":true,"id":..,"handlers":N}
** when no handler failed, else 500 {"ok":false,"id":..,"handlers":N,"failed":[...]}.
*/
static void answer(lh_reply_cb reply, void *data, int status, const char *extra,
                   const lh_event_t *e, const char *error)
{
    char buf[512];
    size_t len;
    if (reply == NULL)
        return;
    if (error != NULL) {
        len = (size_t)snprintf(buf, sizeof(buf), "{\"ok\":false,\"error\":\"");
        len += lh_json_escape_utf8(buf + len, sizeof(buf) - len - 3, error, strlen(error), NULL);
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "\"}");
    } else if (e->nfailed == 0) {
        /* the common answer, by hand: {"ok":true,"id":"ID","handlers":N} */
        static const char a[] = "{\"ok\":true,\"id\":\"", b[] = "\",\"handlers\":";
        size_t idlen = strlen(e->id);
        char num[16];
        size_t nlen = 0;
        unsigned v = e->nhandlers > 0 ? (unsigned)e->nhandlers : 0;
        do
            num[nlen++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        len = 0;
        memcpy(buf, a, sizeof(a) - 1), len += sizeof(a) - 1;
        memcpy(buf + len, e->id, idlen), len += idlen;
        memcpy(buf + len, b, sizeof(b) - 1), len += sizeof(b) - 1;
        while (nlen > 0)
            buf[len++] = num[--nlen];
        buf[len++] = '}';
    } else {
        size_t cap = e->failures_whole + 128;
        char *body = malloc(cap);
        if (body == NULL) {
            static const char oom[] = "{\"ok\":false,\"error\":\"out of memory\"}";
            reply(data, status, extra, oom, sizeof(oom) - 1);
            return;
        }
        len = (size_t)snprintf(
            body, cap, "{\"ok\":false,\"id\":\"%s\",\"handlers\":%d,\"failed\":[%.*s]}", e->id,
            e->nhandlers, (int)e->failures_whole, e->failures ? e->failures : "");
        reply(data, status, extra, body, len);
        free(body);
        return;
    }
    reply(data, status, extra, buf, len);
}

/* A refused request: counted, logged, answered. */
static void refuse_request(lh_app_t *app, const char *path, size_t path_len, const char *remote,
                           lh_reply_cb reply, void *data, int status, lh_reject_t reason,
                           const char *msg)
{
    app->metrics.rejected[reason]++;
    if (lh_log_enabled(LH_WARN)) {
        char st[8];
        snprintf(st, sizeof(st), "%d", status);
        lh_field_t f[] = {
            LH_FIELD_NUM("status", st), LH_FIELD("reason", lh_metrics_reject_name(reason)),
            LH_FIELD("remote", remote), LH_FIELDN("path", path, path_len),
            LH_FIELD("error", msg),
        };
        lh_reject_log(app, f, 5);
    }
    answer(reply, data, status, status == 503 ? "Retry-After: 1\r\n" : NULL, NULL, msg);
}

/* ------------------------------------------------------------------ the event */

struct big_s;
static void big_event_gone(lh_event_t *e);
static int big_holds(const lh_event_t *e);

static void event_free(lh_event_t *e)
{
    lua_State *L = e->vm->L;
    if (e->big != NULL)
        big_event_gone(e);
    e->app->admitted -= e->reserved;
    e->app->retrying -= e->redelivered;
    luaL_unref(L, LUA_REGISTRYINDEX, e->ev_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, e->ctx_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, e->body_ref);
    free(e->action);
    free(e->path);
    free(e->failures);
    free(e);
}

/* Refuses an event before it ran: answered, and gone. */
static void refuse(lh_event_t *e, int status, lh_reject_t reason, const char *msg)
{
    assert(e->stage < STAGE_RUNNING);
    refuse_request(e->app, e->path, strlen(e->path), e->remote, e->reply, e->reply_data, status,
                   reason, msg);
    e->reply = NULL;
    event_free(e);
}

const char *lh_dispatch_event_id(const lh_event_t *e)
{
    return e->id;
}

const char *lh_dispatch_event_action(const lh_event_t *e)
{
    return e->action;
}

/* ------------------------------------------------------------------ step 1: decode */

typedef struct {
    lh_event_t *e;
    const lh_dispatch_input_t *in;
    int rc;             /* 0: an event; else the refusal below */
    lh_reject_t reason; /* with status 400 */
    char err[256];
} decode_t;

/* A big body's bytes, in C memory: a 50 MB body is not copied into the Lua heap before the
** answer (fresh memory costs ~10 ms per MB to touch on a small VM), only when a handler reads
** ctx.body. Until __gc, `bytes` is owned (NULL while being set up). */
typedef struct {
    char *bytes;
    size_t len;
} body_t;

#define BODY_META "luahook.body"

static int body_gc(lua_State *L)
{
    body_t *b = luaL_checkudata(L, 1, BODY_META);
    free(b->bytes);
    b->bytes = NULL;
    return 0;
}

/* Pushes a body userdata for `bytes` (may raise: memory; `*bytes` is then still the
** caller's, else it is the userdata's and *bytes becomes NULL). */
static body_t *push_body(lua_State *L, char **bytes, size_t len)
{
    body_t *b = lua_newuserdatauv(L, sizeof(*b), 0); /* ud */
    b->bytes = NULL;
    b->len = 0;
    if (luaL_newmetatable(L, BODY_META)) { /* ud mt */
        lua_pushcfunction(L, body_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "luahook body");
        lua_setfield(L, -2, "__metatable"); /* not reachable from Lua, but never changed */
    }
    lua_setmetatable(L, -2); /* ud */
    b->bytes = *bytes, b->len = len;
    *bytes = NULL;
    return b;
}

/* ctx's __index (upvalue: the body userdata): ctx.body, made once, on its first read, inside
** the run's --memory-limit (a body too big for it fails the run with `memory`). */
static int ctx_index(lua_State *L)
{
    size_t klen = 0;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &klen) : NULL;
    if (k == NULL || klen != 4 || memcmp(k, "body", 4) != 0)
        return 0;
    const body_t *b = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushlstring(L, b->bytes != NULL ? b->bytes : "", b->len); /* body */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* the copy happens once per event */
    return 1;
}

/* A small event's headers and body, copied into one userdata (inside --memory-limit, as
** the copy in ctx.body was): ctx.headers and ctx.body are made from it on first read, so
** a handler that reads neither costs no table and no string. Layout: this, the headers,
** their names and values, the body; every pointer points into the same block. */
typedef struct req_copy_s {
    size_t nheaders;
    lh_header_t *headers;
    const char *body;
    size_t body_len;
} req_copy_t;

static req_copy_t *push_req_copy(lua_State *L, const lh_request_t *req)
{
    size_t size = sizeof(req_copy_t) + req->nheaders * sizeof(lh_header_t) + req->body_len + 1;
    for (size_t i = 0; i < req->nheaders; i++)
        size += req->headers[i].name_len + req->headers[i].value_len;
    req_copy_t *rc = lua_newuserdatauv(L, size, 0); /* rc */
    rc->nheaders = req->nheaders;
    rc->headers = (lh_header_t *)(rc + 1);
    char *p = (char *)(rc->headers + req->nheaders);
    for (size_t i = 0; i < req->nheaders; i++) {
        const lh_header_t *h = &req->headers[i];
        lh_header_t *c = &rc->headers[i];
        c->name = memcpy(p, h->name, h->name_len), c->name_len = h->name_len;
        p += h->name_len;
        c->value = memcpy(p, h->value, h->value_len), c->value_len = h->value_len;
        p += h->value_len;
    }
    if (req->body_len)
        memcpy(p, req->body, req->body_len);
    p[req->body_len] = '\0';
    rc->body = p, rc->body_len = req->body_len;
    return rc;
}

/* Pushes ctx.headers: lower-case names; a repeated header keeps every value, joined as HTTP
** allows. */
static void push_headers(lua_State *L, const lh_header_t *hs, size_t n)
{
    lua_createtable(L, 0, (int)n); /* headers */
    for (size_t i = 0; i < n; i++) {
        const lh_header_t *h = &hs[i];
        lua_pushlstring(L, h->name, h->name_len); /* headers k */
        if (lua_rawget(L, -2) == LUA_TSTRING) {   /* headers old */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3); /* headers joined */
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len); /* headers v */
        }
        lua_pushlstring(L, h->name, h->name_len);
        lua_insert(L, -2); /* headers k v */
        lua_rawset(L, -3); /* headers */
    }
}

/* ctx's __index for a small event (upvalue: its req_copy_t): ctx.headers and ctx.body,
** each made once, on its first read, inside the reading run's --memory-limit. */
static int ctx_lazy_index(lua_State *L)
{
    size_t klen = 0;
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &klen) : NULL;
    const req_copy_t *rc = lua_touserdata(L, lua_upvalueindex(1));
    if (k != NULL && klen == 7 && memcmp(k, "headers", 7) == 0)
        push_headers(L, rc->headers, rc->nheaders); /* headers */
    else if (k != NULL && klen == 4 && memcmp(k, "body", 4) == 0)
        lua_pushlstring(L, rc->body, rc->body_len); /* body */
    else
        return 0;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* made once per event */
    return 1;
}

/* ctx: what the handler knows of the delivery. One table per event, shared by its
** handlers; ctx.id is filled in when the event runs. With `body` (a stack index of a big
** body's userdata), ctx.body is made from it on first read, and ctx.headers now; else both
** are made on first read from a copy of the request's. */
static void push_ctx(lua_State *L, lh_event_t *e, const lh_dispatch_input_t *in, int body)
{
    const lh_request_t *req = in->req;
    lua_createtable(L, 0, 9); /* ctx */
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "id"); /* the slot exists: filling it cannot fail */
    lua_pushstring(L, e->action != NULL ? e->action : ""); /* a big body's: filled in later */
    lua_setfield(L, -2, "action");
    lua_pushinteger(L, in->attempt > 0 ? in->attempt : 1);
    lua_setfield(L, -2, "attempt");
    lua_pushlstring(L, req->path, req->path_len);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, e->remote);
    lua_setfield(L, -2, "remote");
    lua_pushnumber(L, req->received_at);
    lua_setfield(L, -2, "received_at");
    lua_createtable(L, 0, 1); /* ctx mt */
    if (body != 0) {
        lua_pushvalue(L, body);
        lua_pushcclosure(L, ctx_index, 1);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2);                      /* ctx */
        push_headers(L, req->headers, req->nheaders); /* ctx headers */
        lua_setfield(L, -2, "headers");               /* ctx */
    } else {
        e->req = push_req_copy(L, req); /* ctx mt rc */
        lua_pushcclosure(L, ctx_lazy_index, 1);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2); /* ctx */
    }
}

static const char *type_text(lh_json_type_t t)
{
    switch (t) {
    case LH_JSON_NULL:
        return "null value";
    case LH_JSON_BOOLEAN:
        return "boolean value";
    case LH_JSON_NUMBER:
        return "number value";
    case LH_JSON_STRING:
        return "string value";
    case LH_JSON_ARRAY:
        return "an array";
    case LH_JSON_OBJECT:
        break;
    }
    return "an object";
}

/* Under lua_pcall: the body's tables, then ctx, are built with memory that may run out;
** that must refuse the event, not abort the server. */
static int decode_protected(lua_State *L)
{
    decode_t *d = lua_touserdata(L, 1);
    lh_event_t *e = d->e;
    const lh_dispatch_input_t *in = d->in;
    lh_json_type_t type = LH_JSON_NULL;
    lua_settop(L, 0);

    /* a body too big for --memory-limit is refused, not a crash; the limit stays on for
    ** ctx (its copy of the body): what an event holds counts against the limit */
    e->vm->limit_on = 1;
    int rc = lh_json_decode_typed(L, in->req->body, in->req->body_len, d->err, sizeof(d->err),
                                  &type); /* ev */
    if (rc != 0) {
        d->rc = -1, d->reason = LH_REJECT_INVALID_JSON;
        return 0;
    }
    if (type != LH_JSON_OBJECT) {
        snprintf(d->err, sizeof(d->err),
                 "the body is not a JSON object (it is %s): an event is an object with a "
                 "string \"action\"",
                 type_text(type));
        d->rc = -1, d->reason = LH_REJECT_NOT_OBJECT;
        return 0;
    }
    if (in->action != NULL) { /* the body's bytes stay as sent */
        lua_pushstring(L, in->action);
        lua_setfield(L, 1, "action");
    }
    int at = lua_getfield(L, 1, "action"); /* ev action */
    if (at != LUA_TSTRING) {
        if (at == LUA_TNIL)
            snprintf(d->err, sizeof(d->err),
                     "the event has no \"action\": an event is an object with a string "
                     "\"action\"");
        else
            snprintf(d->err, sizeof(d->err), "\"action\" must be a string, not %s",
                     at == LUA_TLIGHTUSERDATA ? "null" : lua_typename(L, at));
        d->rc = -1, d->reason = LH_REJECT_NO_ACTION;
        return 0;
    }
    size_t alen;
    const char *action = lua_tolstring(L, 2, &alen);
    if ((e->action = malloc(alen + 1)) == NULL)
        return luaL_error(L, "not enough memory");
    memcpy(e->action, action, alen + 1);
    e->action_len = alen;
    e->route = lh_vm_route(e->vm); /* ev action */
    lua_pop(L, 1);                 /* ev */
    push_ctx(L, e, in, 0);         /* ev ctx */
    e->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    e->ev_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A new event for `in`, before its body is read; NULL when refused (answered 503). */
static lh_event_t *event_new(lh_app_t *app, const lh_dispatch_input_t *in)
{
    const lh_request_t *req = in->req;
    const char *remote = in->remote != NULL ? in->remote : "";
    lh_event_t *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->path = malloc(req->path_len + 1)) == NULL) {
        free(e);
        refuse_request(app, req->path, req->path_len, remote, in->reply, in->reply_data, 503,
                       LH_REJECT_OVERLOAD, "out of memory");
        return NULL;
    }
    memcpy(e->path, req->path, req->path_len);
    e->path[req->path_len] = '\0';
    size_t rlen = strnlen(remote, sizeof(e->remote) - 1);
    memcpy(e->remote, remote, rlen); /* cut as snprintf would */
    e->remote[rlen] = '\0';
    e->app = app;
    e->vm = app->vm;
    e->ev_ref = e->ctx_ref = e->body_ref = LUA_NOREF;
    e->start_ns = req->received_ns;
    e->reply = in->reply;
    e->reply_data = in->reply_data;
    e->observer = in->observer;
    e->stage = STAGE_DECODED;
    e->journal = in->journal && app->journal != NULL;
    e->attempt = in->attempt > 0 ? in->attempt : 1;
    return e;
}

lh_event_t *lh_dispatch_decode(lh_app_t *app, const lh_dispatch_input_t *in)
{
    lh_event_t *e = event_new(app, in);
    if (e == NULL)
        return NULL;
    lua_State *L = e->vm->L;
    int top = lua_gettop(L);
    int saved_limit = e->vm->limit_on; /* decode_protected turns it on */
    decode_t d = {.e = e, .in = in};
    d.err[0] = '\0';
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &d);
    int st = lua_pcall(L, 1, 0, 0);
    e->vm->limit_on = saved_limit;
    lua_settop(L, top);
    if (st != LUA_OK) {
        lua_gc(L, LUA_GCCOLLECT);
        refuse(e, 503, LH_REJECT_OVERLOAD,
               "not enough memory for the body and its tables (--memory-limit)");
        return NULL;
    }
    if (d.rc != 0) {
        refuse(e, 400, d.reason, d.err);
        return NULL;
    }
    e->nhandlers = (int)e->route->n;
    return e;
}

/* ------------------------------------------------------------------ step 2: admit */

int lh_dispatch_admit(lh_event_t *e)
{
    lh_app_t *app = e->app;
    int n = e->nhandlers;
    int tasks = app->tasks - big_holds(e); /* its own slices are no run */
    assert(e->stage == STAGE_DECODED);
    if (n > 0 && (uint64_t)tasks + (uint64_t)app->admitted + (uint64_t)n > app->cfg->max_pending) {
        char msg[128];
        snprintf(msg, sizeof(msg), "too many handler runs in flight (%d, --max-pending %llu)",
                 tasks + app->admitted, (unsigned long long)app->cfg->max_pending);
        refuse(e, 503, LH_REJECT_OVERLOAD, msg);
        return -1;
    }
    app->admitted += n;
    e->reserved = n;
    e->stage = STAGE_ADMITTED;
    return 0;
}

/* ------------------------------------------------------------------ step 3: accept */

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
    /* "%08x%012llx" by hand: printf's parsing costs more than the rest of the id */
    static const char hex[] = "0123456789abcdef";
    char buf[32];
    size_t n = 0;
    for (int shift = 28; shift >= 0; shift -= 4)
        buf[n++] = hex[(app->id_prefix >> shift) & 0xf];
    uint64_t c = ++app->id_counter;
    int digits = 12;
    while (digits < 16 && (c >> (4 * digits)) != 0)
        digits++;
    for (int d = digits - 1; d >= 0; d--)
        buf[n++] = hex[(c >> (4 * d)) & 0xf];
    if (n > len - 1)
        n = len - 1;
    memcpy(out, buf, n);
    out[n] = '\0';
}

/* The event is durable (today: at once). A journal's commit callback lands here. */
static void accepted(lh_event_t *e, lh_dispatch_accept_cb cb, void *data)
{
    e->stage = STAGE_ACCEPTED;
    if (e->app->cfg->ack == LH_ACK_ACCEPT || e->nhandlers == 0) {
        /* answered before any handler runs: neither their I/O nor their CPU delays it */
        answer(e->reply, e->reply_data, 200, NULL, e, NULL);
        e->reply = NULL;
    }
    cb(data, e, 0);
}

/* Gives back the hold on the VM a waiting event had (reload frees a replaced VM at 0). */
static void release_vm(lh_vm_t *vm)
{
    if (--vm->tasks == 0 && vm->on_drained != NULL)
        vm->on_drained(vm);
}

/* The journal's answer for an event it was asked to store. */
static void journaled(void *data, int status, int64_t jid, const char *err)
{
    lh_event_t *e = data;
    lh_vm_t *vm = e->vm;
    lh_dispatch_accept_cb cb = e->acb;
    void *cbdata = e->adata;
    assert(e->held);
    e->held = 0;
    if (status < 0) {
        /* never a 200 for an event that is not stored */
        refuse_request(e->app, e->path, strlen(e->path), e->remote, e->reply, e->reply_data, 503,
                       LH_REJECT_JOURNAL, err);
        e->reply = NULL;
        cb(cbdata, e, status);
        event_free(e);
    } else if (status == LH_JOURNAL_DUPLICATE || status == LH_JOURNAL_CLOSED) {
        /* a duplicate is answered as the first was; stored while stopping, it runs at the
        ** next start (its connection is being closed: no answer) */
        e->jid = jid;
        if (status == LH_JOURNAL_DUPLICATE) {
            char body[96];
            int n = snprintf(body, sizeof(body), "{\"ok\":true,\"id\":\"%s\",\"duplicate\":true}",
                             e->id);
            if (e->reply != NULL)
                e->reply(e->reply_data, 200, NULL, body, (size_t)n);
            lh_field_t f[] = {LH_FIELD("id", e->id), LH_FIELD("action", e->action)};
            lh_log_fields(LH_INFO, "duplicate event: its handlers do not run again", f, 2);
        }
        e->reply = NULL;
        cb(cbdata, e, LH_DISPATCH_NOT_RUN);
        event_free(e);
    } else {
        e->jid = jid;
        accepted(e, cb, cbdata);
    }
    release_vm(vm);
}

/* The headers a handler can read (a repeated one's values joined as ctx.headers joins
** them), as a JSON object, without the secret's header: from a small event's request
** copy, without making ctx.headers. */
static char *headers_json_of(const req_copy_t *rc, const char *secret_header, size_t *len)
{
    size_t cap = 2, n = 0;
    for (size_t i = 0; i < rc->nheaders; i++)
        cap += LH_JSON_ESCAPED_MAX(rc->headers[i].name_len) +
               LH_JSON_ESCAPED_MAX(rc->headers[i].value_len) + 8;
    char *out = malloc(cap + 1);
    if (out == NULL)
        return NULL;
    out[n++] = '{';
    for (size_t i = 0; i < rc->nheaders; i++) {
        const lh_header_t *h = &rc->headers[i];
        size_t seen = 0;
        while (seen < i && (rc->headers[seen].name_len != h->name_len ||
                            memcmp(rc->headers[seen].name, h->name, h->name_len) != 0))
            seen++;
        /* never stored: the secret's header, nor Authorization when the secret is elsewhere
         * (a proxy's credentials); a repeated one went with its first */
        if (seen < i ||
            (strlen(secret_header) == h->name_len &&
             memcmp(h->name, secret_header, h->name_len) == 0) ||
            (h->name_len == 13 && memcmp(h->name, "authorization", 13) == 0))
            continue;
        if (n > 1)
            out[n++] = ',';
        out[n++] = '"';
        n += lh_json_escape(out + n, cap - n, h->name, h->name_len);
        out[n++] = '"', out[n++] = ':', out[n++] = '"';
        n += lh_json_escape(out + n, cap - n, h->value, h->value_len);
        for (size_t k = i + 1; k < rc->nheaders; k++) {
            const lh_header_t *o = &rc->headers[k];
            if (o->name_len == h->name_len && memcmp(o->name, h->name, h->name_len) == 0) {
                out[n++] = ',', out[n++] = ' ';
                n += lh_json_escape(out + n, cap - n, o->value, o->value_len);
            }
        }
        out[n++] = '"';
    }
    out[n++] = '}';
    out[n] = '\0';
    *len = n;
    return out;
}

/* The headers a handler can read, as a JSON object, without the secret's header. */
static char *headers_json(lua_State *L, int ctx, const char *secret_header, size_t *len)
{
    size_t cap = 256, n = 0;
    char *out = malloc(cap);
    if (out == NULL)
        return NULL;
    out[n++] = '{';
    lua_getfield(L, ctx, "headers"); /* headers */
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) { /* headers k v */
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl), *v = lua_tolstring(L, -1, &vl);
        /* never stored: the secret's header, nor Authorization when the secret is elsewhere
         * (a proxy's credentials) */
        if (k != NULL && v != NULL && strcmp(k, secret_header) != 0 &&
            strcmp(k, "authorization") != 0) {
            size_t need = n + LH_JSON_ESCAPED_MAX(kl) + LH_JSON_ESCAPED_MAX(vl) + 8;
            if (need > cap) {
                char *p = realloc(out, cap = need * 2);
                if (p == NULL) {
                    free(out);
                    lua_pop(L, 3);
                    return NULL;
                }
                out = p;
            }
            if (n > 1)
                out[n++] = ',';
            out[n++] = '"';
            n += lh_json_escape(out + n, cap - n, k, kl);
            out[n++] = '"', out[n++] = ':', out[n++] = '"';
            n += lh_json_escape(out + n, cap - n, v, vl);
            out[n++] = '"';
        }
        lua_pop(L, 1); /* headers k */
    }
    lua_pop(L, 1);
    out[n++] = '}';
    *len = n;
    return out;
}

/* Under lua_pcall (the keys' strings may need memory): ev.project.id into *ud. Stack:
** ud ev. */
static int event_project(lua_State *L)
{
    lh_journal_event_t *ev = lua_touserdata(L, 1);
    lua_pushliteral(L, "project");
    int pt = lua_rawget(L, 2); /* ud ev project */
    if (pt == LUA_TTABLE) {
        lua_pushliteral(L, "id");
        pt = lua_rawget(L, -2);
    }
    if (pt == LUA_TNUMBER && lua_isinteger(L, -1)) {
        ev->has_project = 1;
        ev->project = (int64_t)lua_tointeger(L, -1);
    }
    return 0;
}

/* Asks the journal to store `e`; `journaled` continues. -1: refused at once (answered). */
static int journal_event(lh_event_t *e, lh_dispatch_accept_cb cb, void *data)
{
    lh_app_t *app = e->app;
    lua_State *L = e->vm->L;
    int top = lua_gettop(L);
    char err[256];
    lh_journal_event_t ev = {.delivery = e->id,
                             .path = e->path,
                             .path_len = strlen(e->path),
                             .remote = e->remote,
                             .action = e->action};
    const char **ids = calloc(e->route->n ? e->route->n : 1, sizeof(*ids));
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref); /* ctx */
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ev_ref);  /* ctx ev */
    /* borrowed by the journal till `journaled`: a big body's userdata (e->body_ref) or ctx
    ** holds the bytes, and no handler runs (nothing can drop them) before then */
    if (e->body != NULL) {
        lua_pushnil(L); /* ctx ev nil: ctx.body is not made for the journal */
        ev.body = e->body, ev.body_len = e->body_len;
    } else if (e->req != NULL) {
        lua_pushnil(L); /* ctx ev nil: the same, from the request's copy */
        ev.body = e->req->body, ev.body_len = e->req->body_len;
    } else {
        lua_getfield(L, top + 1, "body"); /* ctx ev body */
        ev.body = lua_tolstring(L, -1, &ev.body_len);
    }
    lua_getfield(L, top + 1, "received_at"); /* ctx ev body t */
    ev.received = lua_tonumber(L, -1);
    if (e->ev_ref == LUA_NOREF) { /* a big body's tables come later: validation found it */
        ev.has_project = e->has_project;
        ev.project = e->project;
    } else {
        lua_pushvalue(L, top + 2); /* ... ev */
        if (lh_task_protect(L, event_project, &ev, 1, 0) != LUA_OK)
            ev.has_project = 0; /* out of memory for the key's string: stored without it */
    }
    char *headers = e->req != NULL
                        ? headers_json_of(e->req, app->cfg->auth_header, &ev.headers_len)
                        : headers_json(L, top + 1, app->cfg->auth_header, &ev.headers_len);
    int rc = -1;
    if (headers == NULL || ids == NULL || ev.body == NULL) {
        snprintf(err, sizeof(err), "out of memory");
    } else {
        ev.headers = headers;
        for (size_t i = 0; i < e->route->n; i++)
            ids[i] = e->vm->handlers[e->route->handlers[i]].id;
        ev.handlers = ids;
        ev.nhandlers = e->route->n;
        e->acb = cb, e->adata = data;
        e->held = 1;
        e->vm->tasks++; /* the event's tables live in this VM: a reload must not free it */
        rc = lh_journal_accept(app->journal, &ev, journaled, e, err, sizeof(err));
        if (rc != 0) {
            e->held = 0;
            e->vm->tasks--;
        }
    }
    lua_settop(L, top);
    free(headers);
    free(ids);
    if (rc != 0) {
        refuse(e, 503, LH_REJECT_JOURNAL, err);
        return -1;
    }
    return 0;
}

int lh_dispatch_accept(lh_event_t *e, lh_dispatch_accept_cb cb, void *data)
{
    assert(e->stage == STAGE_ADMITTED);
    next_id(e->app, e->id, sizeof(e->id));
    e->stats = lh_metrics_action(&e->app->metrics, e->action, e->action_len);
    e->stats->received++;
    if (e->journal)
        return journal_event(e, cb, data);
    accepted(e, cb, data);
    return 0;
}

/* ------------------------------------------------------------------ step 4: run */

/* Appends to the --ack handled failure list; `escape` writes s as JSON string content. */
static void failures_put(lh_event_t *e, const char *s, int escape)
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
        e->failures_len += lh_json_escape_utf8(e->failures + e->failures_len, need, s, n, NULL);
    } else {
        memcpy(e->failures + e->failures_len, s, n);
        e->failures_len += n;
    }
}

/* The last handler ended: the log line, the answer (--ack handled), the observer. */
static void event_ended(lh_event_t *e)
{
    double ms = (double)(uv_hrtime() - e->start_ns) / 1e6;
    /* an action no handler takes is said at info once (a misspelt on() shows), then at
    ** debug: a sender's many unhandled actions must not flood the log */
    int first_unhandled = e->nhandlers == 0 && e->stats != NULL && e->stats->unhandled++ == 0;
    lh_level_t level = e->nhandlers || first_unhandled ? LH_INFO : LH_DEBUG;
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
            LH_FIELD("note", "no handler takes this action; later ones are logged at debug"),
        };
        lh_log_fields(level, "event", f, first_unhandled ? 6 : 5);
    }
    answer(e->reply, e->reply_data, e->nfailed ? 500 : 200, NULL, e, NULL);
    e->reply = NULL;
    if (e->observer != NULL && e->observer->event_done != NULL)
        e->observer->event_done(e->observer->data, e, e->nhandlers, e->nfailed);
    event_free(e);
}

/* One handler run of `e` ended, whether it ran or could not start. */
static void handler_ended(lh_event_t *e, const lh_handler_t *h, lh_outcome_t outcome, lh_end_t how,
                          const char *err, const char *tb, double secs)
{
    if (e->jid != 0) {
        lh_journal_end_t end = {.jid = e->jid,
                                .handler = h->id,
                                .attempt = e->attempt,
                                .started = e->run_started,
                                .retries = h->retries,
                                .only_run = e->nhandlers == 1 && e->attempt == 1,
                                .outcome = outcome,
                                .how = how,
                                .error = err,
                                .traceback = tb};
        lh_journal_run_ended(e->app->journal, &end);
    }
    lh_metrics_handler_done(e->stats, outcome, secs);
    if (h->stats != NULL)
        h->stats->runs[outcome]++;
    if (e->observer != NULL && e->observer->handler_done != NULL)
        e->observer->handler_done(e->observer->data, e, h, outcome, err, secs);
    if (outcome != LH_OUTCOME_OK) {
        e->nfailed++;
        lh_log_run_failed("handler failed", e->id, e->action, h->id, h->script, h->line,
                          lh_metrics_outcome_name(outcome), err, tb);
        if (e->reply != NULL) { /* --ack handled: the answer lists the failures */
            failures_put(e, e->nfailed > 1 ? ",{\"handler\":\"" : "{\"handler\":\"", 0);
            failures_put(e, h->label, 1);
            failures_put(e, "\",\"id\":\"", 0);
            failures_put(e, h->id, 1);
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

static void on_task_done(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    lh_event_t *e = t->data;
    lh_end_t how = LH_END_NORMAL;
    assert(t->handler != NULL);
    if (t->permanent)
        how = LH_END_PERMANENT;
    else if (outcome == LH_OUTCOME_TIMEOUT && t->cpu_stopped)
        how = LH_END_COMPUTING;
    else if (outcome == LH_OUTCOME_TIMEOUT && e->app->stopping)
        how = LH_END_INTERRUPTED; /* cut short by the shutdown: runs again at the next start */
    /* a recipe instance's secrets never reach a log, an answer or the journal */
    int fe = 0, ft = 0;
    char *serr = lh_vm_scrub(e->vm, t->handler->script_id, err, &fe);
    char *stb = lh_vm_scrub(e->vm, t->handler->script_id, tb, &ft);
    const char *shown_err = serr != NULL ? serr : err, *shown_tb = stb != NULL ? stb : tb;
    if (fe)
        shown_err = "(an error that quotes a secret: not shown, out of memory)";
    if (ft)
        shown_tb = NULL;
    handler_ended(e, t->handler, outcome, how, shown_err, shown_tb, lh_task_seconds(t));
    free(serr);
    free(stb);
}

static void start_failed(lh_event_t *e, size_t i)
{
    const lh_handler_t *h = &e->vm->handlers[e->route->handlers[i]];
    handler_ended(e, h, LH_OUTCOME_MEMORY, LH_END_NOT_STARTED,
                  "could not start the handler: not enough memory", NULL, 0);
}

typedef struct {
    lh_event_t *e;
    size_t started; /* handler runs started so far */
} start_t;

/* Under lua_pcall: the coroutines allocate on the host's side, and a real out-of-memory
** there must fail the runs, not abort the server. */
static int start_protected(lua_State *L)
{
    start_t *a = lua_touserdata(L, 1);
    lh_event_t *e = a->e;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ev_ref);  /* ev */
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref); /* ev ctx */
    lua_pushstring(L, e->id);
    lua_setfield(L, 2, "id"); /* an existing slot: no allocation but the string's */
    for (; a->started < e->route->n; a->started++) {
        const lh_handler_t *h = &e->vm->handlers[e->route->handlers[a->started]];
        if (lh_task_spawn(e->vm, h->fn_ref, h, h->label, h->script, h->line, 2, on_task_done, e,
                          e->id, e->action) != 0)
            start_failed(e, a->started);
    }
    return 0;
}

void lh_dispatch_run(lh_event_t *e)
{
    lh_app_t *app = e->app;
    lua_State *L = e->vm->L;
    int top = lua_gettop(L);
    assert(e->stage == STAGE_ACCEPTED);
    e->stage = STAGE_RUNNING;
    if (e->jid != 0) /* only the journal keeps it */
        e->run_started = lh_clock_wall(e->vm->clock);
    /* the reservation becomes the runs themselves */
    app->admitted -= e->reserved;
    e->reserved = 0;
    e->running = e->nhandlers + 1; /* +1: held while the tasks start */
    if (e->nhandlers > 0 && e->ev_ref == LUA_NOREF) {
        /* a big body answered before its tables were built, and memory ran out building them */
        for (size_t i = 0; i < e->route->n; i++) {
            const lh_handler_t *h = &e->vm->handlers[e->route->handlers[i]];
            handler_ended(e, h, LH_OUTCOME_MEMORY, LH_END_NOT_STARTED,
                          "could not start the handler: not enough memory for the event's tables",
                          NULL, 0);
        }
    } else if (e->nhandlers > 0) {
        start_t a = {e, 0};
        lua_pushcfunction(L, start_protected);
        lua_pushlightuserdata(L, &a);
        if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
            /* out of memory building a coroutine: the runs not started fail, so no
            ** handler goes missing silently */
            for (; a.started < e->route->n; a.started++)
                start_failed(e, a.started);
        }
        lua_settop(L, top);
    }
    if (--e->running == 0)
        event_ended(e);
}

/* ------------------------------------------------------------------ big bodies */

/*
** A body of --big-body bytes or more (1 MiB) is never decoded in one go: a 50 MB import
** takes a good part of a second, and the loop would answer nobody meanwhile. Below it one pass
** stays within a few ms (a 1 MB import: ~3 ms) and costs no second pass, no thread and no loop
** turns, nor a collection of its own after it. Its event goes through phases,
** each in slices of about SLICE_NS run from a uv_idle handle, one slice per loop turn (the
** loop polls other I/O between them):
**
**   VALIDATE  a json job checks the text, building nothing, and finds "action" and
**             "project"."id"; then admit and accept as for any event (the 200, --ack accept)
**   BUILD     the tables are built on a thread of their own (the values built so far live
**             on its stack), then the event runs. When --memory-limit may not hold them they
**             are built before admit instead: a body whose tables cannot fit is refused (503),
**             never answered 200
**   GC        once the event is gone: the collector runs in steps until the body's garbage is
**             freed, so the memory goes back to the system without one long pause
**
** Until it runs, the event holds app->tasks (a stop waits for it); until the GC phase ends it
** holds vm->tasks (a reload keeps its VM). While a VM has big events its collector is
** incremental: generational mode frees old garbage only in a full, atomic collection.
*/

#define SLICE_NS     (4 * 1000 * 1000) /* aimed at; each budget follows the last slice's pace */
#define BUDGET_FIRST (1024 * 1024)
#define BUDGET_MIN   (16 * 1024)
#define BUDGET_MAX   (256 * 1024 * 1024)
#define GC_CYCLES    2 /* a cycle under way when the garbage appeared does not free all of it */
#define GC_HOLD_MS   1000
/* Lua memory of a body's tables per byte of its text, at most (measured: ~5 for Label
** Studio's tasks; strings of one byte in an array cost most, ~20) */
#define TABLES_PER_BYTE 12

typedef enum { BIG_VALIDATE, BIG_WAIT, BIG_BUILD, BIG_GC } big_phase_t;

struct big_s {
    uv_idle_t idle;   /* data: this; runs the phase's slices */
    uv_timer_t timer; /* data: this; ends the collector's hold (GC_HOLD_MS), or waits for it */
    int open_handles;
    lh_event_t *e; /* NULL once the event is gone (GC) */
    lh_app_t *app;
    lh_vm_t *vm;
    big_phase_t phase;
    lh_json_job_t *job;     /* owned; NULL between phases */
    lh_json_sizes_t *sizes; /* owned: its big tables' sizes, from validation to build */
    lua_State *co;          /* the building thread, anchored by co_ref */
    int co_ref;             /* registry ref in vm->L, LUA_NOREF when unset */
    const char *body;       /* borrowed from the event's body userdata (e->body_ref) */
    size_t body_len;
    size_t budget;     /* bytes of text for the next slice */
    int holds;         /* 1 while it counts in app->tasks */
    int gc_cycles;     /* collector cycles finished since the event was freed */
    int newer_ref;     /* a live table newer than the garbage, LUA_NOREF when unset (big_gc) */
    int gc_held;       /* 1 while it holds the collector at a cycle's end (big_build) */
    int fast_bins_off; /* 1 while its garbage is swept (big_fast_bins) */
    int build_first;   /* tables before the answer: --memory-limit may not hold them */
};

typedef struct big_s big_t;

static void on_big_idle(uv_idle_t *h);
static int big_call(big_t *b, lua_CFunction f, void *arg, int *result);
static void big_unhold_gc(big_t *b);
static void big_fast_bins(big_t *b, int on);
static void on_hold_end(uv_timer_t *t);

static int big_holds(const lh_event_t *e)
{
    return e->big != NULL ? e->big->holds : 0;
}

static void big_close_cb(uv_handle_t *h)
{
    big_t *b = h->data;
    if (--b->open_handles == 0)
        free(b);
}

/* Its count in app->tasks ends (the event runs, or is gone). */
static void big_release(big_t *b)
{
    if (!b->holds)
        return;
    b->holds = 0;
    if (--b->app->tasks == 0 && b->app->on_tasks_drained != NULL)
        b->app->on_tasks_drained(b->app);
}

/* The last phase ended: the collector goes back to generational, the hold on the VM ends, and
** the handle closes (b is freed in its close callback). */
static void big_end(big_t *b)
{
    lh_vm_t *vm = b->vm;
    lh_json_job_free(b->job);
    b->job = NULL;
    lh_json_sizes_free(b->sizes);
    b->sizes = NULL;
    luaL_unref(vm->L, LUA_REGISTRYINDEX, b->co_ref);
    b->co_ref = LUA_NOREF;
    luaL_unref(vm->L, LUA_REGISTRYINDEX, b->newer_ref);
    b->newer_ref = LUA_NOREF;
    big_unhold_gc(b);
    if (--vm->big_events == 0)
        lua_gc(vm->L, LUA_GCGEN, 0, 0);
    big_release(b);
    big_fast_bins(b, 1);
    uv_close((uv_handle_t *)&b->idle, big_close_cb);
    uv_close((uv_handle_t *)&b->timer, big_close_cb);
    release_vm(vm);
}

/* glibc keeps small freed blocks in fast bins unmerged until a large free or malloc_trim merges
** them all at once: 2 million Lua objects swept made one free() take 45 ms. While garbage is
** swept they are off, so each free merges its own block. */
static void big_fast_bins(big_t *b, int on)
{
    static int off; /* big events sweeping now */
    if (b->fast_bins_off == !on)
        return;
    b->fast_bins_off = !on;
    if (on ? --off == 0 : off++ == 0)
        mallopt(M_MXFAST, on ? (int)(64 * sizeof(size_t) / 4) : 0); /* glibc's default */
}

/* The collector frees at once every dead object between the newest object and the newest live
** one, when a cycle's sweep begins: with a live object newer than the garbage, that garbage is
** swept in steps instead (2 million objects at once held the loop for 80 ms). */
static int big_newer_protected(lua_State *L)
{
    lua_newtable(L);
    lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
    return 1;
}

/* Its event was freed (it ended, or was refused): its garbage is collected in steps. */
static void big_event_gone(lh_event_t *e)
{
    big_t *b = e->big;
    e->big = NULL;
    b->e = NULL;
    big_unhold_gc(b);
    lh_json_job_free(b->job);
    b->job = NULL;
    lh_json_sizes_free(b->sizes);
    b->sizes = NULL;
    luaL_unref(b->vm->L, LUA_REGISTRYINDEX, b->co_ref);
    b->co_ref = LUA_NOREF;
    big_release(b);
    b->phase = BIG_GC;
    b->gc_cycles = 0;
    big_fast_bins(b, 0);
    int ref = LUA_NOREF;
    if (big_call(b, big_newer_protected, NULL, &ref) == LUA_OK)
        b->newer_ref = ref;
    uv_idle_start(&b->idle, on_big_idle); /* cannot fail on an open handle */
}

/* The next slice's budget: as many bytes as fit in SLICE_NS at the pace of the last one. */
static void big_pace(big_t *b, uint64_t t0)
{
    uint64_t ns = uv_hrtime() - t0;
    double f = ns > 0 ? (double)SLICE_NS / (double)ns : 2.0;
    if (f > 2.0)
        f = 2.0; /* grow gently: one slice of quick values says little of the next */
    if (f < 0.25)
        f = 0.25;
    double next = (double)b->budget * f;
    b->budget = next < BUDGET_MIN ? BUDGET_MIN : next > BUDGET_MAX ? BUDGET_MAX : (size_t)next;
}

typedef struct {
    big_t *b;
    const lh_dispatch_input_t *in;
    char *owned; /* the body's bytes until the userdata owns them */
    size_t len;
} big_start_t;

/* Under lua_pcall, inside --memory-limit: the body's userdata (its bytes moved in, not
** copied), ctx, which makes ctx.body from them on first read, and the thread the tables will
** be built on. Validation, the build and the journal read the same bytes. */
static int big_start_protected(lua_State *L)
{
    big_start_t *a = lua_touserdata(L, 1);
    big_t *b = a->b;
    lh_event_t *e = b->e;
    lua_settop(L, 0);
    const body_t *body = push_body(L, &a->owned, a->len); /* ud */
    e->body = b->body = body->bytes;
    e->body_len = b->body_len = body->len;
    push_ctx(L, e, a->in, 1); /* ud ctx */
    e->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    e->body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    b->co = lua_newthread(L); /* co */
    b->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Under lua_pcall: a redelivered body's action, read from its tables once they exist (it
** was valid when accepted: no validation pass finds it first). */
static int big_action_protected(lua_State *L)
{
    lh_event_t *e = ((big_t *)lua_touserdata(L, 1))->e;
    size_t alen;
    lua_settop(L, 0);
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, e->ev_ref) != LUA_TTABLE) /* ev */
        return 0;
    lua_pushliteral(L, "action");
    if (lua_rawget(L, 1) != LUA_TSTRING) /* ev action */
        return 0;
    const char *action = lua_tolstring(L, 2, &alen);
    char *copy = malloc(alen + 1);
    if (copy == NULL)
        return luaL_error(L, "not enough memory");
    memcpy(copy, action, alen + 1);
    free(e->action);
    e->action = copy;
    e->action_len = alen;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref); /* ev action ctx */
    lua_pushvalue(L, 2);
    lua_setfield(L, 3, "action");
    return 0;
}

/* Under lua_pcall: what validation found becomes the event's action, ctx.action, its route
** and the project id the journal stores. */
static int big_event_protected(lua_State *L)
{
    big_t *b = lua_touserdata(L, 1);
    lh_event_t *e = b->e;
    char err[256];
    size_t n, alen;
    const char *s = lh_json_job_member(b->job, LH_JSON_MEMBER_ACTION, &n);
    lua_settop(L, 0);
    if (lh_json_decode(L, s, n, err, sizeof(err)) != 0) /* action (valid: it was checked) */
        return luaL_error(L, "%s", err);
    const char *action = lua_tolstring(L, 1, &alen);
    if ((e->action = malloc(alen + 1)) == NULL)
        return luaL_error(L, "not enough memory");
    memcpy(e->action, action, alen + 1);
    e->action_len = alen;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref); /* action ctx */
    lua_pushvalue(L, 1);                           /* action ctx action */
    lua_setfield(L, 2, "action");                  /* action ctx */
    lua_pop(L, 1);                                 /* action */
    e->route = lh_vm_route(e->vm);
    lua_pop(L, 1);
    s = lh_json_job_member(b->job, LH_JSON_MEMBER_PROJECT_ID, &n);
    if (s != NULL && (*s == '-' || (*s >= '0' && *s <= '9')) &&
        lh_json_decode(L, s, n, err, sizeof(err)) == 0) { /* id */
        if (lua_isinteger(L, 1)) {
            e->has_project = 1;
            e->project = (int64_t)lua_tointeger(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* Under lua_pcall: one slice of the build; the value, once whole, becomes the event's. */
static int big_build_protected(lua_State *L)
{
    big_t *b = lua_touserdata(L, 1);
    char err[256];
    int rc = lh_json_job_step(b->job, b->budget, err, sizeof(err));
    if (rc == 1) {
        lua_xmove(b->co, L, 1); /* b ev */
        b->e->ev_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_pushinteger(L, rc);
    return 1;
}

/* A Lua call on the VM, inside --memory-limit; LUA_OK or the error's status. The collector
** waits meanwhile: what these calls allocate stays alive (the body, the tables being built),
** so collector work paid for by it would only hold the loop (a slice took 3-5x longer), and
** a restart forgives the debt. The collector still runs for everything else, between. */
static int big_call(big_t *b, lua_CFunction f, void *arg, int *result)
{
    lua_State *L = b->vm->L;
    int top = lua_gettop(L);
    int saved_limit = b->vm->limit_on;
    int gc_was_on = lua_gc(L, LUA_GCISRUNNING);
    b->vm->limit_on = 1;
    lua_gc(L, LUA_GCSTOP);
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, arg);
    int st = lua_pcall(L, 1, 1, 0);
    if (gc_was_on)
        lua_gc(L, LUA_GCRESTART);
    b->vm->limit_on = saved_limit;
    if (result != NULL)
        *result = st == LUA_OK ? (int)lua_tointeger(L, -1) : 0;
    lua_settop(L, top);
    return st;
}

static const char *json_kind(char c)
{
    switch (c) {
    case '{':
    case '[':
        return "table";
    case 'n':
        return "null";
    case 't':
    case 'f':
        return "boolean";
    }
    return "number";
}

static void big_build_start(big_t *b);

/* The tables exist (or could not be made after the answer): the event runs. */
static void big_run(big_t *b)
{
    lh_event_t *e = b->e;
    b->phase = BIG_WAIT;
    uv_idle_stop(&b->idle);
    if (e->stats == NULL) { /* redelivered: its action is known from its tables only */
        big_call(b, big_action_protected, b, NULL); /* without memory: the action stays "" */
        e->stats = lh_metrics_action(&e->app->metrics, e->action, e->action_len);
    }
    if (b->gc_held)
        uv_timer_start(&b->timer, on_hold_end, GC_HOLD_MS, 0);
    lh_dispatch_run(b->e); /* its runs count in app->tasks now; the event may be gone */
    big_release(b);
}

static void big_accepted(void *data, lh_event_t *e, int status)
{
    big_t *b = data;
    if (status != 0) /* not to run: freed when this returns */
        return;
    if (e->ev_ref != LUA_NOREF)
        big_run(b);
    else
        big_build_start(b);
}

/* Validated (and, under --memory-limit, built): the steps every event takes. */
static void big_admit(big_t *b)
{
    lh_event_t *e = b->e;
    b->phase = BIG_WAIT;
    uv_idle_stop(&b->idle);
    e->nhandlers = (int)e->route->n;
    if (lh_dispatch_admit(e) != 0)
        return; /* refused: gone */
    lh_dispatch_accept(e, big_accepted, b);
}

static void big_build_start(big_t *b)
{
    b->job = lh_json_job_new(b->co, b->body, b->body_len);
    if (b->job != NULL) {
        lh_json_job_use_sizes(b->job, b->sizes);
        b->sizes = NULL;
    }
    if (b->job == NULL) { /* before the answer: refused; after it: the handlers fail */
        if (b->e->stage < STAGE_ACCEPTED)
            refuse(b->e, 503, LH_REJECT_OVERLOAD, "out of memory");
        else
            big_run(b);
        return;
    }
    b->phase = BIG_BUILD;
    b->budget = BUDGET_MIN * 4;
    uv_idle_start(&b->idle, on_big_idle);
}

static void big_validate(big_t *b, uint64_t t0)
{
    lh_event_t *e = b->e;
    char err[256];
    int rc = lh_json_job_step(b->job, b->budget, err, sizeof(err));
    big_pace(b, t0);
    if (rc == 0)
        return;
    if (rc < 0) {
        refuse(e, 400, LH_REJECT_INVALID_JSON, err);
        return;
    }
    if (lh_json_job_type(b->job) != LH_JSON_OBJECT) {
        snprintf(err, sizeof(err),
                 "the body is not a JSON object (it is %s): an event is an object with a "
                 "string \"action\"",
                 type_text(lh_json_job_type(b->job)));
        refuse(e, 400, LH_REJECT_NOT_OBJECT, err);
        return;
    }
    size_t n;
    const char *action = lh_json_job_member(b->job, LH_JSON_MEMBER_ACTION, &n);
    if (action == NULL) {
        refuse(e, 400, LH_REJECT_NO_ACTION,
               "the event has no \"action\": an event is an object with a string \"action\"");
        return;
    }
    if (*action != '"') {
        snprintf(err, sizeof(err), "\"action\" must be a string, not %s", json_kind(*action));
        refuse(e, 400, LH_REJECT_NO_ACTION, err);
        return;
    }
    if (big_call(b, big_event_protected, b, NULL) != LUA_OK) {
        refuse(e, 503, LH_REJECT_OVERLOAD, "not enough memory for the event (--memory-limit)");
        return;
    }
    b->sizes = lh_json_job_take_sizes(b->job);
    lh_json_job_free(b->job);
    b->job = NULL;
    /* answered before its tables exist only when they surely fit: else they are built first,
    ** and a body that cannot fit is refused rather than answered 200 */
    lh_vm_t *vm = b->vm;
    b->build_first =
        vm->mem_limit != 0 && (b->body_len > vm->mem_limit / TABLES_PER_BYTE ||
                               vm->mem_used + b->body_len * TABLES_PER_BYTE > vm->mem_limit);
    if (b->build_first)
        big_build_start(b);
    else
        big_admit(b);
}

/* The collector holds off while a big event's tables are built and its handlers run, from the
** end of a cycle: the tables being built sit on the building thread's stack, which the atomic
** step ending a cycle scans again whole (2 million objects marked at once: 24 ms), and marking
** one array of 335 000 tables is a step Lua cannot cut (18 ms). Tables that are garbage before
** the next cycle begins are never marked at all, only swept, in steps (big_gc). Handlers that
** run long end the hold after GC_HOLD_MS, so other events' garbage is collected again. 0: the
** cycle is not over yet. */
static int big_hold_gc(big_t *b, uint64_t t0)
{
    lh_vm_t *vm = b->vm;
    lua_State *L = vm->L;
    if (vm->gc_holds == 0) {
        lua_gc(L, LUA_GCINC, 0, 0, 0); /* a generational step never reports a cycle's end */
        while (!lua_gc(L, LUA_GCSTEP, 0))
            if (uv_hrtime() - t0 >= SLICE_NS)
                return 0;
        vm->gc_hold_restart = lua_gc(L, LUA_GCISRUNNING);
        lua_gc(L, LUA_GCSTOP);
    }
    vm->gc_holds++;
    b->gc_held = 1;
    return 1;
}

static void big_unhold_gc(big_t *b)
{
    if (!b->gc_held)
        return;
    b->gc_held = 0;
    uv_timer_stop(&b->timer);
    if (--b->vm->gc_holds == 0 && b->vm->gc_hold_restart)
        lua_gc(b->vm->L, LUA_GCRESTART);
}

static void on_hold_end(uv_timer_t *t)
{
    big_unhold_gc(t->data);
}

static void big_build(big_t *b, uint64_t t0)
{
    lh_event_t *e = b->e;
    int rc = 0;
    if (!b->gc_held && !big_hold_gc(b, t0))
        return;
    if (big_call(b, big_build_protected, b, &rc) != LUA_OK)
        rc = -1; /* out of memory: the thread is dead */
    big_pace(b, t0);
    if (rc == 0)
        return;
    lh_json_job_free(b->job);
    b->job = NULL;
    luaL_unref(b->vm->L, LUA_REGISTRYINDEX, b->co_ref);
    b->co_ref = LUA_NOREF;
    if (e->stage >= STAGE_ACCEPTED) { /* answered: without tables, its handlers fail */
        big_run(b);
    } else if (rc != 1) {
        lua_gc(b->vm->L, LUA_GCCOLLECT);
        refuse(e, 503, LH_REJECT_OVERLOAD,
               "not enough memory for the body and its tables (--memory-limit)");
    } else {
        big_admit(b);
    }
}

/* Collector steps for about SLICE_NS; the end once GC_CYCLES cycles finished. */
static void on_hold_waited(uv_timer_t *t)
{
    big_t *b = t->data;
    uv_idle_start(&b->idle, on_big_idle);
}

static void big_gc(big_t *b, uint64_t t0)
{
    lua_State *L = b->vm->L;
    if (b->vm->gc_holds > 0 && !b->app->stopping) { /* another big event's: its tables wait */
        uv_idle_stop(&b->idle);
        uv_timer_start(&b->timer, on_hold_waited, 10, 0);
        return;
    }
    lua_gc(L, LUA_GCINC, 0, 0, 0); /* in case a script switched modes: a generational step
                                      never reports a cycle's end */
    while (b->gc_cycles < GC_CYCLES && !b->app->stopping) {
        if (lua_gc(L, LUA_GCSTEP, 0))
            b->gc_cycles++;
        if (uv_hrtime() - t0 >= SLICE_NS)
            return;
    }
    malloc_trim(0); /* freed pages of the heap's middle go back too, not just its top */
    big_end(b);
}

/* The stop's wait ended (deadline, second signal) while the body was still checked or its
** tables built: it never runs now, with the journal closed and the handlers' runs
** cancelled. Unanswered, it gets 503; answered, the journal keeps its runs as a stop leaves
** any run cut short, and they run at the next start. */
static void big_stop(big_t *b)
{
    lh_event_t *e = b->e;
    if (e->stage < STAGE_ACCEPTED) {
        refuse(e, 503, LH_REJECT_OVERLOAD, "the server is stopping");
        return;
    }
    answer(e->reply, e->reply_data, 503, "Retry-After: 1\r\n", NULL,
           "the server stopped before the event's handlers ran");
    e->reply = NULL;
    event_free(e);
}

/* The loop thread's CPU time: a slice's own cost, which a busy machine's preemption does not
** lengthen (its wall time is at least that). */
static double thread_cpu_seconds(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_big_idle(uv_idle_t *h)
{
    big_t *b = h->data;
    uint64_t t0 = uv_hrtime();
    big_phase_t phase = b->phase;
    lh_metrics_t *m = &b->app->metrics; /* b may be freed by the slice */
    double cpu0 = thread_cpu_seconds();

    if (b->app->finished && b->e != NULL && (b->phase == BIG_VALIDATE || b->phase == BIG_BUILD)) {
        big_stop(b);
        return;
    }

    switch (b->phase) {
    case BIG_VALIDATE:
        big_validate(b, t0);
        break;
    case BIG_BUILD:
        big_build(b, t0);
        break;
    case BIG_GC:
        big_gc(b, t0);
        break;
    case BIG_WAIT:
        uv_idle_stop(h);
        break;
    }
    if (phase != BIG_WAIT) {
        int i = phase == BIG_VALIDATE ? LH_BIG_CHECK
                : phase == BIG_BUILD  ? LH_BIG_BUILD
                                      : LH_BIG_COLLECT;
        double s = thread_cpu_seconds() - cpu0;
        m->big_slices[i]++;
        m->big_slice_sum[i] += s;
        if (s > m->big_slice_max[i])
            m->big_slice_max[i] = s;
    }
}

/* A big body's event, with its body userdata (`owned` moved in: always taken, freed on
** failure) and ctx; NULL when it was refused (answered 503). Its phases are not started. */
static big_t *big_new(lh_app_t *app, const lh_dispatch_input_t *in, char *owned, size_t len)
{
    lh_event_t *e = event_new(app, in);
    if (e == NULL) {
        free(owned);
        return NULL;
    }
    big_t *b = calloc(1, sizeof(*b));
    if (b == NULL || uv_idle_init(app->loop, &b->idle) != 0) {
        free(b);
        free(owned);
        refuse(e, 503, LH_REJECT_OVERLOAD, "out of memory");
        return NULL;
    }
    uv_timer_init(app->loop, &b->timer); /* cannot fail */
    b->open_handles = 2;
    lh_vm_t *vm = e->vm;
    b->idle.data = b;
    b->timer.data = b;
    b->e = e;
    b->app = app;
    b->vm = vm;
    b->co_ref = LUA_NOREF;
    b->newer_ref = LUA_NOREF;
    b->budget = BUDGET_FIRST;
    b->phase = BIG_WAIT;
    e->big = b;
    vm->tasks++;
    if (vm->big_events++ == 0)
        lua_gc(vm->L, LUA_GCINC, 0, 0, 0);
    b->holds = 1;
    app->tasks++;
    if (owned == NULL) {
        refuse(e, 503, LH_REJECT_OVERLOAD, "out of memory");
        return NULL;
    }
    big_start_t a = {b, in, owned, len};
    if (big_call(b, big_start_protected, &a, NULL) != LUA_OK) {
        free(a.owned); /* NULL once the userdata has it: its __gc frees it */
        lua_gc(vm->L, LUA_GCCOLLECT);
        refuse(e, 503, LH_REJECT_OVERLOAD, "not enough memory for the body (--memory-limit)");
        return NULL;
    }
    return b;
}

/* lh_dispatch_event for a big body: its phases begin. Its bytes are moved out of the request
** when they can be (a copy of 50 MB would hold the loop for a good part of a second). */
static void big_submit(lh_app_t *app, const lh_dispatch_input_t *in, lh_request_t *req)
{
    char *owned = lh_request_take_body(req);
    if (owned == NULL && (owned = malloc(req->body_len + 1)) != NULL) {
        memcpy(owned, req->body, req->body_len);
        owned[req->body_len] = '\0';
    }
    big_t *b = big_new(app, in, owned, req->body_len);
    if (b == NULL)
        return;
    b->phase = BIG_VALIDATE;
    if (uv_idle_start(&b->idle, on_big_idle) != 0) {
        refuse(b->e, 503, LH_REJECT_OVERLOAD, "out of memory");
        return;
    }
    if ((b->job = lh_json_job_new(NULL, b->body, b->body_len)) == NULL)
        refuse(b->e, 503, LH_REJECT_OVERLOAD, "out of memory");
}

/* ------------------------------------------------------------------ all steps */

static void run_when_accepted(void *data, lh_event_t *e, int status)
{
    (void)data;
    if (status == 0)
        lh_dispatch_run(e);
}

void lh_dispatch_submit(lh_app_t *app, const lh_dispatch_input_t *in)
{
    lh_event_t *e = lh_dispatch_decode(app, in);
    if (e == NULL || lh_dispatch_admit(e) != 0)
        return;
    lh_dispatch_accept(e, run_when_accepted, NULL);
}

void lh_dispatch_event(lh_app_t *app, lh_request_t *req, const char *remote, lh_reply_cb reply,
                       void *data)
{
    lh_dispatch_input_t in = {
        .req = req,
        .remote = remote,
        .attempt = 1,
        .reply = reply,
        .reply_data = data,
        .journal = 1,
    };
    if (req->body_len >= app->cfg->big_body && app->loop != NULL)
        big_submit(app, &in, req);
    else
        lh_dispatch_submit(app, &in);
}

/* A run the journal cannot deliver ends at once, recorded as dead or failed. */
static void redeliver_failed(lh_app_t *app, const lh_journal_run_t *run, lh_end_t how,
                             const char *why)
{
    lh_journal_end_t end = {.jid = run->jid,
                            .handler = run->handler,
                            .attempt = run->attempt,
                            .started = lh_clock_wall(app->vm->clock),
                            .retries = -1,
                            .outcome = LH_OUTCOME_ERROR,
                            .how = how,
                            .error = why};
    lh_field_t f[] = {LH_FIELD("id", run->delivery), LH_FIELD("handler", run->handler),
                      LH_FIELD("error", why)};
    lh_log_fields(LH_WARN, "journal: run not delivered", f, 3);
    lh_journal_run_ended(app->journal, &end);
}

/* Under lua_pcall (decoding allocates): ctx.headers = the run's stored headers. Stack:
** run ctx. */
static int stored_headers(lua_State *L)
{
    const lh_journal_run_t *run = lua_touserdata(L, 1);
    char err[128];
    if (lh_json_decode(L, run->headers, run->headers_len, err, sizeof(err)) == 0 &&
        lua_istable(L, -1))
        lua_setfield(L, 2, "headers");
    return 0;
}

/* A redelivered event, decoded: its stored headers, delivery id and the one handler it runs
** again (counted in app->retrying). */
static void redelivered(lh_event_t *e, const lh_journal_run_t *run, const lh_handler_t *h)
{
    lh_vm_t *vm = e->vm;
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    /* the stored headers, as the first attempt saw them (but the secret's) */
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->ctx_ref); /* ctx */
    /* out of memory: the event keeps the headers it was decoded with (none) */
    lh_task_protect(L, stored_headers, (void *)run, 1, 0);
    lua_settop(L, top);
    snprintf(e->id, sizeof(e->id), "%s", run->delivery);
    e->jid = run->jid;
    e->own_handler = (int)(h - vm->handlers);
    e->own_route.handlers = &e->own_handler;
    e->own_route.n = 1;
    e->route = &e->own_route;
    e->nhandlers = 1;
    e->stage = STAGE_ACCEPTED;
    e->redelivered = 1;
    e->app->retrying++;
}

/* A big stored body runs again as a fresh one would: its tables built in slices, from its
** bytes taken over from the journal (not copied), without validation (it was valid when
** accepted); its action is read from the tables. */
static void redeliver_big(lh_app_t *app, const lh_journal_run_t *run, const lh_handler_t *h,
                          const lh_dispatch_input_t *in)
{
    char *owned = lh_journal_run_take_body(run);
    if (owned == NULL && (owned = malloc(run->body_len + 1)) != NULL) {
        memcpy(owned, run->body, run->body_len);
        owned[run->body_len] = '\0';
    }
    big_t *b = big_new(app, in, owned, run->body_len);
    if (b == NULL) {
        redeliver_failed(app, run, LH_END_NORMAL, "not enough memory for the stored body");
        return;
    }
    lh_event_t *e = b->e;
    if ((e->action = calloc(1, 1)) == NULL) { /* "" until the tables say */
        refuse(e, 503, LH_REJECT_OVERLOAD, "out of memory");
        redeliver_failed(app, run, LH_END_NORMAL, "not enough memory for the stored body");
        return;
    }
    redelivered(e, run, h);
    big_build_start(b); /* then big_run: the action, then the run */
}

void lh_dispatch_redeliver(void *data, const lh_journal_run_t *run)
{
    lh_app_t *app = data;
    lh_vm_t *vm = app->vm;
    const lh_handler_t *h = lh_vm_handler_find(vm, run->handler);
    char why[300];
    if (h == NULL) {
        /* never attached to another handler: the run waits, dead, for its handler to come back
        ** (luahook replay) */
        snprintf(why, sizeof(why),
                 "the handler %s no longer exists (scripts reloaded or changed): the run is "
                 "not attached to another handler",
                 run->handler);
        redeliver_failed(app, run, LH_END_PERMANENT, why);
        return;
    }
    lh_request_t req;
    memset(&req, 0, sizeof(req));
    req.body = (char *)run->body; /* only read: decode takes it as const */
    req.body_len = run->body_len;
    req.path = run->path;
    req.path_len = strlen(run->path);
    req.received_at = run->received;
    req.received_ns = uv_hrtime();
    lh_dispatch_input_t in = {.req = &req, .remote = run->remote, .attempt = run->attempt};
    if (run->body_len >= app->cfg->big_body && app->loop != NULL) {
        redeliver_big(app, run, h, &in);
        return;
    }
    lh_event_t *e = lh_dispatch_decode(app, &in);
    if (e == NULL) {
        redeliver_failed(app, run, LH_END_NORMAL, "the stored body could not be decoded again");
        return;
    }
    redelivered(e, run, h);
    e->stats = lh_metrics_action(&app->metrics, e->action, e->action_len);
    lh_dispatch_run(e);
}
