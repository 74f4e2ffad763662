/* One out-of-memory policy: every entry into Lua from a libuv callback (a handler's start,
 * a timer callback's start, an http answer pushed onto the waiting coroutine, a sleep's
 * wake-up, a store.lock grant, a deadline that stops a waiting run, a failure's report) survives a
 * real out-of-memory. The VM's allocator is wrapped (lua_setallocf: no test branch in the server)
 * to fail every allocation from the Nth on; N sweeps every allocation the entry makes. Each time:
 * the process lives (Lua's panic handler aborts), the run ends exactly once — failed with a message
 * that says memory — the main state's stack is as it was, and the next run works. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>

#include "clock.h"
#include "config.h"
#include "lib.h"
#include "metrics.h"
#include "reload.h"
#include "store.h"
#include "task.h"
#include "transport.h"
#include "vm.h"
#include "test.h"

/* ------------------------------------------------------------------ failing allocator */

static struct {
    lua_Alloc real;
    void *real_ud;
    long count;   /* growing allocations since armed */
    long fail_at; /* the first that fails; every later one fails too (until disarmed) */
    int armed;
    int hit; /* an allocation failed */
} fa;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    /* only growth fails, as malloc does: a free or a shrink always succeeds */
    if (fa.armed && nsize > (ptr != NULL ? osize : 0) && ++fa.count >= fa.fail_at) {
        fa.hit = 1;
        return NULL;
    }
    return fa.real(fa.real_ud, ptr, osize, nsize);
}

static void arm(long n)
{
    fa.count = 0;
    fa.fail_at = n;
    fa.hit = 0;
    fa.armed = 1;
}

/* ------------------------------------------------------------------ a transport that waits */

typedef struct {
    lh_transport_t base; /* first */
    lh_http_req_t *req;  /* the request in flight; NULL: none */
} fake_tp_t;

static int fake_start(lh_transport_t *tp, lh_http_req_t *req)
{
    ((fake_tp_t *)tp)->req = req;
    return 0;
}

static void fake_cancel(lh_transport_t *tp, lh_http_req_t *req)
{
    (void)req;
    ((fake_tp_t *)tp)->req = NULL;
}

/* The answer: 200, a header, a body; the transport clears `started` before `done`. */
static void fake_answer(fake_tp_t *tp)
{
    lh_http_req_t *req = tp->req;
    static const char head[] = "HTTP/1.1 200 OK\r\nX-A: b\r\nX-A: c\r\n";
    static const char body[] = "{\"ok\":true}";
    tp->req = NULL;
    req->error = LH_HTTP_OK;
    req->status = 200;
    lh_http_buf_append(&req->resp_head, &req->head_len, &req->head_cap, head, strlen(head),
                       SIZE_MAX);
    lh_http_buf_append(&req->resp, &req->resp_len, &req->resp_cap, body, strlen(body), SIZE_MAX);
    req->started = 0;
    req->done(req);
}

/* ------------------------------------------------------------------ the world */

static const char SCRIPT[] =
    "local function work() local t = {} for i = 1, 40 do t[i] = tostring(i) .. '-' end\n"
    "  return table.concat(t) end\n"
    /* 1 */ "on('ok', function() return work() end)\n"
    /* 2 */ "on('boom', function() work(); error(setmetatable({}, { __tostring = function()\n"
    "  return 'boom ' .. string.rep('x', 60) end })) end)\n"
    /* 3 */ "on('timer', function() timer.after(1, function() work() end) end)\n"
    /* 4 */ "on('http', function()\n"
    "  local r = assert(http.get('http://upstream.test/a'))\n"
    "  assert(r.status == 200 and r.headers['x-a'] == 'b, c', 'the answer') work() end)\n"
    /* 5 */ "on('sleep', function() sleep(1); work() end)\n"
    /* 6 */ "on('hold', function() store.lock('k', function() sleep(1) end) end)\n"
    /* 7 */ "on('wait', function() store.lock('k', function() work() end) end)\n"
    /* 8 */ "on('closer', function()\n"
    "  local x <close> = setmetatable({}, { __close = function() _G.closed = _G.closed + 1 end })\n"
    "  error('after the close variable') end)\n"
    "_G.closed = 0\n";

