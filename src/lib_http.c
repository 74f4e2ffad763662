/*
** http.request{...} and http.get/post/put/patch/delete(url [, opts]): outbound HTTP that
** reads top to bottom in a handler while the loop never blocks (OpenResty's cosockets).
** The handler's coroutine yields while the request is in flight.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>

#include "http_client.h"
#include "json.h"
#include "lib.h"
#include "task.h"

#define RES_MT           "luahook.http.response"
#define DEFAULT_MAX_SIZE (16u * 1024 * 1024)

typedef struct {
    lh_pending_t base;  /* first: the task sees a lh_pending_t */
    lh_http_req_t *req; /* owned */
    lh_task_t *task;    /* borrowed: the task waits for this */
    char what[300];     /* "METHOD url-without-query", for error messages */
} http_op_t;

/* Resumed with (raise_key, message): the transport says the caller must raise. */
static char raise_key;

static lh_vm_t *vm_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Values of opts that must have a type, or be absent. */
static int opt_field(lua_State *L, int opts, const char *name, int type)
{
    int t = lua_getfield(L, opts, name);
    if (t != LUA_TNIL && t != type)
        luaL_error(L, "http: option '%s' must be a %s, not %s", name, lua_typename(L, type),
                   luaL_typename(L, -1));
    return t != LUA_TNIL;
}

static double opt_seconds(lua_State *L, int opts, const char *name, double def)
{
    double v = def;
    if (opt_field(L, opts, name, LUA_TNUMBER)) {
        v = lua_tonumber(L, -1);
        if (!(v > 0) || !isfinite(v))
            luaL_error(L, "http: option '%s' must be a positive number of seconds", name);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_bool(lua_State *L, int opts, const char *name)
{
    int v = 0;
    if (opt_field(L, opts, name, LUA_TBOOLEAN))
        v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Percent-encodes s[0..n) as RFC 3986 asks of a query: unreserved bytes stay. */
static void add_escaped(luaL_Buffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            luaL_addchar(b, (char)c);
        } else {
            luaL_addchar(b, '%');
            luaL_addchar(b, hex[c >> 4]);
            luaL_addchar(b, hex[c & 15]);
        }
    }
}

/* url .. "?" .. sorted, escaped query pairs; pushes the full url. Every piece is a Lua
** string on the stack until the final concat: an error (the memory limit) leaks nothing. */
static void push_url(lua_State *L, int opts, const char *url)
{
    const char *keys[256];
    size_t n = 0;
    if (!opt_field(L, opts, "query", LUA_TTABLE)) {
        lua_pop(L, 1);
        lua_pushstring(L, url);
        return;
    }
    int q = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, q) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "http: query keys must be strings");
        if (n == sizeof(keys) / sizeof(keys[0]))
            luaL_error(L, "http: too many query parameters");
        keys[n++] = lua_tostring(L, -2); /* the key stays alive in the query table */
        lua_pop(L, 1);
    }
    qsort(keys, n, sizeof(keys[0]), cmp_strings);
    luaL_checkstack(L, (int)n + 4, "http: too many query parameters");
    lua_pushstring(L, url); /* q url */
    for (size_t i = 0; i < n; i++) {
        lua_getfield(L, q, keys[i]); /* q url pairs... v */
        int t = lua_type(L, -1);
        if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN)
            luaL_error(L, "http: query value '%s' must be a string, number or boolean", keys[i]);
        size_t vlen;
        const char *v = t == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false")
                                          : lua_tolstring(L, -1, &vlen);
        if (t == LUA_TBOOLEAN)
            vlen = strlen(v);
        luaL_Buffer b; /* above v, which stays alive until the pair is pushed */
        luaL_buffinit(L, &b);
        luaL_addchar(&b, i == 0 && strchr(url, '?') == NULL ? '?' : '&');
        add_escaped(&b, keys[i], strlen(keys[i]));
        luaL_addchar(&b, '=');
        add_escaped(&b, v, vlen);
        luaL_pushresult(&b); /* q url pairs... v pair */
        lua_remove(L, -2);   /* q url pairs... pair */
    }
    lua_concat(L, (int)n + 1); /* q full */
    lua_remove(L, q);
}

static void op_cancel(lh_pending_t *p)
{
    http_op_t *op = (http_op_t *)p;
    lh_http_req_free(op->req);
    free(op);
}

