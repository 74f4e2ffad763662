#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

#include "json_escape.h"

static lh_level_t log_level = LH_INFO;
static lh_log_format_t log_format = LH_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void lh_log_setup(lh_level_t level, lh_log_format_t format)
{
    log_level = level;
    log_format = format;
}

int lh_fieldset_set(lh_fieldset_t *s, const char *key, const char *val, int number)
{
    size_t klen = strlen(key) + 1, vlen = strlen(val) + 1;
    size_t i = 0;
    while (i < s->n && strcmp(s->fields[i].key, key) != 0)
        i++;
    if (i == LH_FIELDSET_MAX || s->used + klen + vlen > sizeof(s->buf))
        return -1; /* a replaced value's old copy stays in buf: replacing is rare */
    char *k = s->buf + s->used, *v = k + klen;
    memcpy(k, key, klen);
    memcpy(v, val, vlen);
    s->used += klen + vlen;
    s->fields[i] = (lh_field_t){k, v, (size_t)-1, number};
    if (i == s->n)
        s->n++;
    return 0;
}

int lh_log_enabled(lh_level_t level)
{
    return level >= log_level;
}

/* A line is assembled in a fixed buffer and written with one write(2), so lines from
** different parts never interleave; a line that does not fit is cut, never split. */
typedef struct {
    char buf[8192];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void putc_(line_t *l, char c)
{
    put(l, &c, 1);
}

static void put_json_string(line_t *l, const char *s, size_t n)
{
    putc_(l, '"');
    while (n > 0) { /* in slices, so any length streams through the line buffer */
        char esc[LH_JSON_ESCAPED_MAX(256)];
        size_t take = n < 256 ? n : 256;
        put(l, esc, lh_json_escape(esc, sizeof esc, s, take));
        s += take, n -= take;
    }
    putc_(l, '"');
}

/* Text values are bare when they can be, quoted (JSON-style escapes) when they hold
** spaces, quotes, '=' or control characters, so a line always splits back into fields. */
static void put_text_value(line_t *l, const char *s, size_t n)
{
    int quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)s[i];
        quote = c <= ' ' || c == '"' || c == '=' || c == 0x7f;
    }
    if (quote)
        put_json_string(l, s, n);
    else
        put(l, s, n);
}

static void put_time(line_t *l)
{
    struct timeval tv;
    struct tm tm;
    char ts[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    if (log_format == LH_LOG_JSON)
        put_json_string(l, ts, n);
    else
        put(l, ts, n);
}

void lh_log_fields(lh_level_t level, const char *msg, const lh_field_t *fields, size_t n)
{
    if (!lh_log_enabled(level))
        return;
    line_t l;
    l.len = 0;
    const char *lname = level_names[level];
    if (log_format == LH_LOG_JSON) {
        put(&l, "{\"ts\":", 6);
        put_time(&l);
        put(&l, ",\"level\":\"", 10);
        put(&l, lname, strlen(lname));
        put(&l, "\",\"msg\":", 8);
        put_json_string(&l, msg, strlen(msg));
        for (size_t i = 0; i < n; i++) {
            const lh_field_t *f = &fields[i];
            size_t vlen = f->len == (size_t)-1 ? strlen(f->val) : f->len;
            putc_(&l, ',');
            put_json_string(&l, f->key, strlen(f->key));
            putc_(&l, ':');
            if (f->number)
                put(&l, f->val, vlen);
            else
                put_json_string(&l, f->val, vlen);
        }
        /* a cut line must still parse: close it whatever happened above */
        if (l.len >= sizeof(l.buf) - 2)
            l.len = sizeof(l.buf) - 4, put(&l, "\"}", 2);
        else
            putc_(&l, '}');
    } else {
        put_time(&l);
        putc_(&l, ' ');
        put(&l, lname, strlen(lname));
        putc_(&l, ' ');
        put(&l, msg, strlen(msg));
        for (size_t i = 0; i < n; i++) {
            const lh_field_t *f = &fields[i];
            size_t vlen = f->len == (size_t)-1 ? strlen(f->val) : f->len;
            putc_(&l, ' ');
            put(&l, f->key, strlen(f->key));
            putc_(&l, '=');
            put_text_value(&l, f->val, vlen);
        }
    }
    l.buf[l.len++] = '\n';
    ssize_t off = 0;
    while ((size_t)off < l.len) {
        ssize_t w = write(STDERR_FILENO, l.buf + off, l.len - (size_t)off);
        if (w <= 0)
            break;
        off += w;
    }
}

void lh_log_printf(lh_level_t level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    if (!lh_log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lh_log_fields(level, msg, NULL, 0);
}

void lh_log_run_failed(const char *msg, const char *id, const char *action, const char *handler,
                       const char *script, int line, const char *outcome, const char *err,
                       const char *traceback)
{
    lh_field_t f[8];
    size_t n = 0;
    char ln[16];
    if (!lh_log_enabled(LH_ERROR))
        return;
    snprintf(ln, sizeof(ln), "%d", line);
    if (id != NULL)
        f[n++] = LH_FIELD("id", id);
    if (action != NULL)
        f[n++] = LH_FIELD("action", action);
    if (handler != NULL)
        f[n++] = LH_FIELD("handler", handler);
    f[n++] = LH_FIELD("script", script);
    f[n++] = LH_FIELD_NUM("line", ln);
    f[n++] = LH_FIELD("outcome", outcome);
    f[n++] = LH_FIELD("error", err ? err : "");
    f[n++] = LH_FIELD("traceback", traceback ? traceback : "");
    lh_log_fields(LH_ERROR, msg, f, n);
}
