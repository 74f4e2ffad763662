#include "wal_gather.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/*
** SQLite writes a WAL frame as two writes, header then page, each a system call: about six
** per journaled event, and system calls are what this server's CPU goes to. This layer,
** under the state's own connections, keeps a WAL file's writes in memory while they are
** contiguous and hands them to the kernel in large writes when SQLite syncs, reads,
** truncates, asks the size or closes. SQLite syncs the WAL before it publishes a
** commit in the WAL index, so no reader can look for a frame still held here, provided
** every commit syncs (synchronous = FULL); under NORMAL a commit has no sync, and WAL writes
** go straight through. The database file is never held: a checkpoint that stops short of
** the WAL's end (a writer appending beside it) records what it copied without a sync, and
** readers then read those pages from the file at once.
*/

#define GATHER_MAX (4u << 20) /* held at most: beyond, written out at once */
#define KEEP_MAX   (1u << 20) /* a buffer larger than this is freed once written out */

typedef struct {
    sqlite3_file base;  /* our methods */
    sqlite3_file *real; /* the file of the VFS beneath, in the same allocation */
    int wal;            /* a WAL file: gathered while commits sync */
    char *buf;          /* owned: what is held, for offsets [at, at + len) */
    size_t len, cap;
    sqlite3_int64 at;
} gfile_t;

static sqlite3_vfs gather_vfs;
static sqlite3_vfs *below;
static atomic_int gathering = 1;

/* The unix VFS writes at most 128 KiB - 1 bytes per call (it masks the length with
** 0x1ffff, and a write of exactly 128 KiB would be taken as a full disk). */
#define WRITE_MAX (124u * 1024)

/* Writes out what is held; SQLITE_OK, or the error of the write beneath. */
static int flush(gfile_t *g)
{
    int rc = SQLITE_OK;
    for (size_t o = 0; o < g->len && rc == SQLITE_OK; o += WRITE_MAX) {
        size_t n = g->len - o < WRITE_MAX ? g->len - o : WRITE_MAX;
        rc = g->real->pMethods->xWrite(g->real, g->buf + o, (int)n, g->at + (sqlite3_int64)o);
    }
    g->len = 0;
    if (g->cap > KEEP_MAX) { /* a big event's commit: not kept for the small ones after it */
        free(g->buf);
        g->buf = NULL;
        g->cap = 0;
    }
    return rc;
}

static int g_close(sqlite3_file *f)
{
    gfile_t *g = (gfile_t *)f;
    int rc = flush(g);
    int rc2 = g->real->pMethods->xClose(g->real);
    free(g->buf);
    g->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int g_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    gfile_t *g = (gfile_t *)f;
    int rc = flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xRead(g->real, p, n, off);
}

static int g_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    gfile_t *g = (gfile_t *)f;
    if (!g->wal || !atomic_load(&gathering)) {
        int rc = flush(g);
        return rc != SQLITE_OK ? rc : g->real->pMethods->xWrite(g->real, p, n, off);
    }
    if (g->len > 0 && (off != g->at + (sqlite3_int64)g->len || g->len + (size_t)n > GATHER_MAX)) {
        int rc = flush(g);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (g->len + (size_t)n > g->cap) {
        size_t cap = g->cap ? g->cap : 64 * 1024;
        while (cap < g->len + (size_t)n)
            cap *= 2;
        char *b = realloc(g->buf, cap);
        if (b == NULL) { /* no room to gather: write through */
            int rc = flush(g);
            return rc != SQLITE_OK ? rc : g->real->pMethods->xWrite(g->real, p, n, off);
        }
        g->buf = b, g->cap = cap;
    }
    if (g->len == 0)
        g->at = off;
    memcpy(g->buf + g->len, p, (size_t)n);
    g->len += (size_t)n;
    return SQLITE_OK;
}

static int g_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    gfile_t *g = (gfile_t *)f;
    int rc = flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xTruncate(g->real, size);
}

static int g_sync(sqlite3_file *f, int flags)
{
    gfile_t *g = (gfile_t *)f;
    int rc = flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xSync(g->real, flags);
}

static int g_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    gfile_t *g = (gfile_t *)f;
    int rc = flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xFileSize(g->real, size);
}