enum { H_OK, H_BOOM, H_TIMER, H_HTTP, H_SLEEP, H_HOLD, H_WAIT, H_CLOSER, NHANDLERS };

typedef struct {
    int ended; /* the run's `done` calls */
    lh_outcome_t outcome;
    char err[256];
} run_t;

typedef struct {
    lh_app_t app;
    lh_config_t cfg;
    fake_tp_t tp;
    lh_timer_observer_t obs;
    lh_vm_t *vm;
    run_t timer_run; /* the timer callback's run (the observer) */
    run_t holder;    /* the run that holds the lock the entry's run waits for */
} world_t;

static char dir[64];

static void report(void *data, const char *problem)
{
    (void)data;
    fprintf(stderr, "load: %s\n", problem);
}

static void on_run_done(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    run_t *r = t->data;
    (void)tb;
    r->ended++;
    r->outcome = outcome;
    snprintf(r->err, sizeof(r->err), "%s", err != NULL ? err : "");
}

static void on_timer_run(void *data, const char *label, lh_outcome_t outcome, const char *err,
                         double seconds)
{
    run_t *r = data;
    (void)label, (void)seconds;
    r->ended++;
    r->outcome = outcome;
    snprintf(r->err, sizeof(r->err), "%s", err != NULL ? err : "");
}

static world_t *world_new(void)
{
    char err[256], path[128];
    snprintf(path, sizeof(path), "%s/oom.lua", dir);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fputs(SCRIPT, f);
    fclose(f);
    world_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->cfg.handler_timeout = 30;
    w->app.cfg = &w->cfg;
    lh_metrics_init(&w->app.metrics);
    w->app.clock = lh_clock_new_virtual(1700000000.0);
    w->tp.base.start = fake_start;
    w->tp.base.cancel = fake_cancel;
    w->app.transport = &w->tp.base;
    /* the store as luahook test makes it: no loop, lock grants on the virtual clock */
    if ((w->app.store = lh_store_new(NULL, NULL, 1000)) == NULL ||
        lh_store_use_clock(w->app.store, w->app.clock) != 0)
        return w;
    w->vm = lh_vm_new(&w->app, 1, err, sizeof(err));
    char *p = path;
    if (w->vm == NULL || lh_vm_load(w->vm, &p, 1, report, w) != 0 ||
        w->vm->nhandlers != NHANDLERS) {
        fprintf(stderr, "world: %s\n", w->vm == NULL ? err : "the script did not load");
        return w;
    }
    w->obs.run_done = on_timer_run;
    w->obs.data = &w->timer_run;
    w->vm->timer_observer = &w->obs;
    fa.real = lua_getallocf(w->vm->L, &fa.real_ud);
    lua_setallocf(w->vm->L, failing_alloc, NULL);
    return w;
}

static void world_free(world_t *w)
{
    if (w == NULL)
        return;
    fa.armed = 0;
    lh_vm_free(w->vm);
    if (w->app.store != NULL) {
        lh_store_close(w->app.store);
        lh_store_free(w->app.store);
    }
    lh_clock_free(w->app.clock);
    lh_metrics_dispose(&w->app.metrics);
    free(w);
}

/* Starts handler h with no arguments; -1 when it could not start (`done` never runs). */
static int spawn(world_t *w, int h, run_t *r)
{
    const lh_handler_t *hd = &w->vm->handlers[h];
    memset(r, 0, sizeof(*r));
    return lh_task_spawn(w->vm, hd->fn_ref, hd, hd->label, hd->script, hd->line, 0, on_run_done, r,
                         NULL, NULL);
}

/* Runs the next due timer of the virtual clock (a sleep, a timer, a deadline). */
static int run_next(world_t *w)
{
    return lh_clock_run_next(w->app.clock, UINT64_MAX);
}

/* ------------------------------------------------------------------ the sweep */

