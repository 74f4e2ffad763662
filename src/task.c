#include "task.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <uv.h>

/* `done` runs while the coroutine is still anchored: `err` may live on its stack. */
static void task_finish(lh_task_t *t, lh_outcome_t outcome, const char *err, const char *tb)
{
    lh_vm_t *vm = t->vm;
    int ref = t->co_ref;
    lua_State *L = vm->L;
    vm->tasks--;
    t->co_ref = LUA_NOREF;
    t->done(t, outcome, err, tb);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    free(t);
}

void lh_task_resume(lh_task_t *t, int nargs)
{
    lh_vm_t *vm = t->vm;
    lua_State *L = vm->L;
    int nres;
    const char *saved_id = vm->cur_id, *saved_action = vm->cur_action;

    vm->cur_id = t->id;
    vm->cur_action = t->action;
    int status = lua_resume(t->co, L, nargs, &nres);
    vm->cur_id = saved_id;
    vm->cur_action = saved_action;

    if (status == LUA_YIELD && t->pending != NULL) {
        lua_pop(t->co, nres); /* the pending operation owns the wake-up */
        return;
    }
    if (status == LUA_OK) {
        task_finish(t, LH_OUTCOME_OK, NULL, NULL);
        return;
    }
    if (status == LUA_YIELD) {
        lua_pop(t->co, nres);
        lua_pushliteral(t->co, "coroutine.yield() in a handler: a handler may only wait on "
                               "luahook's own I/O (http, sleep)");
    }
    int top = lua_gettop(L);
    lua_xmove(t->co, L, 1); /* the error object, to inspect it on a live thread */
    const char *msg = lua_tostring(L, -1);
    if (status == LUA_ERRMEM)
        msg = "not enough memory";
    else if (msg == NULL && luaL_callmeta(L, -1, "__tostring") && lua_isstring(L, -1))
        msg = lua_tostring(L, -1);
    else if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, top + 1));
    luaL_traceback(L, t->co, NULL, 0); /* the coroutine's stack, where it failed */
    task_finish(t, status == LUA_ERRMEM ? LH_OUTCOME_MEMORY : LH_OUTCOME_ERROR, msg,
                lua_tostring(L, -1));
    lua_settop(L, top);
}

int lh_task_spawn(lh_vm_t *vm, int handler, int nargs, lh_task_done_cb done, void *data,
                  const char *id, const char *action)
{
    lua_State *L = vm->L;
    lh_task_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    if (!lua_checkstack(L, nargs + 2)) {
        free(t);
        return -1;
    }
    t->vm = vm;
    t->handler = handler;
    t->done = done;
    t->data = data;
    t->id = id;
    t->action = action;
    t->start_ns = uv_hrtime();
    t->co = lua_newthread(L);                          /* ... args co */
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);        /* ... args */
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, vm->handlers[handler].fn_ref);
    for (int i = 0; i < nargs; i++)
        lua_pushvalue(L, -nargs); /* each push shifts the next argument to -nargs */
    lua_xmove(L, t->co, nargs);                        /* co: fn args */
    vm->tasks++;
    lh_task_resume(t, nargs);
    return 0;
}
