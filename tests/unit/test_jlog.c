/* test_jlog.c - the journal's append-only log: CRC-32C (both paths), records written by the
 * thread and on the caller, read back by scan and read, torn tails, segment rotation and
 * numbering, and batches whose write fails. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "jlog.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

/* A record as the test means it, and what `done` (or scan) said of it. */
typedef struct {
    uint32_t type;
    unsigned char meta[16];
    uint32_t meta_len;
    char *body;
    size_t body_len;
    int done;  /* times `done` ran */
    int order; /* `done` calls before this one's */
    int status;
    uint64_t at, body_at, end;
} rec_t;

#include "jlog_util.h"


/* Record `i` with a body of `len` bytes; every fifth has no meta, every third is an END. */
static void set_rec(rec_t *w, int i, size_t len)
{
    memset(w, 0, sizeof(*w));
    w->type = LH_JLOG_EVENT; /* a batch writes its ENDs first: tests that mix say so */
    w->meta_len = i % 5 == 4 ? 0 : (uint32_t)snprintf((char *)w->meta, sizeof(w->meta), "m%d", i);
    w->body = malloc(len ? len : 1);
    w->body_len = len;
    for (size_t k = 0; k < len; k++)
        w->body[k] = (char)(i * 7 + k * 13 + 1);
}

static void free_recs(rec_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].body);
}


static void seg_path(const char *dir, uint32_t seg, char *buf, size_t len)
{
    lh_jlog_segment_path(dir, seg, buf, len);
}

static long long file_size(const char *dir, uint32_t seg)
{
    char path[512];
    struct stat sb;
    seg_path(dir, seg, path, sizeof(path));
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* The sum of the sizes of the segments lh_jlog_segments lists; their count in *n. */
static long long segs_size(const char *dir, size_t *n)
{
    char err[256];
    uint32_t *segs;
    long long sum = 0;
    CHECK_EQ_INT(lh_jlog_segments(dir, &segs, n, err, sizeof(err)), 0);
    for (size_t i = 0; i < *n; i++)
        sum += file_size(dir, segs[i]);
    free(segs);
    return sum;
}

/* Opens a log in `dir` and writes `n` records on the caller (not started). */
static lh_jlog_t *write_sync(const char *dir, uint64_t seg_max, rec_t *v, size_t n)
{
    lh_jlog_t *log;
    char err[256];
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, seg_max, err, sizeof(err)), 0);
    for (size_t i = 0; i < n; i++)
        append(log, &v[i]);
    return log;
}

/* Records found by scan, copied. */
typedef struct {
    rec_t *v;
    size_t n, cap;
    size_t stop_after; /* 0: never */
} found_t;

static int null_found; /* records found with a NULL meta or body */

static int collect(void *data, const lh_jlog_found_t *f)
{
    found_t *s = data;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
    }
    rec_t *g = &s->v[s->n++];
    memset(g, 0, sizeof(*g));
    g->type = f->type;
    g->meta_len = (uint32_t)f->meta_len;
    null_found += f->meta == NULL || f->body == NULL;
    /* (memcpy must not see a NULL, even for 0 bytes) */
    if (f->meta_len && f->meta_len <= sizeof(g->meta))
        memcpy(g->meta, f->meta, f->meta_len);
    g->body = malloc(f->body_len ? f->body_len : 1);
    if (f->body_len)
        memcpy(g->body, f->body, f->body_len);
    g->body_len = f->body_len;
    g->at = f->at;
    g->body_at = f->body_at;
    g->end = f->end;
    return s->stop_after && s->n == s->stop_after ? 7 : 0;
}

static int same(const rec_t *g, const rec_t *w)
{
    return g->type == w->type && g->meta_len == w->meta_len &&
           memcmp(g->meta, w->meta, w->meta_len) == 0 && g->body_len == w->body_len &&
           (w->body_len == 0 || memcmp(g->body, w->body, w->body_len) == 0) && g->at == w->at &&
           g->body_at == w->body_at && g->end == w->end;
}

