/*
** vm — one Lua state generation: the stdlib, every script in its own _ENV, the handler
** registry and its routes, and the count of live handler runs. Knows Lua, not sockets.
*/
#ifndef LH_VM_H
#define LH_VM_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "app.h"
#include "clock.h"
#include "lua_pool.h"

/*
** A loaded script. Its name outlives the VM (the journal, `store`, replay hang on it): the
** script's path relative to the path given on the command line — for a folder, the path
** inside it ("notify.lua", "sub/x.lua"); for a file, its base name. Unique within a VM.
*/
typedef struct lh_script_s {
    char *name;      /* owned: the stable name, "notify.lua"; a recipe instance's name */
    char *path;      /* owned: the path as loaded, "examples/notify.lua"; an instance's
                        recipe.lua ("recipes/notify/recipe.lua", "bundled:notify/recipe.lua") */
    char *site_file; /* owned; a recipe instance: the script of its use() (else NULL) ... */
    int site_line;   /* ... and its line: what its handlers are told by in logs */
    char **secrets;  /* owned: a recipe instance's secret config values, the longest first:
                        masked in its handlers' errors and tracebacks (lh_vm_scrub) */
    size_t nsecrets;
    int nhandlers; /* handlers it registered so far: the next ordinal is nhandlers + 1 */
} lh_script_t;

/* The longest name on()'s `name` option takes: a letter, then letters, digits, '_', '.' or
** '-' (so a name never reads as an ordinal, and never holds the id's '#'). */
#define LH_HANDLER_NAME_MAX 64
/* Coroutines of runs that returned, kept for the next runs (task.c), as OpenResty does. */
#define LH_VM_CO_POOL 16

typedef struct lh_handler_s {
    int fn_ref;    /* registry ref to the function */
    char *script;  /* owned: the path of the script defining the function, as loaded; for
                      a recipe instance's handler, the script of its use() */
    int line;      /* where the function was defined; for an instance's, the use()'s line */
    char *label;   /* owned: "script:line"; changes when a line is added above. An
                      instance's: "use-script:line (recipe-file:line)" */
    char *id;      /* owned: the stable id, "<script name>#<name>" with on()'s name option,
                      else "<script name>#<ordinal of the handler in that script, from 1>" */
    int script_id; /* index in vm->scripts of the script whose loading registered it */
    int named;     /* the id holds an explicit name, not an ordinal */
    char *actions; /* owned: the actions it is registered for, space-separated (luahook check) */
    int retries;   /* on()'s retries option (the journal's retries of a failed run); -1: none */
    lh_handler_stats_t *stats; /* borrowed from app->metrics once sealed; else NULL */
} lh_handler_t;

typedef struct lh_route_s {
    int *handlers; /* owned: handler indexes, the action's own first, then "*" ones */
    size_t n;
} lh_route_t;

struct lh_vm_s {
    lua_State *L;  /* owned */
    lh_app_t *app; /* borrowed */
    uint64_t generation;
    int tasks;              /* live handler runs */
    int loading;            /* on() is allowed while scripts load */
    int closing;            /* lua_close runs: finalizers may not start timers */
    lh_handler_t *handlers; /* owned; stable once sealed (tasks point into it) */
    size_t nhandlers, handlers_cap;
    lh_script_t *scripts; /* owned: every script loaded, in load order */
    size_t nscripts, scripts_cap;
    int loading_script; /* index in scripts of the script loading now; -1: none */
    char **warnings;    /* owned: "file:line: warning: ..." per action of on() that Label
                           Studio never sends (and not marked custom), in load order */
    size_t nwarnings;
    char **deferred; /* owned: problems of the loading script that let it go on (a use()
                        whose config does not validate), reported once its chunk ends */
    size_t ndeferred;
    lh_route_t *routes; /* owned; routes[0] is the "*"-only route of unknown actions */
    size_t nroutes;
    int routes_ref;  /* registry ref: action -> route index (integer); LUA_NOREF until sealed */
    int pending_ref; /* registry ref while loading: action -> {handler index...} */
    /* dispatch's big events alive: the collector runs incrementally while > 0 */
    int big_events;
    /* big events whose tables are being built: the collector waits at a cycle's end while > 0
       (dispatch.c); gc_hold_restart: it ran when the first of them stopped it */
    int gc_holds;
    int gc_hold_restart;
    size_t mem_used;
    size_t mem_limit;                  /* 0: none */
    lh_pool_t pool;                    /* the state's freed small blocks, for its next ones */
    int limit_on;                      /* the limit applies while Lua code of a task runs */
    int oom_real;                      /* the last refused allocation was the system's */
    struct lh_task_s *cur_task;        /* the task running now; NULL outside one */
    struct lh_task_s *task_list;       /* every live task */
    lua_State *co_pool[LH_VM_CO_POOL]; /* finished coroutines, empty, for lh_task_spawn */
    int co_pool_ref[LH_VM_CO_POOL];    /* their registry refs (what anchors them) */
    int co_pooled;
    struct lh_timer_s *timers;        /* every active timer */
    struct lh_timer_s *parked_timers; /* luahook test: stopped ones started at load */
    lh_clock_t *clock;                /* borrowed from app->clock, or owned (the loop's) */
    lh_clock_t *own_clock;            /* owned: the loop's clock when the app gave none */
    int log_ref;           /* registry ref: function(level, msg, fields) that takes the log.*
                              records instead of the log (luahook test); LUA_NOREF: none */
    int keep_load_timers;  /* luahook test: timers started at load survive stop() to be
                              armed again in the next test (lh_timer_reset) */
    uint64_t stop_ns;      /* uv_hrtime() past which any Lua code raises stop_msg; 0: never */
    const char *stop_msg;  /* borrowed, static */
    lh_vm_t *next_retired; /* reload's list of replaced VMs still draining */
    /* a replaced VM's last task ended (set by reload; runs outside any Lua call of it) */
    void (*on_drained)(lh_vm_t *vm);
    void *drained_data;
    /* told of every timer callback run that ends (fire); borrowed, NULL: none. See lib.h */
    const struct lh_timer_observer_s *timer_observer;
};

