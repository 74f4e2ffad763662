/* test_jlog_direct.c - the journal log's direct segments (--sync full): spares made ahead and
 * written with O_DIRECT in whole blocks, their sizes doubling up to seg_max, a spare left for
 * the next run, torn tails in them, the opt-in staying opt-in; and runs' ends waiting for an
 * event to share their batch. */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <uv.h>

#include "jlog.h"
#include "jlog_spare.h"
#include "test.h"

#define SEG_MAX (256u << 10)
#define FIRST   (64u << 10)
#define MS      1000000ull /* ns */
#define SEG(w)  ((uint32_t)((w).at >> 32))
#define OFF(x)  ((uint64_t)(uint32_t)(x))

/* ------------------------------------------------------------------ helpers */

typedef struct {
    uint32_t type;
    unsigned char meta[16];
    uint32_t meta_len;
    const char *body;
    size_t body_len;
    int done, order, status;
    uint64_t at, body_at, end;
} rec_t;

#include "jlog_util.h"

/* Record `i` with a body of `len` bytes (borrowed from a pattern); every fifth has no meta,
 * every third is an END. */
static void set_rec(rec_t *w, int i, size_t len)
{
    static char pat[400000];
    static int made;
    for (size_t k = 0; !made && k < sizeof(pat); k++, made = k == sizeof(pat))
        pat[k] = (char)(k * 13 + k / 251 + 1);
    memset(w, 0, sizeof(*w));
    w->type = LH_JLOG_EVENT; /* a batch writes its ENDs first: tests that mix say so */
    w->meta_len = i % 5 == 4 ? 0 : (uint32_t)snprintf((char *)w->meta, sizeof(w->meta), "m%d", i);
    w->body = pat + i % 97;
    w->body_len = len;
}

/* Bodies of 1 byte to ~20 KB, mostly unaligned. */
static void set_recs(rec_t *v, int n)
{
    for (int i = 0; i < n; i++)
        set_rec(&v[i], i, i % 13 == 0 ? 20000u - i : i % 7 ? 1 + (size_t)(i * 2657) % 7000 : 1);
}


/* The size of DIR/journal/`name`, or of segment `seg` when `name` is NULL; -1: none. */
static long long jsize(const char *dir, uint32_t seg, const char *name)
{
    char path[512];
    struct stat sb;
    if (name)
        snprintf(path, sizeof(path), "%s/%s/%s", dir, LH_JLOG_DIR, name);
    else
        lh_jlog_segment_path(dir, seg, path, sizeof(path));
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

#define file_size(dir, seg) jsize(dir, seg, NULL)
#define spare_size(dir)     jsize(dir, 0, LH_JLOG_SPARE_NAME)

/* The sum of the segments' sizes; their count in *n (may be NULL). */
static long long segs_size(const char *dir, size_t *n)
{
    char err[256];
    uint32_t *segs;
    size_t k = 0;
    long long sum = 0;
    CHECK_EQ_INT(lh_jlog_segments(dir, &segs, &k, err, sizeof(err)), 0);
    for (size_t i = 0; i < k; i++)
        sum += file_size(dir, segs[i]);
    free(segs);
    if (n)
        *n = k;
    return sum;
}

/* Scans `dir` from 0: exactly the records `want[0..n)` come back, in order. */
typedef struct {
    const rec_t *want;
    size_t n, i, bad, first_bad;
} scan_t;

static int match(void *data, const lh_jlog_found_t *f)
{
    scan_t *s = data;
    const rec_t *w = s->i < s->n ? &s->want[s->i] : NULL;
    if (w == NULL || f->type != w->type || f->meta_len != w->meta_len ||
        memcmp(f->meta, w->meta, w->meta_len) != 0 || f->body_len != w->body_len ||
        memcmp(f->body, w->body, w->body_len) != 0 || f->at != w->at || f->body_at != w->body_at ||
        f->end != w->end)
        s->first_bad = s->bad++ ? s->first_bad : s->i;
    s->i++;
    return 0;
}

static void check_scan(const char *dir, const rec_t *want, size_t n, int line)
{
    scan_t s = {want, n, 0, 0, 0};
    char err[256];
    int rc = lh_jlog_scan(dir, 0, match, &s, NULL, err, sizeof(err));
    if (rc != 0 || s.i != n || s.bad)
        TEST_FAILED_("line %d: scan: rc %d, %zu records (want %zu), %zu differ from #%zu", line, rc,
                     s.i, n, s.bad, s.first_bad);
}

#define CHECK_SCAN(dir, want, n) check_scan(dir, want, n, __LINE__)

/* Every record written, positions strictly increasing and contiguous within a segment (a new
 * one starts after the header), each body read back at its body_at. */
static void check_written(const char *dir, const rec_t *v, int n)
{
    char err[256];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const rec_t *w = &v[i];
        bad += w->done != 1 || w->status != 0 || (i > 0 && w->at <= v[i - 1].at);
        if (i > 0)
            bad += SEG(*w) == SEG(v[i - 1]) ? w->at != v[i - 1].end : OFF(w->at) != LH_JLOG_HEADER;
        char *buf = malloc(w->body_len + 1);
        bad += lh_jlog_read(dir, w->body_at, buf, w->body_len, err, sizeof(err)) != 0 ||
               memcmp(buf, w->body, w->body_len) != 0;
        free(buf);
    }
    CHECK_EQ_INT(bad, 0);
}