/* Scans `dir` from `from`: exactly the records `want[0..n)` come back, in order. */
static void check_scan(const char *dir, uint64_t from, const rec_t *want, size_t n, int line)
{
    found_t s = {0};
    char err[256];
    int rc = lh_jlog_scan(dir, from, collect, &s, NULL, err, sizeof(err));
    if (rc != 0 || s.n != n)
        TEST_FAILED_("line %d: scan from %llx: rc %d, %zu records, want %zu", line,
                     (unsigned long long)from, rc, s.n, n);
    for (size_t i = 0; i < s.n && i < n; i++)
        if (!same(&s.v[i], &want[i]))
            TEST_FAILED_("line %d: scan from %llx: record %zu differs (at %llx, want %llx)", line,
                         (unsigned long long)from, i, (unsigned long long)s.v[i].at,
                         (unsigned long long)want[i].at);
    free_recs(s.v, s.n);
    free(s.v);
}

#define CHECK_SCAN(dir, from, want, n) check_scan(dir, from, want, n, __LINE__)

/* ------------------------------------------------------------------ CRC-32C */

/* Bit by bit, straight from the definition (reflected 0x1EDC6F41). */
static uint32_t crc_ref(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

/* The known check value, every alignment and length 0..100 against the reference, and a
 * CRC continued at every split equal to the one-shot. */
static void crc_checks(void)
{
    unsigned char buf[128];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 131 + 17);
    CHECK_EQ_INT(lh_jlog_crc(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(lh_jlog_crc(0, "", 0), 0);
    CHECK_EQ_INT(lh_jlog_crc(0x12345678u, "", 0), 0x12345678u);
    int bad = 0;
    for (size_t a = 0; a < 8; a++)
        for (size_t n = 0; n <= 100; n++)
            bad += lh_jlog_crc(0, buf + a, n) != crc_ref(buf + a, n);
    CHECK_EQ_INT(bad, 0);
    for (size_t n = 0; n <= 100; n++)
        for (size_t k = 0; k <= n; k++)
            bad += lh_jlog_crc(lh_jlog_crc(0, buf + 1, k), buf + 1 + k, n - k) !=
                   lh_jlog_crc(0, buf + 1, n);
    CHECK_EQ_INT(bad, 0);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* libgcc's (and compiler-rt's) CPU model, which jlog's __builtin_cpu_supports("sse4.2")
 * reads. Not called here: clang 14 crashes on the builtin beside this declaration. */
#define SSE42_BIT (1u << 8)
struct lh_cpu_model {
    unsigned int vendor, type, subtype;
    unsigned int features[1];
};
extern struct lh_cpu_model __cpu_model;
#endif

/* The table path, in a child that hides SSE4.2 before jlog's first CRC (it picks its path
 * once). Runs first, while this process has not picked yet. */
static void test_crc_software(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        __cpu_model.features[0] &= ~SSE42_BIT;
        test_state.cur_failed = 0;
        crc_checks();
        _exit(test_state.cur_failed ? 1 : 0);
    }
    int st = 0;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
#else
    crc_checks(); /* the only path */
#endif
}

static void test_crc(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (!(__cpu_model.features[0] & SSE42_BIT))
        printf("note: no SSE4.2, the hardware CRC path is not tested\n");
#endif
    crc_checks();
}

/* ------------------------------------------------------------------ writing and reading */

#define N_ROUND 600 /* over 255 records of 4 iovecs: a batch takes several pwritev */

static void test_round_trip(void)
{
    char dir[64], err[256];
    static rec_t v[N_ROUND];
    make_dir(dir, sizeof(dir));
    set_rec(&v[0], 2, 0); /* an END with no body first: scan starts with an empty buffer */
    v[0].meta_len = 0;
    for (int i = 1; i < N_ROUND; i++)
        set_rec(&v[i], i, (size_t)(i * 37) % 301); /* 0, odd, aligned lengths */

    lh_jlog_t *log;
    uv_loop_t loop;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, 0, err, sizeof(err)), 0);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, 1);
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    n_done = 0;
    for (int i = 0; i < N_ROUND; i++)
        append(log, &v[i]);
    run_until(&loop, N_ROUND);

    int bad = 0;
    for (int i = 0; i < N_ROUND; i++) {
        rec_t *w = &v[i];
        bad += w->done != 1 || w->order != i || w->status != 0 || w->at >> 32 != 1 ||
               w->body_at != w->at + LH_JLOG_HEADER + w->meta_len || w->end % 8 != 0;
        /* contiguous: each record starts where the one before ends */
        bad += i == 0 ? w->at != ((uint64_t)1 << 32 | LH_JLOG_HEADER) : w->at != v[i - 1].end;
        char buf[512];
        if (lh_jlog_read(dir, w->body_at, buf, w->body_len, err, sizeof(err)) != 0 ||
            memcmp(buf, w->body, w->body_len) != 0)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, file_size(dir, 1));
    CHECK_EQ_INT(file_size(dir, 1), (long long)(uint32_t)v[N_ROUND - 1].end);
    close_all(log, &loop);

    uint32_t last = 0;
    found_t s = {0};
    null_found = 0;
    CHECK_EQ_INT(lh_jlog_scan(dir, 0, collect, &s, &last, err, sizeof(err)), 0);
    CHECK_EQ_INT(last, 1);
    CHECK_EQ_INT(s.n, N_ROUND);
    /* an empty record met first still has meta and body pointers (no arithmetic on NULL:
     * clang's UBSan aborted here once) */
    CHECK_EQ_INT(null_found, 0);
    free_recs(s.v, s.n);
    free(s.v);
    CHECK_SCAN(dir, 0, v, N_ROUND);
    for (int k = 0; k < N_ROUND; k += 97)
        CHECK_SCAN(dir, v[k].end, v + k + 1, (size_t)(N_ROUND - k - 1));
    CHECK_SCAN(dir, v[N_ROUND - 1].end, v, 0);
    CHECK_SCAN(dir, (uint64_t)2 << 32, v, 0); /* a segment past the last */

    /* `fn`'s non-zero stops the scan and is returned */
    found_t s3 = {.stop_after = 3};
    CHECK_EQ_INT(lh_jlog_scan(dir, 0, collect, &s3, NULL, err, sizeof(err)), 7);
    CHECK_EQ_INT(s3.n, 3);
    free_recs(s3.v, s3.n);
    free(s3.v);

    free_recs(v, N_ROUND);
    remove_dir(dir);
}

