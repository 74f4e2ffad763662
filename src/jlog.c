#define _GNU_SOURCE /* O_DIRECT */
#include "jlog.h"
#include "jlog_spare.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static const unsigned char seg_magic[8] = {'L', 'H', 'J', 'L', 'O', 'G', 0, 1};

/* A segment is never written past this offset (positions keep 32 bits for it). */
#define OFF_LIMIT    0xF0000000u
#define ENDS_WAIT_MS 10   /* see on_prepare */
#define IOV_BATCH    1020 /* iovecs per pwritev: under IOV_MAX (a record takes up to 4) */

struct lh_jlog_s {
    char *dir;  /* owned: DIR/journal */
    int dir_fd; /* for syncing the directory when a segment is made */
    int sync_full;
    uint64_t seg_max;
    /* the writer's (the thread, or the caller once stopped) */
    int fd; /* the segment being written; -1: none (a failed write closed it) */
    uint32_t seg, last_seg;
    uint64_t off;
    /* shared, under mu */
    uv_mutex_t mu;
    uv_cond_t cond;
    lh_jlog_rec_t *q_head, *q_tail; /* queued by the loop */
    unsigned q_events;              /* of them, events' (an answer waits for each) */
    int ends_due; /* runs' ends alone may go: they waited long enough (on_prepare) */
    lh_jlog_rec_t *done_head, *done_tail; /* written, for the loop */
    uint64_t bytes;                       /* of every segment of ours on disk */
    uint64_t batches;                     /* written */
    char last_error[256];
    int stopping;
    /* direct segments (--sync full): written with O_DIRECT over a spare's zeros, whole
    ** blocks at a time; `tail` holds the bytes of the last block written so far */
    lh_jlog_spare_t *spare; /* NULL: every segment is appended to */
    uint64_t spare_size;    /* of the next spare asked for: doubles up to seg_max */
    uint64_t seg_start_ns;  /* when the segment being written was started (uv_hrtime) */
    uint64_t zero_rate;     /* see lh_jlog_use_spares */
    int direct;             /* the segment being written is one */
    uint64_t direct_size;   /* of its file: the spare's, or more once a batch went past */
    unsigned char *stage;   /* a batch's blocks, aligned */
    size_t stage_cap;
    unsigned char tail[LH_JLOG_ALIGN];
    /* the loop's */
    uv_async_t async;
    uv_prepare_t prepare; /* the loop is about to wait: what it queued is one batch */
    uv_timer_t ends;      /* ends alone wait for an event to share their sync */
    uv_thread_t thread;
    int started, async_open, prepare_open, ends_open;
    int queued;       /* records queued since the writer was last woken */
    int queued_event; /* of them, an event's (an answer waits for it) */
};

/* ------------------------------------------------------------------ CRC-32C */

