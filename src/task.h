/*
** task — one handler run in its own coroutine: anchor, resume, finish.
** A yielding stdlib call records what it waits for in `pending`; its completion resumes
** the task with lh_task_resume.
*/
#ifndef LH_TASK_H
#define LH_TASK_H

#include <stdint.h>

#include <lua.h>

#include "metrics.h"
#include "vm.h"

typedef struct lh_task_s lh_task_t;

/** Runs once per task, when it ends. `err` and `traceback` are NULL on success and
 *  borrowed (valid during the call) otherwise. The task is freed after the call. */
typedef void (*lh_task_done_cb)(lh_task_t *t, lh_outcome_t outcome, const char *err,
                                const char *traceback);

struct lh_task_s {
    lh_vm_t *vm;        /* borrowed; vm->tasks counts this task */
    int handler;        /* index into vm->handlers */
    lua_State *co;      /* the coroutine; anchored by co_ref */
    int co_ref;         /* registry ref; LUA_NOREF once finished */
    uint64_t start_ns;
    void *pending;      /* the operation it waits for, NULL while running */
    lh_task_done_cb done;
    void *data;         /* for `done` */
    const char *id, *action; /* borrowed from `data`'s owner, for log.* */
};

/**
 * Starts handler `handler` of `vm` with the `nargs` values at the top of vm->L as its
 * arguments (they stay there). `done` runs exactly once — possibly before this returns.
 * Returns 0, or -1 if the task could not be created (then `done` never runs).
 */
int lh_task_spawn(lh_vm_t *vm, int handler, int nargs, lh_task_done_cb done, void *data,
                  const char *id, const char *action);

/** Resumes a task whose pending operation completed, with `nargs` values pushed on t->co. */
void lh_task_resume(lh_task_t *t, int nargs);

#endif
