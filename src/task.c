#include "task.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

#include "lib.h"
#include "list.h"
#include "log.h"

/* Lua instructions between two deadline checks of a running handler: rare enough to cost
** nothing measurable, often enough to stop a tight loop within microseconds. */
#define HOOK_COUNT 10000

static lh_vm_t *vm_of_state(lua_State *L)
{
    return *(lh_vm_t **)lua_getextraspace(L); /* every thread inherits the main one's */
}

int lh_task_protect(lua_State *L, lua_CFunction fn, void *ud, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    if (!lua_checkstack(L, 2)) { /* fails without raising */
        lua_settop(L, base);
        return LUA_ERRMEM;
    }
    lua_pushcfunction(L, fn); /* ... args fn: a light C function, no allocation */
    lua_insert(L, base + 1);
    lua_pushlightuserdata(L, ud);
    lua_insert(L, base + 2); /* ... fn ud args */
    int status = lua_pcall(L, nargs + 1, nresults, 0);
    if (status != LUA_OK)
        lua_settop(L, base); /* the error object: the caller says what failed */
    return status;
}

/* Under lua_pcall: the traceback of coroutine `ud`, pushed. */
static int traceback_protected(lua_State *L)
{
    luaL_traceback(L, lua_touserdata(L, 1), NULL, 0);
    return 1;
}

/* The traceback of `co` pushed on L, or, when memory ran out making it, nil. */
static const char *push_traceback(lua_State *L, lua_State *co)
{
    if (lh_task_protect(L, traceback_protected, co, 0, 1) != LUA_OK)
        lua_pushnil(L); /* the slot the protected call had */
    return lua_tostring(L, -1);
}

static double timeout_seconds(const lh_task_t *t)
{
    return t->vm->app->cfg->handler_timeout;
}

/* `done` runs while the coroutine is still anchored: `err` may live on its stack. */
static void task_finish(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    lh_vm_t *vm = t->vm;
    int ref = t->co_ref;
    lua_State *L = vm->L;
    lh_app_t *app = vm->app;
    assert(ref != LUA_NOREF && vm->tasks > 0 && app->tasks > 0); /* finished once */
    /* not counted any more when `done` runs: an answer given there may admit the next
    ** pipelined event at once, and --max-pending must not count this run against it */
    vm->tasks--;
    app->tasks--;
    LH_LIST_REMOVE(vm->task_list, t);
    lh_clock_timer_free(t->timer);
    t->timer = NULL;
    t->co_ref = LUA_NOREF;
    t->done(t, outcome, err, tb);
    if (t->returned && vm->co_pooled < LH_VM_CO_POOL) {
        /* a coroutine whose function returned starts the next function pushed on it: a
        ** new one would cost a thread, its stack and a ref, and their collection */
        lua_settop(t->co, 0);
        vm->co_pool[vm->co_pooled] = t->co;
        vm->co_pool_ref[vm->co_pooled++] = ref;
    } else {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
    }
    free(t);
    if (vm->tasks == 0 && vm->on_drained != NULL)
        vm->on_drained(vm);
    if (app->tasks == 0 && app->on_tasks_drained != NULL)
        app->on_tasks_drained(app);
}

/* Lua's count hook, the one CPU guard of luahook (serve, fire and test): a handler
** computing past its deadline is stopped where it is. It yields out of the handler's
** coroutine — through any pcall, which cannot catch that — and the resume sees
** `timed_out`. Where yielding is impossible (inside a C call such as a table.sort
** comparator) it raises, and the hook, now firing every few instructions, tries again
** once the C call is left. The deadline is real time even on a virtual clock: computing
** takes real time. Past vm->stop_ns (luahook test's limit per file) any code raises. */
static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    lh_vm_t *vm = vm_of_state(L);
    lh_task_t *t = vm->cur_task;
    (void)ar;
    uint64_t now = uv_hrtime();
    if (vm->stop_ns != 0 && now > vm->stop_ns)
        luaL_error(L, "%s", vm->stop_msg ? vm->stop_msg : "stopped: past the time limit");
    if (t == NULL || t->deadline_ns == 0 || now < t->cpu_deadline_ns)
        return;
    t->timed_out = 1;
    t->cpu_stopped = 1;
    /* from now on also at every line: a loop that re-enters a C call (pcall(table.sort,
    ** t, busy_cmp)) gets back to a yieldable line at once */
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT | LUA_MASKLINE, 16);
    if (lua_isyieldable(L))
        lua_yield(L, 0);
    else
        luaL_error(L, "handler timed out (--handler-timeout)");
}

/* Closes the coroutine of a task that ends without returning (an error, a stop): its
** to-be-closed variables run now — a store.lock it holds goes to the next waiter —
** not when the collector finds it. Under the same guard, with a second of grace. */
static void close_coroutine(lh_task_t *t)
{
    lh_task_t *saved = t->vm->cur_task;
    int saved_limit = t->vm->limit_on;
    t->vm->cur_task = t;
    t->vm->limit_on = 1;
    t->cpu_deadline_ns = uv_hrtime() + 1000000000u;
    lua_resetthread(t->co);
    t->vm->cur_task = saved;
    t->vm->limit_on = saved_limit;
}

