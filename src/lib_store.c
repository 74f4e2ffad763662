/*
** store.get/set/incr/delete/keys/lock — the Lua side of store.c, one table per script
** (its namespace is the script's name as loaded: the path inside a folder given on the
** command line, or the base name of a script given itself). Values live in the app,
** outside every VM: a reload keeps them, and keeps the locks.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json.h"
#include "lib.h"
#include "store.h"
#include "task.h"

#define GUARD_MT "luahook.store.lock"

/* Upvalues of every function: 1 the lh_vm_t (light userdata), 2 the namespace (string). */
static lh_store_t *store_of(lua_State *L, const char *fn)
{
    lh_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
    if (vm->app->store == NULL)
        luaL_error(L, "store.%s: there is no store here", fn);
    return vm->app->store;
}

static const char *ns_of(lua_State *L)
{
    return lua_tostring(L, lua_upvalueindex(2));
}

static const char *check_key(lua_State *L, int arg, size_t *klen)
{
    const char *k = luaL_checklstring(L, arg, klen);
    if (*klen == 0 || *klen > LH_STORE_MAX_KEY || memchr(k, '\0', *klen) != NULL)
        luaL_argerror(
            L, arg,
            lua_pushfstring(L, "a key is 1 to %d bytes, without a NUL byte", LH_STORE_MAX_KEY));
    return k;
}

static double opt_ttl(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return 0;
    double ttl = luaL_checknumber(L, arg);
    if (!(ttl > 0) || ttl > LH_STORE_MAX_TTL)
        luaL_argerror(L, arg, "ttl must be a positive number of seconds (at most 10 years)");
    return ttl;
}

static void push_value(lua_State *L, const lh_store_value_t *v)
{
    char err[160];
    switch (v->type) {
    case LH_SV_BOOL:
        lua_pushboolean(L, v->i != 0);
        break;
    case LH_SV_INT:
        lua_pushinteger(L, (lua_Integer)v->i);
        break;
    case LH_SV_FLOAT:
        lua_pushnumber(L, (lua_Number)v->f);
        break;
    case LH_SV_STRING:
        lua_pushlstring(L, v->bytes, v->len);
        break;
    case LH_SV_JSON:
        if (lh_json_decode(L, v->bytes, v->len, err, sizeof(err)) != 0)
            luaL_error(L, "store: a stored table does not decode: %s", err);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

/* The value at `arg` as a store value; a table becomes JSON (pushed, so keep the stack). */
static void to_value(lua_State *L, int arg, lh_store_value_t *v, const char *fn)
{
    memset(v, 0, sizeof(*v));
    switch (lua_type(L, arg)) {
    case LUA_TNIL:
    case LUA_TNONE:
        break;
    case LUA_TBOOLEAN:
        v->type = LH_SV_BOOL;
        v->i = lua_toboolean(L, arg);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, arg)) {
            v->type = LH_SV_INT;
            v->i = (int64_t)lua_tointeger(L, arg);
        } else {
            v->type = LH_SV_FLOAT;
            v->f = (double)lua_tonumber(L, arg);
        }
        break;
    case LUA_TSTRING:
        v->type = LH_SV_STRING;
        v->bytes = lua_tolstring(L, arg, &v->len);
        break;
    case LUA_TTABLE: {
        luaL_Buffer b;
        lua_pushvalue(L, arg);
        int idx = lua_gettop(L);
        luaL_buffinit(L, &b);
        lh_json_encode(L, idx, &b);
        luaL_pushresult(&b); /* ... t json */
        v->type = LH_SV_JSON;
        v->bytes = lua_tolstring(L, -1, &v->len);
        break;
    }
    default:
        luaL_error(L, "store.%s: a value is a string, number, boolean or table, not %s", fn,
                   luaL_typename(L, arg));
    }
}