/* Segment `seg`'s bytes from `from` to its end (under 256 KiB) are zeros, and there are some. */
static int zeros_after(const char *dir, uint32_t seg, uint64_t from)
{
    static unsigned char b[SEG_MAX];
    char path[512];
    lh_jlog_segment_path(dir, seg, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? pread(fd, b, sizeof(b), (off_t)from) : -1;
    if (fd >= 0)
        close(fd);
    for (ssize_t i = 0; i < n; i++)
        if (b[i] != 0)
            return 0;
    return n > 0;
}

/* The flags of this process's descriptor on segment `seg` (/proc/self/fdinfo); -1: none. */
static long fd_flags(const char *dir, uint32_t seg)
{
    char path[512], real[PATH_MAX], link[PATH_MAX], p[64], line[128];
    unsigned long fl;
    lh_jlog_segment_path(dir, seg, path, sizeof(path));
    for (int fd = 3; fd < 1024 && realpath(path, real) != NULL; fd++) {
        snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(p, link, sizeof(link) - 1);
        if (n <= 0 || (link[n] = 0, strcmp(link, real) != 0))
            continue;
        snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
        FILE *f = fopen(p, "r");
        long flags = -1;
        while (f != NULL && flags < 0 && fgets(line, sizeof(line), f) != NULL)
            if (sscanf(line, "flags: %lo", &fl) == 1)
                flags = (long)fl;
        if (f)
            fclose(f);
        return flags;
    }
    return -1;
}

/* ------------------------------------------------------------------ direct segments */

/* Waits (10 s at most) for a spare to be ready: next.spare there and counted by the log's
 * stats beside its segments (the writer idle). Its size, or -1. */
static long long wait_spare(lh_jlog_t *log, const char *dir)
{
    long long sz = -1, segs = 0;
    for (int i = 0; i < 10000; i++) {
        sz = spare_size(dir);
        segs = segs_size(dir, NULL);
        if (sz > 0 && (long long)lh_jlog_stats(log).bytes == segs + sz)
            return sz;
        usleep(1000);
    }
    TEST_FAILED_("no spare ready in 10 s: next.spare %lld bytes, stats %llu, segments %lld", sz,
                 (unsigned long long)lh_jlog_stats(log).bytes, segs);
    return -1;
}

/* Appends v[from..to) in turns of 1 to 3 records (under 64 KiB each), each turn once a spare
 * is ready, so that a batch that does not fit its segment goes to the spare. */
static void fill(lh_jlog_t *log, uv_loop_t *loop, const char *dir, rec_t *v, int from, int to)
{
    for (int i = from, turn = 0; i < to; turn++) {
        if (wait_spare(log, dir) < 0)
            return;
        for (int k = 0; k < 1 + turn % 3 && i < to; k++)
            append(log, &v[i++]);
        if (run_until(loop, i) != 0)
            return;
    }
}

/* A log in a new `dir` with sync_full: v[0..2) written on the caller into its first segment
 * (appended: no spare yet), then spares of FIRST bytes asked for, the first awaited, and
 * v[2..n) written by the thread. */
static lh_jlog_t *direct_log(char *dir, uv_loop_t *loop, rec_t *v, int n)
{
    lh_jlog_t *log;
    char err[256];
    make_dir(dir, 64);
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, SEG_MAX, err, sizeof(err)), 0);
    n_done = 0;
    append(log, &v[0]);
    append(log, &v[1]);
    lh_jlog_use_spares(log, FIRST, UINT64_MAX);
    CHECK_EQ_INT(uv_loop_init(loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, loop), 0);
    CHECK_EQ_INT(wait_spare(log, dir), FIRST);
    fill(log, loop, dir, v, 2, n);
    return log;
}

