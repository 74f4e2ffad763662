/*
** sleep(s), timer.after(s, fn), timer.every(s, fn) -> handle with :stop().
** A timer callback runs as a task of its own (its own coroutine, the handler timeout,
** http and sleep allowed); an error in it is logged, never fatal. A VM's timers stop
** when the VM is retired or the server stops.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "lib.h"
#include "list.h"
#include "log.h"
#include "task.h"

#define TIMER_MT "luahook.timer"

/* ------------------------------------------------------------------ sleep */

typedef struct {
    lh_pending_t base;       /* first */
    lh_clock_timer_t *timer; /* owned */
    lh_task_t *task;         /* borrowed: the task waits for this */
} sleep_op_t;

static void sleep_cancel(lh_pending_t *p)
{
    sleep_op_t *op = (sleep_op_t *)p;
    lh_clock_timer_free(op->timer);
    free(op);
}

static void on_sleep_done(lh_clock_timer_t *timer)
{
    sleep_op_t *op = timer->data;
    lh_task_t *t = op->task;
    t->pending = NULL;
    sleep_cancel(&op->base);
    lh_task_resume(t, 0);
}

static double check_seconds(lua_State *L, int arg)
{
    double s = luaL_checknumber(L, arg);
    if (!(s >= 0) || !isfinite(s) || s > 1e7)
        luaL_argerror(L, arg, "seconds must be a number from 0 to 1e7");
    return s;
}

static int lib_sleep(lua_State *L)
{
    lh_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
    double s = check_seconds(L, 1);
    lh_task_t *t = lh_task_current(L);
    if (t == NULL || !lua_isyieldable(L))
        return luaL_error(L, "sleep: only inside a handler or a timer callback, in its own "
                             "coroutine (it waits without blocking the server)");
    sleep_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL || (op->timer = lh_clock_timer_new(vm->clock, on_sleep_done, op)) == NULL) {
        free(op);
        return luaL_error(L, "not enough memory");
    }
    op->base.cancel = sleep_cancel;
    op->task = t;
    lh_clock_timer_start(op->timer, lh_clock_ns(s), 0);
    t->pending = &op->base;
    return lua_yield(L, 0);
}

/* ------------------------------------------------------------------ timers */

struct lh_timer_s {
    lh_clock_timer_t *handle; /* owned */
    lh_vm_t *vm;              /* borrowed */
    int fn_ref;               /* registry ref to the callback */
    int once_ref; /* registry ref: a once-timer's callback while its run starts; LUA_NOREF */
    int self_ref; /* registry ref to the userdata while active: a timer nobody keeps runs */
    int repeat;
    uint64_t delay_ns;
    int at_load; /* started while the scripts loaded */
    int running; /* callback tasks not ended */
    int stopped;
    int gone;        /* stopped for good: freed once no callback runs */
    char label[160]; /* "timer script:line", for logs */
    char script[128];
    int line;
    lh_timer_t *prev, *next; /* vm->timers while active; vm's parked list when parked */
};

static void timer_maybe_free(lh_timer_t *tm)
{
    if (tm->gone && tm->running == 0)
        free(tm);
}

static lh_timer_t **timer_ud(lh_timer_t *tm)
{
    lua_rawgeti(tm->vm->L, LUA_REGISTRYINDEX, tm->self_ref);
    lh_timer_t **ud = lua_touserdata(tm->vm->L, -1);
    lua_pop(tm->vm->L, 1);
    return ud;
}

/* Stops: the clock timer goes, the handle's userdata points at nothing. For good (the refs
** go, memory follows the last callback run), unless luahook test keeps a timer started at
** load to arm it again in the next test (lh_timer_reset). */
static void timer_stop(lh_timer_t *tm, int for_good)
{
    lh_vm_t *vm = tm->vm;
    if (!tm->stopped) {
        tm->stopped = 1;
        lh_clock_timer_stop(tm->handle);
        LH_LIST_REMOVE(vm->timers, tm);
        /* the handle's userdata outlives tm: leave it pointing at nothing */
        lh_timer_t **ud = timer_ud(tm);
        if (ud != NULL)
            *ud = NULL;
        if (!for_good && tm->at_load && vm->keep_load_timers) {
            LH_LIST_PUSH(vm->parked_timers, tm);
            return;
        }
    } else if (tm->gone || !for_good) {
        return;
    } else {
        LH_LIST_REMOVE(vm->parked_timers, tm);
    }
    tm->gone = 1;
    lh_clock_timer_free(tm->handle);
    tm->handle = NULL;
    luaL_unref(vm->L, LUA_REGISTRYINDEX, tm->fn_ref);
    luaL_unref(vm->L, LUA_REGISTRYINDEX, tm->self_ref);
    tm->fn_ref = tm->self_ref = LUA_NOREF;
    timer_maybe_free(tm);
}

