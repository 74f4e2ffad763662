#include "recipes.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include "actions.h"
#include "clock.h"
#include "embedded.h"
#include "lib.h"
#include "log.h"

#define RECIPES_SRC    "luahook/recipes.lua"
#define BUNDLED_PREFIX "recipes/"

static lh_vm_t *vm_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

int lh_recipes_embedded(lua_State *L)
{
    const lh_embedded_t *e = lh_embedded_find(luaL_checkstring(L, 1));
    if (e == NULL)
        lua_pushnil(L);
    else
        lua_pushlstring(L, e->data, e->len);
    return 1;
}

/* ------------------------------------------------------------------ the host */

/* host.begin(instance, path, site_file, site_line [, secrets]) -> previous | nil, why */
static int host_begin(lua_State *L)
{
    char err[512];
    int prev = lh_vm_instance_begin(vm_of(L), luaL_checkstring(L, 1), luaL_checkstring(L, 2),
                                    luaL_checkstring(L, 3), (int)luaL_checkinteger(L, 4), err,
                                    sizeof(err));
    if (prev == -2) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (lua_istable(L, 5)) {
        size_t n = lua_rawlen(L, 5);
        const char **s = lua_newuserdatauv(L, (n ? n : 1) * sizeof(*s), 0); /* freed by GC */
        size_t k = 0;
        for (size_t i = 1; i <= n; i++) {
            if (lua_rawgeti(L, 5, (lua_Integer)i) == LUA_TSTRING)
                s[k++] = lua_tostring(L, -1); /* anchored by the table at 5 */
            lua_pop(L, 1);
        }
        if (lh_vm_instance_secrets(vm_of(L), s, k) != 0)
            return luaL_error(L, "not enough memory");
    }
    lua_pushinteger(L, prev);
    return 1;
}

/* host.suspend() -> previous: no script loads while a recipe.lua's top level runs (its
** on() calls belong in setup) */
static int host_suspend(lua_State *L)
{
    lh_vm_t *vm = vm_of(L);
    lua_pushinteger(L, vm->loading_script);
    lh_vm_instance_end(vm, -1);
    return 1;
}

static int host_finish(lua_State *L)
{
    lh_vm_instance_end(vm_of(L), (int)luaL_checkinteger(L, 1));
    return 0;
}

static int host_store(lua_State *L)
{
    return lh_lib_store_push(L, vm_of(L), luaL_checkstring(L, 1));
}

