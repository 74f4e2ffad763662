#include "testing.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lualib.h>
#include <uv.h>

#include "clock.h"
#include "request.h"
#include "dispatch.h"
#include "embedded.h"
#include "recipes.h"
#include "lib.h"
#include "store.h"
#include "log.h"
#include "task.h"
#include "transport.h"
#include "vm.h"

#define HARNESS "luahook/testing.lua"
/* the virtual clock of every test file starts here (2023-11-14T22:13:20Z) */
#define START_WALL 1700000000.0
/* a test file that runs longer than this is stopped: a loop must not hang the suite */
#define FILE_DEADLINE_S 120
/* delivery ids of luahook test: a fixed prefix, then the counter, as the server's */
#define TEST_ID_PREFIX 0x7e577e57u

/* {====================================================== finding test files */

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

/* Whether the walk skips `path` (as shown, "sub/x_test.lua"), named `name`: a folder no
** project keeps its own tests in (build output, dependencies), or one that matches an
** --exclude GLOB, by its whole path or by its name alone. */
static int excluded(const lh_config_t *cfg, const char *path, const char *name, int is_dir)
{
    static const char *const skipped_dirs[] = {"build", "node_modules"};
    if (is_dir)
        for (size_t i = 0; i < sizeof(skipped_dirs) / sizeof(skipped_dirs[0]); i++)
            if (strcmp(name, skipped_dirs[i]) == 0)
                return 1;
    for (size_t i = 0; i < cfg->nexcludes; i++)
        if (fnmatch(cfg->excludes[i], path, 0) == 0 || fnmatch(cfg->excludes[i], name, 0) == 0)
            return 1;
    return 0;
}

/* Test files under `dir`, recursively, each folder's entries in name order. Symlinked
** folders are not followed (a link to a parent would loop); dot folders and excluded()
** ones are not entered. -1 after printing why a folder could not be read. */
static int collect(list_t *out, const char *dir, const lh_config_t *cfg)
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
        int is_dir = lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
        if (excluded(cfg, shown, names.v[i], is_dir)) {
            /* not entered, not run */
        } else if (is_dir) {
            if (collect(out, path, cfg) != 0)
                rc = -1;
        } else if (is_test_file(names.v[i])) {
            list_add(out, shown);
        }
        free(names.v[i]);
    }
    free(names.v);
    return rc;
}

#define BUNDLED "bundled:"

/* "bundled:NAME" (or "bundled:" for every one): the test files of the bundled recipes as
** compiled into the binary, "bundled:NAME/x_test.lua" (lh_embedded is sorted). -1 after
** saying why when there is none. */
static int collect_bundled(list_t *out, const char *arg)
{
    const char *want = arg + strlen(BUNDLED);
    size_t wlen = strlen(want), found = 0;
    while (wlen > 0 && want[wlen - 1] == '/')
        wlen--;
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++) {
        const char *rest = e->name + 8, *slash, *base; /* after "recipes/" */
        char shown[512];
        if (strncmp(e->name, "recipes/", 8) != 0 || (slash = strchr(rest, '/')) == NULL)
            continue;
        if (wlen > 0 && ((size_t)(slash - rest) != wlen || strncmp(rest, want, wlen) != 0))
            continue;
        base = strrchr(e->name, '/') + 1;
        if (!is_test_file(base))
            continue;
        snprintf(shown, sizeof(shown), "%s%s", BUNDLED, rest);
        list_add(out, shown);
        found++;
    }
    if (found == 0) {
        fprintf(stderr, "luahook test: %s: no bundled recipe%s with tests%s%.*s\n", arg,
                wlen > 0 ? "" : "s", wlen > 0 ? " named " : "", (int)wlen, want);
        return -1;
    }
    return 0;
}

/* }====================================================== */

/* {====================================================== one test file's world */

