/*
** log.debug|info|warn|error(message [, fields]) — the C sink, with the script, action
** and delivery id of the running handler attached.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json.h"
#include "lib.h"
#include "log.h"
#include "task.h"

#define LOG_MAX_FIELDS 32
/* A table field is written as JSON, cut past this many bytes (then as a string): a log
** line stays a line, whatever a handler passes. */
#define LOG_MAX_TABLE_JSON 1024

static int reserved(const char *k)
{
    static const char *const names[] = {"ts", "level", "msg", "script", "action", "id"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(k, names[i]) == 0)
            return 1;
    return 0;
}

/* json.encode(v) under pcall: the encoder raises on what JSON cannot hold */
static int encode_value(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lh_json_encode(L, 1, &b);
    luaL_pushresult(&b);
    return 1;
}

/* Pushes the text of the field value at the top and says how to write it: 1 (raw JSON:
** numbers, booleans, null, a table that fits) or 0 (a string). */
static int push_value(lua_State *L)
{
    int t = lua_type(L, -1);
    if (t == LUA_TBOOLEAN || lua_isinteger(L, -1) ||
        (t == LUA_TNUMBER && isfinite(lua_tonumber(L, -1)))) {
        luaL_tolstring(L, -1, NULL);
        return 1;
    }
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) { /* json.null */
        lua_pushliteral(L, "null");
        return 1;
    }
    if (t != LUA_TTABLE) {
        luaL_tolstring(L, -1, NULL);
        return 0;
    }
    lua_pushcfunction(L, encode_value);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) { /* a function inside, a cycle, memory... */
        lua_pushfstring(L, "(not JSON: %s)", lua_tostring(L, -1));
        lua_remove(L, -2);
        return 0;
    }
    size_t len;
    const char *j = lua_tolstring(L, -1, &len);
    if (len <= LOG_MAX_TABLE_JSON)
        return 1;
    lua_pushlstring(L, j, LOG_MAX_TABLE_JSON);
    lua_pushliteral(L, "...");
    lua_concat(L, 2);
    lua_remove(L, -2);
    return 0;
}

/* Fields in key order: a Lua table has no order of its own, and a line whose fields move
** from one run to the next cannot be compared or grepped. */
static int by_key(const void *a, const void *b)
{
    return strcmp(((const lh_field_t *)a)->key, ((const lh_field_t *)b)->key);
}

static int log_at(lua_State *L, lh_level_t level)
{
    lh_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
    size_t mlen;
    const char *msg = luaL_checklstring(L, 1, &mlen);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    if (vm->log_ref != LUA_NOREF) { /* luahook test keeps the records as they are */
        lua_settop(L, 2);
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->log_ref);
        static const char *const names[] = {"debug", "info", "warn", "error"};
        lua_pushstring(L, names[level]);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, 2);
        lua_call(L, 3, 0);
        return 0;
    }
    if (!lh_log_enabled(level))
        return 0;

    lh_field_t f[LOG_MAX_FIELDS + 4];
    size_t n = 0;
    lua_Debug ar;
    char where[256];
    /* the caller's script and line, so a log line leads back to its source */
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.currentline);
        f[n++] = LH_FIELD("script", where);
    }
    const lh_task_t *t = vm->cur_task;
    if (t != NULL && t->id != NULL) {
        f[n++] = LH_FIELD("action", t->action);
        f[n++] = LH_FIELD("id", t->id);
    }
    /* a recipe instance's handler: its line names the instance ("qa-chat#1"), since the
    ** script:line above is the recipe's, shared by every instance */
    int by_instance = t != NULL && t->handler != NULL && t->handler->script_id >= 0 &&
                      vm->scripts[t->handler->script_id].site_file != NULL;
    if (by_instance)
        f[n++] = LH_FIELD("handler", t->handler->id);
    size_t own = n; /* luahook's fields stay first, in their order */
    int base = lua_gettop(L);
    luaL_checkstack(L, 2 * LOG_MAX_FIELDS + 8, "log: too many fields");
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (n < LOG_MAX_FIELDS + 3 + (size_t)by_instance && lua_next(L, 2) != 0) { /* ... k v */
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 1);
                continue;
            }
            /* a field never shadows luahook's own: "id" is written as "_id" */
            if (reserved(lua_tostring(L, -2)) ||
                (by_instance && strcmp(lua_tostring(L, -2), "handler") == 0))
                lua_pushfstring(L, "_%s", lua_tostring(L, -2)); /* ... k v _k */
            else
                lua_pushvalue(L, -2); /* ... k v k */
            const char *k = lua_tostring(L, -1);
            size_t vlen;
            lua_pushvalue(L, -2);       /* ... k v k v */
            int number = push_value(L); /* ... k v k v vs */
            lua_remove(L, -2);          /* ... k v k vs */
            const char *v = lua_tolstring(L, -1, &vlen);
            /* keep k and vs alive on the stack until the line is written */
            lua_insert(L, base + 1);
            lua_insert(L, base + 1); /* k vs ... k v */
            lua_pop(L, 1);           /* ... k */
            f[n++] = (lh_field_t){k, v, vlen, number};
        }
    }
    qsort(f + own, n - own, sizeof(f[0]), by_key);
    lh_log_fields(level, msg, f, n);
    lua_settop(L, base);
    return 0;
}

static int log_debug(lua_State *L)
{
    return log_at(L, LH_DEBUG);
}

static int log_info(lua_State *L)
{
    return log_at(L, LH_INFO);
}

static int log_warn(lua_State *L)
{
    return log_at(L, LH_WARN);
}

static int log_error(lua_State *L)
{
    return log_at(L, LH_ERROR);
}

static const luaL_Reg log_funcs[] = {
    {"debug", log_debug}, {"info", log_info}, {"warn", log_warn},
    {"error", log_error}, {NULL, NULL},
};

int luaopen_lh_log(lua_State *L)
{
    luaL_newlibtable(L, log_funcs);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, log_funcs, 1);
    return 1;
}