/* host.bundled() -> the names of the recipes compiled in, sorted (lh_embedded is sorted) */
static int host_bundled(lua_State *L)
{
    lua_newtable(L);
    lua_Integer n = 0;
    size_t plen = strlen(BUNDLED_PREFIX);
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++) {
        const char *rest = e->name + plen, *slash;
        if (strncmp(e->name, BUNDLED_PREFIX, plen) != 0 || (slash = strchr(rest, '/')) == NULL ||
            strcmp(slash, "/recipe.lua") != 0)
            continue;
        lua_pushlstring(L, rest, (size_t)(slash - rest));
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* host.listdir(dir) -> the names in it, sorted, or nil */
static int host_listdir(lua_State *L)
{
    DIR *d = opendir(luaL_checkstring(L, 1));
    struct dirent *e;
    if (d == NULL) {
        lua_pushnil(L);
        return 1;
    }
    lua_newtable(L);
    lua_Integer n = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

static int host_distance(lua_State *L)
{
    lua_pushinteger(
        L, (lua_Integer)lh_actions_distance(luaL_checkstring(L, 1), luaL_checkstring(L, 2)));
    return 1;
}

/* host.log(level, msg, { key = "value" }): string values (the table keeps them alive) */
static int host_log(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
    lh_level_t level = (lh_level_t)luaL_checkoption(L, 1, NULL, levels);
    const char *msg = luaL_checkstring(L, 2);
    lh_field_t f[12];
    size_t n = 0;
    if (!lh_log_enabled(level))
        return 0;
    if (lua_istable(L, 3)) {
        lua_pushnil(L);
        while (n < sizeof(f) / sizeof(f[0]) && lua_next(L, 3) != 0) { /* k v */
            if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
                f[n++] = LH_FIELD(lua_tostring(L, -2), lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lh_log_fields(level, msg, f, n);
    return 0;
}

/* use(name, cfg [, { as = "..." }]) in a script, at load time only */
static int lib_use(lua_State *L)
{
    lh_vm_t *vm = vm_of(L);
    lua_Debug ar;
    if (!vm->loading)
        return luaL_error(L, "use: recipes are used while scripts load (at a script's top "
                             "level), not in a handler");
    const char *file = "?";
    int line = 0;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
        file = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
        line = ar.currentline;
    }
    lua_settop(L, 3);
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY); /* name cfg opts M */
    lua_getfield(L, -1, "use");                         /* name cfg opts M use */
    lua_replace(L, -2);                                 /* name cfg opts use */
    lua_insert(L, 1);                                   /* use name cfg opts */
    lua_pushstring(L, file);
    lua_pushinteger(L, line);
    if (lua_pcall(L, 5, 1, 0) == LUA_OK)
        return 1;
    /* while a script loads, a use() that fails is kept and the script goes on: check
    ** reports every use() of it; the load fails all the same */
    if (vm->loading_script >= 0 && lua_type(L, -1) == LUA_TSTRING) {
        if (lh_vm_defer_problem(vm, lua_tostring(L, -1)) != 0)
            return luaL_error(L, "not enough memory");
        lua_pushnil(L);
        return 1;
    }
    return lua_error(L);
}

static const luaL_Reg host_funcs[] = {
    {"begin", host_begin},       {"finish", host_finish},   {"suspend", host_suspend},
    {"store", host_store},       {"bundled", host_bundled}, {"listdir", host_listdir},
    {"distance", host_distance}, {"log", host_log},         {NULL, NULL},
};

void lh_recipes_open(lua_State *L, lh_vm_t *vm)
{
    const lh_embedded_t *src = lh_embedded_find(RECIPES_SRC);
    if (src == NULL)
        luaL_error(L, "%s is not compiled in", RECIPES_SRC);
    if (luaL_loadbufferx(L, src->data, src->len, "=" RECIPES_SRC, "t") != LUA_OK)
        lua_error(L);
    lua_newtable(L); /* chunk host */
    lua_pushlightuserdata(L, vm);
    luaL_setfuncs(L, host_funcs, 1);
    lua_pushcfunction(L, lh_vm_package_root);
    lua_setfield(L, -2, "package");
    lua_pushcfunction(L, lh_recipes_embedded);
    lua_setfield(L, -2, "embedded");
    lua_newtable(L); /* chunk host dirs */
    const lh_config_t *cfg = vm->app != NULL ? vm->app->cfg : NULL;
    for (size_t i = 0; cfg != NULL && i < cfg->nrecipes; i++) {
        lua_pushstring(L, cfg->recipes[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "dirs");
    lua_call(L, 1, 1); /* M */
    lua_setfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, lib_use, 1);
    lua_setglobal(L, "use");
}

/* ------------------------------------------------------------------ commands */

/* Under lua_pcall: M[fn](arg, markdown) -> text; printed. Stack: fn-name arg markdown. */
static int call_show(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY);
    lua_getfield(L, -1, lua_tostring(L, 1)); /* fn arg md M f */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_call(L, 2, 2); /* ... text code */
    return 2;
}

static int show(const lh_config_t *cfg)
{
    lh_app_t app;
    char err[256];
    int rc = 2;
    memset(&app, 0, sizeof(app));
    app.cfg = cfg;
    lh_metrics_init(&app.metrics);
    lh_log_setup(LH_WARN, cfg->log_format);
    lh_clock_t *clock = lh_clock_new_virtual(0);
    lh_vm_t *vm = NULL;
    if (clock == NULL) {
        fprintf(stderr, "luahook recipes: not enough memory\n");
        goto done;
    }
    app.clock = clock;
    if ((vm = lh_vm_new(&app, 1, err, sizeof(err))) == NULL) {
        fprintf(stderr, "luahook recipes: %s\n", err);
        goto done;
    }
    lua_State *L = vm->L;
    lua_pushcfunction(L, call_show);
    lua_pushstring(L, cfg->npaths > 0 ? "describe" : "list");
    if (cfg->npaths > 0)
        lua_pushstring(L, cfg->paths[0]);
    else
        lua_pushnil(L);
    lua_pushboolean(L, cfg->markdown);
    if (lua_pcall(L, 3, 2, 0) != LUA_OK) {
        fprintf(stderr, "luahook recipes: %s\n", lua_tostring(L, -1));
        rc = 1;
        goto done;
    }
    rc = (int)lua_tointeger(L, -1);
    /* the list shows a recipe that does not load in its place; NAME's failure is an error */
    fputs(lua_tostring(L, -2), rc == 0 || cfg->npaths == 0 ? stdout : stderr);
done:
    lh_vm_free(vm);
    lh_clock_free(clock);
    lh_metrics_dispose(&app.metrics);
    return rc;
}

/* ------------------------------------------------------------------ new-recipe */

static const char skel_recipe[] =
    "-- %1$s: a luahook recipe. `luahook recipes %1$s` shows its config keys; see README.md.\n"
    "local ls = require \"labelstudio\" -- what Label Studio's bodies really hold\n"
    "\n"
    "return {\n"
    "  name = \"%1$s\",\n"
    "  version = \"0.1.0\",\n"
    "  description = \"Counts and logs chosen Label Studio actions (a skeleton: make it "
    "yours)\",\n"
    "  config = {\n"
    "    actions = { type = \"list\", of = { type = \"string\" }, default = { "
    "\"ANNOTATION_CREATED\" },\n"
    "                description = \"the actions to react to\",\n"
    "                example = { \"ANNOTATION_CREATED\", \"ANNOTATION_UPDATED\" } },\n"
    "    projects = { type = \"list\", of = { type = \"integer\", min = 1 },\n"
    "                 description = \"the project ids to react to (all when absent)\", "
    "example = { 1 } },\n"
    "    prefix = { type = \"string\", default = \"seen\", match = \"^%%S+$\",\n"
    "               description = \"the message of the log line (one word)\", "
    "example = \"annotated\" },\n"
    "  },\n"
    "  setup = function(cfg)\n"
    "    local wanted -- nil: every project\n"
    "    if cfg.projects then\n"
    "      wanted = {}\n"
    "      for _, id in ipairs(cfg.projects) do wanted[id] = true end\n"
    "    end\n"
    "    on(cfg.actions, function(ev)\n"
    "      -- nil for a body without a project (send_payload=false, a delete of all tasks)\n"
    "      local project = ls.project_id(ev)\n"
    "      if wanted and not wanted[project] then return end\n"
    "      -- `store` is this instance's own: two use()s of the recipe count apart\n"
    "      local n = store.incr(\"seen:\" .. tostring(project))\n"
    "      -- the line already names the action, the event and this instance\n"
    "      log.info(cfg.prefix, { project = project, count = n })\n"
    "    end)\n"
    "  end,\n"
    "}\n";

static const char skel_readme[] =
    "# %1$s\n"
    "\n"
    "Counts the chosen Label Studio actions per project and logs one line for each.\n"
    "\n"
    "```lua\n"
    "-- handlers/%1$s.lua\n"
    "use(\"%1$s\", { actions = { \"ANNOTATION_CREATED\" }, projects = { 1 } })\n"
    "```\n"
    "\n"
    "Run `luahook serve --recipes DIR handlers/` with DIR the folder that holds %1$s/,\n"
    "and `luahook test DIR/%1$s` to run its tests. To install it with luarocks:\n"
    "`luarocks --lua-version 5.4 --tree TREE make` here, then\n"
    "`--recipes TREE/share/lua/5.4/luahook_recipes`.\n";

static const char skel_test[] =
    "-- use() here loads this folder's recipe as an instance, before the tests run\n"
    "use(\"%1$s\", { projects = { 1 }, prefix = \"annotated\" })\n"
    "\n"
    "test(\"counts an annotation of project 1\", function()\n"
    "  local r = fire(sample(\"ANNOTATION_CREATED\", { project = { id = 1 } }))\n"
    "  eq(r[1].id, \"%1$s#1\")\n"
    "  eq(logs(\"info\")[1].msg, \"annotated\")\n"
    "  eq(store(\"%1$s\").get(\"seen:1\"), 1)\n"
    "end)\n"
    "\n"
    "test(\"leaves other projects alone\", function()\n"
    "  fire(sample(\"ANNOTATION_CREATED\", { project = { id = 2 } }))\n"
    "  eq(#logs(\"info\"), 0)\n"
    "  eq(store(\"%1$s\").get(\"seen:2\"), nil)\n"
    "end)\n";

/* luarocks installs each file as a "module" luahook_recipes.NAME.FILE, so that a tree's
** share/lua/5.4/luahook_recipes/ is a folder of recipes for --recipes (README.md) */
static const char skel_rockspec[] =
    "-- luarocks --lua-version 5.4 --tree TREE make   (in this folder; no network needed)\n"
    "-- then: luahook serve --recipes TREE/share/lua/5.4/luahook_recipes ...\n"
    "-- Every file of the recipe is listed here: add a module, add its line.\n"
    "package = \"%1$s\"\n"
    "version = \"0.1.0-1\"\n"
    "source = { url = \"git+https://example.com/%1$s.git\" }\n"
    "description = { summary = \"A luahook recipe\" }\n"
    "dependencies = {}\n"
    "build = {\n"
    "  type = \"builtin\",\n"
    "  modules = {\n"
    "    [\"luahook_recipes.%1$s.recipe\"] = \"recipe.lua\",\n"
    "    [\"luahook_recipes.%1$s.%1$s_test\"] = \"%1$s_test.lua\",\n"
    "  },\n"
    "  install = { lua = { [\"luahook_recipes.%1$s.README\"] = \"README.md\" } },\n"
    "}\n";

static int valid_recipe_name(const char *s)
{
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static int write_skel(const char *dir, const char *file, const char *fmt, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "wx");
    if (f == NULL) {
        fprintf(stderr, "luahook new-recipe: %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, fmt, name);
    if (fclose(f) != 0) {
        fprintf(stderr, "luahook new-recipe: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int new_recipe(const lh_config_t *cfg)
{
    const char *name = cfg->paths[0];
    const char *parent = cfg->npaths > 1 ? cfg->paths[1] : ".";
    char dir[4096], test[200], rockspec[200];
    if (!valid_recipe_name(name)) {
        fprintf(stderr,
                "luahook new-recipe: bad name '%s': a letter, then letters, digits, '_' or "
                "'-', at most 64 characters\n",
                name);
        return 2;
    }
    snprintf(dir, sizeof(dir), "%s/%s", parent, name);
    if (mkdir(dir, 0777) != 0) {
        fprintf(stderr, "luahook new-recipe: %s: %s%s\n", dir, strerror(errno),
                errno == EEXIST ? " (nothing written)" : "");
        return 2;
    }
    snprintf(test, sizeof(test), "%s_test.lua", name);
    snprintf(rockspec, sizeof(rockspec), "%s-0.1.0-1.rockspec", name);
    if (write_skel(dir, "recipe.lua", skel_recipe, name) != 0 ||
        write_skel(dir, "README.md", skel_readme, name) != 0 ||
        write_skel(dir, test, skel_test, name) != 0 ||
        write_skel(dir, rockspec, skel_rockspec, name) != 0)
        return 2;
    printf("wrote %s/recipe.lua, README.md, %s, %s\n", dir, test, rockspec);
    printf("next: luahook test %s\n", dir);
    return 0;
}

int lh_recipes_cli(const lh_config_t *cfg)
{
    if (cfg->command == LH_CMD_NEW_RECIPE)
        return new_recipe(cfg);
    return show(cfg);
}