/* The real VM of a test file with two parts swapped: the clock (virtual) and the transport
** (the test's mocks, which the Lua harness matches). */
typedef struct {
    lh_transport_t base; /* first: app.transport */
    lh_app_t app;
    lh_config_t cfg;            /* the command line's, answering --ack handled as fire does */
    lh_clock_t *clock;          /* owned */
    lh_vm_t *vm;                /* owned */
    int mock_ref;               /* registry ref: harness function(call) -> response */
    int timer_ref;              /* registry ref: harness function(label, outcome, err) */
    lh_timer_observer_t timers; /* vm->timer_observer */
} world_t;

static world_t *world_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* ------------------------------------------------------- the mock transport */

typedef struct {
    world_t *w;
    lh_http_req_t *req;      /* borrowed: the request owns this */
    lh_clock_timer_t *timer; /* owned */
    int answered;            /* the mock was asked; the timer runs until the answer is due */
} mock_req_t;

static void mock_free(mock_req_t *m)
{
    lh_clock_timer_free(m->timer);
    m->req->priv = NULL;
    free(m);
}

static const struct {
    const char *name;
    lh_http_error_t error;
} mock_kinds[] = {
    {"resolve", LH_HTTP_RESOLVE}, {"connect", LH_HTTP_CONNECT},     {"timeout", LH_HTTP_TIMEOUT},
    {"tls", LH_HTTP_TLS_VERIFY},  {"too_large", LH_HTTP_TOO_LARGE}, {"other", LH_HTTP_OTHER},
};

/* Under lua_pcall: asks the harness for the answer to m's request. Stack: m. Leaves the
** delay (seconds) on the stack after filling the request's outcome. */
static int ask_mock(lua_State *L)
{
    mock_req_t *m = lua_touserdata(L, 1);
    lh_http_req_t *req = m->req;
    lua_rawgeti(L, LUA_REGISTRYINDEX, m->w->mock_ref); /* m fn */
    lua_createtable(L, 0, 5);                          /* m fn call */
    lua_pushstring(L, req->method);
    lua_setfield(L, -2, "method");
    lua_pushstring(L, req->url);
    lua_setfield(L, -2, "url");
    lua_newtable(L); /* m fn call headers */
    int has_ctype = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (const char *k = req->headers[i].name; *k; k++)
            luaL_addchar(&b, (char)((*k >= 'A' && *k <= 'Z') ? *k + 32 : *k));
        luaL_pushresult(&b); /* ... headers name */
        has_ctype |= strcmp(lua_tostring(L, -1), "content-type") == 0;
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) { /* ... headers name old */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, req->headers[i].value);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, req->headers[i].value);
        }
        lua_rawset(L, -3);
    }
    if (req->json_body && !has_ctype) { /* as the curl transport adds it */
        lua_pushliteral(L, "application/json");
        lua_setfield(L, -2, "content-type");
    }
    lua_setfield(L, -2, "headers");
    if (req->body != NULL) {
        lua_pushlstring(L, req->body, req->body_len);
        lua_setfield(L, -2, "body");
    }
    lua_call(L, 1, 1); /* m r */
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "delay");                         /* m r delay */
    if (lua_getfield(L, 2, "no_mock") == LUA_TBOOLEAN) { /* m r delay no_mock */
        req->error = LH_HTTP_OTHER;
        req->cause = "no mock matches this request";
        snprintf(req->detail, sizeof(req->detail), "luahook test");
        lua_settop(L, 3);
        return 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "error") == LUA_TSTRING) { /* m r delay err */
        req->error = LH_HTTP_CONNECT;
        if (lua_getfield(L, 2, "kind") == LUA_TSTRING) { /* m r delay err kind */
            const char *k = lua_tostring(L, -1);
            size_t i;
            for (i = 0; i < sizeof(mock_kinds) / sizeof(mock_kinds[0]); i++)
                if (strcmp(k, mock_kinds[i].name) == 0)
                    break;
            if (i == sizeof(mock_kinds) / sizeof(mock_kinds[0]))
                luaL_error(L, "mock.http: unknown error kind '%s'", k);
            req->error = mock_kinds[i].error;
        }
        snprintf(req->detail, sizeof(req->detail), "%s", lua_tostring(L, 4));
        lua_settop(L, 3);
        return 1;
    }
    lua_settop(L, 3);
    lua_getfield(L, 2, "status"); /* m r delay status */
    req->status = (long)luaL_optinteger(L, -1, 200);
    lua_pop(L, 1);
    size_t blen = 0;
    lua_getfield(L, 2, "body"); /* m r delay body */
    const char *body = lua_tolstring(L, -1, &blen);
    if (body != NULL && strcmp(req->method, "HEAD") != 0 &&
        lh_http_buf_append(&req->resp, &req->resp_len, &req->resp_cap, body, blen, req->max_size) !=
            0) {
        if (blen > req->max_size)
            req->error = LH_HTTP_TOO_LARGE;
        else
            luaL_error(L, "not enough memory");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "headers") == LUA_TTABLE) { /* m r delay hdrs */
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            const char *v = luaL_tolstring(L, -1, NULL); /* ... k v vs */
            const char *line = lua_pushfstring(L, "%s: %s\r\n", lua_tostring(L, -3), v);
            if (lh_http_buf_append(&req->resp_head, &req->head_len, &req->head_cap, line,
                                   strlen(line), 1024 * 1024) != 0)
                luaL_error(L, "not enough memory");
            lua_pop(L, 3); /* ... k */
        }
    }
    lua_settop(L, 3);
    return 1;
}