/* Stops a task that is not running: cancels its wait, closes the coroutine (its
** to-be-closed variables run) and reports `outcome`. */
static void task_abort(lh_task_t *t, lh_outcome_t outcome, const char *msg)
{
    lua_State *L = t->vm->L;
    int top = lua_gettop(L);
    if (t->pending != NULL) {
        lh_pending_t *p = t->pending;
        t->pending = NULL;
        p->cancel(p);
    }
    push_traceback(L, t->co); /* where it was waiting */
    close_coroutine(t);
    task_finish(t, outcome, msg, lua_tostring(L, -1));
    lua_settop(L, top);
}

static void on_deadline_now(lh_task_t *t)
{
    char msg[128];
    t->timed_out = 1;
    snprintf(msg, sizeof(msg), "handler timed out after %g s (--handler-timeout)",
             timeout_seconds(t));
    task_abort(t, LH_OUTCOME_TIMEOUT, msg);
}

static void on_deadline(lh_clock_timer_t *timer)
{
    on_deadline_now(timer->data);
}

/* While it waits, a task's deadline is a timer on the VM's clock: waiting counts in the
** clock's time (virtual under luahook test). */
static void wait_deadline(lh_task_t *t)
{
    if (t->deadline_ns == 0)
        return;
    if (t->timer == NULL && (t->timer = lh_clock_timer_new(t->vm->clock, on_deadline, t)) == NULL)
        return; /* the wait goes on without a deadline rather than failing */
    uint64_t now = lh_clock_now(t->vm->clock);
    lh_clock_timer_start(t->timer, t->deadline_ns > now ? t->deadline_ns - now : 0, 0);
}

/* What is left of the task's time: its deadline on the clock, less (on a virtual clock,
** where time stands still while Lua runs) the real time it has spent computing. */
static uint64_t time_left(const lh_task_t *t)
{
    uint64_t now = lh_clock_now(t->vm->clock);
    uint64_t used = now > t->start_ns ? now - t->start_ns : 0;
    if (t->vm->clock->virtual_time)
        used += t->cpu_ns;
    uint64_t budget = t->deadline_ns - t->start_ns;
    return used < budget ? budget - used : 0;
}

static int tostring_protected(lua_State *L)
{
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* The text of a non-string error object: its __tostring, run protected (it is script
** code too), else its type. Pushes the text. */
static const char *error_text(lua_State *L, int idx)
{
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        lua_pushcfunction(L, tostring_protected);
        lua_pushvalue(L, idx);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING)
            return lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

typedef struct {
    lh_task_t *t;
    const char *msg; /* the text when C knows it (memory, a bare yield); else the error's */
    lh_outcome_t outcome;
} failure_t;

/* Under lua_pcall: the failed run's text and traceback, pushed (both allocate: a real
** out-of-memory here must fail the run, not the server). Stack: ud err. */
static int describe_failure(lua_State *L)
{
    failure_t *f = lua_touserdata(L, 1);
    if (f->msg != NULL) {
        lua_pushstring(L, f->msg);
    } else if (lua_tostring(L, 2) != NULL) { /* a number becomes its text in place */
        lua_pushvalue(L, 2);
    } else {
        f->t->permanent = lh_lib_is_permanent(L, 2);
        error_text(L, 2);
    }
    luaL_traceback(L, f->t->co, NULL, 0); /* the coroutine's stack, where it failed */
    return 2;
}

void lh_task_resume(lh_task_t *t, int nargs)
{
    lh_vm_t *vm = t->vm;
    lua_State *L = vm->L;
    int nres;
    lh_task_t *saved = vm->cur_task;
    int saved_limit = vm->limit_on;
    assert(t->co_ref != LUA_NOREF && t->pending == NULL); /* alive, and its wait is over */

    if (t->timer != NULL)
        lh_clock_timer_stop(t->timer);
    if (t->deadline_ns != 0) {
        uint64_t left = time_left(t);
        if (left == 0) { /* it is due: its wake-up came with its deadline */
            lua_pop(t->co, nargs);
            on_deadline_now(t);
            return;
        }
        t->cpu_deadline_ns = uv_hrtime() + left;
    }
    vm->cur_task = t;
    vm->limit_on = 1;
    uint64_t ran_from = uv_hrtime();
    int status = lua_resume(t->co, L, nargs, &nres);
    t->cpu_ns += uv_hrtime() - ran_from;
    vm->cur_task = saved;
    vm->limit_on = saved_limit;

    if (status == LUA_YIELD && t->pending != NULL) {
        lua_pop(t->co, nres); /* the pending operation owns the wake-up */
        wait_deadline(t);
        return;
    }
    if (t->timed_out) { /* stopped by the hook, or an error raised on its way out */
        on_deadline_now(t);
        return;
    }
    if (status == LUA_OK) {
        t->returned = 1;
        task_finish(t, LH_OUTCOME_OK, NULL, NULL);
        return;
    }
    int top = lua_gettop(L);
    failure_t f = {t, NULL, LH_OUTCOME_ERROR};
    char buf[160];
    if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        lua_pushnil(L);
        f.msg = "coroutine.yield() in a handler: a handler may only wait on luahook's own I/O "
                "(http, sleep)";
    } else {
        lua_xmove(t->co, L, 1); /* the error object, to inspect it on a live thread */
    }
    if (status == LUA_ERRMEM) {
        f.outcome = LH_OUTCOME_MEMORY;
        f.msg = "not enough memory";
        if (vm->mem_limit != 0 && !vm->oom_real) {
            snprintf(buf, sizeof(buf),
                     "not enough memory: the VM's heap reached --memory-limit (%zu bytes)",
                     vm->mem_limit);
            f.msg = buf;
        }
    }
    int described = lh_task_protect(L, describe_failure, &f, 1, 2) == LUA_OK;
    close_coroutine(t); /* after the traceback, which reads its stack */
    if (described)
        task_finish(t, f.outcome, lua_tostring(L, -2), lua_tostring(L, -1));
    else /* the text and the traceback need memory too */
        task_finish(t, f.outcome == LH_OUTCOME_ERROR ? LH_OUTCOME_MEMORY : f.outcome,
                    f.msg != NULL ? f.msg : "not enough memory to describe the run's failure",
                    NULL);
    lua_settop(L, top);
}