/* The response table: status, headers (lower-case names, repeats joined), body. */
static void push_response(lua_State *co, lh_http_req_t *req)
{
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, req->status);
    lua_setfield(co, -2, "status");
    lua_pushlstring(co, req->resp ? req->resp : "", req->resp_len);
    lua_setfield(co, -2, "body");
    lua_newtable(co);
    const char *p = req->resp_head ? req->resp_head : "";
    const char *end = p + req->head_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        const char *colon = memchr(p, ':', (size_t)(next - p));
        if (colon != NULL && !(next - p >= 5 && memcmp(p, "HTTP/", 5) == 0)) {
            luaL_Buffer b;
            const char *v = colon + 1, *ve = eol ? eol : end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            luaL_buffinit(co, &b);
            for (const char *k = p; k < colon; k++)
                luaL_addchar(&b, (char)((*k >= 'A' && *k <= 'Z') ? *k + 32 : *k));
            luaL_pushresult(&b); /* res hdrs name */
            lua_pushvalue(co, -1);
            if (lua_rawget(co, -3) == LUA_TSTRING) { /* res hdrs name old */
                lua_pushliteral(co, ", ");
                lua_pushlstring(co, v, (size_t)(ve - v));
                lua_concat(co, 3);
            } else {
                lua_pop(co, 1);
                lua_pushlstring(co, v, (size_t)(ve - v));
            }
            lua_rawset(co, -3); /* res hdrs */
        }
        p = next;
    }
    lua_setfield(co, -2, "headers");
    luaL_setmetatable(co, RES_MT);
}

static const char *const kind_names[] = {
    [LH_HTTP_OK] = "ok",           [LH_HTTP_RESOLVE] = "resolve",
    [LH_HTTP_CONNECT] = "connect", [LH_HTTP_TIMEOUT] = "timeout",
    [LH_HTTP_TLS_VERIFY] = "tls",  [LH_HTTP_TLS_HANDSHAKE] = "tls",
    [LH_HTTP_TLS_CA_FILE] = "tls", [LH_HTTP_TOO_LARGE] = "too_large",
    [LH_HTTP_OTHER] = "other",     [LH_HTTP_RAISE] = "other",
};

/* nil, "METHOD url: cause (the transport's detail)", kind — whichever transport failed. */
static void push_failure(lua_State *co, const http_op_t *op)
{
    const lh_http_req_t *req = op->req;
    const char *why;
    char buf[64];
    switch (req->error) {
    case LH_HTTP_RESOLVE:
        why = "could not resolve the host";
        break;
    case LH_HTTP_CONNECT:
        why = "connection failed (refused or unreachable)";
        break;
    case LH_HTTP_TIMEOUT:
        snprintf(buf, sizeof(buf), "timed out after %g s", req->timeout);
        why = buf;
        break;
    case LH_HTTP_TLS_VERIFY:
        why = "TLS certificate verification failed";
        break;
    case LH_HTTP_TLS_HANDSHAKE:
        why = "TLS handshake failed";
        break;
    case LH_HTTP_TLS_CA_FILE:
        why = "cannot read the TLS CA file";
        break;
    case LH_HTTP_TOO_LARGE:
        snprintf(buf, sizeof(buf), "response larger than max_size (%zu bytes)", req->max_size);
        why = buf;
        break;
    default:
        why = req->cause ? req->cause : "the request failed";
        break;
    }
    lua_pushnil(co);
    if (req->detail[0] != '\0')
        lua_pushfstring(co, "%s: %s (%s)", op->what, why, req->detail);
    else
        lua_pushfstring(co, "%s: %s", op->what, why);
    lua_pushstring(co, kind_names[req->error]);
}

/* Under lua_pcall on the VM's main state: the values the waiting call returns, pushed.
** They allocate, and a real out-of-memory here must fail the run, not abort the server. */
static int push_outcome(lua_State *L)
{
    http_op_t *op = lua_touserdata(L, 1);
    lh_http_req_t *req = op->req;
    lua_settop(L, 0);
    if (req->error == LH_HTTP_OK) {
        push_response(L, req);
    } else if (req->error == LH_HTTP_RAISE) {
        lua_pushlightuserdata(L, &raise_key);
        lua_pushstring(L, req->detail);
    } else {
        push_failure(L, op);
    }
    return lua_gettop(L);
}

static void on_done(lh_http_req_t *req)
{
    http_op_t *op = req->data;
    lh_task_t *t = op->task;
    lua_State *L = t->vm->L;
    int top = lua_gettop(L);
    char msg[sizeof(op->what) + 64];
    t->pending = NULL;
    int status = lh_task_protect(L, push_outcome, op, 0, LUA_MULTRET);
    int n = lua_gettop(L) - top;
    if (status != LUA_OK || !lua_checkstack(t->co, n)) {
        snprintf(msg, sizeof(msg), "not enough memory for the outcome of http %s", op->what);
        lua_settop(L, top);
        lh_http_req_free(req);
        free(op);
        lh_task_fail(t, LH_OUTCOME_MEMORY, msg);
        return;
    }
    lua_xmove(L, t->co, n); /* moves, allocates nothing */
    lh_http_req_free(req);
    free(op);
    lh_task_resume(t, n);
}

