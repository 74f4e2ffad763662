/*
** stubs — luahook stubs [DIR]: the Lua API's type annotations for lua-language-server
** (lua/luahook/stubs/NAME.lua, compiled in), written out for an editor.
*/
#ifndef LH_STUBS_H
#define LH_STUBS_H

/** Writes every embedded luahook/stubs/NAME.lua as DIR/NAME.lua, making DIR (and its
 *  parents) if missing, and names each file written on stdout. 0, or 2 after saying why
 *  on stderr. */
int lh_stubs_write(const char *dir);

#endif