lh_task_t *lh_task_current(lua_State *L)
{
    lh_task_t *t = vm_of_state(L)->cur_task;
    return t != NULL && t->co == L ? t : NULL;
}

/* Under lua_pcall: a new coroutine, anchored in the registry; its ref goes to *ud. */
static int new_coroutine(lua_State *L)
{
    int *ref = lua_touserdata(L, 1);
    lua_newthread(L);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int lh_task_spawn(lh_vm_t *vm, int fn_ref, const lh_handler_t *handler, const char *label,
                  const char *script, int line, int nargs, lh_task_done_cb done, void *data,
                  const char *id, const char *action)
{
    lua_State *L = vm->L;
    int co_ref = LUA_NOREF;
    if (!lua_checkstack(L, nargs + 2))
        return -1;
    lua_State *co;
    if (vm->co_pooled > 0) {
        co = vm->co_pool[--vm->co_pooled];
        co_ref = vm->co_pool_ref[vm->co_pooled];
        lua_sethook(co, lua_gethook(L), lua_gethookmask(L), lua_gethookcount(L)); /* as new */
    } else {
        /* the coroutine first, protected: when Lua cannot allocate it, nothing of ours is
        ** held */
        if (lh_task_protect(L, new_coroutine, &co_ref, 0, 0) != LUA_OK)
            return -1;
        lua_rawgeti(L, LUA_REGISTRYINDEX, co_ref); /* ... args co */
        co = lua_tothread(L, -1);
        lua_pop(L, 1); /* ... args: the registry anchors it */
    }
    lh_task_t *t = calloc(1, sizeof(*t));
    if (t == NULL || !lua_checkstack(co, nargs + 1)) {
        free(t);
        luaL_unref(L, LUA_REGISTRYINDEX, co_ref);
        return -1;
    }
    t->vm = vm;
    t->handler = handler;
    t->label = label;
    t->script = script;
    t->line = line;
    t->done = done;
    t->data = data;
    t->id = id;
    t->action = action;
    t->start_ns = lh_clock_now(vm->clock);
    double timeout = vm->app->cfg->handler_timeout;
    if (timeout > 0)
        t->deadline_ns = t->start_ns + (uint64_t)(timeout * 1e9);
    t->co = co;
    t->co_ref = co_ref;
    if (t->deadline_ns != 0)
        lua_sethook(t->co, deadline_hook, LUA_MASKCOUNT, HOOK_COUNT);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, fn_ref);
    for (int i = 0; i < nargs; i++)
        lua_pushvalue(L, -nargs); /* each push shifts the next argument to -nargs */
    lua_xmove(L, t->co, nargs);   /* co: fn args */
    vm->tasks++;
    vm->app->tasks++;
    LH_LIST_PUSH(vm->task_list, t);
    lh_task_resume(t, nargs);
    return 0;
}

double lh_task_seconds(const lh_task_t *t)
{
    return (double)(lh_clock_now(t->vm->clock) - t->start_ns) / 1e9;
}

void lh_task_guard(lua_State *L)
{
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, HOOK_COUNT);
}

void lh_task_fail(lh_task_t *t, lh_outcome_t outcome, const char *msg)
{
    assert(t->pending == NULL); /* its wait is over */
    task_abort(t, outcome, msg);
}

void lh_task_cancel_all(lh_vm_t *vm)
{
    while (vm->task_list != NULL)
        task_abort(vm->task_list, LH_OUTCOME_TIMEOUT, "stopped: the server shut down");
}
