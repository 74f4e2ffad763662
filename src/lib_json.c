/* lib_json.c - the Lua module `json`: json.decode(s), json.encode(v), json.null,
 * json.array(t), json.object(t). */
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

/* Marks t (a new table when called with no argument) with kind and returns it. A table with a
 * metatable of its own is refused: replacing it would silently break the caller's object. */
static int mark(lua_State *L, lh_json_type_t kind)
{
    if (lua_isnone(L, 1))
        lua_newtable(L); /* t */
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);             /* t */
    if (lua_getmetatable(L, 1)) { /* t mt */
        lua_pop(L, 1);            /* t */
        if (lh_json_marked(L, 1) == LH_JSON_NULL)
            return luaL_argerror(L, 1,
                                 "the table has a metatable (only a plain table can be marked)");
    }
    lh_json_mark(L, 1, kind);
    return 1;
}

/* json.array([t]) -> t, encoded as a JSON array even when empty */
static int json_array(lua_State *L)
{
    return mark(L, LH_JSON_ARRAY);
}

/* json.object([t]) -> t, encoded as a JSON object even when empty or a sequence */
static int json_object(lua_State *L)
{
    return mark(L, LH_JSON_OBJECT);
}

int luaopen_lh_json(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"decode", json_decode},
        {"encode", json_encode},
        {"array", json_array},
        {"object", json_object},
        {NULL, NULL},
    };

    luaL_newlib(L, funcs);       /* M */
    lh_json_pushnull(L);         /* M null */
    lua_setfield(L, -2, "null"); /* M */
    return 1;
}
