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
** different parts never interleave. A line that does not fit is cut between characters and
** escapes (never inside one), closed properly and marked "truncated", so it always parses. */
#define LINE_MAX_BYTES 8192
#define CUT_MARK_JSON  ",\"truncated\":true"
#define CUT_MARK_TEXT  " truncated=true"
/* A message takes at most this much of a line: luahook's own fields after it (script,
** action, delivery id) still fit when a handler logs a huge message. */
#define MSG_MAX_BYTES 4096

typedef struct {
    char buf[LINE_MAX_BYTES];
    size_t len;
    size_t limit; /* content ends here: the rest is for the cut mark, "}" and "\n" */
    int cut;      /* something did not fit: nothing more is added */
    int cut_msg;  /* the message was cut (the fields after it were not) */
} line_t;

static void line_init(line_t *l)
{
    l->len = 0;
    l->limit = sizeof(l->buf) - sizeof(CUT_MARK_JSON) - 2;
    l->cut = 0;
    l->cut_msg = 0;
}

/* Starts the message: it may fill MSG_MAX_BYTES at most. */
static size_t msg_begin(line_t *l)
{
    size_t limit = l->limit;
    if (l->limit - l->len > MSG_MAX_BYTES)
        l->limit = l->len + MSG_MAX_BYTES;
    return limit;
}

/* Ends the message: the fields may use the rest of the line. */
static void msg_end(line_t *l, size_t limit)
{
    if (l->cut && limit > l->limit)
        l->cut = 0, l->cut_msg = 1;
    l->limit = limit;
}

/* All or nothing: -1 (and the line is cut) when s does not fit. */
static int put(line_t *l, const char *s, size_t n)
{
    if (l->cut || n > l->limit - l->len) {
        l->cut = 1;
        return -1;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return 0;
}

/* As much of s as fits (s holds no multi-byte characters a cut could split). */
static void put_some(line_t *l, const char *s, size_t n)
{
    size_t room = l->cut ? 0 : l->limit - l->len;
    if (n > room)
        n = room, l->cut = 1;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void putc_(line_t *l, char c)
{
    put(l, &c, 1);
}

/* A JSON string of s, valid UTF-8 whatever s holds. `whole`: all of it or nothing (a
** key); else what fits (a value), then the line is cut. */
static int put_json_string(line_t *l, const char *s, size_t n, int whole)
{
    size_t mark = l->len, used;
    if (l->cut || l->limit - l->len < 2) {
        l->cut = 1;
        return -1;
    }
    l->buf[l->len++] = '"';
    l->len += lh_json_escape_utf8(l->buf + l->len, l->limit - l->len - 1, s, n, &used);
    if (used < n) {
        l->cut = 1;
        if (whole) {
            l->len = mark;
            return -1;
        }
    }
    l->buf[l->len++] = '"';
    return 0;
}

/* A field's raw JSON (a number, or a table json.encode wrote, which keeps a handler's bytes):
** copied with what is not UTF-8 replaced by U+FFFD and C1 controls escaped, all or nothing.
** Outside strings the encoder writes ASCII only, so both land inside a string. */
static int put_raw_json(line_t *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t mark = l->len;
    for (size_t i = 0; i < n;) {
        size_t len = lh_utf8_seq(s + i, n - i);
        char c1[6] = {'\\', 'u', '0', '0', 0, 0};
        int r;
        if (len == 0) {
            r = put(l, "\xEF\xBF\xBD", 3), len = 1;
        } else if (len == 2 && (unsigned char)s[i] == 0xC2 && (unsigned char)s[i + 1] < 0xA0) {
            c1[4] = hex[(unsigned char)s[i + 1] >> 4], c1[5] = hex[s[i + 1] & 15];
            r = put(l, c1, 6);
        } else {
            r = put(l, s + i, len);
        }
        if (r != 0) {
            l->len = mark;
            return -1;
        }
        i += len;
    }
    return 0;
}

/* Text: the message and field names as one line of printable text. Backslash, \n, \r and
** \t get C escapes, other control bytes and bytes that are not UTF-8 \xHH, C1 controls
** \u0080..\u009f; in a name (`key`) also space, '=' and '"', so a field splits back. */
static void put_text_escaped(line_t *l, const char *s, size_t n, int key)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n && !l->cut) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        size_t el = 0, len = 1;
        if (c >= 0x80) {
            len = lh_utf8_seq(s + i, n - i);
            if (len == 0) {
                len = 1, el = 4, memcpy(e, "\\x", 2), e[2] = hex[c >> 4], e[3] = hex[c & 15];
            } else if (len == 2 && c == 0xC2 && (unsigned char)s[i + 1] < 0xA0) {
                c = (unsigned char)s[i + 1];
                el = 6, memcpy(e, "\\u00", 4), e[4] = hex[c >> 4], e[5] = hex[c & 15];
            } else {
                put(l, s + i, len); /* a whole character or nothing */
                i += len;
                continue;
            }
        } else if (c == '\\' || c == '\n' || c == '\r' || c == '\t') {
            el = 2, e[0] = '\\', e[1] = c == '\\' ? '\\' : c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f || (key && (c == ' ' || c == '=' || c == '"'))) {
            el = 4, memcpy(e, "\\x", 2), e[2] = hex[c >> 4], e[3] = hex[c & 15];
        } else { /* a run of plain ASCII */
            size_t j = i + 1;
            for (; j < n; j++) {
                unsigned char d = (unsigned char)s[j];
                if (d < (key ? 0x21 : 0x20) || d >= 0x7f || d == '\\' ||
                    (key && (d == '=' || d == '"')))
                    break;
            }
            put_some(l, s + i, j - i);
            i = j;
            continue;
        }
        put(l, e, el);
        i += len;
    }
}

