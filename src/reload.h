/*
** reload — SIGHUP (and --watch): build a complete new VM beside the serving one; swap on
** success, keep the old one untouched on any failure. A replaced VM stops its timers,
** lets its running handlers finish, and is freed once the last one ended.
*/
#ifndef LH_RELOAD_H
#define LH_RELOAD_H

#include "app.h"

typedef struct lh_reload_s lh_reload_t;

/** Watches SIGHUP (and with `watch`, the loaded files and folders). NULL on failure. */
lh_reload_t *lh_reload_new(lh_app_t *app, int watch);

/** Asks for a reload: it runs soon, from the loop; requests that come before it runs, or
 *  while it runs, give one more reload at most. */
void lh_reload_request(lh_reload_t *r, const char *why);

/** Stops watching; stops and frees the replaced VMs (their waiting handlers are cancelled).
 *  Call before closing the loop. NULL does nothing. */
void lh_reload_free(lh_reload_t *r);

#endif