static uint32_t crc_table[8][256];
static uv_once_t crc_once = UV_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
#if defined(__x86_64__) && defined(__GNUC__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t c, const unsigned char *p,
                                                            size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8, n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t lh_jlog_crc(uint32_t crc, const void *data, size_t n)
{
    const unsigned char *p = data;
    uv_once(&crc_once, crc_init);
    uint32_t c = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
    if (crc_hw)
        return ~crc_sse42(c, p, n);
#endif
    while (n >= 8) { /* slicing by 8 */
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8, n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

/* ------------------------------------------------------------------ little pieces */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16),
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* `n` rounded down, and up, to a whole O_DIRECT block. */
static uint64_t block_floor(uint64_t n)
{
    return n / LH_JLOG_ALIGN * LH_JLOG_ALIGN;
}

static uint64_t block_ceil(uint64_t n)
{
    return block_floor(n + LH_JLOG_ALIGN - 1);
}

static size_t pad8(size_t n)
{
    return (8 - (n & 7)) & 7;
}

/* The CRC of a record: its place (segment, offset) and header fields, then the payload,
** so that bytes left from another record or file never read as valid. */
static uint32_t rec_crc(uint32_t seg, uint32_t off, uint32_t type, uint32_t meta, const void *m,
                        size_t ml, const void *b, size_t bl)
{
    unsigned char h[20];
    put64(h, seg);
    put32(h + 8, off);
    put32(h + 12, type);
    put32(h + 16, meta);
    uint32_t c = lh_jlog_crc(0, h, sizeof(h));
    c = lh_jlog_crc(c, m, ml);
    return lh_jlog_crc(c, b, bl);
}

static int uv_err(int e)
{
    return e > 0 ? -e : e == 0 ? UV_EIO : e;
}

/* The path of segment `seg` of journal folder `jdir`. */
static void path_in(const char *jdir, uint32_t seg, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%016llx.log", jdir, (unsigned long long)seg);
}

static void set_error(lh_jlog_t *log, const char *what, uint32_t seg, int e)
{
    uv_mutex_lock(&log->mu);
    snprintf(log->last_error, sizeof(log->last_error), "%s %s/%016llx.log: %s", what, log->dir,
             (unsigned long long)seg, strerror(e));
    uv_mutex_unlock(&log->mu);
}

/* ------------------------------------------------------------------ records */

lh_jlog_rec_t *lh_jlog_rec_new(uint32_t type, size_t meta_len)
{
    if (meta_len > UINT32_MAX)
        return NULL;
    lh_jlog_rec_t *r = malloc(sizeof(*r) + meta_len);
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->type = type;
    r->meta_len = (uint32_t)meta_len;
    return r;
}

static size_t rec_size(uint32_t meta_len, size_t body_len)
{
    size_t n = LH_JLOG_HEADER + meta_len + body_len;
    return n + pad8(n);
}

uint64_t lh_jlog_rec_end(const lh_jlog_rec_t *r)
{
    return r->at + rec_size(r->meta_len, r->body_len);
}

/* ------------------------------------------------------------------ segments */

static int parse_name(const char *name, uint32_t *seg)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".log") != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = name[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    if (v == 0 || v > UINT32_MAX)
        return 0;
    *seg = (uint32_t)v;
    return 1;
}

static int cmp_seg(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The segment numbers in journal folder `dir`. */
static int segments_in(const char *dir, uint32_t **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot list %s: %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    uint32_t *v = NULL;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint32_t seg;
        if (!parse_name(e->d_name, &seg))
            continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            uint32_t *nv = realloc(v, nc * sizeof(*v));
            if (nv == NULL) {
                free(v);
                closedir(d);
                snprintf(err, errlen, "out of memory listing %s", dir);
                return -1;
            }
            v = nv, cap = nc;
        }
        v[(*n)++] = seg;
    }
    closedir(d);
    if (*n > 1)
        qsort(v, *n, sizeof(*v), cmp_seg);
    *out = v;
    return 0;
}

/* Starts segment `path` from the spare: renamed into place, its first block written with
** O_DIRECT. The descriptor, or -1 (no spare ready, or O_DIRECT refused: nothing left). */
static int direct_segment(lh_jlog_t *log, const char *path, const unsigned char *h, uint64_t *size)
{
    if (log->spare == NULL || lh_jlog_spare_take(log->spare, path, size) != 0)
        return -1;
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    void *block = NULL;
    if (fd >= 0 && posix_memalign(&block, LH_JLOG_ALIGN, LH_JLOG_ALIGN) == 0) {
        memset(block, 0, LH_JLOG_ALIGN);
        memcpy(block, h, LH_JLOG_HEADER);
        if (pwrite(fd, block, LH_JLOG_ALIGN, 0) == (ssize_t)LH_JLOG_ALIGN) {
            free(block);
            return fd;
        }
    }
    free(block);
    if (fd >= 0)
        close(fd);
    unlink(path);
    return -1;
}