static void on_mock_timer(lh_clock_timer_t *timer)
{
    mock_req_t *m = timer->data;
    lh_http_req_t *req = m->req;
    if (!m->answered) {
        /* the request was made: now (after the handlers that run at this same moment, as
        ** a real request always waits) the mock answers it, after its delay */
        lua_State *L = m->w->vm->L;
        int top = lua_gettop(L);
        m->answered = 1;
        lua_pushcfunction(L, ask_mock);
        lua_pushlightuserdata(L, m);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            req->error = LH_HTTP_RAISE; /* the handler raises the mock's error */
            snprintf(req->detail, sizeof(req->detail), "%s",
                     lua_tostring(L, -1) ? lua_tostring(L, -1) : "mock.http failed");
            lua_settop(L, top);
        } else {
            double delay = lua_tonumber(L, -1);
            lua_settop(L, top);
            if (delay > req->timeout && req->error != LH_HTTP_RAISE) {
                /* no answer within the request's timeout: what curl says then */
                req->error = LH_HTTP_TIMEOUT;
                snprintf(req->detail, sizeof(req->detail),
                         "Operation timed out after %.0f milliseconds with 0 bytes received",
                         req->timeout * 1000);
                delay = req->timeout;
            }
            if (delay > 0) {
                lh_clock_timer_start(timer, lh_clock_ns(delay), 0);
                return;
            }
        }
    }
    mock_free(m);
    req->started = 0;
    req->done(req);
}

static int mock_start(lh_transport_t *tp, lh_http_req_t *req)
{
    world_t *w = (world_t *)tp;
    mock_req_t *m = calloc(1, sizeof(*m));
    if (m == NULL || (m->timer = lh_clock_timer_new(w->clock, on_mock_timer, m)) == NULL) {
        free(m);
        return -1;
    }
    m->w = w;
    m->req = req;
    req->priv = m;
    lh_clock_timer_start(m->timer, 0, 0);
    return 0;
}

static void mock_cancel(lh_transport_t *tp, lh_http_req_t *req)
{
    (void)tp;
    if (req->priv != NULL)
        mock_free(req->priv);
}

/* ------------------------------------------------------- failed timer runs */