/* Records of every size, in turns of one to three, through direct segments of doubling size:
 * written, scanned and read back; the files as big as their spares, zeros after the records. */
static void test_direct_round_trip(void)
{
    enum { N = 200 };
    static rec_t v[N];
    char dir[64];
    uv_loop_t loop;
    set_recs(v, N);
    lh_jlog_t *log = direct_log(dir, &loop, v, N);
    check_written(dir, v, N);
    uint32_t last = SEG(v[N - 1]);
    /* the segment being written is open with O_DIRECT */
    long flags = fd_flags(dir, last);
    CHECK(flags >= 0 && (flags & O_DIRECT));
    close_all(log, &loop);
    CHECK_SCAN(dir, v, N);

    /* segment 1, made at the open, appended to; then 64, 128, 256, 256... KiB */
    size_t n;
    segs_size(dir, &n);
    CHECK(n >= 5 && n == last);
    CHECK(SEG(v[1]) == 1 && SEG(v[2]) == 2);
    CHECK_EQ_INT(file_size(dir, 1), OFF(v[1].end));
    uint64_t want = FIRST;
    for (uint32_t s = 2; s <= last; s++) {
        int j = N - 1;
        while (j > 0 && SEG(v[j]) != s)
            j--;
        CHECK_EQ_INT(SEG(v[j]), s); /* every segment holds records */
        if (file_size(dir, s) != (long long)want)
            TEST_FAILED_("segment %u: %lld bytes, want %llu", s, file_size(dir, s),
                         (unsigned long long)want);
        if (!zeros_after(dir, s, OFF(v[j].end)))
            TEST_FAILED_("segment %u: not zeros after its last record at %llu", s,
                         (unsigned long long)OFF(v[j].end));
        want = want * 2 < SEG_MAX ? want * 2 : SEG_MAX;
    }
    remove_dir(dir);
}

/* A spare left by a run is taken by the next one; every record still scans. */
static void test_direct_reopen(void)
{
    enum { N1 = 40, N = N1 + 4 };
    static rec_t v[N];
    char dir[64], err[256];
    uv_loop_t loop;
    set_recs(v, N - 1);
    set_rec(&v[N - 1], N - 1, 300000); /* over seg_max: a segment grows past its spare */
    lh_jlog_t *log = direct_log(dir, &loop, v, N1);
    long long left = wait_spare(log, dir);
    close_all(log, &loop);
    CHECK(left > 0 && spare_size(dir) == left);
    uint32_t last = SEG(v[N1 - 1]);
    CHECK(last >= 3);

    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, SEG_MAX, err, sizeof(err)), 0);
    CHECK_EQ_INT(lh_jlog_stats(log).segment, last + 1);
    lh_jlog_use_spares(log, FIRST, UINT64_MAX);
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, segs_size(dir, NULL) + left); /* ready at once */
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    n_done = N1;
    for (int i = N1; i < N1 + 3; i++)
        append(log, &v[i]);
    run_until(&loop, N1 + 3);
    CHECK(v[N1].at == ((uint64_t)(last + 2) << 32 | LH_JLOG_HEADER));
    CHECK_EQ_INT(SEG(v[N1 + 2]), last + 2);
    CHECK_EQ_INT(file_size(dir, last + 1), LH_JLOG_HEADER);
    CHECK_EQ_INT(file_size(dir, last + 2), left);

    /* a batch bigger than the next spare: in it, the file extended to whole blocks */
    long long next = wait_spare(log, dir);
    append(log, &v[N - 1]);
    run_until(&loop, N);
    CHECK_EQ_INT(SEG(v[N - 1]), last + 3);
    uint64_t end = OFF(v[N - 1].end);
    CHECK(next > 0 && end > (uint64_t)next);
    CHECK_EQ_INT(file_size(dir, last + 3), (end + 4095) / 4096 * 4096);
    CHECK(end % 4096 == 0 || zeros_after(dir, last + 3, end));
    CHECK(wait_spare(log, dir) > 0); /* and the stats count the grown file */
    close_all(log, &loop);
    check_written(dir, v, N);
    CHECK_SCAN(dir, v, N);
    remove_dir(dir);
}

