/* test_state.c - the state folder's database: creation, schema steps, refusals that leave
 * the file untouched, the writer's group commit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state.h"
#include "test.h"

static char dir[256];

static void fresh_dir(void)
{
    char cmd[300];
    snprintf(dir, sizeof(dir), "/tmp/lh_test_state.%d", (int)getpid());
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    *len = 0;
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n)
        *len = (size_t)n;
    fclose(f);
    return buf;
}

static int64_t pragma(lh_state_t *st, const char *sql)
{
    sqlite3_stmt *s;
    int64_t v = -1;
    if (sqlite3_prepare_v2(lh_state_db(st), sql, -1, &s, NULL) == SQLITE_OK &&
        sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

typedef struct {
    int n;
    char seen[8][64];
    lh_state_row_t last;
    int64_t sum;
} rows_t;

static int on_row(void *data, const lh_state_row_t *r)
{
    rows_t *rs = data;
    if (rs->n < 8)
        snprintf(rs->seen[rs->n], sizeof(rs->seen[0]), "%s:%s", r->ns, r->key);
    rs->n++;
    if (r->type == LH_SV_INT)
        rs->sum += r->i;
    return 0;
}

static void test_create(void)
{
    char err[512];
    lh_state_t *st;
    fresh_dir();
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    CHECK_EQ_INT(pragma(st, "PRAGMA user_version"), lh_state_schema_version());
    CHECK_EQ_INT(pragma(st, "PRAGMA auto_vacuum"), 2); /* incremental */
    sqlite3_stmt *s;
    CHECK(sqlite3_prepare_v2(lh_state_db(st), "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(s) == SQLITE_ROW);
    CHECK_STR((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    /* queued before the writer starts: committed at stop */
    lh_state_row_t r = {.ns = "a.lua", .key = "n", .type = LH_SV_INT, .i = 41};
    CHECK(lh_state_put(st, &r) == 1);
    r.key = "s", r.type = LH_SV_STRING, r.bytes = "x\0y", r.len = 3;
    CHECK(lh_state_put(st, &r) == 2);
    lh_state_stop(st);
    lh_state_free(st);

    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    rows_t rs = {0};
    CHECK(lh_state_load_store(st, 0, on_row, &rs, err, sizeof(err)) == 0);
    CHECK_EQ_INT(rs.n, 2);
    CHECK_EQ_INT(rs.sum, 41);
    lh_state_stop(st);
    lh_state_free(st);
}

/* A database made by step 1 of the schema list upgrades, keeping its rows. */
static void test_upgrade(void)
{
    char err[512];
    lh_state_t *st;
    fresh_dir();
    CHECK(lh_state_open_upto(&st, dir, 1, err, sizeof(err)) == 0);
    CHECK_EQ_INT(pragma(st, "PRAGMA user_version"), 1);
    CHECK(sqlite3_exec(lh_state_db(st), "INSERT INTO store VALUES ('a.lua', 'old', 2, 7, NULL)", 0,
                       0, 0) == SQLITE_OK);
    lh_state_stop(st);
    lh_state_free(st);
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    CHECK_EQ_INT(pragma(st, "PRAGMA user_version"), lh_state_schema_version());
    CHECK_EQ_INT(pragma(st, "SELECT count(*) FROM store_changes"), 0);
    rows_t rs = {0};
    CHECK(lh_state_load_store(st, 0, on_row, &rs, err, sizeof(err)) == 0);
    CHECK_EQ_INT(rs.n, 1);
    CHECK_EQ_INT(rs.sum, 7);
    lh_state_stop(st);
    lh_state_free(st);
}

/* Refusals: a newer schema, a file that is not a database. Not a byte changes. */
static void test_refusals(void)
{
    char err[512], path[300];
    lh_state_t *st;
    size_t n0, n1;
    fresh_dir();
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    CHECK(sqlite3_exec(lh_state_db(st), "PRAGMA user_version = 99", 0, 0, 0) == SQLITE_OK);
    lh_state_stop(st);
    lh_state_free(st);
    snprintf(path, sizeof(path), "%s/%s", dir, LH_STATE_DB_NAME);
    char *before = slurp(path, &n0);
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) != 0);
    CHECK(strstr(err, "schema version 99, newer than this luahook knows") != NULL);
    char *after = slurp(path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before), free(after);

    FILE *f = fopen(path, "wb");
    for (int i = 0; i < 4096; i++)
        fputc("garbage!"[i % 8], f);
    fclose(f);
    before = slurp(path, &n0);
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) != 0);
    CHECK(strstr(err, "file is not a database") != NULL);
    CHECK(strstr(err, path) != NULL);
    after = slurp(path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(before), free(after);
}

static int flushed, flush_status = -1;

static void on_flushed(void *data, int status)
{
    (void)data;
    flushed++;
    flush_status = status;
}

static void on_keep(uv_timer_t *t)
{
    (void)t;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* The writer: many writes from the loop, one flush, committed in few transactions. */
static void test_writer(void)
{
    char err[512], key[32];
    lh_state_t *st;
    uv_loop_t loop;
    fresh_dir();
    CHECK(uv_loop_init(&loop) == 0);
    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    CHECK(lh_state_start(st, &loop, NULL) == 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        lh_state_row_t r = {.ns = "w.lua", .key = key, .type = LH_SV_INT, .i = 1};
        CHECK(lh_state_put(st, &r) != 0);
    }
    CHECK(lh_state_delete(st, "w.lua", "k0") != 0);
    CHECK(lh_state_flush(st, on_flushed, NULL) == 0);
    uv_timer_t keep; /* the async handle is unref'd: something must keep the loop alive */
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, on_keep, 10, 10);
    while (flushed == 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&keep);
    CHECK_EQ_INT(flush_status, 0);
    lh_state_stats_t stats;
    lh_state_stats(st, &stats);
    CHECK_EQ_INT(stats.ops, 5001);
    CHECK(stats.commits >= 1 && stats.commits < 5001);
    printf("  writer: %llu ops in %llu commits (largest %llu)\n", (unsigned long long)stats.ops,
           (unsigned long long)stats.commits, (unsigned long long)stats.max_batch);
    lh_state_stop(st);
    uv_walk(&loop, walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
    lh_state_free(st);

    CHECK(lh_state_open(&st, dir, err, sizeof(err)) == 0);
    rows_t rs = {0};
    CHECK(lh_state_load_store(st, 0, on_row, &rs, err, sizeof(err)) == 0);
    CHECK_EQ_INT(rs.n, 4999);
    lh_state_stop(st);
    lh_state_free(st);
}

int main(void)
{
    RUN_TEST(test_create);
    RUN_TEST(test_upgrade);
    RUN_TEST(test_refusals);
    RUN_TEST(test_writer);
    fresh_dir();
    return TEST_SUMMARY();
}
