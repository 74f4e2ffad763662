/* test_wal_gather.c - the VFS that gathers a commit's WAL writes: what reaches the file
 * beneath (a counting VFS registered as the default before it) is a few large writes per
 * commit, the data reads back whole through another connection, and with gathering off
 * (synchronous = NORMAL) every frame goes straight down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "test.h"
#include "wal_gather.h"

static sqlite3_vfs counting, *os_vfs;
static sqlite3_io_methods counting_methods;
static int wal_writes, wal_syncs;

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int wal;
} cfile_t;

#define REAL(f) (((cfile_t *)(f))->real)

static int c_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int c_read(sqlite3_file *f, void *p, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, o);
}
static int c_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 o)
{
    wal_writes += ((cfile_t *)f)->wal;
    return REAL(f)->pMethods->xWrite(REAL(f), p, n, o);
}
static int c_truncate(sqlite3_file *f, sqlite3_int64 n)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), n);
}
static int c_sync(sqlite3_file *f, int flags)
{
    wal_syncs += ((cfile_t *)f)->wal;
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int c_size(sqlite3_file *f, sqlite3_int64 *n)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), n);
}
static int c_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int c_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int c_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int c_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int c_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int c_device(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int c_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int c_shm_lock(sqlite3_file *f, int o, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), o, n, flags);
}
static void c_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int c_shm_unmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int c_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags, int *out)
{
    cfile_t *c = (cfile_t *)f;
    (void)v;
    memset(c, 0, sizeof(*c));
    c->real = (sqlite3_file *)(c + 1);
    c->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = os_vfs->xOpen(os_vfs, name, c->real, flags, out);
    if (c->real->pMethods != NULL) {
        counting_methods = (sqlite3_io_methods){
            2,          c_close,       c_read,      c_write, c_truncate, c_sync,   c_size,
            c_lock,     c_unlock,      c_reserved,  c_fcntl, c_sector,   c_device, c_shm_map,
            c_shm_lock, c_shm_barrier, c_shm_unmap, NULL,    NULL,
        };
        c->base.pMethods = &counting_methods;
    }
    return rc;
}

static void register_counting(void)
{
    os_vfs = sqlite3_vfs_find(NULL);
    counting = *os_vfs;
    counting.zName = "counting";
    counting.szOsFile = (int)sizeof(cfile_t) + os_vfs->szOsFile;
    counting.xOpen = c_open;
    CHECK(sqlite3_vfs_register(&counting, 1) == SQLITE_OK); /* the default, under gather */
}

static char path[128];

static sqlite3 *open_db(const char *vfs)
{
    sqlite3 *db = NULL;
    CHECK(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) == SQLITE_OK);
    return db;
}

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, msg ? msg : "?");
        CHECK(0);
    }
    sqlite3_free(msg);
}

/* One commit of `rows` rows of 5 KB; returns the WAL writes it made below. */
static int commit_rows(sqlite3 *db, int first, int rows)
{
    char sql[160];
    int before = wal_writes;
    exec(db, "BEGIN");
    for (int i = 0; i < rows; i++) {
        snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(5000))", first + i);
        exec(db, sql);
    }
    exec(db, "COMMIT");
    return wal_writes - before;
}

static int64_t scalar(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void test_gathered_and_whole(void)
{
    const char *vfs = lh_wal_gather_vfs();
    CHECK(vfs != NULL);
    sqlite3 *w = open_db(vfs);
    exec(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
            "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    lh_wal_gather_set(1);
    int syncs = wal_syncs;
    /* 50 rows of 5 KB: about 75 frames, two writes each without gathering */
    int gathered = commit_rows(w, 0, 50);
    CHECK(gathered >= 1);
    CHECK(gathered <= 4); /* 124 KiB at a time: ~300 KiB */
    CHECK(wal_syncs > syncs);
    /* what a reader sees, through its own connection and file, is every row */
    sqlite3 *r = open_db(NULL);
    CHECK_EQ_INT(scalar(r, "SELECT count(*) FROM t"), 50);
    CHECK_EQ_INT(scalar(r, "SELECT sum(length(v)) FROM t"), 50 * 5000);

    /* NORMAL: a commit has no sync, so nothing may wait here for one */
    exec(w, "PRAGMA synchronous = NORMAL");
    lh_wal_gather_set(0);
    int straight = commit_rows(w, 50, 50);
    CHECK(straight >= 100);
    CHECK_EQ_INT(scalar(r, "SELECT count(*) FROM t"), 100);

    /* a checkpoint's database writes go through it too, and the file stays whole */
    exec(w, "PRAGMA synchronous = FULL");
    lh_wal_gather_set(1);
    CHECK(commit_rows(w, 100, 20) <= 2);
    exec(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(r);
    sqlite3_close(w);
    sqlite3 *again = open_db(NULL);
    CHECK_EQ_INT(scalar(again, "SELECT count(*) FROM t"), 120);
    sqlite3_stmt *s = NULL;
    CHECK(sqlite3_prepare_v2(again, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(s, 0), "ok");
    sqlite3_finalize(s);
    sqlite3_close(again);
}

int main(void)
{
    char cmd[512];
    snprintf(path, sizeof(path), "/tmp/lh_test_wal_gather.%d.db", (int)getpid());
    register_counting();
    RUN_TEST(test_gathered_and_whole);
    snprintf(cmd, sizeof(cmd), "rm -f %s %s-wal %s-shm", path, path, path);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    return TEST_SUMMARY();
}