/* Makes segment log->last_seg + 1 and writes to it from now on. 0 or a negative UV_E*. */
static int new_segment(lh_jlog_t *log)
{
    char path[4200];
    uint32_t seg = log->last_seg + 1;
    path_in(log->dir, seg, path, sizeof(path));
    unsigned char h[LH_JLOG_HEADER];
    memcpy(h, seg_magic, 8);
    put64(h + 8, seg);
    uint64_t size = 0;
    int e = 0, fd = direct_segment(log, path, h, &size), direct = fd >= 0;
    uint64_t now = uv_hrtime();
    if (log->spare != NULL) { /* for the next segment: twice this one, or as asked before */
        if (direct)
            log->spare_size = size * 2 < log->seg_max ? size * 2 : log->seg_max;
        /* of a kind for the rate at which the segment before filled (none: unknown) */
        int zeros =
            log->fd < 0 || lh_jlog_spare_zeros(log->off, now - log->seg_start_ns, log->zero_rate);
        lh_jlog_spare_want(log->spare, log->spare_size, zeros);
    }
    if (!direct) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            e = errno;
            set_error(log, "cannot create", seg, e);
            return uv_err(e);
        }
        ssize_t w = write(fd, h, sizeof(h));
        e = w == (ssize_t)sizeof(h) ? 0 : w < 0 ? errno : ENOSPC;
    }
    /* the file's name must be durable before a record in it is answered */
    if (e == 0 && log->sync_full && (fdatasync(fd) != 0 || fsync(log->dir_fd) != 0))
        e = errno;
    if (e != 0) {
        close(fd);
        unlink(path);
        set_error(log, "cannot start", seg, e);
        return uv_err(e);
    }
    /* nothing of the segment before is touched until here: a failed start leaves it whole */
    if (log->fd >= 0)
        close(log->fd);
    log->fd = fd;
    log->direct = direct;
    if (direct) {
        log->direct_size = size;
        memcpy(log->tail, h, LH_JLOG_HEADER);
    }
    log->last_seg = seg;
    log->off = LH_JLOG_HEADER;
    log->seg_start_ns = now;
    uv_mutex_lock(&log->mu);
    log->seg = seg;
    log->bytes += direct ? size : LH_JLOG_HEADER;
    uv_mutex_unlock(&log->mu);
    return 0;
}

