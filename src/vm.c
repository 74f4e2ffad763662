#include "vm.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>

#include "embedded.h"
#include "actions.h"
#include "lib.h"
#include "log.h"
#include "recipes.h"
#include "task.h"

/* registry field: install(env, dir, key) of lua/luahook/package.lua, this VM's loader */
#define PACKAGE_KEY "luahook.package"
#define PACKAGE_SRC "luahook/package.lua"
/* A young collection once the heap has grown by this % (Lua's default: 20). An event leaves
** little alive, so a collection's fixed part is most of its cost: at 80, a typical event
** takes 4 % fewer instructions, and the peak RSS under load does not move. Kept below the
** major collection's 100 %: at 100, minor collections set off major ones. */
#define GC_MINOR_MUL 80


static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lh_vm_t *vm = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        lh_pool_free(&vm->pool, ptr, osize);
        vm->mem_used -= osize;
        return NULL;
    }
    /* the cap applies to what handlers do; the host's own bookkeeping may pass it */
    if (nsize > osize && vm->limit_on && vm->mem_limit != 0 &&
        vm->mem_used + (nsize - osize) > vm->mem_limit) {
        vm->oom_real = 0;
        return NULL;
    }
    void *p = lh_pool_realloc(&vm->pool, ptr, osize, nsize);
    if (p != NULL)
        vm->mem_used += nsize - osize;
    else
        vm->oom_real = 1; /* the system's: not --memory-limit, whatever it is set to */
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

