/*
** lib — the Lua-facing standard library, one file per module. Each luaopen_lh_* pushes
** its module table; modules that need their VM take it as an upvalue.
*/
#ifndef LH_LIB_H
#define LH_LIB_H

#include <lua.h>

#include "metrics.h"
#include "vm.h"

int luaopen_lh_json(lua_State *L);
/* Modules below take the lh_vm_t as upvalue 1 (light userdata). */
int luaopen_lh_log(lua_State *L);   /* log.debug/info/warn/error */
int luaopen_lh_http(lua_State *L);  /* http.request/get/post/put/patch/delete */
int luaopen_lh_timer(lua_State *L); /* timer.after/every */
int luaopen_lh_sleep(lua_State *L); /* pushes the sleep function */
int luaopen_lh_env(lua_State *L);   /* pushes the env function */
/** Pushes a `store` table for the scripts of namespace `ns` (lib_store.c). */
int lh_lib_store_push(lua_State *L, lh_vm_t *vm, const char *ns);

/* permanent(message): an error value that makes a failed run dead at once (lib_permanent.c) */
int luaopen_lh_permanent(lua_State *L); /* pushes the permanent function */
/** Whether the value at `idx` was made by permanent(). */
int lh_lib_is_permanent(lua_State *L, int idx);

/* crypto.hmac/sha256/hex/base64/equal/random/webhook_* (lib_crypto.c); VM upvalue */
int luaopen_lh_crypto(lua_State *L);

typedef struct lh_timer_s lh_timer_t;

/** Told of every timer callback run of a VM that ends (fire prints them as it prints
 *  handlers). `err` is NULL on success, else borrowed for the call. */
typedef struct lh_timer_observer_s {
    void (*run_done)(void *data, const char *label, lh_outcome_t outcome, const char *err,
                     double seconds);
    void *data;
} lh_timer_observer_t;
/** One-shot timers of `vm` not fired yet (fire waits for them). */
int lh_timer_pending_once(const lh_vm_t *vm);
/** Stops every timer of `vm` for good (retire, shutdown); running callbacks finish. */
void lh_timer_stop_all(lh_vm_t *vm);
/** luahook test, between two tests: stops the timers not started at load, and arms the
 *  ones started at load again (vm->keep_load_timers), as if the scripts had just loaded. */
void lh_timer_reset(lh_vm_t *vm);

#endif