/* Flips 4 bytes in the middle of record `w`. */
static void tear(const char *dir, const rec_t *w)
{
    char path[512];
    unsigned char b[4];
    lh_jlog_segment_path(dir, SEG(*w), path, sizeof(path));
    int fd = open(path, O_RDWR | O_CLOEXEC);
    off_t at = (off_t)(OFF(w->at) + (w->end - w->at) / 2);
    CHECK(fd >= 0 && pread(fd, b, 4, at) == 4);
    for (int i = 0; i < 4; i++)
        b[i] ^= 0xff;
    CHECK(pwrite(fd, b, 4, at) == 4);
    if (fd >= 0)
        close(fd);
}

/* A torn record in a direct segment hides itself and the rest of its segment only. */
static void test_direct_torn_tail(void)
{
    enum { N = 50 };
    static rec_t v[N], want[N];
    char dir[64];
    uv_loop_t loop;
    set_recs(v, N);
    close_all(direct_log(dir, &loop, v, N), &loop);
    CHECK(SEG(v[N - 1]) >= 3);
    tear(dir, &v[N - 1]);
    CHECK_SCAN(dir, v, N - 1);

    int j = 2; /* the last record of segment 2, the first direct one */
    while (j + 1 < N && SEG(v[j + 1]) == 2)
        j++;
    CHECK(SEG(v[j]) == 2 && SEG(v[j + 1]) == 3);
    tear(dir, &v[j]);
    memcpy(want, v, (size_t)j * sizeof(*v));
    memcpy(want + j, v + j + 1, (size_t)(N - 2 - j) * sizeof(*v));
    CHECK_SCAN(dir, want, N - 2);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ opt-in */

/* Segments appended to (each file as long as its records), and never a spare. */
static void check_appended(int sync_full, int spares)
{
    enum { N = 12 };
    rec_t v[N];
    char dir[64], err[256];
    uv_loop_t loop;
    lh_jlog_t *log;
    make_dir(dir, sizeof(dir));
    for (int i = 0; i < N; i++)
        set_rec(&v[i], i, 100 + (size_t)i * 271);
    CHECK_EQ_INT(lh_jlog_open(&log, dir, sync_full, 4096, err, sizeof(err)), 0);
    if (spares)
        lh_jlog_use_spares(log, FIRST, UINT64_MAX);
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    n_done = 0;
    int bad = 0;
    for (int i = 0; i < N; i += 2) {
        append(log, &v[i]);
        append(log, &v[i + 1]);
        run_until(&loop, i + 2);
        for (int k = 0; k < 20; k++, usleep(1000)) /* 64 KiB of zeros take far less */
            bad += spare_size(dir) >= 0 || jsize(dir, 0, LH_JLOG_SPARE_NAME ".tmp") >= 0;
    }
    CHECK_EQ_INT(bad, 0);
    uint32_t last = SEG(v[N - 1]);
    CHECK(last >= 3);
    long flags = fd_flags(dir, last);
    CHECK(flags >= 0 && !(flags & O_DIRECT));
    CHECK_EQ_INT(lh_jlog_stats(log).bytes, segs_size(dir, NULL));
    close_all(log, &loop);
    for (int i = 0; i < N; i++)
        if (i == N - 1 || SEG(v[i + 1]) != SEG(v[i]))
            CHECK_EQ_INT(file_size(dir, SEG(v[i])), OFF(v[i].end));
    check_written(dir, v, N);
    CHECK_SCAN(dir, v, N);
    remove_dir(dir);
}

/* Without use_spares, and with it but without sync_full. */
static void test_spares_opt_in(void)
{
    check_appended(1, 0);
    check_appended(0, 1);
}

/* ------------------------------------------------------------------ ends wait */

/* An END alone waits ENDS_WAIT_MS (10 ms) for an event; an END and an event of one turn go in
 * one batch. sync_full off: a batch takes microseconds, one written at once shows in 5 ms. */
static void test_ends_wait(void)
{
    enum { N = 4 };
    rec_t v[N];
    char dir[64], err[256];
    uv_loop_t loop;
    lh_jlog_t *log;
    static const uint32_t types[N] = {LH_JLOG_EVENT, LH_JLOG_END, LH_JLOG_END, LH_JLOG_EVENT};
    for (int i = 0; i < N; i++)
        set_rec(&v[i], i, 30), v[i].type = types[i];
    make_dir(dir, sizeof(dir));
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 0, 0, err, sizeof(err)), 0);
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    /* a first event, and time for the writer to wait for the next wake: a writer not yet
     * waiting (just started, or busy) takes whatever is queued at once */
    n_done = 0;
    append(log, &v[0]);
    run_until(&loop, 1);
    usleep(2000);

    uint64_t b0 = lh_jlog_stats(log).batches, t0 = uv_hrtime();
    append(log, &v[1]);
    int seen = 0, early = 0;
    for (;;) {
        uv_run(&loop, UV_RUN_NOWAIT);
        int written = lh_jlog_stats(log).batches != b0 || v[1].done;
        if (uv_hrtime() - t0 >= 5 * MS)
            break;
        seen++, early += written; /* observed within 5 ms of the append */
        usleep(200);
    }
    CHECK(seen > 0);
    CHECK_EQ_INT(early, 0);
    run_until(&loop, 2);
    CHECK(uv_hrtime() - t0 < 1000 * MS);
    CHECK_EQ_INT(v[1].status, 0);
    CHECK_EQ_INT(lh_jlog_stats(log).batches, b0 + 1);

    /* an END and an EVENT in one turn: one batch */
    uint64_t b1 = lh_jlog_stats(log).batches;
    append(log, &v[2]);
    append(log, &v[3]);
    run_until(&loop, 4);
    CHECK_EQ_INT(lh_jlog_stats(log).batches, b1 + 1);
    CHECK(v[2].status == 0 && v[3].status == 0 && v[3].at == v[2].end);

    close_all(log, &loop);
    CHECK_SCAN(dir, v, N);
    remove_dir(dir);
}

