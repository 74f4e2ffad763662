/*
** embedded — files of lua/ compiled into the binary (the test harness, sample events),
** so that luahook needs nothing beside itself.
*/
#ifndef LH_EMBEDDED_H
#define LH_EMBEDDED_H

#include <stddef.h>

typedef struct {
    const char *name; /* path under lua/, e.g. "samples/TASKS_CREATED.json"; NULL ends */
    const char *data; /* NUL-terminated */
    size_t len;
} lh_embedded_t;

extern const lh_embedded_t lh_embedded[];

/** The embedded file `name`, or NULL. */
const lh_embedded_t *lh_embedded_find(const char *name);

#endif
