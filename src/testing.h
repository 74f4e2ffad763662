/*
** testing — `luahook test`: find *_test.lua files and run each in a fresh Lua state with
** the embedded harness (lua/luahook/testing.lua), which mocks http and the clock.
*/
#ifndef LH_TESTING_H
#define LH_TESTING_H

#include "config.h"

/** Runs every test file under cfg->paths; prints a line per test and, last,
 *  "N passed, N failed". Returns the exit code: 0 all passed, 1 a test failed, 2 no test
 *  file found or a path (or a folder under it) cannot be read. */
int lh_testing_run(const lh_config_t *cfg);

#endif