/* O_DIRECT in a temporary folder, and room for spares (their thread keeps 4 segments and a
 * reserve free: jlog_spare.c's has_room). */
static int direct_usable(void)
{
    char dir[64], path[96];
    void *b = NULL;
    struct statvfs sv;
    make_dir(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    int ok = fd >= 0 && posix_memalign(&b, 4096, 4096) == 0 && memset(b, 0, 4096) &&
             pwrite(fd, b, 4096, 0) == 4096,
        e = errno;
    if (!ok)
        printf("skip: O_DIRECT in %s: %s\n", dir, strerror(e));
    CHECK(ok || e == EINVAL);
    uint64_t avail = 0, reserve = 0;
    if (ok && statvfs(dir, &sv) == 0) {
        avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        reserve = (uint64_t)sv.f_blocks * sv.f_frsize / 20;
        if (reserve > (256u << 20))
            reserve = 256u << 20;
    }
    if (ok && avail < 4 * (uint64_t)SEG_MAX + reserve)
        ok = 0, printf("skip: too little room in %s for spares\n", dir);
    free(b);
    if (fd >= 0)
        close(fd);
    remove_dir(dir);
    return ok;
}

/* fsync is wrapped at link time (tests/CMakeLists.txt): `fail_fsync` fails the next one. */
static int fail_fsync;
int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
    if (fail_fsync) {
        fail_fsync = 0;
        errno = EIO;
        return -1;
    }
    return __real_fsync(fd);
}

/* The next segment cannot start (its folder's fsync fails) after its spare was taken: the
 * segment being written stays whole and takes the batch, and what follows. */