/* A batch writes its runs' ENDs first, then its EVENTs, each kind in the order queued, and
 * `done` runs in the order written: the index then finds each event's END before the next
 * batch's events (journal.c). */
static void test_ends_first(void)
{
    enum { N = 6 };
    static const uint32_t types[N] = {LH_JLOG_EVENT, LH_JLOG_END,   LH_JLOG_EVENT,
                                      LH_JLOG_END,   LH_JLOG_EVENT, LH_JLOG_END};
    static const int written[N] = {1, 3, 5, 0, 2, 4}; /* indexes into v, in the log's order */
    char dir[64], err[256];
    rec_t v[N], w[N];
    make_dir(dir, sizeof(dir));
    for (int i = 0; i < N; i++)
        set_rec(&v[i], i, 100 + (size_t)i), v[i].type = types[i];
    lh_jlog_t *log;
    uv_loop_t loop;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, 0, err, sizeof(err)), 0);
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    n_done = 0;
    for (int i = 0; i < N; i++) /* one turn of the loop: one batch */
        append(log, &v[i]);
    run_until(&loop, N);
    CHECK_EQ_INT(lh_jlog_stats(log).batches, 1);
    for (int k = 0; k < N; k++) {
        rec_t *r = &v[written[k]];
        CHECK_EQ_INT(r->status, 0);
        CHECK_EQ_INT(r->order, k);
        CHECK(k == 0 ? r->at == ((uint64_t)1 << 32 | LH_JLOG_HEADER)
                     : r->at == v[written[k - 1]].end);
        w[k] = *r;
    }
    close_all(log, &loop);
    CHECK_SCAN(dir, 0, w, N);
    free_recs(v, N);
    remove_dir(dir);
}