static void on_callback_done(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    lh_timer_t *tm = t->data;
    const lh_timer_observer_t *obs = tm->vm->timer_observer;
    tm->running--;
    if (obs != NULL && obs->run_done != NULL)
        obs->run_done(obs->data, tm->label, outcome, err, lh_task_seconds(t));
    if (outcome != LH_OUTCOME_OK)
        lh_log_run_failed("timer failed", NULL, NULL, NULL, tm->script, tm->line,
                          lh_metrics_outcome_name(outcome), err, tb);
    timer_maybe_free(tm);
}

/* A callback run that could not start (out of memory): reported as a failed run. */
static void start_failed(lh_timer_t *tm)
{
    const lh_timer_observer_t *obs = tm->vm->timer_observer;
    const char *err = "could not start the callback: not enough memory";
    if (obs != NULL && obs->run_done != NULL)
        obs->run_done(obs->data, tm->label, LH_OUTCOME_MEMORY, err, 0);
    lh_log_run_failed("timer failed", NULL, NULL, NULL, tm->script, tm->line,
                      lh_metrics_outcome_name(LH_OUTCOME_MEMORY), err, NULL);
}

/* Under lua_pcall: a ref of its own to a once-timer's callback, which outlives the timer. */
static int ref_callback(lua_State *L)
{
    lh_timer_t *tm = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, tm->fn_ref);
    tm->once_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void on_timer(lh_clock_timer_t *handle)
{
    lh_timer_t *tm = handle->data;
    lh_vm_t *vm = tm->vm;
    lua_State *L = vm->L;
    if (tm->running > 0 && tm->repeat) {
        LH_LOG(LH_DEBUG, "%s: still running, tick skipped", tm->label);
        return;
    }
    int fn_ref = tm->fn_ref;
    lua_rawgeti(L, LUA_REGISTRYINDEX, tm->self_ref); /* handle */
    tm->running += 2; /* the callback's run, and a hold on tm until this returns */
    if (!tm->repeat) {
        /* once: the callback keeps what it needs; the timer itself is done */
        tm->once_ref = LUA_NOREF;
        lh_task_protect(L, ref_callback, tm, 0, 0); /* out of memory: once_ref stays unset */
        fn_ref = tm->once_ref;
        timer_stop(tm, 0);
    }
    if (fn_ref == LUA_NOREF || lh_task_spawn(vm, fn_ref, NULL, tm->label, tm->script, tm->line, 1,
                                             on_callback_done, tm, NULL, NULL) != 0) {
        tm->running--;
        start_failed(tm);
    }
    if (!tm->repeat)
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pop(L, 1);
    tm->running--; /* the hold */
    timer_maybe_free(tm);
}

static void timer_arm(lh_timer_t *tm)
{
    uint64_t ns = tm->delay_ns;
    tm->stopped = 0;
    LH_LIST_PUSH(tm->vm->timers, tm);
    lh_clock_timer_start(tm->handle, ns, tm->repeat ? ns : 0);
}

static lh_timer_t **check_timer(lua_State *L)
{
    return luaL_checkudata(L, 1, TIMER_MT);
}

