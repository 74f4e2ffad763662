/*
** task — one run of a Lua function (a handler, or a timer callback) in its own coroutine:
** anchor, resume, deadline, cancel, finish. A yielding stdlib call records what it waits
** for in `pending`; its completion resumes the task with lh_task_resume.
*/
#ifndef LH_TASK_H
#define LH_TASK_H

#include <stdint.h>

#include <lua.h>

#include "clock.h"
#include "metrics.h"
#include "vm.h"

typedef struct lh_task_s lh_task_t;
typedef struct lh_pending_s lh_pending_t;

/** What a waiting task waits for. `cancel` stops it and frees it; its completion never
 *  runs after that. */
struct lh_pending_s {
    void (*cancel)(lh_pending_t *p);
};

/** Runs once per task, when it ends. `err` and `traceback` are NULL on success and
 *  borrowed (valid during the call) otherwise. The task is freed after the call. */
typedef void (*lh_task_done_cb)(lh_task_t *t, lh_outcome_t outcome, const char *err,
                                const char *traceback);

struct lh_task_s {
    lh_vm_t *vm;                 /* borrowed; vm->tasks counts this task */
    lua_State *co;               /* the coroutine; anchored by co_ref */
    int co_ref;                  /* registry ref; LUA_NOREF once finished */
    const lh_handler_t *handler; /* borrowed from vm->handlers: the handler it runs; NULL for
                                    a timer callback */
    const char *label;           /* borrowed, lives as long as the VM: "script:line" */
    const char *script;          /* borrowed, same */
    int line;
    uint64_t start_ns;        /* on the VM's clock */
    uint64_t deadline_ns;     /* on the VM's clock; 0: none */
    uint64_t cpu_ns;          /* real time spent running, counted apart on a virtual clock */
    uint64_t cpu_deadline_ns; /* uv_hrtime() past which the running code is stopped */
    lh_pending_t *pending;    /* what it waits for; NULL while running */
    lh_clock_timer_t *timer;  /* owned: the deadline while waiting; NULL until the first wait */
    int timed_out;
    int cpu_stopped; /* stopped computing past its deadline (not while waiting) */
    int permanent;   /* it raised permanent(...): retrying cannot help */
    int returned;    /* its function returned: the coroutine can run another (vm->co_pool) */
    lh_task_done_cb done;
    void *data;              /* for `done` */
    const char *id, *action; /* borrowed from `data`'s owner, for log.*; may be NULL */
    lh_task_t *prev, *next;  /* vm->task_list */
};

/**
 * Runs the function in registry ref `fn_ref` of `vm` with the `nargs` values at the top of
 * vm->L as its arguments (they stay there). `handler` is the handler it runs (borrowed from
 * the sealed vm->handlers), NULL for a timer callback. `done` runs exactly once — possibly
 * before this returns. Returns 0, or -1 if the task could not be created (`done` never runs).
 */
int lh_task_spawn(lh_vm_t *vm, int fn_ref, const lh_handler_t *handler, const char *label,
                  const char *script, int line, int nargs, lh_task_done_cb done, void *data,
                  const char *id, const char *action);

/** Resumes a task whose pending operation completed (and cleared t->pending), with
 *  `nargs` values pushed on t->co. */
void lh_task_resume(lh_task_t *t, int nargs);

/** Ends a task whose wait is over but which cannot go on (the values to resume it with
 *  could not be made: out of memory): closes its coroutine and reports `outcome` and
 *  `msg` (borrowed for the call), as a failed run. */
void lh_task_fail(lh_task_t *t, lh_outcome_t outcome, const char *msg);

/**
 * The one door into Lua from a libuv callback: runs `fn` under lua_pcall on `L` (a VM's
 * main state) with `ud` as a light userdata at index 1 and the `nargs` values at the top
 * of `L` after it. Returns LUA_OK with `nresults` results pushed, or the error status
 * with the arguments gone and nothing pushed: a real out-of-memory, or an error in `fn`,
 * fails the caller's step, never the process (Lua's panic handler aborts).
 */
int lh_task_protect(lua_State *L, lua_CFunction fn, void *ud, int nargs, int nresults);

/** The task running now on `L` (the handler's coroutine itself), or NULL: at load time,
 *  in a coroutine the handler made, or outside Lua. Yielding stdlib calls need one. */
lh_task_t *lh_task_current(lua_State *L);

/** Seconds since the task started, on its VM's clock. */
double lh_task_seconds(const lh_task_t *t);

/** Puts the deadline guard on `L` (luahook test's main thread: vm->stop_ns), and on the
 *  coroutines made from it later. Handler coroutines get it from lh_task_spawn. */
void lh_task_guard(lua_State *L);

/** Stops every task of `vm` now (shutdown): cancels what they wait for, finishes them
 *  with outcome timeout. */
void lh_task_cancel_all(lh_vm_t *vm);

#endif
