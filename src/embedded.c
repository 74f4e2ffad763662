#include "embedded.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

const lh_embedded_t *lh_embedded_find(const char *name)
{
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

/* package.preload loader of an embedded module (upvalue 1: its index in lh_embedded):
** runs the chunk in an environment of its own, as package.lua runs a file module. */
static int embedded_loader(lua_State *L)
{
    const lh_embedded_t *e = &lh_embedded[lua_tointeger(L, lua_upvalueindex(1))];
    char chunkname[256];
    snprintf(chunkname, sizeof(chunkname), "=%s", e->name);
    lua_settop(L, 2); /* name data */
    if (luaL_loadbufferx(L, e->data, e->len, chunkname, "t") != LUA_OK)
        return lua_error(L);
    lua_newtable(L);                /* name data fn env */
    lua_newtable(L);                /* ... env mt */
    lua_pushglobaltable(L);         /* ... env mt _G */
    lua_setfield(L, -2, "__index"); /* ... env mt */
    lua_setmetatable(L, -2);        /* ... fn env */
    if (lua_setupvalue(L, -2, 1) == NULL)
        lua_pop(L, 1); /* name data fn */
    lua_insert(L, 1);  /* fn name data */
    lua_call(L, 2, 1);
    return 1;
}

/* Whether `name` ("X.lua", or "X/Y.lua" of an embedded "X.lua") is a module. */
static int is_module(const char *name)
{
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 4, ".lua") != 0)
        return 0;
    const char *slash = strchr(name, '/');
    if (slash == NULL)
        return 1;
    char top[128];
    size_t tl = (size_t)(slash - name);
    if (strchr(slash + 1, '/') != NULL || tl + sizeof(".lua") > sizeof(top))
        return 0;
    memcpy(top, name, tl);
    memcpy(top + tl, ".lua", sizeof(".lua"));
    return lh_embedded_find(top) != NULL;
}

void lh_embedded_preload(lua_State *L)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE); /* preload */
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++) {
        if (!is_module(e->name))
            continue;
        lua_pushlstring(L, e->name, strlen(e->name) - 4); /* preload path */
        luaL_gsub(L, lua_tostring(L, -1), "/", ".");      /* preload path name */
        lua_remove(L, -2);                                /* preload name */
        lua_pushinteger(L, e - lh_embedded);
        lua_pushcclosure(L, embedded_loader, 1); /* preload name loader */
        lua_rawset(L, -3);                       /* preload */
    }
    lua_pop(L, 1);
}