/** Creates a VM with the stdlib. NULL (and a message in err) on failure. */
lh_vm_t *lh_vm_new(lh_app_t *app, uint64_t generation, char *err, size_t errlen);

/** A problem found while loading: "file:line: message". */
typedef void (*lh_vm_report_cb)(void *data, const char *problem);

/**
 * Loads every path (a script, or a folder whose *.lua load in name order), each in its own
 * _ENV, then seals the routes. Every problem goes to `report`; loading goes on with the
 * next script so that all problems are shown at once. Returns the number of problems.
 */
int lh_vm_load(lh_vm_t *vm, char *const *paths, size_t npaths, lh_vm_report_cb report, void *data);

/** Loads one path as lh_vm_load does, without sealing the routes (luahook test's
 *  handlers(): several calls, then lh_vm_seal). Returns the number of problems. */
int lh_vm_load_path(lh_vm_t *vm, const char *path, lh_vm_report_cb report, void *data);

/** Seals the routes of everything loaded: on() is closed from then on. 0, or -1 when out
 *  of memory. */
int lh_vm_seal(lh_vm_t *vm);

/** The stable name of script `script_id` (an lh_handler_t's script_id, or
 *  vm->loading_script while a script loads): "notify.lua". Borrowed: lives as long as the
 *  VM. What `store` namespaces keys by and the journal records runs under. */
const char *lh_vm_script_name(const lh_vm_t *vm, int script_id);

/**
 * Opens the recipe instance `name` as a script of the VM while scripts load: on() calls
 * from now until lh_vm_instance_end register handlers "<name>#N", told by the use() site
 * `site_file`:`site_line`; `path` is its recipe.lua. Returns the script loading before (to
 * give lh_vm_instance_end), or -2 with the reason in `err` (the name is taken).
 */
int lh_vm_instance_begin(lh_vm_t *vm, const char *name, const char *path, const char *site_file,
                         int site_line, char *err, size_t errlen);
void lh_vm_instance_end(lh_vm_t *vm, int previous);

/** Gives the instance loading now its secret config values (copied; the longest first), so
 *  that lh_vm_scrub masks them. 0, or -1 when out of memory. */
int lh_vm_instance_secrets(lh_vm_t *vm, const char *const *secrets, size_t n);

/**
 * `text` (an error or a traceback of a handler of script `script_id`) with every secret of
 * that recipe instance as "***": a recipe's own code may quote its webhook URL or token in
 * an error. Returns a new string (free it), or NULL when there is nothing to mask — or when
 * memory ran out, and then *failed is set: `text` must not be shown.
 */
char *lh_vm_scrub(const lh_vm_t *vm, int script_id, const char *text, int *failed);

/** Keeps `problem` ("file:line: message") to report when the loading script's chunk ends,
 *  so that the script goes on and every use() of it is checked. -1 when out of memory. */
int lh_vm_defer_problem(lh_vm_t *vm, const char *problem);

/**
 * A lua_CFunction: install(env, dir, key, templates, globals, bundled) of
 * lua/luahook/package.lua: the require of a package root other than a scripts' folder
 * (a recipe's folder, or a bundled recipe's embedded files).
 */
int lh_vm_package_root(lua_State *L);

/** The handler whose stable id is `id`, or NULL. */
const lh_handler_t *lh_vm_handler_find(const lh_vm_t *vm, const char *id);

/** The script whose stable name is `name`, or -1. */
int lh_vm_script_find(const lh_vm_t *vm, const char *name);

/** The route for the action string at the top of vm->L (not popped). Never NULL. */
const lh_route_t *lh_vm_route(lh_vm_t *vm);

/**
 * A lua_CFunction, to call under lua_pcall: gives the environment at index 1 its own
 * `require` and `package`, rooted at the folder of the script path at index 2 (its
 * modules in FOLDER/lib/; one module cache per folder). What every script's _ENV gets
 * (lua/luahook/package.lua); luahook test gives it to test files too.
 */
int lh_vm_package(lua_State *L);

void lh_vm_free(lh_vm_t *vm);

#endif