/* Text values are bare when they can be (printable, no '"', '=' or '\\', valid UTF-8 with
** no C1 control), else a JSON string, so a line always splits back into fields. */
static void put_text_value(line_t *l, const char *s, size_t n)
{
    int quote = n == 0;
    for (size_t i = 0; i < n && !quote;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = lh_utf8_seq(s + i, n - i);
        quote = c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f || len == 0 ||
                (c == 0xC2 && (unsigned char)s[i + 1] < 0xA0);
        i += len;
    }
    if (quote) {
        put_json_string(l, s, n, 0);
        return;
    }
    size_t room = l->cut ? 0 : l->limit - l->len;
    if (n > room) /* cut between characters: back off from inside one */
        while (room > 0 && ((unsigned char)s[room] & 0xC0) == 0x80)
            room--;
    put_some(l, s, n > room ? room : n);
    if (n > room)
        l->cut = 1;
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
        put_json_string(l, ts, n, 1);
    else
        put(l, ts, n);
}

/* Builds the line of `level`, `msg` and the fields in l, in the format set, with its "\n". */
static void format_line(line_t *l, lh_level_t level, const char *msg, const lh_field_t *fields,
                        size_t n)
{
    const char *lname = level_names[level];
    line_init(l);
    if (log_format == LH_LOG_JSON) {
        put(l, "{\"ts\":", 6);
        put_time(l);
        put(l, ",\"level\":\"", 10);
        put(l, lname, strlen(lname));
        put(l, "\",\"msg\":", 8);
        size_t limit = msg_begin(l);
        put_json_string(l, msg, strlen(msg), 0);
        msg_end(l, limit);
        for (size_t i = 0; i < n && !l->cut; i++) {
            const lh_field_t *f = &fields[i];
            size_t vlen = f->len == (size_t)-1 ? strlen(f->val) : f->len;
            size_t mark = l->len;
            /* a field that does not fit goes whole, but a long string value is cut */
            if (put(l, ",", 1) || put_json_string(l, f->key, strlen(f->key), 1) || put(l, ":", 1) ||
                (f->number ? put_raw_json(l, f->val, vlen) : put_json_string(l, f->val, vlen, 0)))
                l->len = mark;
        }
        if (l->cut || l->cut_msg)
            memcpy(l->buf + l->len, CUT_MARK_JSON, sizeof(CUT_MARK_JSON) - 1),
                l->len += sizeof(CUT_MARK_JSON) - 1;
        l->buf[l->len++] = '}';
    } else {
        put_time(l);
        putc_(l, ' ');
        put(l, lname, strlen(lname));
        putc_(l, ' ');
        size_t limit = msg_begin(l);
        put_text_escaped(l, msg, strlen(msg), 0);
        msg_end(l, limit);
        for (size_t i = 0; i < n && !l->cut; i++) {
            const lh_field_t *f = &fields[i];
            size_t vlen = f->len == (size_t)-1 ? strlen(f->val) : f->len;
            putc_(l, ' ');
            put_text_escaped(l, f->key, strlen(f->key), 1);
            putc_(l, '=');
            put_text_value(l, f->val, vlen);
        }
        if (l->cut || l->cut_msg)
            memcpy(l->buf + l->len, CUT_MARK_TEXT, sizeof(CUT_MARK_TEXT) - 1),
                l->len += sizeof(CUT_MARK_TEXT) - 1;
    }
    l->buf[l->len++] = '\n';
}

void lh_log_fields(lh_level_t level, const char *msg, const lh_field_t *fields, size_t n)
{
    if (!lh_log_enabled(level))
        return;
    line_t l;
    format_line(&l, level, msg, fields, n);
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
