#define _GNU_SOURCE /* O_DIRECT */
#include "jlog_spare.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <uv.h>

#define CHUNK   (1u << 20)   /* zeros per write */
#define RESERVE (256u << 20) /* see has_room */

struct lh_jlog_spare_s {
    char *path, *tmp, *jdir;
    uint64_t size; /* of the one ready, or being made */
    int zeros;     /* the one being made: written with zeros, else allocated */
    uv_mutex_t mu;
    uv_cond_t cond;
    uv_thread_t thread;
    int want, ready, stopping;
    int unsupported; /* O_DIRECT refused here: no spare is ever made */
};

static int stopping(lh_jlog_spare_t *sp)
{
    uv_mutex_lock(&sp->mu);
    int s = sp->stopping;
    uv_mutex_unlock(&sp->mu);
    return s;
}

/* Room for the spare and three segments more (four of its size), and a twentieth of the
** file system (at most RESERVE) left free: a spare must never be what fills the disk under
** the log or the database. */
static int has_room(lh_jlog_spare_t *sp, uint64_t size)
{
    struct statvfs v;
    if (statvfs(sp->jdir, &v) != 0)
        return 0;
    uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize, total = (uint64_t)v.f_blocks * v.f_frsize;
    return avail >= 4 * size + (total / 20 < RESERVE ? total / 20 : RESERVE);
}

int lh_jlog_spare_zeros(uint64_t bytes, uint64_t ns, uint64_t zero_rate)
{
    return ns == 0 || (double)bytes * 1e9 / (double)ns < (double)zero_rate;
}

/* Makes the spare in next.spare.tmp: `size` bytes allocated or (`zeros`, or where the file
** system cannot allocate) zeros written with O_DIRECT; synced, renamed. 0 or an errno. The
** file is opened with O_DIRECT either way: where that is refused (EINVAL), no spare is made. */
static int make(lh_jlog_spare_t *sp, uint64_t size, int zeros_wanted)
{
    int fd = open(sp->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    void *zeros = NULL;
    int e = 0;
    if (!zeros_wanted && fallocate(fd, 0, 0, (off_t)size) != 0) {
        e = errno;
        if (e == EOPNOTSUPP || e == ENOSYS) /* not here: zeros */
            zeros_wanted = 1, e = 0;
    }
    if (zeros_wanted && (e = posix_memalign(&zeros, LH_JLOG_ALIGN, CHUNK)) == 0) {
        memset(zeros, 0, CHUNK);
        for (uint64_t off = 0; off < size && e == 0; off += CHUNK) {
            size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
            ssize_t w = pwrite(fd, zeros, n, (off_t)off);
            e = w == (ssize_t)n ? 0 : w < 0 ? errno : ENOSPC;
            if (e == 0 && stopping(sp))
                e = ECANCELED;
        }
        free(zeros);
    }
    if (e == 0 && fdatasync(fd) != 0)
        e = errno;
    close(fd);
    if (e == 0 && rename(sp->tmp, sp->path) != 0)
        e = errno;
    if (e != 0)
        unlink(sp->tmp);
    return e;
}

static void spare_main(void *arg)
{
    lh_jlog_spare_t *sp = arg;
    prctl(PR_SET_NAME, "luahook-spare", 0, 0, 0);
    /* behind the loop and the log's writer on a shared core: a spare is never urgent */
    setpriority(PRIO_PROCESS, (id_t)gettid(), 10);
    uv_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->stopping && !sp->want)
            uv_cond_wait(&sp->cond, &sp->mu);
        if (sp->stopping)
            break;
        uint64_t size = sp->size;
        int zeros = sp->zeros;
        uv_mutex_unlock(&sp->mu);
        int e = has_room(sp, size) ? make(sp, size, zeros) : ENOSPC;
        uv_mutex_lock(&sp->mu);
        sp->want = 0;
        if (e == 0)
            sp->ready = 1;
        else if (e == EINVAL)
            sp->unsupported = 1;
    }
    uv_mutex_unlock(&sp->mu);
}

/* Renames `from` to `to` unless `to` exists (a segment is never replaced). 0 or -1. */
static int rename_new(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS) /* a file system without the flag: link */
        return -1;
    if (link(from, to) != 0)
        return -1;
    unlink(from);
    return 0;
}

