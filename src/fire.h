/*
** fire — `luahook fire`: run the loaded handlers on one event, without a server, with the
** same VM, stdlib and dispatch as serve; print each handler's outcome.
*/
#ifndef LH_FIRE_H
#define LH_FIRE_H

#include "app.h"

/** Reads the event (file, stdin or sample), dispatches it on app->vm and runs the loop
 *  until every handler ended. Returns the exit code: 0 all ok, 1 a handler failed or the
 *  event was refused, 2 the event could not be read. */
int lh_fire_run(lh_app_t *app);

#endif
