/*
** wal_gather — an SQLite VFS over the default one that turns a commit's many WAL writes
** into one system call at its sync. Used by the state writer's connection alone.
*/
#ifndef LH_WAL_GATHER_H
#define LH_WAL_GATHER_H

#include <sqlite3.h>

#define LH_WAL_GATHER_VFS "luahook-gather"

/**
 * Registers the VFS (once; not as the default) and returns its name for sqlite3_open_v2,
 * or NULL when the default VFS cannot be wrapped (then open with the default). Call before
 * any thread uses SQLite through it.
 */
const char *lh_wal_gather_vfs(void);

/**
 * Gathering is right only while every commit syncs (synchronous = FULL): the state sets it
 * with the sync mode, between transactions. On by default.
 */
void lh_wal_gather_set(int on);

#endif
