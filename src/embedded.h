/*
** embedded — files of lua/ compiled into the binary (the test harness, sample events),
** so that luahook needs nothing beside itself.
*/
#ifndef LH_EMBEDDED_H
#define LH_EMBEDDED_H

#include <stddef.h>

#include <lua.h>

typedef struct {
    const char *name; /* path under lua/, e.g. "samples/TASKS_CREATED.json"; NULL ends */
    const char *data; /* NUL-terminated */
    size_t len;
} lh_embedded_t;

extern const lh_embedded_t lh_embedded[];

/** The embedded file `name`, or NULL. */
const lh_embedded_t *lh_embedded_find(const char *name);

/**
 * Makes the embedded top-level modules requireable: package.preload[X] for each lua/X.lua,
 * and package.preload["X.Y"] for each lua/X/Y.lua of such a module (luahook/ and samples/
 * are the binary's own, not modules). A module runs in an environment of its own whose
 * globals fall back to the shared ones. Raises only on a memory error.
 */
void lh_embedded_preload(lua_State *L);

#endif
