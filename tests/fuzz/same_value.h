/* same_value.h - the fuzz targets' one comparison of two decoded values (included, not linked:
** each target is one file). */
#ifndef LH_FUZZ_SAME_VALUE_H
#define LH_FUZZ_SAME_VALUE_H

#include <assert.h>
#include <string.h>

#include <lua.h>

#include "json.h"

/* 1 when the values at a and b are the same JSON value */
static int same_value(lua_State *L, int a, int b, int depth)
{
    a = lua_absindex(L, a), b = lua_absindex(L, b);
    int t = lua_type(L, a);
    if (t != lua_type(L, b))
        return 0;
    switch (t) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, a) != lua_isinteger(L, b))
            return 0;
        if (lua_isinteger(L, a))
            return lua_tointeger(L, a) == lua_tointeger(L, b);
        else {
            lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
            return memcmp(&x, &y, sizeof(x)) == 0; /* -0.0 stays -0.0 */
        }
    case LUA_TTABLE:
        break;
    default:
        return lua_rawequal(L, a, b);
    }
    assert(depth <= LH_JSON_MAX_DEPTH + 1);
    if (lh_json_marked(L, a) != lh_json_marked(L, b))
        return 0;
    size_t na = 0, nb = 0;
    lua_pushnil(L);          /* k */
    while (lua_next(L, a)) { /* k va */
        na++;
        lua_pushvalue(L, -2); /* k va k */
        lua_rawget(L, b);     /* k va vb */
        int eq = !lua_isnil(L, -1) && same_value(L, -2, -1, depth + 1);
        lua_pop(L, 2); /* k */
        if (!eq) {
            lua_pop(L, 1);
            return 0;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, b)) {
        nb++;
        lua_pop(L, 1);
    }
    return na == nb;
}

#endif