/* Every run of a timer callback that failed goes to the harness (it fails the fire or
** clock.advance that ran it); handler runs are watched through their event instead. */
static void on_run_done(void *data, const char *label, lh_outcome_t outcome, const char *err,
                        double seconds)
{
    world_t *w = data;
    lua_State *L = w->vm->L;
    (void)seconds;
    if (outcome == LH_OUTCOME_OK || strncmp(label, "timer ", 6) != 0 || w->timer_ref == LUA_NOREF ||
        !lua_checkstack(L, 4))
        return;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->timer_ref);
    lua_pushstring(L, label);
    lua_pushstring(L, lh_metrics_outcome_name(outcome));
    lua_pushstring(L, err ? err : "");
    lua_pcall(L, 3, 0, 0); /* the harness keeps its own errors out of this */
    lua_settop(L, top);
}

/* ------------------------------------------------------- fire */

/* One event fired by the harness: dispatch's answer and each run's outcome. Freed by its
** userdata's __gc, or when the event ends if the userdata went first. */
typedef struct {
    lh_dispatch_observer_t observer; /* the event's; data is this */
    int ended;                       /* every run ended (event_done), or the event was refused */
    int orphaned;                    /* the userdata was collected first */
    int status;
    char *answer; /* owned: the answer's JSON body */
    struct {
        char *label;                 /* owned: the handler's file:line, known at accept */
        char *id;                    /* owned: the handler's stable id */
        const lh_handler_t *handler; /* borrowed from the VM: tells apart two of one line */
        char *err;                   /* owned; NULL: ok */
        int set;
    } * runs; /* owned; in run order */
    size_t nruns;
} fired_t;

#define FIRED_MT "luahook.test.fired"

static void fired_free(fired_t *f)
{
    for (size_t i = 0; i < f->nruns; i++) {
        free(f->runs[i].label);
        free(f->runs[i].id);
        free(f->runs[i].err);
    }
    free(f->runs);
    free(f->answer);
    free(f);
}

static void fired_end(fired_t *f)
{
    f->ended = 1;
    if (f->orphaned)
        fired_free(f);
}

static void on_fire_answer(void *data, int status, const char *extra, const char *body, size_t len)
{
    fired_t *f = data;
    (void)extra;
    f->status = status;
    if ((f->answer = malloc(len + 1)) != NULL) {
        memcpy(f->answer, body, len);
        f->answer[len] = '\0';
    }
    if (status != 200 && status != 500) /* refused: nothing runs, event_done never comes */
        fired_end(f);
}

/* A run ended: its place is the first not yet ended of its handler, in run order. The
** handler is known by its address, so two handlers on one line stay apart. */
static void on_fire_run(void *data, const lh_event_t *e, const lh_handler_t *h,
                        lh_outcome_t outcome, const char *err, double seconds)
{
    fired_t *f = data;
    (void)e, (void)outcome, (void)seconds;
    for (size_t i = 0; i < f->nruns; i++) {
        if (!f->runs[i].set && f->runs[i].handler == h) {
            f->runs[i].set = 1;
            f->runs[i].err = err ? strdup(err) : NULL;
            return;
        }
    }
}

static void on_fire_done(void *data, const lh_event_t *e, int handlers, int failed)
{
    (void)e, (void)handlers, (void)failed;
    fired_end(data);
}

/* The handlers `e` will run, in run order: the route of its action. */
static int fired_plan(fired_t *f, lh_vm_t *vm, const lh_event_t *e)
{
    lua_State *L = vm->L;
    lua_pushstring(L, lh_dispatch_event_action(e));
    const lh_route_t *rt = lh_vm_route(vm);
    lua_pop(L, 1);
    if (rt->n > 0 && (f->runs = calloc(rt->n, sizeof(*f->runs))) == NULL)
        return -1;
    f->nruns = rt->n;
    for (size_t i = 0; i < rt->n; i++) {
        f->runs[i].handler = &vm->handlers[rt->handlers[i]];
        if ((f->runs[i].label = strdup(f->runs[i].handler->label)) == NULL ||
            (f->runs[i].id = strdup(f->runs[i].handler->id)) == NULL)
            return -1;
    }
    return 0;
}

static void on_fire_accepted(void *data, lh_event_t *e, int status)
{
    (void)data;
    if (status == 0)
        lh_dispatch_run(e);
}

