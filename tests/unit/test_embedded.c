/* The embedded modules of lua/ in package.preload: which files are modules, under which
 * names, and that their loader runs a module in an environment of its own. */
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "embedded.h"
#include "test.h"

/* The type of package.preload[name] after lh_embedded_preload. */
static int preload_type(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    int t = lua_getfield(L, -1, name);
    lua_pop(L, 2);
    return t;
}

static void test_modules_and_their_parts(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    int top = lua_gettop(L);
    lh_embedded_preload(L);
    CHECK_EQ_INT(lua_gettop(L), top);
    CHECK_EQ_INT(preload_type(L, "labelstudio"), LUA_TFUNCTION);
    CHECK_EQ_INT(preload_type(L, "labelstudio.client"), LUA_TFUNCTION);
    /* the binary's own files are not modules: there is no lua/luahook.lua */
    CHECK(lh_embedded_find("luahook/package.lua") != NULL);
    CHECK_EQ_INT(preload_type(L, "luahook.package"), LUA_TNIL);
    CHECK_EQ_INT(preload_type(L, "luahook.stubs.labelstudio"), LUA_TNIL);
    CHECK_EQ_INT(preload_type(L, "samples.TASKS_CREATED"), LUA_TNIL);
    /* every preload entry is an embedded lua/X.lua or lua/X/Y.lua */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushnil(L);
    int n = 0;
    while (lua_next(L, -2) != 0) {
        char file[256];
        luaL_gsub(L, lua_tostring(L, -2), ".", "/");
        snprintf(file, sizeof(file), "%s.lua", lua_tostring(L, -1));
        CHECK(lh_embedded_find(file) != NULL);
        lua_pop(L, 2);
        n++;
    }
    lua_pop(L, 1);
    CHECK(n >= 2);
    lua_close(L);
}

static void test_loader_runs_the_module_in_its_own_environment(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lh_embedded_preload(L);
    /* labelstudio.client needs nothing of luahook's stdlib while it loads */
    int rc = luaL_dostring(L, "local function count() local n = 0\n"
                              "  for _ in pairs(_G) do n = n + 1 end return n end\n"
                              "local before = count()\n"
                              "local c = require 'labelstudio.client'\n"
                              "assert(type(c.new) == 'function')\n"
                              "assert(require 'labelstudio.client' == c, 'loaded once')\n"
                              "assert(count() == before, 'the globals are as they were')\n");
    if (rc != LUA_OK)
        TEST_FAILED_("%s", lua_tostring(L, -1));
    lua_close(L);
}

int main(void)
{
    RUN_TEST(test_modules_and_their_parts);
    RUN_TEST(test_loader_runs_the_module_in_its_own_environment);
    return TEST_SUMMARY();
}
