#include "stubs.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "embedded.h"

#define PREFIX "luahook/stubs/"

/* mkdir -p: each component of `dir` in turn. 0, or -1 with errno set. */
static int make_dirs(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return -1;
        buf[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

int lh_stubs_write(const char *dir)
{
    size_t plen = strlen(PREFIX);
    if (make_dirs(dir) != 0) {
        fprintf(stderr, "luahook stubs: %s: %s\n", dir, strerror(errno));
        return 2;
    }
    for (const lh_embedded_t *e = lh_embedded; e->name != NULL; e++) {
        if (strncmp(e->name, PREFIX, plen) != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->name + plen);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(e->data, 1, e->len, f) != e->len) {
            fprintf(stderr, "luahook stubs: %s: %s\n", path, strerror(errno));
            if (f != NULL)
                fclose(f);
            return 2;
        }
        if (fclose(f) != 0) {
            fprintf(stderr, "luahook stubs: %s: %s\n", path, strerror(errno));
            return 2;
        }
        printf("wrote %s\n", path);
    }
    return 0;
}