static int fired_gc(lua_State *L)
{
    fired_t **ud = luaL_checkudata(L, 1, FIRED_MT);
    if (*ud != NULL) {
        if ((*ud)->ended)
            fired_free(*ud);
        else
            (*ud)->orphaned = 1;
        *ud = NULL;
    }
    return 0;
}

/* host.fire(body, headers, path, remote, attempt) -> fired: takes the event through
** dispatch's steps as serve does (decode, admit, accept, run); its handlers run until they
** first wait. */
static int host_fire(lua_State *L)
{
    world_t *w = world_of(L);
    size_t blen, plen;
    const char *body = luaL_checklstring(L, 1, &blen);
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *path = luaL_checklstring(L, 3, &plen);
    const char *remote = luaL_checkstring(L, 4);
    int attempt = (int)luaL_optinteger(L, 5, 1);
    size_t nh = 0;
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
        nh++;
        lua_pop(L, 1);
    }
    lh_header_t *headers = lua_newuserdatauv(L, (nh + 1) * sizeof(*headers), 0);
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2) != 0 && i < nh) { /* the strings stay in the table */
        headers[i].name = luaL_checklstring(L, -2, &headers[i].name_len);
        headers[i].value = luaL_checklstring(L, -1, &headers[i].value_len);
        i++;
        lua_pop(L, 1);
    }
    /* the body NUL-terminated, as a connection gives it */
    char *copy = lua_newuserdatauv(L, blen + 1, 0);
    memcpy(copy, body, blen + 1);
    fired_t **ud = lua_newuserdatauv(L, sizeof(*ud), 0); /* ... fired */
    *ud = NULL;
    luaL_setmetatable(L, FIRED_MT);
    if ((*ud = calloc(1, sizeof(**ud))) == NULL)
        return luaL_error(L, "not enough memory");
    fired_t *f = *ud;
    f->observer.handler_done = on_fire_run;
    f->observer.event_done = on_fire_done;
    f->observer.data = f;
    lh_request_t req = {
        .method = LH_METHOD_POST,
        .method_name = "POST",
        .path = path,
        .path_len = plen,
        .url = path,
        .url_len = plen,
        .headers = headers,
        .nheaders = nh,
        .body = copy,
        .body_len = blen,
        .received_ns = uv_hrtime(),
        .received_at = lh_clock_wall(w->clock),
    };
    lh_dispatch_input_t in = {
        .req = &req,
        .remote = remote,
        .attempt = attempt,
        .reply = on_fire_answer,
        .reply_data = f,
        .observer = &f->observer,
    };
    lh_event_t *e = lh_dispatch_decode(&w->app, &in);
    if (e == NULL || lh_dispatch_admit(e) != 0)
        return 1; /* refused and answered */
    /* admitted, the event must go on to be freed: it runs even when its plan failed */
    int planned = fired_plan(f, w->vm, e);
    lh_dispatch_accept(e, on_fire_accepted, NULL);
    if (planned != 0)
        return luaL_error(L, "not enough memory");
    return 1;
}

static fired_t *check_fired(lua_State *L)
{
    fired_t **ud = luaL_checkudata(L, 1, FIRED_MT);
    if (*ud == NULL)
        luaL_error(L, "the event is gone");
    return *ud;
}

/* host.ended(fired) -> whether the event's answer came (every handler ended) */
static int host_ended(lua_State *L)
{
    lua_pushboolean(L, check_fired(L)->ended);
    return 1;
}