/* The continuation of a request: what on_done pushed are its results. */
static int http_resumed(lua_State *L, int status, lua_KContext base)
{
    (void)status;
    int n = lua_gettop(L) - (int)base;
    if (n == 2 && lua_touserdata(L, -2) == &raise_key)
        return lua_error(L);
    return n;
}

/* Checks opts.headers (string names; string or number values) and pushes them as a list
** name, value, name, value... of strings, so that nothing allocated by Lua is needed once C
** resources are held. Raises on misuse. */
static void push_headers(lua_State *L, int opts)
{
    lua_newtable(L); /* list */
    int list = lua_gettop(L);
    if (!opt_field(L, opts, "headers", LUA_TTABLE)) { /* list hdrs? */
        lua_pop(L, 1);
        return;
    }
    int hi = lua_gettop(L);
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, hi) != 0) { /* list hdrs k v */
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "http: header names must be strings");
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "http: header '%s' must be a string or a number", lua_tostring(L, -2));
        const char *k = lua_tostring(L, -2);
        lua_pushvalue(L, -1);
        const char *v = lua_tostring(L, -1); /* list hdrs k v vs */
        if (k[0] == '\0' || strcspn(k, ":\r\n ") != strlen(k) || strpbrk(v, "\r\n") != NULL)
            luaL_error(L, "http: header '%s' holds a forbidden character", k);
        lua_pushvalue(L, -3);
        lua_rawseti(L, list, ++n); /* list hdrs k v vs */
        lua_rawseti(L, list, ++n); /* list hdrs k v */
        lua_pop(L, 1);             /* list hdrs k */
    }
    lua_pop(L, 1); /* list */
}

static char *dup_or_null(const char *s, int *failed)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    *failed |= d == NULL;
    return d;
}

/* http.request(opts) */
static int http_request(lua_State *L)
{
    lh_vm_t *vm = vm_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lh_task_t *t = lh_task_current(L);
    if (t == NULL || !lua_isyieldable(L))
        return luaL_error(L, "http: only inside a handler or a timer callback, in its own "
                             "coroutine (the call waits without blocking the server)");
    lh_transport_t *tp = vm->app->transport ? vm->app->transport : lh_http_transport(vm->app->http);
    if (tp == NULL)
        return luaL_error(L, "http: not available in this mode");

    /* 1. everything that may raise, while nothing is owned */
    if (lua_getfield(L, 1, "url") != LUA_TSTRING) /* 2: url */
        return luaL_error(L, "http: option 'url' must be a string, not %s", luaL_typename(L, -1));
    const char *url = lua_tostring(L, 2);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return luaL_error(L, "http: url must start with http:// or https:// (got '%s')", url);
    int has_body = opt_field(L, 1, "body", LUA_TSTRING);   /* 3: body */
    int has_json = lua_getfield(L, 1, "json") != LUA_TNIL; /* 4: json */
    if (has_body && has_json)
        return luaL_error(L, "http: give 'body' or 'json', not both");
    if (has_json) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        lh_json_encode(L, 4, &b);
        luaL_pushresult(&b);
        lua_replace(L, 3); /* 3: the body */
        has_body = 1;
    }
    const char *method = has_body ? "POST" : "GET";
    if (opt_field(L, 1, "method", LUA_TSTRING)) /* 5: method */
        method = lua_tostring(L, 5);
    if (*method == '\0')
        return luaL_error(L, "http: method must not be empty");
    for (const char *m = method; *m; m++)
        if (!((*m >= 'A' && *m <= 'Z') || *m == '-'))
            return luaL_error(L, "http: method '%s' must be upper-case letters", method);
    double timeout = opt_seconds(L, 1, "timeout", 30);
    double connect_timeout = opt_seconds(L, 1, "connect_timeout", 10);
    lua_Integer max_size = DEFAULT_MAX_SIZE;
    if (opt_field(L, 1, "max_size", LUA_TNUMBER)) {
        max_size = lua_tointeger(L, -1);
        if (max_size <= 0)
            return luaL_error(L, "http: option 'max_size' must be a positive integer");
    }
    lua_pop(L, 1);
    int insecure = opt_bool(L, 1, "insecure");
    int follow = opt_bool(L, 1, "follow");
    const char *ca_file = NULL;
    if (opt_field(L, 1, "ca_file", LUA_TSTRING)) /* 6: ca_file */
        ca_file = lua_tostring(L, 6);
    push_headers(L, 1); /* 7: header names and values */
    int headers = 7;
    push_url(L, 1, url); /* 8: full url */

    /* 2. C resources; from here on only C failures, handled without raising */
    http_op_t *op = calloc(1, sizeof(*op));
    lh_http_req_t *req = op ? lh_http_req_new() : NULL;
    if (req == NULL) {
        free(op);
        return luaL_error(L, "not enough memory");
    }
    op->base.cancel = op_cancel;
    op->req = req;
    op->task = t;
    size_t ulen = strcspn(url, "?#"); /* a query may carry secrets: never in messages */
    snprintf(op->what, sizeof(op->what), "%s %.*s%s", method, (int)(ulen > 240 ? 240 : ulen), url,
             ulen > 240 ? "..." : "");

    int failed = 0;
    snprintf(req->method, sizeof(req->method), "%s", method);
    failed |= strlen(method) >= sizeof(req->method);
    req->url = dup_or_null(lua_tostring(L, 8), &failed);
    if (has_body) {
        size_t blen;
        const char *body = lua_tolstring(L, 3, &blen);
        if ((req->body = malloc(blen + 1)) != NULL) {
            memcpy(req->body, body, blen + 1);
            req->body_len = blen;
        }
        failed |= req->body == NULL;
        req->json_body = has_json;
    }
    size_t nh = (size_t)lua_rawlen(L, headers) / 2;
    if (nh > 0 && (req->headers = calloc(nh, sizeof(*req->headers))) == NULL)
        failed = 1;
    for (size_t i = 0; req->headers != NULL && i < nh; i++) {
        lua_rawgeti(L, headers, (lua_Integer)(2 * i + 1)); /* strings: no allocation */
        lua_rawgeti(L, headers, (lua_Integer)(2 * i + 2));
        req->headers[i].name = dup_or_null(lua_tostring(L, -2), &failed);
        req->headers[i].value = dup_or_null(lua_tostring(L, -1), &failed);
        req->nheaders = i + 1;
        lua_pop(L, 2);
    }
    req->timeout = timeout;
    req->connect_timeout = connect_timeout;
    req->insecure = insecure;
    req->follow = follow;
    req->ca_file = dup_or_null(ca_file, &failed);
    req->max_size = (size_t)max_size;
    if (failed) {
        lh_http_req_free(req);
        free(op);
        return luaL_error(L, "not enough memory");
    }
    if (lh_transport_start(tp, req, on_done, op) != 0) {
        char msg[sizeof(op->what) + 48];
        snprintf(msg, sizeof(msg), "http: cannot set up the request %s", op->what);
        lh_http_req_free(req);
        free(op);
        return luaL_error(L, "%s", msg);
    }
    t->pending = &op->base;
    return lua_yieldk(L, 0, (lua_KContext)lua_gettop(L), http_resumed);
}