int lh_jlog_open(lh_jlog_t **out, const char *dir, int sync_full, uint64_t seg_max, char *err,
                 size_t errlen)
{
    *out = NULL;
    lh_jlog_t *log = calloc(1, sizeof(*log));
    size_t dl = strlen(dir) + sizeof(LH_JLOG_DIR) + 1;
    if (log == NULL || (log->dir = malloc(dl)) == NULL) {
        free(log);
        snprintf(err, errlen, "journal log: out of memory");
        return -1;
    }
    snprintf(log->dir, dl, "%s/%s", dir, LH_JLOG_DIR);
    log->fd = log->dir_fd = -1;
    log->sync_full = sync_full;
    log->seg_max = seg_max ? seg_max : LH_JLOG_MAX_SEG;
    log->seg_max = block_ceil(log->seg_max);
    if (uv_mutex_init(&log->mu) != 0) {
        free(log->dir);
        free(log);
        snprintf(err, errlen, "journal log: cannot make a mutex");
        return -1;
    }
    if (uv_cond_init(&log->cond) != 0) {
        uv_mutex_destroy(&log->mu);
        free(log->dir);
        free(log);
        snprintf(err, errlen, "journal log: cannot make a condition");
        return -1;
    }
    *out = log; /* lh_jlog_free from here */
    if (mkdir(log->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", log->dir, strerror(errno));
        goto fail;
    }
    if ((log->dir_fd = open(log->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot open %s: %s", log->dir, strerror(errno));
        goto fail;
    }
    uint32_t *segs;
    size_t n;
    if (segments_in(log->dir, &segs, &n, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char path[4200];
        struct stat sb;
        path_in(log->dir, segs[i], path, sizeof(path));
        if (stat(path, &sb) == 0)
            log->bytes += (uint64_t)sb.st_size;
    }
    log->last_seg = n ? segs[n - 1] : 0;
    free(segs);
    if (!sync_full) /* a spare left by a server with --sync full: not used, not kept */
        lh_jlog_spare_remove(log->dir);
    if (new_segment(log) != 0) {
        lh_jlog_last_error(log, err, errlen);
        goto fail;
    }
    return 0;
fail:
    lh_jlog_free(log);
    *out = NULL;
    return -1;
}

void lh_jlog_use_spares(lh_jlog_t *log, uint64_t first, uint64_t zero_rate)
{
    if (!log->sync_full || log->spare != NULL || log->started)
        return;
    log->zero_rate = zero_rate;
    log->spare_size = block_ceil(first);
    if (log->spare_size > log->seg_max)
        log->spare_size = log->seg_max;
    if ((log->spare = lh_jlog_spare_new(log->dir, log->seg_max)) != NULL)
        lh_jlog_spare_want(log->spare, log->spare_size, 1);
}

/* ------------------------------------------------------------------ writing */

/* Writes `iov` whole at `off`. 0 or an errno. */
static int write_all(int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n < IOV_BATCH ? n : IOV_BATCH, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return ENOSPC;
        off += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n > 0 && w > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static void fail_batch(lh_jlog_rec_t *batch, int status)
{
    for (lh_jlog_rec_t *r = batch; r; r = r->next)
        r->status = status;
}

/* Writes `iov` at `off` of a direct segment: the blocks from the one `off` is in, that
** block's earlier bytes (`tail`) first, the last one padded with zeros. 0 or an errno. */
static int write_direct(lh_jlog_t *log, const struct iovec *iov, int n, uint64_t off, uint64_t end)
{
    uint64_t first = block_floor(off);
    size_t len = (size_t)block_ceil(end - first);
    if (len > log->stage_cap) {
        void *b = NULL;
        if (posix_memalign(&b, LH_JLOG_ALIGN, len) != 0)
            return ENOMEM;
        free(log->stage);
        log->stage = b;
        log->stage_cap = len;
    }
    unsigned char *p = log->stage;
    memcpy(p, log->tail, (size_t)(off - first));
    p += off - first;
    for (int i = 0; i < n; i++) {
        memcpy(p, iov[i].iov_base, iov[i].iov_len);
        p += iov[i].iov_len;
    }
    memset(p, 0, (size_t)(log->stage + len - p));
    for (size_t done = 0; done < len;) {
        ssize_t w = pwrite(log->fd, log->stage + done, len - done, (off_t)(first + done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0 || w % LH_JLOG_ALIGN != 0) /* (a part block cannot go on aligned) */
            return w < 0 ? errno : w == 0 ? ENOSPC : EIO;
        done += (size_t)w;
    }
    size_t last = (size_t)block_floor(end - first);
    memcpy(log->tail, log->stage + last, (size_t)(end - first) - last);
    return 0;
}

/* A spare is ready, and the segment being written is appended to, or has no room for the
** batch: the log goes on in the spare. */
static int to_spare(lh_jlog_t *log, size_t total)
{
    if (log->spare == NULL ||
        (log->direct && (log->off <= LH_JLOG_HEADER || log->off + total <= log->direct_size)))
        return 0;
    return lh_jlog_spare_bytes(log->spare) > 0;
}

/* Writes and syncs `batch` (the writer). Every record gets its status and position. */
static void write_batch(lh_jlog_t *log, lh_jlog_rec_t *batch)
{
    static const unsigned char zeros[8];
    size_t n = 0, total = 0;
    for (lh_jlog_rec_t *r = batch; r; r = r->next) {
        n++;
        total += rec_size(r->meta_len, r->body_len);
    }
    int rc;
    int must = log->fd < 0 || (log->off > LH_JLOG_HEADER &&
                               (log->off >= log->seg_max || log->off + total > OFF_LIMIT));
    if ((must || to_spare(log, total)) && (rc = new_segment(log)) != 0 && must) {
        fail_batch(batch, rc);
        return;
    } /* a move to the spare that failed: the batch goes on in the segment it was in */
    if (log->off + total > OFF_LIMIT) {
        set_error(log, "a batch too large for", log->last_seg, EFBIG);
        fail_batch(batch, UV_EFBIG);
        return;
    }
    unsigned char *heads = malloc(n * LH_JLOG_HEADER);
    struct iovec *iov = malloc(n * 4 * sizeof(*iov));
    if (heads == NULL || iov == NULL) {
        free(heads);
        free(iov);
        set_error(log, "out of memory writing", log->last_seg, ENOMEM);
        fail_batch(batch, UV_ENOMEM);
        return;
    }
    uint64_t start = log->off, off = start;
    int k = 0;
    unsigned char *h = heads;
    for (lh_jlog_rec_t *r = batch; r; r = r->next, h += LH_JLOG_HEADER) {
        size_t payload = r->meta_len + r->body_len;
        put32(h, (uint32_t)payload);
        put32(h + 4, rec_crc(log->seg, (uint32_t)off, r->type, r->meta_len, r->meta, r->meta_len,
                             r->body, r->body_len));
        put32(h + 8, r->type);
        put32(h + 12, r->meta_len);
        r->at = (uint64_t)log->seg << 32 | off;
        r->body_at = r->at + LH_JLOG_HEADER + r->meta_len;
        iov[k++] = (struct iovec){h, LH_JLOG_HEADER};
        if (r->meta_len)
            iov[k++] = (struct iovec){r->meta, r->meta_len};
        if (r->body_len)
            iov[k++] = (struct iovec){(void *)r->body, r->body_len};
        size_t pad = pad8(LH_JLOG_HEADER + payload);
        if (pad)
            iov[k++] = (struct iovec){(void *)zeros, pad};
        off += rec_size(r->meta_len, r->body_len);
    }
    int e = log->direct ? write_direct(log, iov, k, start, off) : write_all(log->fd, iov, k, start);
    if (log->stage_cap > (8u << 20)) { /* after a big event: not kept */
        free(log->stage);
        log->stage = NULL;
        log->stage_cap = 0;
    }
    const char *what = "cannot write to";
    if (e == 0 && log->sync_full && fdatasync(log->fd) != 0)
        e = errno, what = "cannot sync";
    free(heads);
    free(iov);
    if (e == ENOMEM) { /* no room for the blocks: nothing was written, the segment goes on */
        set_error(log, "out of memory writing", log->last_seg, ENOMEM);
        fail_batch(batch, UV_ENOMEM);
        return;
    }
    if (e != 0) {
        /* nothing of the batch may be read back: cut it off, and go on in a fresh segment
        ** (after a failed sync the kernel may have dropped pages it could not write) */
        set_error(log, what, log->last_seg, e);
        int t = ftruncate(log->fd, (off_t)start);
        if (t == 0 && log->direct && log->direct_size > start) /* shorter than its spare */
            lh_jlog_forget(log, log->direct_size - start);
        if (t == 0 && log->sync_full)
            t = fdatasync(log->fd);
        (void)t; /* the segment is left either way */
        close(log->fd);
        log->fd = -1;
        fail_batch(batch, uv_err(e));
        return;
    }
    log->off = off;
    uint64_t grew = total;
    if (log->direct) {
        uint64_t size = block_ceil(off);
        grew = size > log->direct_size ? size - log->direct_size : 0;
        if (grew)
            log->direct_size = size;
    }
    uv_mutex_lock(&log->mu);
    log->bytes += grew;
    log->batches++;
    uv_mutex_unlock(&log->mu);
    fail_batch(batch, 0);
}

static void hand_back(lh_jlog_t *log, lh_jlog_rec_t *batch)
{
    lh_jlog_rec_t *tail = batch;
    while (tail->next)
        tail = tail->next;
    uv_mutex_lock(&log->mu);
    if (log->done_tail)
        log->done_tail->next = batch;
    else
        log->done_head = batch;
    log->done_tail = tail;
    uv_mutex_unlock(&log->mu);
}

/* `batch` with its runs' ends first, each kind in the order queued. An end's event is always
** in an earlier batch, so the ends of a batch and the events before them form a prefix of
** the log that pairs every event with its end: the index writes such a pair as its final
** rows at once (journal.c). */
static lh_jlog_rec_t *ends_first(lh_jlog_rec_t *batch)
{
    lh_jlog_rec_t *ends = NULL, **et = &ends, *events = NULL, **vt = &events;
    for (lh_jlog_rec_t *r = batch, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        if (r->type == LH_JLOG_END)
            *et = r, et = &r->next;
        else
            *vt = r, vt = &r->next;
    }
    *et = events;
    return ends;
}

static void writer_main(void *arg)
{
    lh_jlog_t *log = arg;
    prctl(PR_SET_NAME, "luahook-log", 0, 0, 0); /* as top -H and perf show it */
    for (;;) {
        uv_mutex_lock(&log->mu);
        while ((log->q_head == NULL || (log->q_events == 0 && !log->ends_due)) && !log->stopping)
            uv_cond_wait(&log->cond, &log->mu);
        lh_jlog_rec_t *batch = log->q_head;
        log->q_events = 0;
        log->ends_due = 0;
        log->q_head = log->q_tail = NULL;
        int stopping = log->stopping;
        uv_mutex_unlock(&log->mu);
        if (batch != NULL) {
            batch = ends_first(batch);
            write_batch(log, batch);
            hand_back(log, batch);
            uv_async_send(&log->async);
        } else if (stopping) {
            return;
        }
    }
}

/* Runs the `done` of every written record, in order (the loop). */
static void run_done(lh_jlog_t *log)
{
    uv_mutex_lock(&log->mu);
    lh_jlog_rec_t *r = log->done_head;
    log->done_head = log->done_tail = NULL;
    uv_mutex_unlock(&log->mu);
    while (r) {
        lh_jlog_rec_t *next = r->next;
        r->next = NULL;
        r->body = NULL; /* no longer borrowed */
        r->done(r->data, r);
        r = next;
    }
}

static void on_async(uv_async_t *a)
{
    run_done(a->data);
}

/* `ends_due`: runs' ends alone may go too (an event's wake does not need it: left set, it
** would let the next ends alone go at once). */
static void wake_writer(lh_jlog_t *log, int ends_due)
{
    log->queued = log->queued_event = 0;
    uv_mutex_lock(&log->mu);
    log->ends_due |= ends_due;
    uv_cond_signal(&log->cond);
    uv_mutex_unlock(&log->mu);
}

static void on_ends_due(uv_timer_t *t)
{
    lh_jlog_t *log = t->data;
    if (log->queued)
        wake_writer(log, 1);
}

/* The writer is woken once per turn of the loop, before it waits: a batch holds every
** event read in that turn, not the first of them alone (each batch costs a sync). Runs'
** ends alone wait up to ENDS_WAIT_MS for an event: no answer waits for them, and one
** client posting events one by one would otherwise pay two syncs an event. */
static void on_prepare(uv_prepare_t *p)
{
    lh_jlog_t *log = p->data;
    if (!log->queued)
        return;
    if (!log->queued_event) {
        if (!uv_is_active((uv_handle_t *)&log->ends))
            uv_timer_start(&log->ends, on_ends_due, ENDS_WAIT_MS, 0);
        return;
    }
    uv_timer_stop(&log->ends);
    wake_writer(log, 0);
}

int lh_jlog_start(lh_jlog_t *log, uv_loop_t *loop)
{
    int rc = uv_async_init(loop, &log->async, on_async);
    if (rc != 0)
        return rc;
    log->async.data = log;
    log->async_open = 1;
    if ((rc = uv_prepare_init(loop, &log->prepare)) != 0) {
        uv_close((uv_handle_t *)&log->async, NULL);
        log->async_open = 0;
        return rc;
    }
    log->prepare.data = log;
    log->prepare_open = 1;
    uv_prepare_start(&log->prepare, on_prepare);
    uv_unref((uv_handle_t *)&log->prepare);
    if ((rc = uv_timer_init(loop, &log->ends)) == 0) {
        log->ends.data = log;
        log->ends_open = 1;
        uv_unref((uv_handle_t *)&log->ends);
        rc = uv_thread_create(&log->thread, writer_main, log);
    }
    if (rc != 0) {
        uv_close((uv_handle_t *)&log->async, NULL);
        uv_close((uv_handle_t *)&log->prepare, NULL);
        if (log->ends_open)
            uv_close((uv_handle_t *)&log->ends, NULL);
        log->async_open = log->prepare_open = log->ends_open = 0;
        return rc;
    }
    log->started = 1;
    return 0;
}

void lh_jlog_append(lh_jlog_t *log, lh_jlog_rec_t *r)
{
    r->next = NULL;
    if (!log->started) { /* before the start or after the stop: written here and now */
        write_batch(log, r);
        hand_back(log, r);
        run_done(log);
        return;
    }
    uv_mutex_lock(&log->mu);
    if (log->q_tail)
        log->q_tail->next = r;
    else
        log->q_head = r;
    log->q_tail = r;
    log->q_events += r->type != LH_JLOG_END;
    uv_mutex_unlock(&log->mu);
    log->queued = 1; /* the writer is woken at the end of this turn (on_prepare) */
    if (r->type != LH_JLOG_END)
        log->queued_event = 1;
}

void lh_jlog_stop(lh_jlog_t *log)
{
    if (log == NULL)
        return;
    if (log->started) {
        uv_mutex_lock(&log->mu);
        log->stopping = 1;
        uv_cond_signal(&log->cond);
        uv_mutex_unlock(&log->mu);
        uv_thread_join(&log->thread);
        log->started = 0;
    }
    run_done(log);
    if (log->async_open && !uv_is_closing((uv_handle_t *)&log->async))
        uv_close((uv_handle_t *)&log->async, NULL);
    if (log->prepare_open && !uv_is_closing((uv_handle_t *)&log->prepare))
        uv_close((uv_handle_t *)&log->prepare, NULL);
    if (log->ends_open && !uv_is_closing((uv_handle_t *)&log->ends))
        uv_close((uv_handle_t *)&log->ends, NULL);
}

void lh_jlog_free(lh_jlog_t *log)
{
    if (log == NULL)
        return;
    if (log->fd >= 0)
        close(log->fd);
    if (log->dir_fd >= 0)
        close(log->dir_fd);
    lh_jlog_spare_free(log->spare);
    free(log->stage);
    uv_cond_destroy(&log->cond);
    uv_mutex_destroy(&log->mu);
    free(log->dir);
    free(log);
}

lh_jlog_stats_t lh_jlog_stats(const lh_jlog_t *log)
{
    lh_jlog_t *l = (lh_jlog_t *)log; /* the mutex only */
    uv_mutex_lock(&l->mu);
    lh_jlog_stats_t st = {l->seg, l->bytes, l->batches};
    uv_mutex_unlock(&l->mu);
    if (l->spare != NULL)
        st.bytes += lh_jlog_spare_bytes(l->spare);
    return st;
}

void lh_jlog_forget(lh_jlog_t *log, uint64_t bytes)
{
    uv_mutex_lock(&log->mu);
    log->bytes = log->bytes > bytes ? log->bytes - bytes : 0;
    uv_mutex_unlock(&log->mu);
}

void lh_jlog_last_error(lh_jlog_t *log, char *buf, size_t len)
{
    uv_mutex_lock(&log->mu);
    snprintf(buf, len, "%s", log->last_error[0] ? log->last_error : "no error");
    uv_mutex_unlock(&log->mu);
}

/* ------------------------------------------------------------------ reading */

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : EIO;
        p += r, len -= (size_t)r, off += (uint64_t)r;
    }
    return 0;
}

/* The records of one segment from `off`; 1: `fn` stopped; -1: error. */
static int scan_segment(const char *path, uint32_t seg, uint64_t off,
                        int (*fn)(void *data, const lh_jlog_found_t *f), void *data, int *stop,
                        char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) /* retired meanwhile */
            return 0;
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    unsigned char h[LH_JLOG_HEADER];
    if (fstat(fd, &sb) != 0 || read_at(fd, h, sizeof(h), 0) != 0 || memcmp(h, seg_magic, 8) != 0 ||
        get64(h + 8) != seg) {
        close(fd); /* not one of ours, or cut before its header: nothing in it */
        return 0;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (off < LH_JLOG_HEADER)
        off = LH_JLOG_HEADER;
    unsigned char *buf = NULL;
    size_t cap = 0;
    int ret = 0;
    while (off + LH_JLOG_HEADER <= size) {
        if (read_at(fd, h, sizeof(h), off) != 0)
            break;
        uint32_t payload = get32(h), crc = get32(h + 4), type = get32(h + 8), meta = get32(h + 12);
        if ((type != LH_JLOG_EVENT && type != LH_JLOG_END) || meta > payload ||
            off + LH_JLOG_HEADER + payload > size)
            break; /* the torn or unwritten tail */
        if (payload > cap || buf == NULL) {
            unsigned char *nb = realloc(buf, payload ? payload : 1);
            if (nb == NULL) {
                snprintf(err, errlen, "out of memory reading %s", path);
                ret = -1;
                break;
            }
            buf = nb, cap = payload;
        }
        if (read_at(fd, buf, payload, off + LH_JLOG_HEADER) != 0 ||
            rec_crc(seg, (uint32_t)off, type, meta, buf, meta, buf + meta, payload - meta) != crc)
            break;
        uint64_t at = (uint64_t)seg << 32 | off;
        lh_jlog_found_t f = {.type = type,
                             .meta = buf,
                             .meta_len = meta,
                             .body = (const char *)buf + meta,
                             .body_len = payload - meta,
                             .at = at,
                             .body_at = at + LH_JLOG_HEADER + meta,
                             .end = at + rec_size(meta, payload - meta)};
        if ((*stop = fn(data, &f)) != 0) {
            ret = 1;
            break;
        }
        off += rec_size(meta, payload - meta);
    }
    free(buf);
    close(fd);
    return ret;
}

int lh_jlog_scan(const char *dir, uint64_t from, int (*fn)(void *data, const lh_jlog_found_t *f),
                 void *data, uint32_t *last_seg, char *err, size_t errlen)
{
    char jdir[4096], path[4200];
    snprintf(jdir, sizeof(jdir), "%s/%s", dir, LH_JLOG_DIR);
    uint32_t *segs;
    size_t n;
    if (segments_in(jdir, &segs, &n, err, errlen) != 0)
        return -1;
    if (last_seg != NULL)
        *last_seg = n ? segs[n - 1] : 0;
    uint32_t from_seg = (uint32_t)(from >> 32);
    int ret = 0, stop = 0;
    for (size_t i = 0; i < n && ret == 0; i++) {
        if (segs[i] < from_seg)
            continue;
        path_in(jdir, segs[i], path, sizeof(path));
        ret = scan_segment(path, segs[i], segs[i] == from_seg ? (uint32_t)from : 0, fn, data, &stop,
                           err, errlen);
    }
    free(segs);
    return ret == 1 ? stop : ret;
}

int lh_jlog_read(const char *dir, uint64_t at, char *buf, size_t len, char *err, size_t errlen)
{
    char path[4200], jdir[4096];
    snprintf(jdir, sizeof(jdir), "%s/%s", dir, LH_JLOG_DIR);
    path_in(jdir, (uint32_t)(at >> 32), path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int e = read_at(fd, buf, len, (uint32_t)at);
    close(fd);
    if (e != 0) {
        snprintf(err, errlen, "cannot read %zu bytes at %u of %s: %s", len, (unsigned)(uint32_t)at,
                 path, e == EIO ? "the file is shorter" : strerror(e));
        return -1;
    }
    return 0;
}

void lh_jlog_segment_path(const char *dir, uint32_t seg, char *buf, size_t len)
{
    char jdir[4096];
    snprintf(jdir, sizeof(jdir), "%s/%s", dir, LH_JLOG_DIR);
    path_in(jdir, seg, buf, len);
}

int lh_jlog_segments(const char *dir, uint32_t **out, size_t *n, char *err, size_t errlen)
{
    char jdir[4096];
    snprintf(jdir, sizeof(jdir), "%s/%s", dir, LH_JLOG_DIR);
    return segments_in(jdir, out, n, err, errlen);
}