typedef enum {
    E_START,    /* a handler's start: its coroutine, its run */
    E_REPORT,   /* a handler's error: its text (a __tostring) and traceback */
    E_TIMER,    /* a timer's callback starts (lib_timer: a ref and a coroutine) */
    E_HTTP,     /* an answer is pushed onto the waiting coroutine (lib_http) */
    E_SLEEP,    /* a sleep wakes up (lib_timer; store.lock's grant resumes the same way) */
    E_DEADLINE, /* a waiting run's deadline passes: it is stopped and reported (task) */
    E_LOCK,     /* store.lock is granted to a waiting run (lib_store) */
} entry_t;

static const char *const entry_names[] = {"start", "report",   "timer", "http",
                                          "sleep", "deadline", "lock"};

/* Brings the world to just before the entry, unarmed. 0, or -1 when that failed. */
static int prepare(world_t *w, entry_t e, run_t *r)
{
    switch (e) {
    case E_START:
    case E_REPORT:
        return 0;
    case E_TIMER:
        memset(&w->timer_run, 0, sizeof(w->timer_run));
        return spawn(w, H_TIMER, r) == 0 && r->ended == 1 && r->outcome == LH_OUTCOME_OK ? 0 : -1;
    case E_HTTP:
    case E_DEADLINE:
        return spawn(w, H_HTTP, r) == 0 && r->ended == 0 && w->tp.req != NULL ? 0 : -1;
    case E_SLEEP:
        return spawn(w, H_SLEEP, r) == 0 && r->ended == 0 ? 0 : -1;
    case E_LOCK:
        return spawn(w, H_HOLD, &w->holder) == 0 && w->holder.ended == 0 &&
                       spawn(w, H_WAIT, r) == 0 && r->ended == 0
                   ? 0
                   : -1;
    }
    return -1;
}

/* The entry itself, armed. Returns the run it ends (NULL: it could not start, which is a
** reported failure too). */
static run_t *enter(world_t *w, entry_t e, run_t *r, int *started)
{
    *started = 1;
    switch (e) {
    case E_START:
        *started = spawn(w, H_OK, r) == 0;
        return r;
    case E_REPORT:
        *started = spawn(w, H_BOOM, r) == 0;
        return r;
    case E_TIMER:
        run_next(w);
        return &w->timer_run;
    case E_HTTP:
        fake_answer(&w->tp);
        return r;
    case E_SLEEP:
    case E_DEADLINE:
        run_next(w);
        return r;
    case E_LOCK: /* the holder wakes and lets go; the grant comes on a timer */
        while (r->ended == 0 && run_next(w))
            ;
        return r;
    }
    return r;
}

