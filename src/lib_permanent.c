/*
** permanent(message) -> an error value: `error(permanent("bad data"))` tells the journal
** that retrying cannot help, so the run is dead at once instead of retried. Anywhere else
** it reads as its message (tostring, logs, the --ack handled answer).
*/
#include <lauxlib.h>

#include "lib.h"

#define PERMANENT_MT "luahook.permanent"

static int permanent_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    return 1;
}

static int permanent_new(lua_State *L)
{
    const char *msg = luaL_checkstring(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, PERMANENT_MT);
    return 1;
}

int luaopen_lh_permanent(lua_State *L)
{
    if (luaL_newmetatable(L, PERMANENT_MT)) {
        lua_pushcfunction(L, permanent_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, permanent_new);
    return 1;
}

int lh_lib_is_permanent(lua_State *L, int idx)
{
    int yes = 0;
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) == LUA_TTABLE && lua_getmetatable(L, idx)) { /* mt */
        luaL_getmetatable(L, PERMANENT_MT);                           /* mt PERMANENT_MT */
        yes = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    return yes;
}