/* Before the start and after the stop, `done` runs inside the append. */
static void test_sync_append(void)
{
    char dir[64], err[256];
    rec_t v[3];
    make_dir(dir, sizeof(dir));
    for (int i = 0; i < 3; i++)
        set_rec(&v[i], i, 10 + (size_t)i);
    lh_jlog_t *log;
    uv_loop_t loop;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 0, 0, err, sizeof(err)), 0);
    n_done = 0;
    append(log, &v[0]);
    CHECK_EQ_INT(v[0].done, 1);
    CHECK_EQ_INT(v[0].status, 0);

    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    append(log, &v[1]);
    run_until(&loop, 2);
    lh_jlog_stop(log);
    append(log, &v[2]);
    CHECK_EQ_INT(v[2].done, 1);
    CHECK_EQ_INT(v[2].status, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    lh_jlog_free(log);

    CHECK(v[1].at == v[0].end && v[2].at == v[1].end);
    CHECK_SCAN(dir, 0, v, 3);
    free_recs(v, 3);
    remove_dir(dir);
}

/* Rewrites `len` bytes at `off` of segment `seg`. */
static void poke(const char *dir, uint32_t seg, uint64_t off, const void *p, size_t len)
{
    char path[512];
    seg_path(dir, seg, path, sizeof(path));
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK(fseek(f, (long)off, SEEK_SET) == 0);
    CHECK(fwrite(p, 1, len, f) == len);
    fclose(f);
}

static void copy_bytes(const char *dir, uint32_t from_seg, uint64_t from, uint32_t to_seg,
                       uint64_t to, size_t len)
{
    char path[512], buf[256];
    CHECK(len <= sizeof(buf));
    if (len > sizeof(buf))
        return;
    seg_path(dir, from_seg, path, sizeof(path));
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK(fseek(f, (long)from, SEEK_SET) == 0);
    CHECK(fread(buf, 1, len, f) == len);
    fclose(f);
    poke(dir, to_seg, to, buf, len);
}

static void cut(const char *dir, uint32_t seg, uint64_t size)
{
    char path[512];
    seg_path(dir, seg, path, sizeof(path));
    CHECK(truncate(path, (off_t)size) == 0);
}

/* A torn tail hides the last record and what follows in its segment, never what is before,
 * nor a later segment. */
static void test_torn_tail(void)
{
    char dir[64];
    rec_t v[7];
    for (int i = 0; i < 7; i++)
        set_rec(&v[i], i, 40 + (size_t)i * 9);

    /* cut in the middle of the last body, of its header, in its padding */
    uint64_t cuts[3];
    for (int c = 0; c < 3; c++) {
        make_dir(dir, sizeof(dir));
        close_all(write_sync(dir, 0, v, 5), NULL);
        uint32_t at = (uint32_t)v[4].at;
        cuts[0] = (uint32_t)v[4].body_at + 3, cuts[1] = at + 5, cuts[2] = (uint32_t)v[4].end - 1;
        cut(dir, 1, cuts[c]);
        /* the padding is not part of the record: cut there, it stays */
        CHECK_SCAN(dir, 0, v, c == 2 ? 5 : 4);
        remove_dir(dir);
    }

    /* a flipped byte of the last body; then one of the third record's meta */
    make_dir(dir, sizeof(dir));
    close_all(write_sync(dir, 0, v, 5), NULL);
    unsigned char x = (unsigned char)(v[4].body[7] ^ 0x20);
    poke(dir, 1, (uint32_t)v[4].body_at + 7, &x, 1);
    CHECK_SCAN(dir, 0, v, 4);
    x = v[2].meta[0] ^ 1;
    poke(dir, 1, (uint32_t)v[2].at + LH_JLOG_HEADER, &x, 1);
    CHECK_SCAN(dir, 0, v, 2);
    /* a length past the file's end */
    unsigned char big[4] = {0xff, 0xff, 0, 0};
    poke(dir, 1, (uint32_t)v[1].at, big, 4);
    CHECK_SCAN(dir, 0, v, 1);

    /* the next open writes a fresh segment 2, scanned after the torn segment 1 */
    lh_jlog_t *log = write_sync(dir, 0, v + 5, 2);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, 2);
    close_all(log, NULL);
    CHECK(v[5].at == ((uint64_t)2 << 32 | LH_JLOG_HEADER));
    rec_t both[3] = {v[0], v[5], v[6]};
    CHECK_SCAN(dir, 0, both, 3);
    remove_dir(dir);

    /* a whole record's bytes elsewhere, in its segment or the next, are not valid there:
     * the CRC covers the record's place */
    rec_t c[4];
    for (int i = 0; i < 4; i++)
        set_rec(&c[i], i, 64); /* the same size */
    make_dir(dir, sizeof(dir));
    close_all(write_sync(dir, 0, c, 3), NULL);
    size_t len = (size_t)(c[0].end - c[0].at);
    copy_bytes(dir, 1, (uint32_t)c[0].at, 1, (uint32_t)c[2].at, len);
    CHECK_SCAN(dir, 0, c, 2);
    close_all(write_sync(dir, 0, c + 3, 1), NULL);
    copy_bytes(dir, 1, (uint32_t)c[0].at, 2, (uint32_t)c[3].at, len);
    CHECK_SCAN(dir, 0, c, 2);
    free_recs(c, 4);
    remove_dir(dir);

    /* zeros after the last record (preallocated, never written) are no record */
    make_dir(dir, sizeof(dir));
    close_all(write_sync(dir, 0, v, 5), NULL);
    static const unsigned char zeros[4096];
    poke(dir, 1, (uint32_t)v[4].end, zeros, sizeof(zeros));
    CHECK_SCAN(dir, 0, v, 5);
    /* a segment cut inside its header holds nothing, and the next is still read */
    cut(dir, 1, 10);
    close_all(write_sync(dir, 0, v + 5, 2), NULL);
    CHECK_SCAN(dir, 0, v + 5, 2);
    remove_dir(dir);
    free_recs(v, 7);
}