static void test_failed_start_keeps_segment(void)
{
    char dir[64], err[256];
    static rec_t v[3];
    make_dir(dir, sizeof(dir));
    set_rec(&v[0], 0, 100);
    set_rec(&v[1], 1, 5000);
    set_rec(&v[2], 3, 100);
    lh_jlog_t *log;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, 4 * LH_JLOG_ALIGN, err, sizeof(err)), 0);
    lh_jlog_use_spares(log, LH_JLOG_ALIGN,
                       UINT64_MAX); /* not started: appends are written at once */
    n_done = 0;
    CHECK_EQ_INT(wait_spare(log, dir), LH_JLOG_ALIGN);
    append(log, &v[0]); /* into the 4 KiB spare */
    CHECK_EQ_INT(wait_spare(log, dir), 2 * LH_JLOG_ALIGN);
    fail_fsync = 1;
    append(log, &v[1]); /* does not fit: the move to the spare fails */
    CHECK_EQ_INT(fail_fsync, 0);
    append(log, &v[2]);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(v[i].status, 0);
        CHECK_EQ_INT(SEG(v[i]), SEG(v[0]));
    }
    size_t n;
    CHECK_EQ_INT(wait_spare(log, dir) > 0, 1); /* stats: the segments and the spare */
    CHECK((long long)lh_jlog_stats(log).bytes == segs_size(dir, &n) + spare_size(dir));
    close_all(log, NULL);
    CHECK_SCAN(dir, v, 3);
    remove_dir(dir);
}

/* Writes DIR/journal/next.spare of `size` bytes, as a server before would have left it. */
static void leave_spare(const char *dir, long long size)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, LH_JLOG_DIR);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/%s/%s", dir, LH_JLOG_DIR, LH_JLOG_SPARE_NAME);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK(ftruncate(fileno(f), size) == 0);
        fclose(f);
    }
}

/* A spare left behind is not used when bigger than a segment may be now, nor kept by a log
 * without --sync full. */
static void test_leftover_spares(void)
{
    char dir[64], err[256];
    rec_t w;
    make_dir(dir, sizeof(dir));
    leave_spare(dir, 1 << 20);
    lh_jlog_t *log;
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, SEG_MAX, err, sizeof(err)), 0);
    lh_jlog_use_spares(log, FIRST, UINT64_MAX);
    n_done = 0;
    CHECK_EQ_INT(wait_spare(log, dir), FIRST); /* made anew, at the first size */
    set_rec(&w, 0, 100);
    append(log, &w);
    CHECK_EQ_INT(w.status, 0);
    CHECK_EQ_INT(jsize(dir, SEG(w), NULL), FIRST);
    close_all(log, NULL);

    leave_spare(dir, FIRST);
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 0, SEG_MAX, err, sizeof(err)), 0);
    CHECK_EQ_INT(spare_size(dir), -1);
    close_all(log, NULL);
    remove_dir(dir);
}

/* ------------------------------------------------------------------ allocated spares */

/* Whether DIR/journal/`name` (or segment `seg`) has an unwritten extent: 1, 0, or -1 when the
 * file system cannot say (FIEMAP). */