/* store.get(key) -> value | nil */
static int store_get(lua_State *L)
{
    lh_store_t *s = store_of(L, "get");
    size_t klen;
    const char *k = check_key(L, 1, &klen);
    lh_store_value_t v;
    lh_store_get(s, ns_of(L), k, klen, &v);
    push_value(L, &v);
    return 1;
}

/* store.set(key, value [, ttl]); value nil deletes */
static int store_set(lua_State *L)
{
    lh_store_t *s = store_of(L, "set");
    size_t klen;
    char err[160];
    const char *k = check_key(L, 1, &klen);
    double ttl = opt_ttl(L, 3);
    lh_store_value_t v;
    to_value(L, 2, &v, "set");
    if (lh_store_set(s, ns_of(L), k, klen, &v, ttl, err, sizeof(err)) != 0)
        return luaL_error(L, "store.set: %s", err);
    return 0;
}

/* store.incr(key [, by [, ttl]]) -> the new value */
static int store_incr(lua_State *L)
{
    lh_store_t *s = store_of(L, "incr");
    size_t klen;
    char err[160];
    const char *k = check_key(L, 1, &klen);
    lh_store_value_t by = {.type = LH_SV_INT, .i = 1}, out;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TNUMBER);
        to_value(L, 2, &by, "incr");
    }
    double ttl = opt_ttl(L, 3);
    if (lh_store_incr(s, ns_of(L), k, klen, &by, ttl, &out, err, sizeof(err)) != 0)
        return luaL_error(L, "store.incr: %s", err);
    push_value(L, &out);
    return 1;
}

/* store.delete(key) -> true if it was there */
static int store_delete(lua_State *L)
{
    lh_store_t *s = store_of(L, "delete");
    size_t klen;
    const char *k = check_key(L, 1, &klen);
    lua_pushboolean(L, lh_store_delete(s, ns_of(L), k, klen));
    return 1;
}

typedef struct {
    const char **k;
    size_t *len;
    size_t n, cap;
    int oom;
} keys_t;

static void add_key(void *data, const char *key, size_t klen)
{
    keys_t *ks = data;
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 32;
        const char **k = realloc(ks->k, cap * sizeof(*k));
        if (k != NULL)
            ks->k = k;
        size_t *len = realloc(ks->len, cap * sizeof(*len));
        if (len != NULL)
            ks->len = len;
        if (k == NULL || len == NULL) {
            ks->oom = 1;
            return;
        }
        ks->cap = cap;
    }
    ks->k[ks->n] = key;
    ks->len[ks->n++] = klen;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* store.keys([prefix]) -> sorted list of keys */
static int store_keys(lua_State *L)
{
    lh_store_t *s = store_of(L, "keys");
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 1, "", &plen);
    keys_t ks = {0};
    lua_settop(L, 1);
    lh_store_keys(s, ns_of(L), prefix, plen, add_key, &ks);
    if (ks.oom || !lua_checkstack(L, 2)) {
        free(ks.k), free(ks.len);
        return luaL_error(L, "store.keys: not enough memory");
    }
    /* keys hold no NUL byte: strcmp orders them */
    if (ks.n > 1)
        qsort(ks.k, ks.n, sizeof(*ks.k), cmp_str);
    lua_createtable(L, (int)ks.n, 0);
    for (size_t i = 0; i < ks.n; i++) {
        lua_pushstring(L, ks.k[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    free(ks.k), free(ks.len);
    return 1;
}

/* ------------------------------------------------------------------ lock */

/* The lock a run holds, as a to-be-closed value on its stack: closing it (a return, an
** error, a timeout or shutdown closing the coroutine) releases the lock. */
typedef struct {
    lh_store_t *store;
    lh_store_lock_t *lock; /* NULL: not held (yet, or any more) */
    uint64_t owner;
} guard_t;

typedef struct {
    lh_pending_t base; /* first: the task sees a lh_pending_t */
    lh_store_waiter_t w;
    lh_task_t *task;
    lh_store_t *store;
    guard_t *guard; /* on the waiting coroutine's stack, anchored there */
} lock_wait_t;

static int guard_close(lua_State *L)
{
    guard_t *g = lua_touserdata(L, 1);
    if (g != NULL && g->lock != NULL) {
        lh_store_unlock(g->store, g->lock, g->owner);
        g->lock = NULL;
    }
    return 0;
}

static void lock_wait_cancel(lh_pending_t *p)
{
    lock_wait_t *op = (lock_wait_t *)p;
    lh_store_lock_cancel(op->store, &op->w);
    free(op);
}

static void on_granted(lh_store_waiter_t *w)
{
    lock_wait_t *op = (lock_wait_t *)((char *)w - offsetof(lock_wait_t, w));
    lh_task_t *t = op->task;
    op->guard->lock = w->lock;
    t->pending = NULL;
    free(op);
    lh_task_resume(t, 0);
}

/* fn returned or raised: release, then pass its results or its error on */
static int lock_done_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)ctx;
    lua_closeslot(L, 3); /* the guard: the lock goes to the next waiter */
    if (status != LUA_OK && status != LUA_YIELD)
        return lua_error(L);
    return lua_gettop(L) - 3;
}

