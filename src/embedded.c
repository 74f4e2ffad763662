#include "embedded.h"

#include <string.h>

const lh_embedded_t *lh_embedded_find(const char *name)
{
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}