/* host.outcome(fired) -> status, answer (JSON text), { [i] = { handler, id, ok, error } } */
static int host_outcome(lua_State *L)
{
    fired_t *f = check_fired(L);
    lua_pushinteger(L, f->status);
    lua_pushstring(L, f->answer ? f->answer : "{}");
    lua_createtable(L, (int)f->nruns, 0);
    for (size_t i = 0; i < f->nruns; i++) {
        lua_createtable(L, 0, 4);
        lua_pushstring(L, f->runs[i].label ? f->runs[i].label : "?");
        lua_setfield(L, -2, "handler");
        lua_pushstring(L, f->runs[i].id ? f->runs[i].id : "?");
        lua_setfield(L, -2, "id");
        lua_pushboolean(L, f->runs[i].set && f->runs[i].err == NULL);
        lua_setfield(L, -2, "ok");
        if (f->runs[i].err != NULL) {
            lua_pushstring(L, f->runs[i].err);
            lua_setfield(L, -2, "error");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 3;
}

/* ------------------------------------------------------- the rest of the host */

static void report_first(void *data, const char *problem)
{
    char **first = data;
    if (*first == NULL)
        *first = strdup(problem);
}

/* host.load(path) -> nil, or the first problem ("file:line: message") */
static int host_load(lua_State *L)
{
    world_t *w = world_of(L);
    const char *path = luaL_checkstring(L, 1);
    char *first = NULL;
    if (lh_vm_load_path(w->vm, path, report_first, &first) == 0)
        return 0;
    lua_pushstring(L, first ? first : "cannot load");
    free(first);
    return 1;
}

/* Under lua_pcall: the recipes module's use(name, cfg, opts, file, line, prefer). */
static int call_use(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LH_RECIPES_KEY);
    lua_getfield(L, -1, "use");
    lua_replace(L, -2);
    lua_insert(L, 1);
    lua_call(L, 6, 0);
    return 0;
}

/* host.use(name, cfg, opts, file, line, prefer) -> nil, or the problem: a test file's
** use(), loading its instance as a script loads */
static int host_use(lua_State *L)
{
    world_t *w = world_of(L);
    lua_settop(L, 6);
    lua_pushcfunction(L, call_use);
    lua_insert(L, 1);
    w->vm->loading = 1;
    int rc = lua_pcall(L, 6, 0, 0);
    w->vm->loading = 0;
    if (rc == LUA_OK)
        return 0;
    if (lua_type(L, -1) != LUA_TSTRING)
        lua_pushliteral(L, "use: failed");
    return 1;
}

static int host_seal(lua_State *L)
{
    if (lh_vm_seal(world_of(L)->vm) != 0)
        return luaL_error(L, "not enough memory");
    return 0;
}

/* host.step() -> whether a timer was due: runs the next one, moving the clock to it */
static int host_step(lua_State *L)
{
    lua_pushboolean(L, lh_clock_run_next(world_of(L)->clock, UINT64_MAX) == 1);
    return 1;
}

/* host.advance(seconds): runs every timer due by then, in order; the clock ends there */
static int host_advance(lua_State *L)
{
    world_t *w = world_of(L);
    uint64_t target = lh_clock_now(w->clock) + lh_clock_ns(luaL_checknumber(L, 1));
    while (lh_clock_run_next(w->clock, target) == 1)
        ;
    lh_clock_set(w->clock, target);
    return 0;
}

/* host.store_inspect(script) -> that script's store: the very functions its handlers
** call, so a test seeds and reads values the way they do (store.lock needs a handler) */
static int host_store(lua_State *L)
{
    return lh_lib_store_push(L, world_of(L)->vm, luaL_checkstring(L, 1));
}

static int host_now(lua_State *L)
{
    lua_pushnumber(L, lh_clock_wall(world_of(L)->clock));
    return 1;
}

/* host.reset(): between tests; stops what the last test left waiting and re-arms the
** timers of the scripts' load (the clock goes on) */
static int host_reset(lua_State *L)
{
    world_t *w = world_of(L);
    lh_task_cancel_all(w->vm);
    lh_timer_reset(w->vm);
    return 0;
}

/* host.in_task() -> whether a handler or timer callback is running */
static int host_in_task(lua_State *L)
{
    lua_pushboolean(L, world_of(L)->vm->cur_task != NULL);
    return 1;
}

static int set_ref(lua_State *L, int *ref)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, *ref);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* host.on_log(fn(level, msg, fields)): log.* records go to fn */
static int host_on_log(lua_State *L)
{
    return set_ref(L, &world_of(L)->vm->log_ref);
}

