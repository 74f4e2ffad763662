#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lib.h"
#include "log.h"
#include "task.h"


static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lh_vm_t *vm = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        vm->mem_used -= osize;
        return NULL;
    }
    /* the cap applies to what handlers do; the host's own bookkeeping may pass it */
    if (nsize > osize && vm->limit_on && vm->mem_limit != 0 &&
        vm->mem_used + (nsize - osize) > vm->mem_limit)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        vm->mem_used += nsize - osize;
    return p;
}

/* An error outside any protected call: a bug in luahook, not in a script. */
static int at_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    lh_log_printf(LH_ERROR, "Lua panic (unprotected error): %s", msg ? msg : "?");
    abort();
    return 0;
}

static lh_vm_t *vm_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ------------------------------------------------------------------ on() */

static int add_route(lua_State *L, lh_vm_t *vm, int action_idx, int handler)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->pending_ref); /* pending */
    lua_pushvalue(L, action_idx);                       /* pending action */
    if (lua_rawget(L, -2) != LUA_TTABLE) {              /* pending list? */
        lua_pop(L, 1);
        lua_newtable(L); /* pending list */
        lua_pushvalue(L, action_idx);
        lua_pushvalue(L, -2); /* pending list action list */
        lua_rawset(L, -4);    /* pending list */
    }
    lua_pushinteger(L, handler);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
    return 0;
}

static void check_action(lua_State *L, int idx, const char *what)
{
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_error(L, "on: %s must be a string, got %s", what, luaL_typename(L, idx));
    lua_tolstring(L, idx, &len);
    if (len == 0)
        luaL_error(L, "on: %s must not be empty", what);
}

/* on(action | {action...} | "*", fn) */
static int lib_on(lua_State *L)
{
    lh_vm_t *vm = vm_of(L);
    lua_Debug ar;
    int t = lua_type(L, 1);
    if (!vm->loading)
        return luaL_error(L, "on: handlers can only be registered while scripts load");
    luaL_argexpected(L, t == LUA_TSTRING || t == LUA_TTABLE, 1, "action name or list of names");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (t == LUA_TSTRING) {
        check_action(L, 1, "the action");
    } else {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        if (n == 0)
            return luaL_argerror(L, 1, "the list of actions is empty");
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            check_action(L, -1, "each action in the list");
            lua_pop(L, 1);
        }
    }
    if (vm->nhandlers == vm->handlers_cap) {
        size_t cap = vm->handlers_cap ? vm->handlers_cap * 2 : 16;
        lh_handler_t *h = realloc(vm->handlers, cap * sizeof(*h));
        if (h == NULL)
            return luaL_error(L, "not enough memory");
        vm->handlers = h, vm->handlers_cap = cap;
    }
    lh_handler_t *h = &vm->handlers[vm->nhandlers];
    memset(h, 0, sizeof(*h));
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">S", &ar);
    const char *script = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
    size_t lsize = strlen(script) + 24;
    h->script = strdup(script);
    h->label = malloc(lsize);
    if (h->script == NULL || h->label == NULL) {
        free(h->script);
        free(h->label);
        return luaL_error(L, "not enough memory");
    }
    h->line = ar.linedefined;
    snprintf(h->label, lsize, "%s:%d", script, ar.linedefined);
    lua_pushvalue(L, 2);
    h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int idx = (int)vm->nhandlers++;

    if (t == LUA_TSTRING) {
        add_route(L, vm, 1, idx);
    } else {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, 1, i);
            add_route(L, vm, lua_gettop(L), idx);
            lua_pop(L, 1);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ loading */

static int msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    /* keep the message alone: the traceback goes to the log, the message to the user */
    return 1;
}