static void sweep(entry_t e)
{
    world_t *w = world_new();
    CHECK(w != NULL && w->vm != NULL && w->vm->nhandlers == NHANDLERS);
    if (w == NULL || w->vm == NULL || w->vm->nhandlers != NHANDLERS) {
        world_free(w);
        return;
    }
    lua_State *L = w->vm->L;
    int failed_runs = 0, hits = 0, n;
    for (n = 1; n < 20000; n++) {
        run_t r, next;
        int started;
        if (prepare(w, e, &r) != 0) {
            TEST_FAILED_("%s, N=%d: could not prepare the entry", entry_names[e], n);
            break;
        }
        int top = lua_gettop(L);
        arm(n);
        run_t *ended = enter(w, e, &r, &started);
        fa.armed = 0;
        int hit = fa.hit;
        hits += hit;
        /* the stack of the main state is as it was */
        if (lua_gettop(L) != top)
            TEST_FAILED_("%s, N=%d: stack %d, was %d", entry_names[e], n, lua_gettop(L), top);
        /* the run ended exactly once (or, for a handler's start, was refused at once) */
        if (!started) {
            if (!hit || ended->ended != 0)
                TEST_FAILED_("%s, N=%d: refused to start without a reason", entry_names[e], n);
            failed_runs++;
        } else if (ended->ended != 1) {
            TEST_FAILED_("%s, N=%d: the run ended %d times", entry_names[e], n, ended->ended);
        } else {
            lh_outcome_t want = e == E_DEADLINE ? LH_OUTCOME_TIMEOUT
                                : e == E_REPORT ? LH_OUTCOME_ERROR
                                                : LH_OUTCOME_OK;
            if (ended->outcome != want) {
                failed_runs++;
                /* failed by the memory that ran out, and it says so */
                if (!hit || ended->outcome != LH_OUTCOME_MEMORY ||
                    strstr(ended->err, "memory") == NULL)
                    TEST_FAILED_("%s, N=%d: outcome %s, \"%s\"", entry_names[e], n,
                                 lh_metrics_outcome_name(ended->outcome), ended->err);
            } else if (e == E_REPORT && !hit && strstr(ended->err, "boom xxx") == NULL) {
                TEST_FAILED_("%s: the error's text is \"%s\"", entry_names[e], ended->err);
            }
        }
        if (e == E_LOCK && w->holder.ended != 1)
            TEST_FAILED_("%s, N=%d: the holder ended %d times", entry_names[e], n, w->holder.ended);
        if (e == E_HTTP && w->tp.req != NULL)
            TEST_FAILED_("%s, N=%d: the request is still in flight", entry_names[e], n);
        /* memory is back: a full collection finalizes what a failed run left behind when
        ** not even its __close could be called (a store.lock guard's __gc lets go) */
        if (e == E_LOCK)
            lua_gc(L, LUA_GCCOLLECT);
        /* the next run works */
        if (spawn(w, H_OK, &next) != 0 || next.ended != 1 || next.outcome != LH_OUTCOME_OK)
            TEST_FAILED_("%s, N=%d: the next run failed: %s", entry_names[e], n, next.err);
        CHECK_EQ_INT(w->vm->tasks, 0);
        if (test_state.cur_failed || !hit) /* past the last allocation the entry makes */
            break;
    }
    printf("# %s: %d allocations swept, %d runs failed for memory\n", entry_names[e], n - 1,
           failed_runs);
    CHECK(n > 1 && n < 20000);
    CHECK(hits > 0); /* the sweep did reach the entry's allocations */
    /* ... and they failed runs; a deadline's stop is reported as a timeout all the same */
    CHECK(e == E_DEADLINE ? failed_runs == 0 : failed_runs > 0);
    world_free(w);
}

static void test_oom_handler_start(void)
{
    sweep(E_START);
}

static void test_oom_handler_error_report(void)
{
    sweep(E_REPORT);
}

static void test_oom_timer_callback_start(void)
{
    sweep(E_TIMER);
}

static void test_oom_http_answer(void)
{
    sweep(E_HTTP);
}

static void test_oom_sleep_wake(void)
{
    sweep(E_SLEEP);
}

static void test_oom_deadline_stop(void)
{
    sweep(E_DEADLINE);
}

/* ------------------------------------------------------------------ a reload's load */

static void report_problem(void *data, const char *problem)
{
    (void)problem;
    ++*(int *)data;
}

/* A reload builds a VM and loads a folder of scripts from a signal's (or --watch's)
** callback: out of memory, the load is one more problem (the reload fails, the old VM
** serves on), never an abort; nothing leaks (LeakSanitizer, in the asan build). */
/* A run that fails closes its coroutine at once: its to-be-closed variables (a lock's
** guard, a handler's own <close>) run now, not when the collector finds the coroutine. */
static void test_failed_run_closes_its_variables(void)
{
    world_t *w = world_new();
    run_t r;
    CHECK(w != NULL && w->vm != NULL && w->vm->nhandlers == NHANDLERS);
    if (w == NULL || w->vm == NULL || w->vm->nhandlers != NHANDLERS) {
        world_free(w);
        return;
    }
    lua_State *L = w->vm->L;
    lua_gc(L, LUA_GCSTOP); /* no collection may close it instead */
    CHECK(spawn(w, H_CLOSER, &r) == 0 && r.ended == 1 && r.outcome == LH_OUTCOME_ERROR);
    CHECK(strstr(r.err, "after the close variable") != NULL);
    lua_getglobal(L, "closed");
    CHECK_EQ_INT(lua_tointeger(L, -1), 1);
    lua_pop(L, 1);
    lua_gc(L, LUA_GCRESTART);
    world_free(w);
}

