/*
** fuzz_recipes — recipe config validation (lua/luahook/recipes.lua's validate, which every
** use() runs): a config built from the input, validated against a bundled recipe's schema.
** Whatever the config, validate never raises; it returns the checked copy, or nil and a
** non-empty list of messages. A copy it returned validates again to an equal copy, and
** redact and secrets (what logs and scrubbing use) take it without raising.
**
** Input: byte 0 picks the bundled recipe, byte 1 how the config is built from the JSON
** that follows (bit 0: null stays a userdata, else nil; bit 1: the strings "nan", "inf",
** "-inf", "fn" and "co" become such values; bit 2: object keys that read as numbers become
** numbers).
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "json.h"
#include "metrics.h"
#include "recipes.h"
#include "vm.h"

/* (null, flags, v) -> the config; (M, recipe, cfg) -> raises with what broke */
static const char DRIVER[] =
    "local function build(null, flags, v)\n"
    "  if v == null then return flags & 1 ~= 0 and v or nil end\n"
    "  if type(v) == 'string' and flags & 2 ~= 0 then\n"
    "    local special = { nan = 0/0, inf = math.huge, ['-inf'] = -math.huge, fn = print,\n"
    "                      co = coroutine.create(print) }\n"
    "    if special[v] ~= nil then return special[v] end\n"
    "  end\n"
    "  if type(v) ~= 'table' then return v end\n"
    "  local out = {}\n"
    "  for k, x in pairs(v) do\n"
    "    if flags & 4 ~= 0 then k = tonumber(k) or k end\n"
    "    out[k] = build(null, flags, x)\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local function same(a, b)\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
    "    return a == b or (a ~= a and b ~= b) or (math.type(a) ~= math.type(b) and false)\n"
    "  end\n"
    "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "local function check(M, r, cfg)\n"
    "  local ok, out, problems = pcall(M.validate, r, cfg)\n"
    "  if not ok then error('validate raised: ' .. tostring(out), 0) end\n"
    "  if out == nil then\n"
    "    if type(problems) ~= 'table' or #problems == 0 then error('refused, no problem', 0) end\n"
    "    for _, p in ipairs(problems) do\n"
    "      if type(p) ~= 'string' or p == '' then error('a problem that is no message', 0) end\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  local ok2, out2, p2 = pcall(M.validate, r, out)\n"
    "  if not ok2 then error('validate raised on its own copy: ' .. tostring(out2), 0) end\n"
    "  if out2 == nil then error('its own copy refused: ' .. table.concat(p2, '; '), 0) end\n"
    "  if not same(out, out2) then error('validating the copy changed it', 0) end\n"
    "  local ok3, e3 = pcall(M.redact, out, r)\n"
    "  if not ok3 then error('redact raised: ' .. tostring(e3), 0) end\n"
    "  local ok4, e4 = pcall(M.secrets, out, r)\n"
    "  if not ok4 then error('secrets raised: ' .. tostring(e4), 0) end\n"
    "end\n"
    "return build, check\n";

/* libFuzzer sees only C code's coverage; the validator is Lua. A line hook counts each
** Lua line run (by its chunk and line) in counters libFuzzer reads as coverage too. */
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_lines[4096];

static void on_line(lua_State *L, lua_Debug *ar)
{
    if (lua_getinfo(L, "S", ar) == 0)
        return;
    uintptr_t h = (uintptr_t)ar->source * 31u + (uintptr_t)ar->currentline;
    uint8_t *c = &lua_lines[h % sizeof(lua_lines)];
    if (*c < 255)
        (*c)++;
}

static struct {
    lh_config_t cfg;
    lh_app_t app;
    lh_vm_t *vm;
    int build, check, recipes; /* registry refs */
    lua_Integer nrecipes;
} world;

/* the bundled recipes' manifests, in name order: (M) -> list */
static int manifests(lua_State *L)
{
    lua_getfield(L, 1, "all"); /* M all */
    lua_call(L, 0, 1);         /* M wheres */
    lua_newtable(L);           /* M wheres list */
    lua_Integer n = 0;
    for (lua_Integer i = 1; lua_rawgeti(L, 2, i) == LUA_TTABLE; i++) { /* M wheres list w */
        lua_getfield(L, 1, "manifest");                                /* ... w manifest */
        lua_pushvalue(L, -2);                                          /* ... w manifest w */
        lua_call(L, 1, 2);                                             /* ... w r chunkname */
        if (!lua_istable(L, -2))
            return luaL_error(L, "a bundled recipe does not load: %s", lua_tostring(L, -1));
        lua_pop(L, 1);          /* M wheres list w r */
        lua_rawseti(L, 3, ++n); /* M wheres list w */
        lua_pop(L, 1);          /* M wheres list */
    }
    lua_pop(L, 1); /* M wheres list */
    return 1;
}

static void setup(void)
{
    char err[256];
    world.cfg.handler_timeout = 30;
    world.app.cfg = &world.cfg;
    lh_metrics_init(&world.app.metrics);
    world.app.clock = lh_clock_new_virtual(1700000000.0);
    world.vm = lh_vm_new(&world.app, 1, err, sizeof(err));
    if (world.vm == NULL) {
        fprintf(stderr, "fuzz_recipes: no VM: %s\n", err);
        abort();
    }
    lua_State *L = world.vm->L;
    if (luaL_loadbufferx(L, DRIVER, sizeof(DRIVER) - 1, "=fuzz_recipes", "t") != LUA_OK ||
        lua_pcall(L, 0, 2, 0) != LUA_OK) { /* build check */
        fprintf(stderr, "fuzz_recipes: %s\n", lua_tostring(L, -1));
        abort();
    }
    world.check = luaL_ref(L, LUA_REGISTRYINDEX);
    world.build = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, manifests);
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_recipes: %s\n", lua_tostring(L, -1));
        abort();
    }
    world.nrecipes = (lua_Integer)lua_rawlen(L, -1);
    assert(world.nrecipes > 0);
    world.recipes = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_sethook(L, on_line, LUA_MASKLINE, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (world.vm == NULL)
        setup();
    if (size < 2)
        return 0;
    lua_State *L = world.vm->L;
    int top = lua_gettop(L);
    char err[256];

    lua_rawgeti(L, LUA_REGISTRYINDEX, world.check);     /* check */
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY); /* check M */
    lua_rawgeti(L, LUA_REGISTRYINDEX, world.recipes);   /* check M list */
    lua_rawgeti(L, -1, data[0] % world.nrecipes + 1);   /* check M list r */
    lua_remove(L, -2);                                  /* check M r */
    lua_rawgeti(L, LUA_REGISTRYINDEX, world.build);     /* check M r build */
    lh_json_pushnull(L);                                /* check M r build null */
    lua_pushinteger(L, data[1]);                        /* check M r build null flags */
    if (lh_json_decode(L, (const char *)data + 2, size - 2, err, sizeof(err)) != 0) {
        lua_settop(L, top); /* not JSON: fuzz_json's part */
        return 0;
    } /* check M r build null flags v */
    if (lua_pcall(L, 3, 1, 0) != LUA_OK || lua_pcall(L, 3, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_recipes: %s\n", lua_tostring(L, -1));
        abort();
    }
    assert(lua_gettop(L) == top);
    return 0;
}