/* `ns`: the script's store namespace (see lib_store.c) */
static int load_file(lh_vm_t *vm, const char *path, const char *ns, lh_vm_report_cb report,
                     void *data)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    int problems = 0;

    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg != NULL && strncmp(msg, "cannot open", 11) == 0) {
            char buf[1024];
            snprintf(buf, sizeof(buf), "%s: cannot open: %s", path, strerror(errno));
            report(data, buf);
        } else {
            report(data, msg ? msg : "unknown load error");
        }
        lua_settop(L, top);
        return 1;
    }
    /* the script's own globals, falling back to the shared ones */
    lua_newtable(L);                      /* fn env */
    lua_newtable(L);                      /* fn env mt */
    lua_pushglobaltable(L);               /* fn env mt _G */
    lua_setfield(L, -2, "__index");       /* fn env mt */
    lua_setmetatable(L, -2);              /* fn env */
    lh_lib_store_push(L, vm, ns);         /* fn env store */
    lua_setfield(L, -2, "store");         /* fn env */
    if (lua_setupvalue(L, -2, 1) == NULL) /* fn */
        lua_pop(L, 1);
    lua_pushcfunction(L, msghandler); /* fn mh */
    lua_insert(L, -2);                /* mh fn */
    if (lua_pcall(L, 0, 0, top + 1) != LUA_OK) {
        report(data, lua_tostring(L, -1));
        problems = 1;
    }
    lua_settop(L, top);
    return problems;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_dir(lh_vm_t *vm, const char *dir, lh_vm_report_cb report, void *data)
{
    DIR *d = opendir(dir);
    char **names = NULL;
    size_t n = 0, cap = 0;
    int problems = 0;
    struct dirent *e;
    char buf[1024];

    if (d == NULL) {
        snprintf(buf, sizeof(buf), "%s: cannot open: %s", dir, strerror(errno));
        report(data, buf);
        return 1;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        /* test files (luahook test) sit beside the handlers they test: not handlers */
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0 || e->d_name[0] == '.' ||
            (len >= 9 && strcmp(e->d_name + len - 9, "_test.lua") == 0))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (nn == NULL)
                break;
            names = nn;
        }
        if ((names[n] = strdup(e->d_name)) == NULL)
            break;
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), name_cmp);
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    for (size_t i = 0; i < n; i++) {
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)dlen, dir, names[i]);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode))
            problems += load_file(vm, buf, names[i], report, data);
        free(names[i]);
    }
    free(names);
    return problems;
}

/* Fills `rt` with the handler indexes of the list at `list` (0: none), then `star`. */
static int build_route(lua_State *L, lh_route_t *rt, int list, const int *star, size_t nstar)
{
    size_t own = list ? (size_t)lua_rawlen(L, list) : 0;
    rt->handlers = malloc((own + nstar + 1) * sizeof(int));
    if (rt->handlers == NULL)
        return -1;
    for (size_t i = 1; i <= own; i++) {
        lua_rawgeti(L, list, (lua_Integer)i);
        rt->handlers[rt->n++] = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (nstar > 0)
        memcpy(rt->handlers + rt->n, star, nstar * sizeof(int));
    rt->n += nstar;
    return 0;
}

/* Routes: route 0 is the "*" handlers alone (for actions nobody named), then one per
** action named in on(), its own handlers first, then the "*" ones. */
static int seal_routes(lh_vm_t *vm)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L), rc = -1;
    int *star = NULL;
    size_t nstar = 0, nroutes = 1;

    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->pending_ref);
    int pending = lua_gettop(L);
    if (lua_getfield(L, pending, "*") == LUA_TTABLE) {
        nstar = (size_t)lua_rawlen(L, -1);
        if ((star = malloc((nstar + 1) * sizeof(int))) == NULL)
            goto done;
        for (size_t i = 1; i <= nstar; i++) {
            lua_rawgeti(L, -1, (lua_Integer)i);
            star[i - 1] = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, pending) != 0) {
        nroutes++;
        lua_pop(L, 1);
    }
    if ((vm->routes = calloc(nroutes, sizeof(*vm->routes))) == NULL)
        goto done;
    vm->nroutes = 1;
    if (build_route(L, &vm->routes[0], 0, star, nstar) != 0)
        goto done;
    lua_newtable(L);
    int routes = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, pending) != 0) { /* k list */
        if (!(lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "*") == 0)) {
            lh_route_t *rt = &vm->routes[vm->nroutes];
            if (build_route(L, rt, lua_gettop(L), star, nstar) != 0)
                goto done;
            size_t alen;
            const char *action = lua_tolstring(L, -2, &alen);
            /* named actions show in /metrics from the start, at zero */
            lh_metrics_action(&vm->app->metrics, action, alen);
            lua_pushvalue(L, -2); /* k list k */
            lua_pushinteger(L, (lua_Integer)vm->nroutes++);
            lua_rawset(L, routes); /* k list */
        }
        lua_pop(L, 1); /* k */
    }
    lua_pushvalue(L, routes);
    vm->routes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(L, LUA_REGISTRYINDEX, vm->pending_ref);
    vm->pending_ref = LUA_NOREF;
    rc = 0;