/* The lock is ours: run fn under a protected call, so that an error releases it too */
static int lock_held_k(lua_State *L, int status, lua_KContext ctx)
{
    (void)status, (void)ctx;
    lua_toclose(L, 3);
    lua_pushvalue(L, 2);
    return lock_done_k(L, lua_pcallk(L, 0, LUA_MULTRET, 0, 0, lock_done_k), 0);
}

/* store.lock(key, fn) -> fn's results: runs fn holding the lock of key; other runs wait */
static int store_lock(lua_State *L)
{
    lh_store_t *s = store_of(L, "lock");
    size_t klen;
    const char *k = check_key(L, 1, &klen);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lh_task_t *t = lh_task_current(L);
    if (t == NULL || !lua_isyieldable(L))
        return luaL_error(L, "store.lock: only inside a handler or a timer callback, in its "
                             "own coroutine (waiting must not block the server)");
    lua_settop(L, 2);
    /* 1. everything that may raise, while nothing is held: the guard, marked not held */
    guard_t *g = lua_newuserdatauv(L, sizeof(*g), 0); /* key fn guard */
    g->store = s;
    g->lock = NULL;
    g->owner = (uint64_t)(uintptr_t)t;
    luaL_setmetatable(L, GUARD_MT);
    lock_wait_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return luaL_error(L, "store.lock: not enough memory");
    /* 2. the lock */
    lh_store_lock_t *lock;
    int rc = lh_store_lock(s, ns_of(L), k, klen, g->owner, &op->w, &lock);
    if (rc != 0)
        free(op);
    if (rc == -1)
        return luaL_error(L, "store.lock: this run holds the lock of '%s' already", k);
    if (rc == -2)
        return luaL_error(L, "store.lock: not enough memory");
    if (rc == 1) {
        g->lock = lock;
        return lock_held_k(L, LUA_OK, 0);
    }
    op->base.cancel = lock_wait_cancel;
    op->task = t;
    op->store = s;
    op->guard = g;
    op->w.granted = on_granted;
    t->pending = &op->base;
    return lua_yieldk(L, 0, 0, lock_held_k);
}

int lh_lib_store_push(lua_State *L, lh_vm_t *vm, const char *ns)
{
    static const luaL_Reg funcs[] = {
        {"get", store_get},   {"set", store_set},   {"incr", store_incr}, {"delete", store_delete},
        {"keys", store_keys}, {"lock", store_lock}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, GUARD_MT)) { /* once per VM */
        lua_pushcfunction(L, guard_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, guard_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlibtable(L, funcs);
    lua_pushlightuserdata(L, vm);
    lua_pushstring(L, ns);
    luaL_setfuncs(L, funcs, 2);
    return 1;
}
