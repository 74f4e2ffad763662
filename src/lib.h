/*
** lib — the Lua-facing standard library, one file per module. Each luaopen_lh_* pushes
** its module table; modules that need their VM take it as an upvalue.
*/
#ifndef LH_LIB_H
#define LH_LIB_H

#include <lua.h>

#include "vm.h"

int luaopen_lh_json(lua_State *L);
/** log.debug/info/warn/error; upvalue 1 is the lh_vm_t (light userdata). */
int luaopen_lh_log(lua_State *L);

#endif