/* The rest pass through: locks are the database file's, which holds nothing. */
static int g_lock(sqlite3_file *f, int l)
{
    return ((gfile_t *)f)->real->pMethods->xLock(((gfile_t *)f)->real, l);
}
static int g_unlock(sqlite3_file *f, int l)
{
    return ((gfile_t *)f)->real->pMethods->xUnlock(((gfile_t *)f)->real, l);
}
static int g_check_reserved(sqlite3_file *f, int *out)
{
    return ((gfile_t *)f)->real->pMethods->xCheckReservedLock(((gfile_t *)f)->real, out);
}
static int g_file_control(sqlite3_file *f, int op, void *arg)
{
    return ((gfile_t *)f)->real->pMethods->xFileControl(((gfile_t *)f)->real, op, arg);
}
static int g_sector_size(sqlite3_file *f)
{
    return ((gfile_t *)f)->real->pMethods->xSectorSize(((gfile_t *)f)->real);
}
static int g_device(sqlite3_file *f)
{
    return ((gfile_t *)f)->real->pMethods->xDeviceCharacteristics(((gfile_t *)f)->real);
}
static int g_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmMap(r, pg, pgsz, extend, pp)
                                      : SQLITE_IOERR_SHMMAP;
}
static int g_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmLock(r, offset, n, flags)
                                      : SQLITE_IOERR_SHMLOCK;
}
static void g_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    if (r->pMethods->iVersion >= 2)
        r->pMethods->xShmBarrier(r);
}
static int g_shm_unmap(sqlite3_file *f, int del)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    return r->pMethods->iVersion >= 2 ? r->pMethods->xShmUnmap(r, del) : SQLITE_OK;
}
static int g_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    *pp = NULL;
    return r->pMethods->iVersion >= 3 ? r->pMethods->xFetch(r, off, n, pp) : SQLITE_OK;
}
static int g_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = ((gfile_t *)f)->real;
    return r->pMethods->iVersion >= 3 ? r->pMethods->xUnfetch(r, off, p) : SQLITE_OK;
}

static const sqlite3_io_methods gather_methods = {
    3,           g_close,   g_read,     g_write,          g_truncate,     g_sync,
    g_file_size, g_lock,    g_unlock,   g_check_reserved, g_file_control, g_sector_size,
    g_device,    g_shm_map, g_shm_lock, g_shm_barrier,    g_shm_unmap,    g_fetch,
    g_unfetch,
};

static int g_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
                  int *out_flags)
{
    gfile_t *g = (gfile_t *)f;
    (void)vfs;
    memset(g, 0, sizeof(*g));
    g->real = (sqlite3_file *)(g + 1);
    g->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = below->xOpen(below, name, g->real, flags, out_flags);
    /* SQLite closes a file whose methods are set, even when opening failed */
    g->base.pMethods = g->real->pMethods != NULL ? &gather_methods : NULL;
    return rc;
}

/* The VFS's other calls are the one beneath's. */
static int g_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return below->xDelete(below, name, sync_dir);
}
static int g_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return below->xAccess(below, name, flags, out);
}
static int g_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return below->xFullPathname(below, name, n, out);
}
static void *g_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return below->xDlOpen(below, name);
}
static void g_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    below->xDlError(below, n, msg);
}
static void (*g_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return below->xDlSym(below, h, sym);
}
static void g_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    below->xDlClose(below, h);
}
static int g_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return below->xRandomness(below, n, out);
}
static int g_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return below->xSleep(below, us);
}
static int g_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return below->xCurrentTime(below, out);
}
static int g_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return below->xGetLastError ? below->xGetLastError(below, n, out) : 0;
}
static int g_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return below->xCurrentTimeInt64(below, out);
}

const char *lh_wal_gather_vfs(void)
{
    static int registered;
    if (registered)
        return LH_WAL_GATHER_VFS;
    below = sqlite3_vfs_find(NULL);
    if (below == NULL || below->iVersion < 2)
        return NULL; /* the default VFS: SQLite's own */
    gather_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(gfile_t) + below->szOsFile,
        .mxPathname = below->mxPathname,
        .zName = LH_WAL_GATHER_VFS,
        .xOpen = g_open,
        .xDelete = g_delete,
        .xAccess = g_access,
        .xFullPathname = g_full_pathname,
        .xDlOpen = g_dl_open,
        .xDlError = g_dl_error,
        .xDlSym = g_dl_sym,
        .xDlClose = g_dl_close,
        .xRandomness = g_randomness,
        .xSleep = g_sleep,
        .xCurrentTime = g_current_time,
        .xGetLastError = g_last_error,
        .xCurrentTimeInt64 = g_current_time64,
    };
    if (sqlite3_vfs_register(&gather_vfs, 0) != SQLITE_OK)
        return NULL;
    registered = 1;
    return LH_WAL_GATHER_VFS;
}

void lh_wal_gather_set(int on)
{
    atomic_store(&gathering, on != 0);
}