/* host.on_http(fn(call) -> response): the mocks */
static int host_on_http(lua_State *L)
{
    return set_ref(L, &world_of(L)->mock_ref);
}

/* host.on_timer_failed(fn(label, outcome, err)) */
static int host_on_timer_failed(lua_State *L)
{
    return set_ref(L, &world_of(L)->timer_ref);
}

/* host.setenv(name, value | nil): the process environment env() reads (mock.env) */
static int host_setenv(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    int rc = lua_isnoneornil(L, 2) ? unsetenv(name) : setenv(name, luaL_checkstring(L, 2), 1);
    if (rc != 0)
        return luaL_error(L, "mock.env: %s: %s", name, strerror(errno));
    return 0;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* require("luahook.testing.x") finds the embedded lua/luahook/testing/x.lua */
static int embedded_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    char path[256];
    snprintf(path, sizeof(path), "%s.lua", name);
    for (char *p = path; *p; p++)
        if (*p == '.' && strcmp(p, ".lua") != 0)
            *p = '/';
    const lh_embedded_t *e = strncmp(path, "luahook/", 8) == 0 ? lh_embedded_find(path) : NULL;
    if (e == NULL) {
        lua_pushfstring(L, "no embedded file '%s'", path);
        return 1;
    }
    lua_pushfstring(L, "=%s", path);
    if (luaL_loadbufferx(L, e->data, e->len, lua_tostring(L, -1), "t") != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, path);
    return 2;
}

static const luaL_Reg host_funcs[] = {
    {"load", host_load},
    {"use", host_use},
    {"seal", host_seal},
    {"fire", host_fire},
    {"ended", host_ended},
    {"outcome", host_outcome},
    {"step", host_step},
    {"advance", host_advance},
    {"store_inspect", host_store},
    {"now", host_now},
    {"reset", host_reset},
    {"in_task", host_in_task},
    {"on_log", host_on_log},
    {"on_http", host_on_http},
    {"on_timer_failed", host_on_timer_failed},
    {"setenv", host_setenv},
    {"package", lh_vm_package}, /* package(env, path): the require of the test file's folder */
    {"package_root", lh_vm_package_root}, /* a recipe folder's require (modules beside it) */
    {"embedded", lh_recipes_embedded},    /* a bundled recipe's test file */
    {NULL, NULL},
};