static int start_timer(lua_State *L, int repeat)
{
    lh_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
    double s = check_seconds(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (repeat && s < 0.001)
        return luaL_argerror(L, 1, "timer.every needs at least 0.001 seconds");
    if (vm->closing) /* a finalizer while the VM closes: nothing would run it */
        return luaL_error(L, "timer: the VM is closing");
    lua_settop(L, 2); /* extra arguments are ignored: the handle must land at 3 */
    /* the userdata first, empty: an allocation error cannot leak the timer */
    lh_timer_t **ud = lua_newuserdatauv(L, sizeof(*ud), 0); /* s fn ud */
    *ud = NULL;
    luaL_setmetatable(L, TIMER_MT);
    /* the refs (which may raise) before the C allocation (which must not leak) */
    lua_pushvalue(L, 2);
    int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 3);
    int self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lh_timer_t *tm = calloc(1, sizeof(*tm));
    if (tm == NULL || (tm->handle = lh_clock_timer_new(vm->clock, on_timer, tm)) == NULL) {
        free(tm);
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, self_ref);
        return luaL_error(L, "not enough memory");
    }
    tm->fn_ref = fn_ref;
    tm->self_ref = self_ref;
    lua_Debug ar;
    lua_pushvalue(L, 2);
    lua_getinfo(L, ">S", &ar);
    const char *script = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
    snprintf(tm->script, sizeof(tm->script), "%s", script);
    tm->line = ar.linedefined;
    snprintf(tm->label, sizeof(tm->label), "timer %s:%d", tm->script, tm->line);
    tm->vm = vm;
    tm->repeat = repeat;
    tm->at_load = vm->loading;
    tm->delay_ns = lh_clock_ns(s);
    *ud = tm;
    timer_arm(tm);
    return 1;
}

static int timer_after(lua_State *L)
{
    return start_timer(L, 0);
}

static int timer_every(lua_State *L)
{
    return start_timer(L, 1);
}

/* handle:stop() — idempotent; a callback already running finishes. */
static int t_stop(lua_State *L)
{
    lh_timer_t **ud = check_timer(L);
    if (*ud != NULL)
        timer_stop(*ud, 0); /* clears *ud */
    return 0;
}

/* __gc and __close: a handle collected or closed stops its timer (an active timer's handle
** is anchored, so only __close or the VM's end meet one). Never while the VM closes: its
** timers were stopped before. */
static int t_gc(lua_State *L)
{
    lh_timer_t **ud = check_timer(L);
    if (*ud != NULL && !(*ud)->vm->closing)
        timer_stop(*ud, 0);
    *ud = NULL;
    return 0;
}

static int t_active(lua_State *L)
{
    lh_timer_t **ud = check_timer(L);
    lua_pushboolean(L, *ud != NULL);
    return 1;
}

static int t_tostring(lua_State *L)
{
    lh_timer_t **ud = check_timer(L);
    if (*ud == NULL)
        lua_pushliteral(L, "timer (stopped)");
    else
        lua_pushfstring(L, "%s", (*ud)->label);
    return 1;
}

int lh_timer_pending_once(const lh_vm_t *vm)
{
    int n = 0;
    for (const lh_timer_t *tm = vm->timers; tm != NULL; tm = tm->next)
        n += !tm->repeat;
    return n;
}

void lh_timer_stop_all(lh_vm_t *vm)
{
    while (vm->timers != NULL)
        timer_stop(vm->timers, 1);
    while (vm->parked_timers != NULL)
        timer_stop(vm->parked_timers, 1);
}

void lh_timer_reset(lh_vm_t *vm)
{
    lh_timer_t *keep = NULL;
    while (vm->timers != NULL) {
        lh_timer_t *tm = vm->timers;
        timer_stop(tm, !tm->at_load);
    }
    while (vm->parked_timers != NULL) {
        lh_timer_t *tm = vm->parked_timers;
        LH_LIST_REMOVE(vm->parked_timers, tm);
        LH_LIST_PUSH(keep, tm);
    }
    while (keep != NULL) {
        lh_timer_t *tm = keep;
        LH_LIST_REMOVE(keep, tm);
        lh_timer_t **ud = timer_ud(tm);
        if (ud != NULL)
            *ud = tm;
        timer_arm(tm);
    }
}

static const luaL_Reg timer_meth[] = {
    {"stop", t_stop},
    {"active", t_active},
    {NULL, NULL},
};

static const luaL_Reg timer_funcs[] = {
    {"after", timer_after},
    {"every", timer_every},
    {NULL, NULL},
};

int luaopen_lh_timer(lua_State *L)
{
    luaL_newmetatable(L, TIMER_MT); /* mt */
    lua_pushcfunction(L, t_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, t_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, t_gc);
    lua_setfield(L, -2, "__close");
    luaL_newlibtable(L, timer_meth);
    luaL_setfuncs(L, timer_meth, 0); /* mt methods */
    lua_setfield(L, -2, "__index");  /* mt */
    lua_pop(L, 1);
    luaL_newlibtable(L, timer_funcs);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, timer_funcs, 1);
    return 1;
}

/* sleep is a global of its own; it needs the VM as upvalue 1 */
int luaopen_lh_sleep(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, lib_sleep, 1);
    return 1;
}