/* The spare's path in `jdir`, and its path while it is being made; malloc'ed. 0 or -1. */
static int spare_paths(const char *jdir, char **path, char **tmp)
{
    size_t n = strlen(jdir) + sizeof(LH_JLOG_SPARE_NAME) + 8;
    *path = malloc(n);
    *tmp = malloc(n);
    if (*path == NULL || *tmp == NULL) {
        free(*path), free(*tmp);
        *path = *tmp = NULL;
        return -1;
    }
    snprintf(*path, n, "%s/%s", jdir, LH_JLOG_SPARE_NAME);
    snprintf(*tmp, n, "%s/%s.tmp", jdir, LH_JLOG_SPARE_NAME);
    return 0;
}

void lh_jlog_spare_remove(const char *jdir)
{
    char *path, *tmp;
    if (spare_paths(jdir, &path, &tmp) != 0)
        return;
    unlink(path);
    unlink(tmp);
    free(path), free(tmp);
}

lh_jlog_spare_t *lh_jlog_spare_new(const char *jdir, uint64_t max)
{
    lh_jlog_spare_t *sp = calloc(1, sizeof(*sp));
    if (sp == NULL || spare_paths(jdir, &sp->path, &sp->tmp) != 0 ||
        (sp->jdir = strdup(jdir)) == NULL) {
        if (sp != NULL)
            free(sp->path), free(sp->tmp);
        free(sp);
        return NULL;
    }
    unlink(sp->tmp); /* cut short by a crash */
    struct stat sb;
    if (stat(sp->path, &sb) == 0) {
        if (sb.st_size > 0 && sb.st_size % LH_JLOG_ALIGN == 0 && (uint64_t)sb.st_size <= max)
            sp->ready = 1, sp->size = (uint64_t)sb.st_size;
        else
            unlink(sp->path);
    }
    if (uv_mutex_init(&sp->mu) != 0)
        goto fail;
    if (uv_cond_init(&sp->cond) != 0) {
        uv_mutex_destroy(&sp->mu);
        goto fail;
    }
    if (uv_thread_create(&sp->thread, spare_main, sp) != 0) {
        uv_cond_destroy(&sp->cond);
        uv_mutex_destroy(&sp->mu);
        goto fail;
    }
    return sp;
fail:
    free(sp->path), free(sp->tmp), free(sp->jdir);
    free(sp);
    return NULL;
}

void lh_jlog_spare_want(lh_jlog_spare_t *sp, uint64_t size, int zeros)
{
    uv_mutex_lock(&sp->mu);
    if (!sp->ready && !sp->want && !sp->unsupported) {
        sp->want = 1;
        sp->size = size;
        sp->zeros = zeros;
        uv_cond_signal(&sp->cond);
    }
    uv_mutex_unlock(&sp->mu);
}

int lh_jlog_spare_take(lh_jlog_spare_t *sp, const char *path, uint64_t *size)
{
    uv_mutex_lock(&sp->mu);
    int rc = -1;
    if (sp->ready) {
        sp->ready = 0;
        *size = sp->size;
        if (rename_new(sp->path, path) == 0)
            rc = 0;
        else
            unlink(sp->path);
    }
    uv_mutex_unlock(&sp->mu);
    return rc;
}

uint64_t lh_jlog_spare_bytes(lh_jlog_spare_t *sp)
{
    uv_mutex_lock(&sp->mu);
    uint64_t n = sp->ready ? sp->size : 0;
    uv_mutex_unlock(&sp->mu);
    return n;
}

void lh_jlog_spare_free(lh_jlog_spare_t *sp)
{
    if (sp == NULL)
        return;
    uv_mutex_lock(&sp->mu);
    sp->stopping = 1;
    uv_cond_signal(&sp->cond);
    uv_mutex_unlock(&sp->mu);
    uv_thread_join(&sp->thread);
    uv_cond_destroy(&sp->cond);
    uv_mutex_destroy(&sp->mu);
    free(sp->path), free(sp->tmp), free(sp->jdir);
    free(sp);
}