/* Pushes the table the harness learns the host from. */
static void push_host(lua_State *L, world_t *w)
{
    lua_newtable(L);
    lua_pushlightuserdata(L, w);
    luaL_setfuncs(L, host_funcs, 1);
    lua_pushstring(L, LH_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushnumber(L, w->cfg.handler_timeout);
    lua_setfield(L, -2, "handler_timeout");
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
    /* the test file's own os is Lua's: its time is the real one */
    luaL_requiref(L, "luahook.real_os", luaopen_os, 0);
    lua_setfield(L, -2, "real_os");
}

/* Under lua_pcall: the harness's setup in the VM. Stack: w. */
static int setup_harness(lua_State *L)
{
    world_t *w = lua_touserdata(L, 1);
    luaL_newmetatable(L, FIRED_MT);
    lua_pushcfunction(L, fired_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    /* the harness's parts come from the binary */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers"); /* package searchers */
    lua_pushcfunction(L, embedded_searcher);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
    push_host(L, w);
    return 1;
}

/* }====================================================== */

static void world_free(world_t *w)
{
    if (w->vm != NULL) {
        lh_task_cancel_all(w->vm); /* first: a __close handler may start a timer */
        lh_timer_stop_all(w->vm);
        lh_vm_free(w->vm);
    }
    lh_store_free(w->app.store);
    lh_clock_free(w->clock);
    lh_metrics_dispose(&w->app.metrics);
    free(w);
}

/* Runs one file in a fresh VM; adds to *passed and *failed. */
static void run_file(const char *path, const lh_config_t *cfg, int *passed, int *failed)
{
    const lh_embedded_t *h = lh_embedded_find(HARNESS);
    char err[256];
    world_t *w = calloc(1, sizeof(*w));
    if (w == NULL || h == NULL) {
        printf("FAIL %s: (load) %s\n", path, w ? "the test harness is missing" : "no memory");
        (*failed)++;
        free(w);
        return;
    }
    w->base.start = mock_start;
    w->base.cancel = mock_cancel;
    w->cfg = *cfg;
    w->cfg.ack = LH_ACK_HANDLED; /* the answer comes once every handler ended */
    w->mock_ref = w->timer_ref = LUA_NOREF;
    lh_metrics_init(&w->app.metrics);
    w->app.cfg = &w->cfg;
    w->app.transport = &w->base;
    w->app.id_prefix = TEST_ID_PREFIX;
    if ((w->clock = lh_clock_new_virtual(START_WALL)) == NULL)
        snprintf(err, sizeof(err), "no memory");
    else
        w->app.clock = w->clock;
    /* the store starts empty for each file, in memory, on the virtual clock */
    if (w->clock != NULL &&
        ((w->app.store = lh_store_new(NULL, NULL, (size_t)cfg->store_max_keys)) == NULL ||
         lh_store_use_clock(w->app.store, w->clock) != 0)) {
        snprintf(err, sizeof(err), "no memory");
        lh_clock_free(w->clock);
        w->clock = NULL;
    }
    if (w->clock == NULL || (w->vm = lh_vm_new(&w->app, 1, err, sizeof(err))) == NULL) {
        printf("FAIL %s: (load) %s\n", path, err);
        (*failed)++;
        world_free(w);
        return;
    }
    w->app.vm = w->vm;
    w->timers.run_done = on_run_done;
    w->timers.data = w;
    w->vm->timer_observer = &w->timers;
    w->vm->keep_load_timers = 1;
    w->vm->stop_ns = uv_hrtime() + (uint64_t)FILE_DEADLINE_S * 1000000000u;
    w->vm->stop_msg = "the test file ran longer than 120 s";
    lua_State *L = w->vm->L;
    lh_task_guard(L);

    lua_pushcfunction(L, traceback);
    int tb = lua_gettop(L);
    lua_pushcfunction(L, setup_harness);
    lua_pushlightuserdata(L, w);
    int rc = lua_pcall(L, 1, 1, tb); /* tb host */
    if (rc == LUA_OK) {
        rc = luaL_loadbufferx(L, h->data, h->len, "=" HARNESS, "t"); /* tb host chunk */
        lua_insert(L, -2);                                           /* tb chunk host */
    }
    if (rc == LUA_OK)
        rc = lua_pcall(L, 1, 1, tb); /* tb M */
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
    lua_settop(L, 0);
    world_free(w);
}

int lh_testing_run(const lh_config_t *cfg)
{
    list_t files = {0};
    int passed = 0, failed = 0, rc = 0;
    /* the harness shows what handlers log; luahook's own lines would only be noise */
    lh_log_setup((lh_level_t)(LH_ERROR + 1), LH_LOG_TEXT);
    for (size_t i = 0; i < cfg->npaths; i++) {
        struct stat st;
        const char *p = cfg->paths[i];
        if (strncmp(p, BUNDLED, strlen(BUNDLED)) == 0) {
            if (collect_bundled(&files, p) != 0)
                rc = 2;
        } else if (stat(p, &st) != 0) {
            fprintf(stderr, "luahook test: %s: %s\n", p, strerror(errno));
            rc = 2;
        } else if (S_ISDIR(st.st_mode)) {
            if (collect(&files, p, cfg) != 0)
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
        run_file(files.v[i], cfg, &passed, &failed);
        free(files.v[i]);
    }
    free(files.v);
    if (rc != 0 && files.n == 0)
        return rc;
    printf("%d passed, %d failed\n", passed, failed);
    /* a path that could not be read is a usage problem even when other tests ran */
    return rc != 0 ? rc : failed > 0 ? 1 : 0;
}
