/* jlog_util.h - helpers of the log's unit tests (test_jlog.c, test_jlog_direct.c). Included
 * after the test defines rec_t: type, meta, meta_len, body, body_len (what is appended) and
 * done, order, status, at, body_at, end (what `done` said). */
#ifndef LH_TEST_JLOG_UTIL_H
#define LH_TEST_JLOG_UTIL_H

static int n_done; /* `done` calls so far */

static void on_done(void *data, lh_jlog_rec_t *r)
{
    rec_t *w = data;
    w->done++;
    w->order = n_done++;
    w->status = r->status;
    w->at = r->at;
    w->body_at = r->body_at;
    w->end = lh_jlog_rec_end(r);
    free(r);
}

static void append(lh_jlog_t *log, rec_t *w)
{
    lh_jlog_rec_t *r = lh_jlog_rec_new(w->type, w->meta_len);
    CHECK(r != NULL);
    if (r == NULL)
        return;
    memcpy(r->meta, w->meta, w->meta_len);
    r->body = w->body;
    r->body_len = w->body_len;
    r->done = on_done;
    r->data = w;
    lh_jlog_append(log, r);
}

/* Runs `loop` until `n_done` reaches `want` (10 s at most: a lost callback fails, not hangs).
 * 0, or -1 (checked, failed). */
static int run_until(uv_loop_t *loop, int want)
{
    for (int i = 0; i < 10000 && n_done < want; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (n_done < want)
            usleep(1000);
    }
    CHECK_EQ_INT(n_done, want);
    return n_done == want ? 0 : -1;
}

/* Stops the log, lets the loop (if any) close its handles, frees both. */
static void close_all(lh_jlog_t *log, uv_loop_t *loop)
{
    lh_jlog_stop(log);
    if (loop != NULL) {
        uv_run(loop, UV_RUN_DEFAULT);
        CHECK_EQ_INT(uv_loop_close(loop), 0);
    }
    lh_jlog_free(log);
}

static void make_dir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/lh_test_jlog.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
}

static void remove_dir(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

#endif