/* on()'s `name` option: a letter, then letters, digits, '_', '.', '-'; never an ordinal. */
static int valid_name(const char *s, size_t len)
{
    if (len == 0 || len > LH_HANDLER_NAME_MAX ||
        !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* on()'s options at `idx` (nil or a table), checked: the `name` (NULL when not given) and
** `custom` (the actions are another sender's: no warning for a name Label Studio never
** sends). */
static const char *check_opts(lua_State *L, lh_vm_t *vm, int idx, int *custom, int *retries)
{
    const char *name = NULL;
    *custom = 0;
    *retries = -1;
    if (lua_isnoneornil(L, idx))
        return NULL;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* k v */
        if (lua_type(L, -2) != LUA_TSTRING || (strcmp(lua_tostring(L, -2), "name") != 0 &&
                                               strcmp(lua_tostring(L, -2), "custom") != 0 &&
                                               strcmp(lua_tostring(L, -2), "retries") != 0)) {
            lua_pop(L, 1); /* k */
            if (lua_type(L, -1) == LUA_TSTRING)
                luaL_error(L, "on: unknown option '%s' (the options are: name, custom, retries)",
                           lua_tostring(L, -1));
            luaL_error(L,
                       "on: the options table takes string keys (name, custom, retries), not a %s",
                       luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
    /* retries: this handler's own count of retries in the journal (--retries otherwise) */
    if (lua_getfield(L, idx, "retries") != LUA_TNIL) {
        int isint;
        lua_Integer n = lua_tointegerx(L, -1, &isint);
        if (!isint || n < 0 || n > 1000)
            luaL_error(L, "on: retries must be a whole number from 0 to 1000, got %s",
                       luaL_tolstring(L, -1, NULL));
        *retries = (int)n;
    }
    lua_pop(L, 1);
    int ct = lua_getfield(L, idx, "custom");
    if (ct != LUA_TNIL && ct != LUA_TBOOLEAN)
        luaL_error(L, "on: custom must be true or false, got %s", luaL_typename(L, -1));
    *custom = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "name") == LUA_TNIL) { /* ... name */
        lua_pop(L, 1);
        return NULL;
    }
    size_t len;
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "on: the name must be a string, got %s", luaL_typename(L, -1));
    name = lua_tolstring(L, -1, &len);
    if (!valid_name(name, len))
        luaL_error(L,
                   "on: bad handler name '%s': a letter, then letters, digits, '_', '.' or "
                   "'-', at most %d characters",
                   name, LH_HANDLER_NAME_MAX);
    for (size_t i = 0; i < vm->nhandlers; i++) {
        const lh_handler_t *o = &vm->handlers[i];
        /* a name holds no '#': it is what follows the id's last one */
        if (o->script_id == vm->loading_script && o->named &&
            strcmp(strrchr(o->id, '#') + 1, name) == 0)
            luaL_error(L, "on: the handler name '%s' is already used in this script (by %s)", name,
                       o->label);
    }
    lua_pop(L, 1); /* the string stays in the options table, borrowed until on() returns */
    return name;
}

/* Appends `s` to the space-separated list *acc (owned). -1 when out of memory. */
static int append_word(char **acc, const char *s)
{
    size_t old = *acc ? strlen(*acc) : 0, n = strlen(s);
    char *p = realloc(*acc, old + n + 2);
    if (p == NULL)
        return -1;
    if (old > 0)
        p[old++] = ' ';
    memcpy(p + old, s, n + 1);
    *acc = p;
    return 0;
}

/* A warning for `action` when Label Studio never sends it: "file:line: warning: ...", kept
** in vm->warnings for check, serve and reload to show. */
static void warn_action(lua_State *L, lh_vm_t *vm, const char *label, const char *action)
{
    char why[400], *w;
    if (!lh_actions_explain(action, why, sizeof(why)))
        return;
    size_t n = strlen(label) + strlen(why) + 16;
    char **ws = realloc(vm->warnings, (vm->nwarnings + 1) * sizeof(*ws));
    if (ws == NULL || (w = malloc(n)) == NULL) {
        if (ws != NULL)
            vm->warnings = ws;
        luaL_error(L, "not enough memory");
        return;
    }
    vm->warnings = ws;
    snprintf(w, n, "%s: warning: %s", label, why);
    vm->warnings[vm->nwarnings++] = w;
}

/* on(action | {action...} | "*", fn [, { name = "...", custom = true, retries = N }]) */
static int lib_on(lua_State *L)
{
    lh_vm_t *vm = vm_of(L);
    lua_Debug ar;
    int t = lua_type(L, 1);
    if (!vm->loading)
        return luaL_error(L, "on: handlers can only be registered while scripts load");
    if (vm->loading_script < 0) /* a recipe.lua's top level, or a test file's */
        return luaL_error(L, "on: handlers are registered by a script, or by a recipe's "
                             "setup(cfg) (not at the top of recipe.lua)");
    assert((size_t)vm->loading_script < vm->nscripts);
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
    int custom, retries;
    const char *name = check_opts(L, vm, 3, &custom, &retries);
    if (vm->nhandlers == vm->handlers_cap) {
        size_t cap = vm->handlers_cap ? vm->handlers_cap * 2 : 16;
        lh_handler_t *h = realloc(vm->handlers, cap * sizeof(*h));
        if (h == NULL)
            return luaL_error(L, "not enough memory");
        vm->handlers = h, vm->handlers_cap = cap;
    }
    lh_script_t *sc = &vm->scripts[vm->loading_script];
    lh_handler_t *h = &vm->handlers[vm->nhandlers];
    memset(h, 0, sizeof(*h));
    /* the ref (which may raise) before the C allocations (which must not leak) */
    lua_pushvalue(L, 2);
    int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">S", &ar);
    const char *script = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
    size_t lsize = strlen(script) + 24;
    size_t isize = strlen(sc->name) + (name ? strlen(name) : 12) + 2;
    int actions_ok = 0;
    if (t == LUA_TSTRING) {
        actions_ok = append_word(&h->actions, lua_tostring(L, 1)) == 0;
    } else {
        actions_ok = 1;
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        for (lua_Integer i = 1; i <= n && actions_ok; i++) {
            lua_rawgeti(L, 1, i);
            actions_ok = append_word(&h->actions, lua_tostring(L, -1)) == 0;
            lua_pop(L, 1);
        }
    }
    if (sc->site_file != NULL) /* a recipe instance's: told by its use() */
        lsize += strlen(sc->site_file) + 24;
    h->script = strdup(sc->site_file != NULL ? sc->site_file : script);
    h->label = malloc(lsize);
    h->id = malloc(isize);
    if (h->script == NULL || h->label == NULL || h->id == NULL || !actions_ok) {
        free(h->script);
        free(h->label);
        free(h->id);
        free(h->actions);
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
        return luaL_error(L, "not enough memory");
    }
    h->line = ar.linedefined;
    if (sc->site_file != NULL) {
        h->line = sc->site_line;
        snprintf(h->label, lsize, "%s:%d (%s:%d)", sc->site_file, sc->site_line, script,
                 ar.linedefined);
    } else {
        snprintf(h->label, lsize, "%s:%d", script, ar.linedefined);
    }
    /* named handlers take an ordinal too: naming one leaves the others' ids alone */
    int ordinal = ++sc->nhandlers;
    if (name != NULL)
        snprintf(h->id, isize, "%s#%s", sc->name, name);
    else
        snprintf(h->id, isize, "%s#%d", sc->name, ordinal);
    h->named = name != NULL;
    h->retries = retries;
    h->script_id = vm->loading_script;
    h->fn_ref = fn_ref;
    int idx = (int)vm->nhandlers++;
    if (!custom) {
        if (t == LUA_TSTRING) {
            warn_action(L, vm, h->label, lua_tostring(L, 1));
        } else {
            lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, 1, i);
                warn_action(L, vm, vm->handlers[idx].label, lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
    }

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

/* A script's error at load time becomes a message: a string as it is (it already reads
** "file:line: message"), another value through its __tostring or as its type. No
** traceback: a load problem is reported as one "file:line: message" line. */
static int msghandler(lua_State *L)
{
    if (lua_type(L, 1) == LUA_TSTRING)
        return 1;
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        return 1;
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    return 1;
}

int lh_vm_script_find(const lh_vm_t *vm, const char *name)
{
    for (size_t i = 0; i < vm->nscripts; i++)
        if (strcmp(vm->scripts[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Adds the script `path` under its stable `name`; its index, or -1 after reporting why
** not: the name is taken, or memory ran out. */
static int add_script(lh_vm_t *vm, const char *path, const char *name, lh_vm_report_cb report,
                      void *data)
{
    char buf[2048];
    int other = lh_vm_script_find(vm, name);
    struct stat a, b;
    if (other >= 0 && stat(path, &a) == 0 && stat(vm->scripts[other].path, &b) == 0 &&
        a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
        snprintf(buf, sizeof(buf),
                 "%s: the script is loaded twice (given twice, or given and inside a folder "
                 "given): it loads once",
                 path);
        report(data, buf);
        return -1;
    }
    if (other >= 0) {
        snprintf(buf, sizeof(buf),
                 "%s: the script name '%s' is already taken by %s (a script is named by its "
                 "path inside the folder given, or by its base name when given as a file; "
                 "what is kept for its handlers hangs on that name): rename one of them",
                 path, name, vm->scripts[other].path);
        report(data, buf);
        return -1;
    }
    if (vm->nscripts == vm->scripts_cap) {
        size_t cap = vm->scripts_cap ? vm->scripts_cap * 2 : 16;
        lh_script_t *ns = realloc(vm->scripts, cap * sizeof(*ns));
        if (ns == NULL)
            goto oom;
        vm->scripts = ns, vm->scripts_cap = cap;
    }
    lh_script_t *sc = &vm->scripts[vm->nscripts];
    memset(sc, 0, sizeof(*sc));
    sc->name = strdup(name);
    sc->path = strdup(path);
    if (sc->name == NULL || sc->path == NULL) {
        free(sc->name);
        free(sc->path);
        goto oom;
    }
    return (int)vm->nscripts++;
oom:
    snprintf(buf, sizeof(buf), "%s: not enough memory", path);
    report(data, buf);
    return -1;
}

static void report_copy(void *data, const char *problem)
{
    char **buf = data;
    snprintf(buf[0], (size_t)(buf[1] - buf[0]), "%s", problem);
}

int lh_vm_instance_begin(lh_vm_t *vm, const char *name, const char *path, const char *site_file,
                         int site_line, char *err, size_t errlen)
{
    char *span[2] = {err, err + errlen};
    err[0] = '\0';
    int other = lh_vm_script_find(vm, name);
    if (other >= 0) {
        snprintf(err, errlen,
                 "the name '%s' is already taken by %s: pick another with { as = ... }", name,
                 vm->scripts[other].path);
        return -2;
    }
    int id = add_script(vm, path, name, report_copy, span);
    if (id < 0)
        return -2;
    lh_script_t *sc = &vm->scripts[id];
    if ((sc->site_file = strdup(site_file)) == NULL) {
        snprintf(err, errlen, "not enough memory");
        return -2; /* the script stays, without handlers: freed with the VM */
    }
    sc->site_line = site_line;
    int previous = vm->loading_script;
    vm->loading_script = id;
    return previous;
}

int lh_vm_instance_secrets(lh_vm_t *vm, const char *const *secrets, size_t n)
{
    if (vm->loading_script < 0 || n == 0)
        return 0;
    lh_script_t *sc = &vm->scripts[vm->loading_script];
    char **s = calloc(n, sizeof(*s));
    if (s == NULL)
        return -1;
    sc->secrets = s; /* freed with the VM, also when a copy below fails */
    for (size_t i = 0; i < n; i++) {
        if (strlen(secrets[i]) < 4) /* "***" must not grow the text; and a secret that short
                                       would mask common words */
            continue;
        if ((s[sc->nsecrets] = strdup(secrets[i])) == NULL)
            return -1;
        sc->nsecrets++;
    }
    return 0;
}

char *lh_vm_scrub(const lh_vm_t *vm, int script_id, const char *text, int *failed)
{
    *failed = 0;
    if (text == NULL || script_id < 0 || (size_t)script_id >= vm->nscripts)
        return NULL;
    const lh_script_t *sc = &vm->scripts[script_id];
    char *out = NULL;
    for (size_t i = 0; i < sc->nsecrets; i++) {
        const char *cur = out != NULL ? out : text, *hit;
        size_t sl = strlen(sc->secrets[i]);
        if ((hit = strstr(cur, sc->secrets[i])) == NULL)
            continue;
        /* at most as long as the text: every secret kept is at least 4 bytes */
        size_t cl = strlen(cur), o = 0;
        char *next = malloc(cl + 1);
        if (next == NULL) {
            free(out);
            *failed = 1;
            return NULL;
        }
        for (const char *p = cur; hit != NULL; p = hit + sl, hit = strstr(p, sc->secrets[i])) {
            memcpy(next + o, p, (size_t)(hit - p));
            o += (size_t)(hit - p);
            memcpy(next + o, "***", 3);
            o += 3;
            cur = hit + sl;
        }
        memcpy(next + o, cur, strlen(cur) + 1);
        free(out);
        out = next;
    }
    return out;
}

int lh_vm_defer_problem(lh_vm_t *vm, const char *problem)
{
    char **ds = realloc(vm->deferred, (vm->ndeferred + 1) * sizeof(*ds));
    if (ds == NULL)
        return -1;
    vm->deferred = ds;
    if ((ds[vm->ndeferred] = strdup(problem)) == NULL)
        return -1;
    vm->ndeferred++;
    return 0;
}

/* Reports the problems deferred while the script loaded; their number. */
static int report_deferred(lh_vm_t *vm, lh_vm_report_cb report, void *data)
{
    int n = (int)vm->ndeferred;
    for (size_t i = 0; i < vm->ndeferred; i++) {
        report(data, vm->deferred[i]);
        free(vm->deferred[i]);
    }
    vm->ndeferred = 0;
    return n;
}

void lh_vm_instance_end(lh_vm_t *vm, int previous)
{
    vm->loading_script = previous;
}

int lh_vm_package_root(lua_State *L)
{
    lua_settop(L, 6);
    lua_getfield(L, LUA_REGISTRYINDEX, PACKAGE_KEY); /* args install */
    lua_insert(L, 1);                                /* install args */
    lua_call(L, 6, 0);
    return 0;
}

int lh_vm_package(lua_State *L)
{
    const char *path = luaL_checkstring(L, 2);
    const char *slash = strrchr(path, '/');
    char real[PATH_MAX];
    lua_getfield(L, LUA_REGISTRYINDEX, PACKAGE_KEY); /* env path install */
    lua_pushvalue(L, 1);                             /* env path install env */
    if (slash == NULL)
        lua_pushliteral(L, ".");
    else if (slash == path)
        lua_pushliteral(L, "/");
    else
        lua_pushlstring(L, path, (size_t)(slash - path)); /* ... env dir */
    /* two spellings of one folder are one root: one cache of its modules */
    if (realpath(lua_tostring(L, -1), real) != NULL)
        lua_pushstring(L, real);
    else
        lua_pushvalue(L, -1); /* ... env dir key */
    lua_call(L, 3, 0);
    return 0;
}

typedef struct {
    lh_vm_t *vm;
    const char *path, *name;
    int err; /* errno of a chunk that could not be read */
} env_t;

/* Under lua_pcall: luaL_loadfilex allocates the chunk's name before it protects itself.
** Returns the chunk, or nil and the message. Stack: ea. */
static int load_chunk(lua_State *L)
{
    env_t *ea = lua_touserdata(L, 1);
    if (luaL_loadfilex(L, ea->path, "t") == LUA_OK)
        return 1;
    ea->err = errno;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* Under lua_pcall (it allocates, and loading may run in a reload's loop callback): the
** script's own globals, falling back to the shared ones, with its require and its store.
** Stack: ea. Returns env. */
static int make_env(lua_State *L)
{
    env_t *ea = lua_touserdata(L, 1);
    lua_newtable(L);                     /* ea env */
    lua_newtable(L);                     /* ea env mt */
    lua_pushglobaltable(L);              /* ea env mt _G */
    lua_setfield(L, -2, "__index");      /* ea env mt */
    lua_setmetatable(L, -2);             /* ea env */
    lua_pushcfunction(L, lh_vm_package); /* ea env install */
    lua_pushvalue(L, -2);
    lua_pushstring(L, ea->path);            /* ea env install env path */
    lua_call(L, 2, 0);                      /* ea env */
    lh_lib_store_push(L, ea->vm, ea->name); /* ea env store: bound to the script's stable name */
    lua_setfield(L, -2, "store");           /* ea env */
    return 1;
}

/* Loads the script at `path` under its stable `name`. Returns the number of problems. */
static int load_file(lh_vm_t *vm, const char *path, const char *name, lh_vm_report_cb report,
                     void *data)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    int problems = 0;

    int script_id = add_script(vm, path, name, report, data);
    if (script_id < 0)
        return 1;
    env_t ea = {vm, path, name, 0};
    lua_pushcfunction(L, load_chunk);
    lua_pushlightuserdata(L, &ea);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK || lua_isnil(L, -2)) {
        const char *msg = lua_tostring(L, -1);
        if (msg != NULL && strncmp(msg, "cannot open", 11) == 0) {
            char buf[1024];
            snprintf(buf, sizeof(buf), "%s: cannot open: %s", path, strerror(ea.err));
            report(data, buf);
        } else {
            report(data, msg ? msg : "unknown load error");
        }
        lua_settop(L, top);
        return 1;
    }
    lua_pop(L, 1); /* fn */
    /* from here until its chunk returned, lh_vm_script_name(vm, vm->loading_script) names
    ** the script: what its own environment (a per-script `store`) is bound to */
    vm->loading_script = script_id;
    lua_pushcfunction(L, make_env); /* fn make */
    lua_pushlightuserdata(L, &ea);  /* fn make ea: nothing allocated outside the call */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        report(data, lua_tostring(L, -1));
        vm->loading_script = -1;
        lua_settop(L, top);
        return 1;
    }
    if (lua_setupvalue(L, -2, 1) == NULL) /* fn */
        lua_pop(L, 1);
    lua_pushcfunction(L, msghandler); /* fn mh */
    lua_insert(L, -2);                /* mh fn */
    int rc = lua_pcall(L, 0, 0, top + 1);
    problems = report_deferred(vm, report, data); /* they came first */
    if (rc != LUA_OK) {
        report(data, lua_tostring(L, -1));
        problems++;
    }
    vm->loading_script = -1;
    lua_settop(L, top);
    return problems;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Under lua_pcall: M.check_folder(dir) of the recipes module. Stack: dir (light). */
static int check_folder(lua_State *L)
{
    const char *dir = lua_touserdata(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY);
    lua_getfield(L, -1, "check_folder");
    lua_pushstring(L, dir);
    lua_call(L, 1, 1);
    return 1;
}

/* A recipe folder (DIR/recipe.lua) given as a path: its modules are no handler scripts;
** its manifest is checked (lua/luahook/recipes.lua M.check_folder). Its handlers register
** only through use(). */
static int load_recipe_folder(lh_vm_t *vm, const char *dir, lh_vm_report_cb report, void *data)
{
    lua_State *L = vm->L;
    int top = lua_gettop(L), problems = 0;
    lua_pushcfunction(L, check_folder);
    lua_pushlightuserdata(L, (void *)dir); /* only read */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isnil(L, -1)) {
        report(data, lua_isstring(L, -1) ? lua_tostring(L, -1) : "the recipe does not load");
        problems = 1;
    }
    lua_settop(L, top);
    return problems;
}

static int load_dir(lh_vm_t *vm, const char *dir, lh_vm_report_cb report, void *data)
{
    char probe[4096];
    struct stat pst;
    snprintf(probe, sizeof(probe), "%s/recipe.lua", dir);
    if (stat(probe, &pst) == 0 && S_ISREG(pst.st_mode))
        return load_recipe_folder(vm, dir, report, data);

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
        /* Lua's memory: a raise (out of memory, under a reload's protected load) leaks none */
        star = lua_newuserdatauv(L, (nstar + 1) * sizeof(int), 0); /* pending star-list star */
        lua_insert(L, -2);                                         /* pending star star-list */
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
            lua_Integer route = (lua_Integer)vm->nroutes++; /* built: lh_vm_free frees it */
            size_t alen;
            const char *action = lua_tolstring(L, -2, &alen);
            /* named actions show in /metrics from the start, at zero */
            lh_metrics_action(&vm->app->metrics, action, alen);
            lua_pushvalue(L, -2); /* k list k */
            lua_pushinteger(L, route);
            lua_rawset(L, routes); /* k list */
        }
        lua_pop(L, 1); /* k */
    }
    /* handler ids too, each at zero */
    for (size_t i = 0; i < vm->nhandlers; i++) {
        lh_handler_t *h = &vm->handlers[i];
        const lh_script_t *sc = &vm->scripts[h->script_id];
        char site[PATH_MAX + 16];
        h->stats = lh_metrics_handler(&vm->app->metrics, h->id);
        if (sc->site_file != NULL)
            snprintf(site, sizeof(site), "%s:%d", sc->site_file, sc->site_line);
        lh_metrics_handler_site(h->stats, sc->site_file != NULL ? site : NULL, sc->path);
    }
    lua_pushvalue(L, routes);
    vm->routes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(L, LUA_REGISTRYINDEX, vm->pending_ref);
    vm->pending_ref = LUA_NOREF;
    rc = 0;
done:
    lua_settop(L, top); /* star goes with the stack */
    return rc;
}

int lh_vm_load_path(lh_vm_t *vm, const char *path, lh_vm_report_cb report, void *data)
{
    struct stat st;
    int problems;
    vm->loading = 1;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        problems = load_dir(vm, path, report, data);
    else {
        /* a file given by itself is named by its base name: where it sits may change */
        const char *base = strrchr(path, '/');
        problems = load_file(vm, path, base != NULL ? base + 1 : path, report, data);
    }
    vm->loading = 0;
    return problems;
}

int lh_vm_seal(lh_vm_t *vm)
{
    return seal_routes(vm);
}

int lh_vm_load(lh_vm_t *vm, char *const *paths, size_t npaths, lh_vm_report_cb report, void *data)
{
    int problems = 0;
    for (size_t i = 0; i < npaths; i++)
        problems += lh_vm_load_path(vm, paths[i], report, data);
    if (seal_routes(vm) != 0) {
        report(data, "out of memory sealing the handler routes");
        problems++;
    }
    return problems;
}

const char *lh_vm_script_name(const lh_vm_t *vm, int script_id)
{
    assert(script_id >= 0 && (size_t)script_id < vm->nscripts);
    return vm->scripts[script_id].name;
}

const lh_handler_t *lh_vm_handler_find(const lh_vm_t *vm, const char *id)
{
    for (size_t i = 0; i < vm->nhandlers; i++)
        if (strcmp(vm->handlers[i].id, id) == 0)
            return &vm->handlers[i];
    return NULL;
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

/* ------------------------------------------------------------------ os.time, os.date */

/* os.time() and os.date(fmt) without a time read the VM's clock (virtual under luahook
** test); with one, they are Lua's own (upvalue 2). */
static int os_time(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_insert(L, 1);
        lua_call(L, lua_gettop(L) - 1, 1);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)floor(lh_clock_wall(vm_of(L)->clock)));
    return 1;
}

static int os_date(lua_State *L)
{
    lua_settop(L, 2);
    if (lua_isnil(L, 2))
        lua_pushinteger(L, (lua_Integer)floor(lh_clock_wall(vm_of(L)->clock)));
    else
        lua_pushvalue(L, 2);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_call(L, 2, 1);
    return 1;
}

static void wrap_os(lua_State *L, lh_vm_t *vm)
{
    static const struct {
        const char *name;
        lua_CFunction fn;
    } fns[] = {{"time", os_time}, {"date", os_date}};
    lua_getglobal(L, "os"); /* os */
    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        lua_pushlightuserdata(L, vm);
        lua_getfield(L, -2, fns[i].name); /* os vm lua's */
        lua_pushcclosure(L, fns[i].fn, 2);
        lua_setfield(L, -2, fns[i].name); /* os */
    }
    lua_pop(L, 1);
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
        {"log", luaopen_lh_log, 1},
        {"http", luaopen_lh_http, 1},
        {"timer", luaopen_lh_timer, 1},
        {"sleep", luaopen_lh_sleep, 0},
        {"env", luaopen_lh_env, 0},
        {"crypto", luaopen_lh_crypto, 1},
        {"permanent", luaopen_lh_permanent, 0},
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
    wrap_os(L, vm);
    lh_embedded_preload(L); /* require "labelstudio" and the other modules of lua/ */
    /* require() per package root: the modules beside the scripts (lua/luahook/package.lua) */
    const lh_embedded_t *pkg = lh_embedded_find(PACKAGE_SRC);
    if (pkg == NULL)
        return luaL_error(L, "%s is not compiled in", PACKAGE_SRC);
    if (luaL_loadbufferx(L, pkg->data, pkg->len, "=" PACKAGE_SRC, "t") != LUA_OK)
        return lua_error(L);
    lua_pushcfunction(L, lh_recipes_embedded); /* chunk embedded */
    lua_call(L, 1, 1);                         /* install */
    lua_setfield(L, LUA_REGISTRYINDEX, PACKAGE_KEY);
    lh_recipes_open(L, vm); /* use() */
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
    vm->log_ref = LUA_NOREF;
    vm->loading_script = -1;
    if (app->clock != NULL)
        vm->clock = app->clock;
    else if ((vm->clock = vm->own_clock = lh_clock_new_loop(app->loop)) == NULL)
        goto fail;
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
    lua_gc(vm->L, LUA_GCGEN, GC_MINOR_MUL, 0);
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
    lh_pool_drain(&vm->pool);
    for (size_t i = 0; i < vm->nhandlers; i++) {
        free(vm->handlers[i].script);
        free(vm->handlers[i].label);
        free(vm->handlers[i].id);
        free(vm->handlers[i].actions);
    }
    free(vm->handlers);
    for (size_t i = 0; i < vm->nwarnings; i++)
        free(vm->warnings[i]);
    free(vm->warnings);
    for (size_t i = 0; i < vm->ndeferred; i++)
        free(vm->deferred[i]);
    free(vm->deferred);
    for (size_t i = 0; i < vm->nscripts; i++) {
        free(vm->scripts[i].name);
        free(vm->scripts[i].path);
        free(vm->scripts[i].site_file);
        for (size_t k = 0; k < vm->scripts[i].nsecrets; k++)
            free(vm->scripts[i].secrets[k]);
        free(vm->scripts[i].secrets);
    }
    free(vm->scripts);
    for (size_t i = 0; i < vm->nroutes; i++)
        free(vm->routes[i].handlers);
    free(vm->routes);
    lh_clock_free(vm->own_clock); /* after lua_close: finalizers may free timers of it */
    free(vm);
}
