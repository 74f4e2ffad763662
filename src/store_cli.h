/*
** store_cli — `luahook store [--state-dir DIR] list|get|set|delete`: an operator's look at
** the store of a state folder, and changes that reach a running server within a second.
*/
#ifndef LH_STORE_CLI_H
#define LH_STORE_CLI_H

#include "config.h"

/** Runs the command in cfg->paths; returns the exit code (0, 1 not found, 2 error). */
int lh_store_cli_run(const lh_config_t *cfg);

#endif
