/* lib_json.c - the Lua module `json`: json.decode(s), json.encode(v), json.null. */
#include "json.h"

#include <lauxlib.h>

/* json.decode(s) -> value | nil, message */
static int json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char err[256];

    if (lh_json_decode(L, s, len, err, sizeof err) != 0) { /* s [v] */
        luaL_pushfail(L);                                  /* s nil */
        lua_pushstring(L, err);                            /* s nil err */
        return 2;
    }
    return 1;
}

/* json.encode(v) -> string; raises on values JSON cannot represent */
static int json_encode(lua_State *L)
{
    luaL_Buffer b;

    luaL_checkany(L, 1);
    lua_settop(L, 1);     /* v */
    luaL_buffinit(L, &b); /* v [buf] */
    lh_json_encode(L, 1, &b);
    luaL_pushresult(&b); /* v s */
    return 1;
}

int luaopen_lh_json(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"decode", json_decode},
        {"encode", json_encode},
        {NULL, NULL},
    };

    luaL_newlib(L, funcs);       /* M */
    lh_json_pushnull(L);         /* M null */
    lua_setfield(L, -2, "null"); /* M */
    return 1;
}
