#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "embedded.h"
#include "lib.h"

#define HARNESS "luahook/testing.lua"
/* a test file that runs longer than this is stopped: a loop must not hang the suite */
#define FILE_DEADLINE_NS (120ull * 1000000000ull)

typedef struct {
    char **v;
    size_t n, cap;
} list_t;

static int list_add(list_t *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **nv = realloc(l->v, cap * sizeof(*nv));
        if (nv == NULL)
            return -1;
        l->v = nv, l->cap = cap;
    }
    if ((l->v[l->n] = strdup(s)) == NULL)
        return -1;
    l->n++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_test_file(const char *name)
{
    size_t n = strlen(name);
    return n > 9 && strcmp(name + n - 9, "_test.lua") == 0;
}

/* Test files under `dir`, recursively, each folder's entries in name order. Symlinked
** folders are not followed (a link to a parent would loop). -1 after printing why a
** folder could not be read. */
static int collect(list_t *out, const char *dir)
{
    DIR *d = opendir(dir);
    list_t names = {0};
    struct dirent *e;
    int rc = 0;
    if (d == NULL) {
        fprintf(stderr, "luahook test: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && list_add(&names, e->d_name) != 0)
            break;
    closedir(d);
    if (names.n > 0)
        qsort(names.v, names.n, sizeof(*names.v), cmp_names);
    for (size_t i = 0; i < names.n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", strcmp(dir, ".") == 0 ? "." : dir, names.v[i]);
        const char *shown = strncmp(path, "./", 2) == 0 ? path + 2 : path;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (collect(out, path) != 0)
                rc = -1;
        } else if (is_test_file(names.v[i])) {
            list_add(out, shown);
        }
        free(names.v[i]);
    }
    free(names.v);
    return rc;
}

/* __luahook.listdir(dir) -> names (unsorted, without . and ..), or nil, err */
static int listdir(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    DIR *d = opendir(dir);
    struct dirent *e;
    lua_Integer n = 0;
    if (d == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", dir, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    return 1;
}

/* The count hook of every state and coroutine of a test file: the file's own deadline,
** and the CPU deadline the harness arms around each handler run. A handler past it is
** yielded out (through any pcall), as the server's task hook does. */
static uint64_t file_deadline;
static uint64_t run_deadline; /* 0: disarmed */
static int run_tripped;

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    uint64_t now = uv_hrtime();
    if (now > file_deadline)
        luaL_error(L, "the test file ran longer than %d s", (int)(FILE_DEADLINE_NS / 1000000000));
    if (run_deadline == 0 || now < run_deadline)
        return;
    run_tripped = 1;
    /* from now on also at every line: a loop that re-enters a C call (pcall(table.sort,
    ** t, busy_cmp)) gets back to a yieldable line at once */
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT | LUA_MASKLINE, 16);
    if (lua_isyieldable(L))
        lua_yield(L, 0); /* takes effect when the hook returns */
    else
        luaL_error(L, "handler timed out (--handler-timeout)");
}

/* __luahook.arm(seconds): a CPU deadline for the Lua code that runs next */
static int harness_arm(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    run_tripped = 0;
    run_deadline = uv_hrtime() + (uint64_t)(s > 0 ? s * 1e9 : 0) + 1;
    return 0;
}

/* __luahook.disarm() -> whether the deadline passed since arm() */
static int harness_disarm(lua_State *L)
{
    run_deadline = 0;
    lua_pushboolean(L, run_tripped);
    run_tripped = 0;
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Runs one file in a fresh state; adds to *passed and *failed. */
static void run_file(const char *path, double handler_timeout, int *passed, int *failed)
{
    const lh_embedded_t *h = lh_embedded_find(HARNESS);
    lua_State *L = luaL_newstate();
    if (L == NULL || h == NULL) {
        printf("FAIL %s: (load) %s\n", path, L ? "the test harness is missing" : "no memory");
        (*failed)++;
        if (L)
            lua_close(L);
        return;
    }
    file_deadline = uv_hrtime() + FILE_DEADLINE_NS;
    run_deadline = 0;
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 10000);
    luaL_openlibs(L);
    luaL_requiref(L, "json", luaopen_lh_json, 1);
    lua_pop(L, 1);
    /* __luahook: what the harness learns from the host */
    lua_newtable(L);
    lua_pushstring(L, LH_VERSION);
    lua_setfield(L, -2, "version");
    lua_newtable(L);
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++) {
        size_t n = strlen(e->name);
        if (strncmp(e->name, "samples/", 8) != 0 || n < 14)
            continue;
        lua_pushlstring(L, e->name + 8, n - 13); /* samples/X.json -> X */
        lua_pushlstring(L, e->data, e->len);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "samples");
    lua_pushcfunction(L, listdir);
    lua_setfield(L, -2, "listdir");
    lua_pushcfunction(L, harness_arm);
    lua_setfield(L, -2, "arm");
    lua_pushcfunction(L, harness_disarm);
    lua_setfield(L, -2, "disarm");
    lua_pushnumber(L, handler_timeout);
    lua_setfield(L, -2, "handler_timeout");
    lua_setglobal(L, "__luahook");

    lua_pushcfunction(L, traceback);
    int tb = lua_gettop(L);
    int rc = luaL_loadbufferx(L, h->data, h->len, "=" HARNESS, "t");
    if (rc == LUA_OK)
        rc = lua_pcall(L, 0, 1, tb);
    if (rc == LUA_OK) {
        lua_getfield(L, -1, "run");
        lua_pushstring(L, path);
        rc = lua_pcall(L, 1, 2, tb);
    }
    if (rc != LUA_OK) {
        printf("FAIL %s: (harness) %s\n", path, lua_tostring(L, -1));
        (*failed)++;
    } else {
        *passed += (int)lua_tointeger(L, -2);
        *failed += (int)lua_tointeger(L, -1);
    }
    fflush(stdout);
    lua_close(L);
}

int lh_testing_run(const lh_config_t *cfg)
{
    list_t files = {0};
    int passed = 0, failed = 0, rc = 0;
    for (size_t i = 0; i < cfg->npaths; i++) {
        struct stat st;
        const char *p = cfg->paths[i];
        if (stat(p, &st) != 0) {
            fprintf(stderr, "luahook test: %s: %s\n", p, strerror(errno));
            rc = 2;
        } else if (S_ISDIR(st.st_mode)) {
            if (collect(&files, p) != 0)
                rc = 2;
        } else {
            list_add(&files, p);
        }
    }
    if (files.n == 0 && rc == 0) {
        fprintf(stderr, "luahook test: no *_test.lua file found\n");
        rc = 2;
    }
    for (size_t i = 0; i < files.n; i++) {
        run_file(files.v[i], cfg->handler_timeout, &passed, &failed);
        free(files.v[i]);
    }
    free(files.v);
    if (rc != 0 && files.n == 0)
        return rc;
    printf("%d passed, %d failed\n", passed, failed);
    /* a path that could not be read is a usage problem even when other tests ran */
    return rc != 0 ? rc : failed > 0 ? 1 : 0;
}