/* http.get(url [, opts]) and friends: opts plus url and method, through http.request. */
static int call_with_method(lua_State *L, const char *method)
{
    luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_newtable(L); /* url opts req */
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, 3);
        }
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, 3, "url");
    lua_pushstring(L, method);
    lua_setfield(L, 3, "method");
    lua_replace(L, 1); /* req opts */
    lua_settop(L, 1);
    return http_request(L);
}

static int http_get(lua_State *L)
{
    return call_with_method(L, "GET");
}

static int http_post(lua_State *L)
{
    return call_with_method(L, "POST");
}

static int http_put(lua_State *L)
{
    return call_with_method(L, "PUT");
}

static int http_patch(lua_State *L)
{
    return call_with_method(L, "PATCH");
}

static int http_delete(lua_State *L)
{
    return call_with_method(L, "DELETE");
}

/* res:json() -> value, or nil, err */
static int res_json(lua_State *L)
{
    char err[256];
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "body");
    size_t len;
    const char *body = lua_tolstring(L, -1, &len);
    if (body == NULL)
        return luaL_error(L, "res:json(): the response has no body");
    if (lh_json_decode(L, body, len, err, sizeof(err)) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static const luaL_Reg res_meth[] = {
    {"json", res_json},
    {NULL, NULL},
};

static const luaL_Reg http_funcs[] = {
    {"request", http_request}, {"get", http_get},       {"post", http_post}, {"put", http_put},
    {"patch", http_patch},     {"delete", http_delete}, {NULL, NULL},
};

int luaopen_lh_http(lua_State *L)
{
    luaL_newmetatable(L, RES_MT); /* mt */
    luaL_newlibtable(L, res_meth);
    luaL_setfuncs(L, res_meth, 0);  /* mt methods */
    lua_setfield(L, -2, "__index"); /* mt */
    lua_pop(L, 1);
    luaL_newlibtable(L, http_funcs);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, http_funcs, 1);
    return 1;
}
