/*
** log.debug|info|warn|error(message [, fields]) — the C sink, with the script, action
** and delivery id of the running handler attached.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "lib.h"
#include "log.h"
#include "task.h"

#define LOG_MAX_FIELDS 32

static int reserved(const char *k)
{
    static const char *const names[] = {"ts", "level", "msg", "script", "action", "id"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(k, names[i]) == 0)
            return 1;
    return 0;
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

    lh_field_t f[LOG_MAX_FIELDS + 3];
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
    int base = lua_gettop(L);
    luaL_checkstack(L, 2 * LOG_MAX_FIELDS + 8, "log: too many fields");
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (n < LOG_MAX_FIELDS + 3 && lua_next(L, 2) != 0) { /* ... k v */
            if (lua_type(L, -2) != LUA_TSTRING) {
                lua_pop(L, 1);
                continue;
            }
            int number = lua_type(L, -1) == LUA_TBOOLEAN || lua_isinteger(L, -1) ||
                         (lua_type(L, -1) == LUA_TNUMBER && isfinite(lua_tonumber(L, -1)));
            /* a field never shadows luahook's own: "id" is written as "_id" */
            if (reserved(lua_tostring(L, -2)))
                lua_pushfstring(L, "_%s", lua_tostring(L, -2)); /* ... k v _k */
            else
                lua_pushvalue(L, -2); /* ... k v k */
            const char *k = lua_tostring(L, -1);
            size_t vlen;
            const char *v = luaL_tolstring(L, -2, &vlen); /* ... k v k vs */
            /* keep k and vs alive on the stack until the line is written */
            lua_insert(L, base + 1);
            lua_insert(L, base + 1); /* k vs ... k v */
            lua_pop(L, 1);           /* ... k */
            f[n++] = (lh_field_t){k, v, vlen, number};
        }
    }
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