/* Past `seg_max` a segment is closed; records run on in the next, in order. */
static void test_rotation(void)
{
    char dir[64], err[256];
    enum { N_SYNC = 12, N_LOOP = 10 };
    static rec_t v[N_SYNC + N_LOOP];
    make_dir(dir, sizeof(dir));
    for (int i = 0; i < N_SYNC; i++)
        set_rec(&v[i], i, i % 2 ? 5000 : 700);
    for (int i = N_SYNC; i < N_SYNC + N_LOOP; i++)
        set_rec(&v[i], i, 3001);

    /* one record a batch on the caller: where each lands is known */
    n_done = 0;
    lh_jlog_t *log = write_sync(dir, 4096, v, N_SYNC);
    uint32_t seg = 1, bad = 0;
    uint64_t off = LH_JLOG_HEADER;
    for (int i = 0; i < N_SYNC; i++) {
        if (off > LH_JLOG_HEADER && off >= 4096)
            seg++, off = LH_JLOG_HEADER;
        bad += v[i].status != 0 || v[i].at != ((uint64_t)seg << 32 | off);
        off = (uint32_t)v[i].end;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(seg >= 6);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, seg);

    /* then batches from the thread */
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    for (int i = N_SYNC; i < N_SYNC + N_LOOP; i++) {
        append(log, &v[i]);
        if (i % 3 == 0)
            run_until(&loop, i + 1); /* several batches */
    }
    run_until(&loop, N_SYNC + N_LOOP);
    for (int i = N_SYNC; i < N_SYNC + N_LOOP; i++)
        bad += v[i].status != 0 || v[i].at <= v[i - 1].at;
    CHECK_EQ_INT(bad, 0);
    CHECK(v[N_SYNC + N_LOOP - 1].at >> 32 > seg);

    size_t n;
    uint64_t bytes = lh_jlog_stats(log).bytes;
    CHECK_EQ_INT(bytes, segs_size(dir, &n));
    close_all(log, &loop);

    uint32_t *segs;
    CHECK_EQ_INT(lh_jlog_segments(dir, &segs, &n, err, sizeof(err)), 0);
    CHECK_EQ_INT(n, v[N_SYNC + N_LOOP - 1].at >> 32);
    for (size_t i = 0; i < n; i++)
        bad += segs[i] != i + 1;
    CHECK_EQ_INT(bad, 0);
    free(segs);

    CHECK_SCAN(dir, 0, v, N_SYNC + N_LOOP);
    /* from the end of a segment's last record: the next segment on */
    for (int i = 0; i + 1 < N_SYNC; i++)
        if (v[i + 1].at >> 32 != v[i].at >> 32)
            CHECK_SCAN(dir, v[i].end, v + i + 1, (size_t)(N_SYNC + N_LOOP - i - 1));
    /* a segment retired: the rest still scans */
    char path[512];
    seg_path(dir, 1, path, sizeof(path));
    CHECK(unlink(path) == 0);
    int first2 = 0;
    while (v[first2].at >> 32 == 1)
        first2++;
    CHECK_SCAN(dir, 0, v + first2, (size_t)(N_SYNC + N_LOOP - first2));
    free_recs(v, N_SYNC + N_LOOP);
    remove_dir(dir);
}