static void test_oom_lock_grant(void)
{
    sweep(E_LOCK);
}

static void test_oom_reload_load(void)
{
    char folder[128], path[192];
    snprintf(folder, sizeof(folder), "%s/app", dir);
    mkdir(folder, 0700);
    snprintf(path, sizeof(path), "%s/a.lua", folder);
    FILE *f = fopen(path, "w");
    if (f != NULL) {
        fputs("local n = 0\non('A', function() n = n + 1 end)\non('*', function() end)\n", f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/b.lua", folder);
    if ((f = fopen(path, "w")) != NULL) {
        fputs("on({ 'A', 'B' }, function() end, { name = 'two' })\n", f);
        fclose(f);
    }
    lh_config_t cfg = {.handler_timeout = 30};
    lh_app_t app = {.cfg = &cfg};
    lh_metrics_init(&app.metrics);
    app.clock = lh_clock_new_virtual(1700000000.0);
    int hits = 0, failed = 0, n;
    char *p = folder;
    for (n = 1; n < 20000; n++) {
        char err[256];
        int problems = 0;
        lh_vm_t *vm = lh_vm_new(&app, 2, err, sizeof(err));
        CHECK(vm != NULL);
        if (vm == NULL)
            break;
        fa.real = lua_getallocf(vm->L, &fa.real_ud);
        lua_setallocf(vm->L, failing_alloc, NULL);
        int top = lua_gettop(vm->L);
        arm(n);
        int rc = lh_reload_load(vm, &p, 1, report_problem, &problems);
        fa.armed = 0;
        hits += fa.hit;
        if (lua_gettop(vm->L) != top)
            TEST_FAILED_("reload, N=%d: stack %d, was %d", n, lua_gettop(vm->L), top);
        if (rc != problems)
            TEST_FAILED_("reload, N=%d: %d problems returned, %d reported", n, rc, problems);
        if (rc > 0)
            failed++;
        else if (vm->nhandlers != 3)
            TEST_FAILED_("reload, N=%d: no problem, but %zu handlers", n, vm->nhandlers);
        if (!fa.hit && rc != 0)
            TEST_FAILED_("reload, N=%d: %d problems without a failed allocation", n, rc);
        int hit = fa.hit;
        lh_vm_free(vm);
        if (test_state.cur_failed || !hit)
            break;
    }
    printf("# reload: %d allocations swept, %d loads failed for memory\n", n - 1, failed);
    CHECK(hits > 0 && failed > 0 && n < 20000);
    lh_clock_free(app.clock);
    lh_metrics_dispose(&app.metrics);
    snprintf(path, sizeof(path), "%s/a.lua", folder);
    unlink(path);
    snprintf(path, sizeof(path), "%s/b.lua", folder);
    unlink(path);
    rmdir(folder);
}

static const char *only; /* argv[1]: run only the tests whose name holds it */

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        if (only == NULL || strstr(#fn, only) != NULL)                                             \
            RUN_TEST(fn);                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    only = argc > 1 ? argv[1] : NULL;
    snprintf(dir, sizeof(dir), "/tmp/lh_oom_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    lh_log_setup(LH_ERROR, LH_LOG_TEXT);
    RUN(test_oom_handler_start);
    RUN(test_oom_handler_error_report);
    RUN(test_oom_timer_callback_start);
    RUN(test_oom_http_answer);
    RUN(test_oom_sleep_wake);
    RUN(test_oom_deadline_stop);
    RUN(test_oom_lock_grant);
    RUN(test_failed_run_closes_its_variables);
    RUN(test_oom_reload_load);
    char path[128];
    snprintf(path, sizeof(path), "%s/oom.lua", dir);
    unlink(path);
    rmdir(dir);
    return TEST_SUMMARY();
}