done:
    free(star);
    lua_settop(L, top);
    return rc;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int lh_vm_load(lh_vm_t *vm, char *const *paths, size_t npaths, lh_vm_report_cb report, void *data)
{
    int problems = 0;
    vm->loading = 1;
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode))
            problems += load_dir(vm, paths[i], report, data);
        else
            problems += load_file(vm, paths[i], base_name(paths[i]), report, data);
    }
    vm->loading = 0;
    if (seal_routes(vm) != 0) {
        report(data, "out of memory sealing the handler routes");
        problems++;
    }
    return problems;
}

const lh_route_t *lh_vm_route(lh_vm_t *vm)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->routes_ref); /* action routes */
    lua_pushvalue(L, -2);                              /* action routes action */
    lua_rawget(L, -2);                                 /* action routes r? */
    lua_Integer r = lua_tointeger(L, -1);              /* nil gives 0: the "*" route */
    lua_pop(L, 2);
    if (r < 0 || (size_t)r >= vm->nroutes)
        r = 0;
    return &vm->routes[r];
}

/* ------------------------------------------------------------------ life */

static int open_libs(lua_State *L)
{
    lh_vm_t *vm = lua_touserdata(L, 1);
    luaL_openlibs(L);
    /* the stdlib as globals, and through require() under the same names */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* loaded */
    luaL_requiref(L, "json", luaopen_lh_json, 1);
    lua_pop(L, 2);
    /* modules that need their VM get it as upvalue 1 */
    static const struct {
        const char *name;
        lua_CFunction open;
        int module; /* also require()-able */
    } mods[] = {
        {"log", luaopen_lh_log, 1},     {"http", luaopen_lh_http, 1},
        {"timer", luaopen_lh_timer, 1}, {"sleep", luaopen_lh_sleep, 0},
        {"env", luaopen_lh_env, 0},
    };
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* loaded */
    for (size_t i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
        lua_pushlightuserdata(L, vm);
        lua_pushcclosure(L, mods[i].open, 1);
        lua_call(L, 0, 1); /* loaded mod */
        if (mods[i].module) {
            lua_pushvalue(L, -1);
            lua_setfield(L, -3, mods[i].name);
        }
        lua_setglobal(L, mods[i].name); /* loaded */
    }
    lua_pop(L, 1);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, lib_on, 1);
    lua_setglobal(L, "on");
    lua_newtable(L);
    vm->pending_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

lh_vm_t *lh_vm_new(lh_app_t *app, uint64_t generation, char *err, size_t errlen)
{
    lh_vm_t *vm = calloc(1, sizeof(*vm));
    if (vm == NULL)
        goto fail;
    vm->app = app;
    vm->generation = generation;
    vm->routes_ref = LUA_NOREF;
    vm->pending_ref = LUA_NOREF;
    vm->mem_limit = (size_t)app->cfg->memory_limit;
    if ((vm->L = lua_newstate(vm_alloc, vm)) == NULL)
        goto fail;
    *(lh_vm_t **)lua_getextraspace(vm->L) = vm; /* copied into every thread */
    lua_atpanic(vm->L, at_panic);
    lua_pushcfunction(vm->L, open_libs);
    lua_pushlightuserdata(vm->L, vm);
    if (lua_pcall(vm->L, 1, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "cannot start Lua: %s", lua_tostring(vm->L, -1));
        lh_vm_free(vm);
        return NULL;
    }
    /* short-lived event tables die young: the generational collector suits them */
    lua_gc(vm->L, LUA_GCGEN, 0, 0);
    return vm;
fail:
    snprintf(err, errlen, "cannot start Lua: not enough memory");
    lh_vm_free(vm);
    return NULL;
}

void lh_vm_free(lh_vm_t *vm)
{
    if (vm == NULL)
        return;
    if (vm->L != NULL) {
        lh_timer_stop_all(vm);
        lh_task_cancel_all(vm);
        vm->closing = 1;
        lua_close(vm->L);
    }
    for (size_t i = 0; i < vm->nhandlers; i++) {
        free(vm->handlers[i].script);
        free(vm->handlers[i].label);
    }
    free(vm->handlers);
    for (size_t i = 0; i < vm->nroutes; i++)
        free(vm->routes[i].handlers);
    free(vm->routes);
    free(vm);
}
