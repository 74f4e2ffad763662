/*
** reload — SIGHUP (and --watch): build a complete new VM beside the serving one; swap on
** success, keep the old one untouched on any failure. A replaced VM stops its timers,
** lets its running handlers finish, and is freed once the last one ended.
*/
#ifndef LH_RELOAD_H
#define LH_RELOAD_H

#include "app.h"
#include "vm.h"

typedef struct lh_reload_s lh_reload_t;

/** Watches SIGHUP (and with `watch`, the loaded files and folders). NULL on failure. */
lh_reload_t *lh_reload_new(lh_app_t *app, int watch);

/** Asks for a reload: it runs soon, from the loop; requests that come before it runs, or
 *  while it runs, give one more reload at most. */
void lh_reload_request(lh_reload_t *r, const char *why);

/** Stops watching; stops and frees the replaced VMs (their waiting handlers are cancelled).
 *  Call before closing the loop. NULL does nothing. */
void lh_reload_free(lh_reload_t *r);

/**
 * lh_vm_load for a loop callback (a reload): protected, so that a real out-of-memory
 * while the new VM loads (each script's _ENV, the routes are made outside the scripts'
 * own protected calls) is one more problem — the reload fails and the running scripts
 * stay — never the process. Returns the number of problems, as lh_vm_load.
 */
int lh_reload_load(lh_vm_t *vm, char *const *paths, size_t npaths, lh_vm_report_cb report,
                   void *data);

#endif