/* Each open starts segment last + 1; names that are not segments are left alone. */
static void test_reopen_numbering(void)
{
    char dir[64], err[256], path[512];
    rec_t v[2];
    make_dir(dir, sizeof(dir));
    set_rec(&v[0], 0, 20);
    set_rec(&v[1], 1, 30);
    close_all(write_sync(dir, 0, v, 1), NULL);

    static const char *const junk[] = {
        "junk",    "0000000000000009.tmp",  "00000000000000AB.log", "0000000000000000.log",
        "abc.log", "000000000000000c.log~", "1000000000000000c.log"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(*junk); i++) {
        snprintf(path, sizeof(path), "%s/%s/%s", dir, LH_JLOG_DIR, junk[i]);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f)
            fclose(f);
    }
    lh_jlog_t *log;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, 0, err, sizeof(err)), 0);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, 2);
    lh_jlog_forget(log, 5);
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, file_size(dir, 1) + file_size(dir, 2) - 5);
    lh_jlog_forget(log, 1u << 30);
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, 0);
    close_all(log, NULL);

    /* an empty file in the numbering (not ours: no header) counts, and is skipped by scan */
    seg_path(dir, 6, path, sizeof(path));
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    log = write_sync(dir, 0, v + 1, 1);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, 7);
    size_t n;
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, segs_size(dir, &n));
    close_all(log, NULL);

    uint32_t *segs;
    CHECK_EQ_INT(lh_jlog_segments(dir, &segs, &n, err, sizeof(err)), 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4)
        CHECK(segs[0] == 1 && segs[1] == 2 && segs[2] == 6 && segs[3] == 7);
    free(segs);
    CHECK_SCAN(dir, 0, v, 2);
    uint32_t last = 0;
    found_t s = {0};
    CHECK_EQ_INT(lh_jlog_scan(dir, 0, collect, &s, &last, err, sizeof(err)), 0);
    CHECK_EQ_INT(last, 7);
    free_recs(s.v, s.n);
    free(s.v);
    free_recs(v, 2);
    remove_dir(dir);

    /* no journal folder yet: nothing, and no error */
    s = (found_t){0};
    CHECK_EQ_INT(lh_jlog_scan("/tmp/lh_test_jlog_none", 0, collect, &s, &last, err, sizeof(err)),
                 0);
    CHECK_EQ_INT(last, 0);
    CHECK_EQ_INT(lh_jlog_segments("/tmp/lh_test_jlog_none", &segs, &n, err, sizeof(err)), 0);
    CHECK_EQ_INT(n, 0);
    free(segs);
}

static void set_fsize(rlim_t lim)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_FSIZE, &rl) == 0);
    rl.rlim_cur = lim;
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
}

/* A batch whose write fails (EFBIG past RLIMIT_FSIZE): every record of it fails, none of
 * it reads back, and the next write goes to a fresh segment. */
