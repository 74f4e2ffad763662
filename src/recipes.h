/*
** recipes — packaged, configurable handler bundles: use() in scripts (the Lua half is
** lua/luahook/recipes.lua: finding, schema, validation, instances), the host it runs on,
** and the `recipes` and `new-recipe` commands.
*/
#ifndef LH_RECIPES_H
#define LH_RECIPES_H

#include <lua.h>

#include "config.h"
#include "vm.h"

/** Registry field holding the table lua/luahook/recipes.lua returned (M.use, M.find...). */
#define LH_RECIPES_KEY "luahook.recipes"

/** Installs the global use() and the recipes module of `vm` (under LH_RECIPES_KEY). Runs
 *  inside open_libs' protected call: raises on failure. */
void lh_recipes_open(lua_State *L, lh_vm_t *vm);

/** A lua_CFunction: embedded(path) -> the file compiled into the binary, or nil. */
int lh_recipes_embedded(lua_State *L);

/** luahook recipes [NAME] [--markdown] and luahook new-recipe NAME [DIR]: the exit code. */
int lh_recipes_cli(const lh_config_t *cfg);

#endif