static int unwritten(const char *dir, uint32_t seg, const char *name)
{
    char path[512];
    if (name)
        snprintf(path, sizeof(path), "%s/%s/%s", dir, LH_JLOG_DIR, name);
    else
        lh_jlog_segment_path(dir, seg, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    enum { MAX = 64 };
    static union {
        struct fiemap fm;
        char room[sizeof(struct fiemap) + MAX * sizeof(struct fiemap_extent)];
    } u;
    memset(&u, 0, sizeof(u));
    u.fm.fm_length = ~0ull;
    u.fm.fm_flags = FIEMAP_FLAG_SYNC;
    u.fm.fm_extent_count = MAX;
    int rc = ioctl(fd, FS_IOC_FIEMAP, &u.fm);
    close(fd);
    if (rc != 0)
        return -1;
    for (unsigned i = 0; i < u.fm.fm_mapped_extents; i++)
        if (u.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN)
            return 1;
    return 0;
}

/* The rule: zeros while the segment before filled slower than the rate, or nothing is known. */
static void test_spare_kind_rule(void)
{
    const uint64_t s = 1000000000ull, rate = 32u << 20;
    CHECK(lh_jlog_spare_zeros(16u << 20, s, rate));
    CHECK(!lh_jlog_spare_zeros(64u << 20, s, rate));
    CHECK(lh_jlog_spare_zeros((32u << 20) - 1, s, rate));
    CHECK(!lh_jlog_spare_zeros(32u << 20, s, rate));
    CHECK(lh_jlog_spare_zeros(64u << 20, 0, rate)); /* unknown */
    CHECK(!lh_jlog_spare_zeros(1, 60 * s, 0));      /* 0: never zeros, once something is known */
    CHECK(lh_jlog_spare_zeros(64u << 20, 1000000, UINT64_MAX)); /* UINT64_MAX: always */
}

/* A spare asked for without zeros is allocated, not written; with zeros, written. */
static void test_spare_kinds(void)
{
    char dir[64], jdir[96], seg[128];
    make_dir(dir, sizeof(dir));
    snprintf(jdir, sizeof(jdir), "%s/%s", dir, LH_JLOG_DIR);
    CHECK_EQ_INT(mkdir(jdir, 0700), 0);
    lh_jlog_spare_t *sp = lh_jlog_spare_new(jdir, SEG_MAX);
    CHECK(sp != NULL);
    for (int zeros = 0; sp != NULL && zeros < 2; zeros++) {
        lh_jlog_spare_want(sp, FIRST, zeros);
        for (int i = 0; i < 10000 && lh_jlog_spare_bytes(sp) == 0; i++)
            usleep(1000);
        CHECK_EQ_INT(lh_jlog_spare_bytes(sp), FIRST);
        CHECK_EQ_INT(spare_size(dir), FIRST);
        int u = unwritten(dir, 0, LH_JLOG_SPARE_NAME);
        if (u < 0)
            printf("skip: no FIEMAP in %s\n", dir);
        else
            CHECK_EQ_INT(u, !zeros);
        uint64_t size = 0;
        snprintf(seg, sizeof(seg), "%s/taken%d", jdir, zeros);
        CHECK_EQ_INT(lh_jlog_spare_take(sp, seg, &size), 0);
        CHECK_EQ_INT(size, FIRST);
    }
    lh_jlog_spare_free(sp);
    remove_dir(dir);
}

/* With a zero_rate of 0, every spare after the first is allocated: records written over its
 * blocks scan and read back, and its unwritten end reads as zeros. */
static void test_allocated_round_trip(void)
{
    enum { N = 200 };
    static rec_t v[N];
    char dir[64], err[256];
    uv_loop_t loop;
    lh_jlog_t *log;
    set_recs(v, N);
    make_dir(dir, sizeof(dir));
    CHECK_EQ_INT(lh_jlog_open(&log, dir, 1, SEG_MAX, err, sizeof(err)), 0);
    n_done = 0;
    lh_jlog_use_spares(log, FIRST, 0);
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    CHECK_EQ_INT(lh_jlog_start(log, &loop), 0);
    fill(log, &loop, dir, v, 0, N);
    check_written(dir, v, N);
    close_all(log, &loop);
    CHECK_SCAN(dir, v, N);
    uint32_t last = SEG(v[N - 1]);
    CHECK(last >= 4);
    int allocated = 0;
    for (uint32_t s = 3; s <= last; s++) { /* 2: the first spare, zeros */
        int j = N - 1;
        while (j > 0 && SEG(v[j]) != s)
            j--;
        if (SEG(v[j]) == s && !zeros_after(dir, s, OFF(v[j].end)))
            TEST_FAILED_("segment %u: not zeros after its last record", s);
        allocated += unwritten(dir, s, NULL) != 0; /* its end unwritten (or unknown) */
    }
    CHECK(allocated > 0);
    CHECK_EQ_INT(unwritten(dir, 2, NULL) == 1, 0);
    remove_dir(dir);
}

int main(void)
{
    if (direct_usable()) {
        RUN_TEST(test_direct_round_trip);
        RUN_TEST(test_direct_reopen);
        RUN_TEST(test_direct_torn_tail);
        RUN_TEST(test_failed_start_keeps_segment);
        RUN_TEST(test_leftover_spares);
        RUN_TEST(test_spare_kinds);
        RUN_TEST(test_allocated_round_trip);
    }
    RUN_TEST(test_spare_kind_rule);
    RUN_TEST(test_spares_opt_in);
    RUN_TEST(test_ends_wait);
    return TEST_SUMMARY();
}