static void test_write_failure(void)
{
    char dir[64], msg[512], path[512];
    rec_t v[8];
    for (int i = 0; i < 8; i++)
        set_rec(&v[i], i, i >= 2 ? 1000 : 50);
    make_dir(dir, sizeof(dir));
    struct rlimit saved;
    CHECK(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    void (*old)(int) = signal(SIGXFSZ, SIG_IGN);

    n_done = 0;
    lh_jlog_t *log = write_sync(dir, 0, v, 2);
    lh_jlog_last_error(log, msg, sizeof(msg));
    CHECK_STR(msg, "no error");
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    long long before = file_size(dir, 1);
    /* room for part of the batch: a short write, then EFBIG */
    set_fsize((rlim_t)before + 100);
    for (int i = 2; i < 5; i++)
        append(log, &v[i]);
    run_until(&loop, 5);
    set_fsize(saved.rlim_cur);
    for (int i = 2; i < 5; i++)
        CHECK_EQ_INT(v[i].status, UV_EFBIG);
    lh_jlog_last_error(log, msg, sizeof(msg));
    seg_path(dir, 1, path, sizeof(path));
    CHECK(strstr(msg, "cannot write to") != NULL && strstr(msg, path) != NULL &&
          strstr(msg, strerror(EFBIG)) != NULL);
    CHECK_EQ_INT(file_size(dir, 1), before); /* cut back */
    CHECK_SCAN(dir, 0, v, 2);

    append(log, &v[5]);
    run_until(&loop, 6);
    CHECK_EQ_INT(v[5].status, 0);
    CHECK(v[5].at == ((uint64_t)2 << 32 | LH_JLOG_HEADER));
    rec_t ok[4] = {v[0], v[1], v[5]};
    CHECK_SCAN(dir, 0, ok, 3);
    size_t n;
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, segs_size(dir, &n));
    lh_jlog_stop(log);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);

    /* on the caller the same: `done` inside the append reports it */
    set_fsize((rlim_t)file_size(dir, 2) + 10);
    append(log, &v[6]);
    set_fsize(saved.rlim_cur);
    CHECK_EQ_INT(v[6].done, 1);
    CHECK_EQ_INT(v[6].status, UV_EFBIG);
    append(log, &v[7]);
    CHECK_EQ_INT(v[7].status, 0);
    CHECK(v[7].at == ((uint64_t)3 << 32 | LH_JLOG_HEADER));
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, segs_size(dir, &n));
    lh_jlog_free(log);
    ok[3] = v[7];
    CHECK_SCAN(dir, 0, ok, 4);

    CHECK(setrlimit(RLIMIT_FSIZE, &saved) == 0);
    signal(SIGXFSZ, old);
    free_recs(v, 8);
    remove_dir(dir);
}

static void test_read(void)
{
    char dir[64], err[256], buf[64], path[512];
    rec_t v[1];
    make_dir(dir, sizeof(dir));
    set_rec(&v[0], 0, 40);
    close_all(write_sync(dir, 0, v, 1), NULL);
    CHECK_EQ_INT(lh_jlog_read(dir, v[0].body_at, buf, 40, err, sizeof(err)), 0);
    CHECK(memcmp(buf, v[0].body, 40) == 0);
    CHECK_EQ_INT(lh_jlog_read(dir, (uint64_t)1 << 32, buf, 8, err, sizeof(err)), 0);
    CHECK(memcmp(buf, "LHJLOG\0\1", 8) == 0);

    /* past the end of the file */
    CHECK_EQ_INT(lh_jlog_read(dir, v[0].body_at, buf, 60, err, sizeof(err)), -1);
    CHECK(strstr(err, "shorter") != NULL);
    /* a segment that is not there: the message names it */
    seg_path(dir, 9, path, sizeof(path));
    err[0] = 0;
    CHECK_EQ_INT(lh_jlog_read(dir, (uint64_t)9 << 32 | 16, buf, 4, err, sizeof(err)), -1);
    CHECK(strstr(err, path) != NULL);
    free_recs(v, 1);
    remove_dir(dir);
}

int main(void)
{
    RUN_TEST(test_crc_software); /* first: before this process picks its CRC path */
    RUN_TEST(test_crc);
    RUN_TEST(test_round_trip);
    RUN_TEST(test_ends_first);
    RUN_TEST(test_sync_append);
    RUN_TEST(test_torn_tail);
    RUN_TEST(test_rotation);
    RUN_TEST(test_reopen_numbering);
    RUN_TEST(test_write_failure);
    RUN_TEST(test_read);
    return TEST_SUMMARY();
}
