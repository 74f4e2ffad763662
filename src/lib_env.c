/*
** env(name [, default]) — an environment variable, or the default, or an error naming
** the variable: a handler should fail loudly on a missing secret, not post to "nil".
*/
#include <stdlib.h>

#include <lauxlib.h>

#include "lib.h"

static int lib_env(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *v = getenv(name);
    if (v != NULL) {
        lua_pushstring(L, v);
        return 1;
    }
    if (lua_gettop(L) >= 2) {
        lua_settop(L, 2);
        return 1; /* the default, whatever it is (false and nil included) */
    }
    return luaL_error(L, "env: %s is not set (and no default was given)", name);
}

int luaopen_lh_env(lua_State *L)
{
    lua_pushcfunction(L, lib_env);
    return 1;
}
