#include "journal_query.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "jlog.h"
#include "json_escape.h"

const char *const lh_jq_statuses[] = {"pending",   "ok",   "retrying", "dead",
                                      "duplicate", "none", NULL};

/* ------------------------------------------------------------------ buffer */

static int reserve(lh_jbuf_t *b, size_t n)
{
    if (b->oom)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p, b->cap = cap;
    return 0;
}

void lh_jbuf_add(lh_jbuf_t *b, const char *s, size_t n)
{
    if (reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void lh_jbuf_adds(lh_jbuf_t *b, const char *s)
{
    lh_jbuf_add(b, s, strlen(s));
}

void lh_jbuf_addf(lh_jbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(b, (size_t)n) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t want;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        want = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        want = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        want = 4, cp = c & 0x07;
    else
        return 0;
    if (n < want)
        return 0;
    for (size_t i = 1; i < want; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((want == 3 && cp < 0x800) || (want == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return want;
}

/* The content of a JSON string (no quotes). */
static void str_content(lh_jbuf_t *b, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t run = i; /* the longest valid stretch, escaped at once */
        size_t k;
        while (run < n && (k = utf8_len((const unsigned char *)s + run, n - run)) > 0)
            run += k;
        if (run > i && reserve(b, LH_JSON_ESCAPED_MAX(run - i)) == 0)
            b->len += lh_json_escape(b->p + b->len, b->cap - b->len - 1, s + i, run - i);
        if (run < n) {
            lh_jbuf_add(b, "\\ufffd", 6);
            run++;
        }
        i = run;
    }
}

void lh_jbuf_str(lh_jbuf_t *b, const char *s, size_t n)
{
    if (s == NULL) {
        lh_jbuf_add(b, "null", 4);
        return;
    }
    lh_jbuf_add(b, "\"", 1);
    str_content(b, s, n);
    lh_jbuf_add(b, "\"", 1);
}

void lh_jbuf_time(lh_jbuf_t *b, double t)
{
    if (isnan(t))
        lh_jbuf_add(b, "null", 4);
    else
        lh_jbuf_addf(b, "%.6f", t);
}

void lh_jbuf_free(lh_jbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

/* ------------------------------------------------------------------ masked JSON */

#define MASK_MAX_DEPTH 1000 /* as the event decoder's (LH_JSON_MAX_DEPTH) */

typedef struct {
    const char *s, *end, *p;
    lh_jbuf_t *b;
    int indent;
    const char *why;
} pp_t;

static void ws(pp_t *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r'))
        x->p++;
}

static void newline(pp_t *x, int depth)
{
    if (x->indent == 0)
        return;
    lh_jbuf_add(x->b, "\n", 1);
    for (int i = 0; i < depth * x->indent; i++)
        lh_jbuf_add(x->b, " ", 1);
}

/* A string token at x->p: checked, copied as sent (bytes that are not UTF-8 as \ufffd: the
** output is always UTF-8); its unescaped ASCII form (for key comparisons, cut at 63
** bytes) in `plain` when given. */
static int string_tok(pp_t *x, char *plain, size_t plainlen, int copy)
{
    const char *start = x->p;
    size_t pl = 0;
    int bad = 0;
    x->p++; /* the opening quote */
    for (;;) {
        if (x->p >= x->end) {
            x->why = "unterminated string";
            return -1;
        }
        unsigned char c = (unsigned char)*x->p;
        if (c == '"')
            break;
        char out = 0;
        if (c < 0x20) {
            x->why = "control character in a string";
            return -1;
        }
        if (c == '\\') {
            if (x->end - x->p < 2) {
                x->why = "unterminated escape";
                return -1;
            }
            char e = x->p[1];
            if (e == 'u') {
                unsigned v = 0;
                if (x->end - x->p < 6) {
                    x->why = "short \\u escape";
                    return -1;
                }
                for (int i = 2; i < 6; i++) {
                    char h = x->p[i];
                    if (!isxdigit((unsigned char)h)) {
                        x->why = "bad \\u escape";
                        return -1;
                    }
                    v = v * 16 +
                        (unsigned)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
                }
                out = v < 0x80 ? (char)v : '?';
                x->p += 6;
            } else if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
                out = e == 'n' ? '\n' : e == 't' ? '\t' : e;
                x->p += 2;
            } else {
                x->why = "bad escape";
                return -1;
            }
        } else {
            size_t k = utf8_len((const unsigned char *)x->p, (size_t)(x->end - x->p));
            if (k == 0) /* the event decoder takes such bytes: so does this */
                bad = 1, k = 1;
            out = k == 1 && c < 0x80 ? (char)c : '?';
            x->p += k;
        }
        if (plain != NULL && pl + 1 < plainlen)
            plain[pl++] = out;
    }
    x->p++; /* the closing quote */
    if (plain != NULL)
        plain[pl] = '\0';
    if (copy && !bad)
        lh_jbuf_add(x->b, start, (size_t)(x->p - start));
    for (const char *c = start; copy && bad && c < x->p;) {
        size_t k = utf8_len((const unsigned char *)c, (size_t)(x->p - c));
        if (k == 0)
            lh_jbuf_add(x->b, "\\ufffd", 6), k = 1;
        else
            lh_jbuf_add(x->b, c, k);
        c += k;
    }
    return 0;
}

static int number_tok(pp_t *x, int copy)
{
    const char *start = x->p;
    if (x->p < x->end && *x->p == '-')
        x->p++;
    if (x->p >= x->end || !isdigit((unsigned char)*x->p)) {
        x->why = "bad number";
        return -1;
    }
    if (*x->p == '0')
        x->p++;
    else
        while (x->p < x->end && isdigit((unsigned char)*x->p))
            x->p++;
    if (x->p < x->end && *x->p == '.') {
        x->p++;
        if (x->p >= x->end || !isdigit((unsigned char)*x->p)) {
            x->why = "bad number";
            return -1;
        }
        while (x->p < x->end && isdigit((unsigned char)*x->p))
            x->p++;
    }
    if (x->p < x->end && (*x->p == 'e' || *x->p == 'E')) {
        x->p++;
        if (x->p < x->end && (*x->p == '+' || *x->p == '-'))
            x->p++;
        if (x->p >= x->end || !isdigit((unsigned char)*x->p)) {
            x->why = "bad number";
            return -1;
        }
        while (x->p < x->end && isdigit((unsigned char)*x->p))
            x->p++;
    }
    if (copy)
        lh_jbuf_add(x->b, start, (size_t)(x->p - start));
    return 0;
}

static int literal(pp_t *x, const char *word, int copy)
{
    size_t n = strlen(word);
    if ((size_t)(x->end - x->p) < n || memcmp(x->p, word, n) != 0) {
        x->why = "unexpected character";
        return -1;
    }
    x->p += n;
    if (copy)
        lh_jbuf_add(x->b, word, n);
    return 0;
}

enum { COPY, MASK, SKIP }; /* a value: written; a secret, written as "***"; inside one */

/* A value; `in_project`: the enclosing object is a project's (its secrets are masked). */
static int value(pp_t *x, int depth, int in_project, int mode)
{
    int copy = mode == COPY;
    ws(x);
    if (x->p >= x->end) {
        x->why = "unexpected end";
        return -1;
    }
    if (depth > MASK_MAX_DEPTH) {
        x->why = "nested too deep";
        return -1;
    }
    if (mode == MASK && *x->p == 'n') /* a null secret is no secret */
        return literal(x, "null", 1);
    if (mode == MASK)
        lh_jbuf_add(x->b, "\"***\"", 5);
    char c = *x->p;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        int n = 0;
        x->p++;
        if (copy)
            lh_jbuf_add(x->b, &c, 1);
        for (;;) {
            ws(x);
            if (x->p < x->end && *x->p == close && n == 0)
                break;
            if (n > 0) {
                if (x->p >= x->end || *x->p != ',') {
                    if (x->p < x->end && *x->p == close)
                        break;
                    x->why = c == '{' ? "expected ',' or '}'" : "expected ',' or ']'";
                    return -1;
                }
                x->p++;
                if (copy)
                    lh_jbuf_add(x->b, ",", 1);
                ws(x);
            }
            if (copy)
                newline(x, depth + 1);
            int child_project = 0, child_masked = 0;
            if (c == '{') {
                char key[64];
                if (x->p >= x->end || *x->p != '"') {
                    x->why = "expected a member name";
                    return -1;
                }
                if (string_tok(x, key, sizeof(key), copy) != 0)
                    return -1;
                ws(x);
                if (x->p >= x->end || *x->p != ':') {
                    x->why = "expected ':'";
                    return -1;
                }
                x->p++;
                if (copy)
                    lh_jbuf_adds(x->b, x->indent ? ": " : ":");
                child_project = strcmp(key, "project") == 0;
                child_masked = in_project && (strcmp(key, "token") == 0 ||
                                              strcmp(key, "task_data_password") == 0);
            }
            if (value(x, depth + 1, child_project || (c == '[' && in_project),
                      mode != COPY   ? SKIP
                      : child_masked ? MASK
                                     : COPY) != 0)
                return -1;
            n++;
        }
        x->p++;
        if (copy) {
            if (n > 0)
                newline(x, depth);
            lh_jbuf_add(x->b, &close, 1);
        }
        return 0;
    }
    if (c == '"')
        return string_tok(x, NULL, 0, copy);
    if (c == '-' || isdigit((unsigned char)c))
        return number_tok(x, copy);
    if (c == 't')
        return literal(x, "true", copy);
    if (c == 'f')
        return literal(x, "false", copy);
    if (c == 'n')
        return literal(x, "null", copy);
    x->why = "unexpected character";
    return -1;
}

void lh_jq_text_masked(lh_jbuf_t *b, const char *s, size_t n)
{
    static const char *const names[] = {"\"token\"", "\"task_data_password\"", NULL};
    size_t i = 0, from = 0;
    lh_jbuf_add(b, "\"", 1);
    while (i < n) {
        size_t klen = 0;
        for (int k = 0; names[k] != NULL && klen == 0; k++) {
            size_t l = strlen(names[k]);
            if (n - i >= l && memcmp(s + i, names[k], l) == 0)
                klen = l;
        }
        if (klen == 0) {
            i++;
            continue;
        }
        size_t v = i + klen;
        while (v < n && (s[v] == ' ' || s[v] == '\t' || s[v] == '\n' || s[v] == '\r'))
            v++;
        if (v >= n || s[v] != ':') {
            i += klen;
            continue;
        }
        v++;
        while (v < n && (s[v] == ' ' || s[v] == '\t' || s[v] == '\n' || s[v] == '\r'))
            v++;
        /* the value: a string to its closing quote, else up to , } ] or a line's end */
        size_t e = v;
        if (e < n && s[e] == '"') {
            for (e++; e < n && s[e] != '"'; e++)
                if (s[e] == '\\')
                    e++;
            e = e < n ? e + 1 : n;
        } else {
            while (e < n && strchr(",}]\n", s[e]) == NULL)
                e++;
        }
        str_content(b, s + from, v - from);
        str_content(b, "\"***\"", 5);
        from = i = e;
    }
    str_content(b, s + from, n - from);
    lh_jbuf_add(b, "\"", 1);
}

int lh_jq_json_masked(lh_jbuf_t *b, const char *s, size_t n, int indent, char *why, size_t whylen)
{
    pp_t x = {s, s + n, s, b, indent, NULL};
    size_t mark = b->len;
    int rc = value(&x, 0, 0, COPY);
    if (rc == 0) {
        ws(&x);
        if (x.p != x.end) {
            x.why = "data after the JSON value";
            rc = -1;
        }
    }
    if (rc != 0) {
        b->len = mark; /* nothing of it */
        if (b->p != NULL)
            b->p[mark] = '\0';
        snprintf(why, whylen, "%s at byte %zu", x.why ? x.why : "invalid", (size_t)(x.p - s));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ since */

int lh_jq_parse_since(const char *s, double now, double *out)
{
    char *end;
    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    if (strlen(s) >= 10 && s[4] == '-' && s[7] == '-') {
        struct tm tm = {0};
        int used = 0, date = 0;
        if (sscanf(s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &used) == 3 &&
            used == 10)
            date = 1;
        if (date && (s[10] == 'T' || s[10] == ' ')) {
            int more = 0;
            if (sscanf(s + 11, "%2d:%2d:%2d%n", &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &more) != 3 ||
                more != 8)
                return -1;
            used = 19;
        }
        if (!date || (s[used] != '\0' && strcmp(s + used, "Z") != 0) || tm.tm_mon < 1 ||
            tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
            tm.tm_min > 59 || tm.tm_sec > 60)
            return -1;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        *out = (double)timegm(&tm);
        return 0;
    }
    double v = strtod(s, &end);
    double mul = 1;
    switch (*end) {
    case '\0':
    case 's':
        break;
    case 'm':
        mul = 60;
        break;
    case 'h':
        mul = 3600;
        break;
    case 'd':
        mul = 86400;
        break;
    case 'w':
        mul = 7 * 86400;
        break;
    default:
        return -1;
    }
    if (*end != '\0' && end[1] != '\0')
        return -1;
    if (!isfinite(v) || v < 0)
        return -1;
    *out = now - v * mul;
    return 0;
}

/* ------------------------------------------------------------------ connection */

static int fail_db(lh_jq_t *q, char *err, size_t errlen, const char *what)
{
    snprintf(err, errlen, "%s: %s: %s", q->path, what, sqlite3_errmsg(q->db));
    return -1;
}

int lh_jq_open(lh_jq_t *q, const char *db_path, int write, char *err, size_t errlen)
{
    struct stat sb;
    sqlite3_stmt *s = NULL;
    memset(q, 0, sizeof(*q));
    snprintf(q->path, sizeof(q->path), "%s", db_path);
    if (stat(db_path, &sb) != 0) {
        snprintf(err, errlen, "%s does not exist: a server started with --state-dir creates it",
                 db_path);
        return -1;
    }
    /* read-write even to read: a WAL reader beside a running server needs the -shm file */
    if (sqlite3_open_v2(db_path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", db_path,
                 q->db ? sqlite3_errmsg(q->db) : "out of memory");
        lh_jq_close(q);
        return -1;
    }
    sqlite3_busy_timeout(q->db, 5000);
    if (!write)
        sqlite3_exec(q->db, "PRAGMA query_only = 1", NULL, NULL, NULL);
    int rc = sqlite3_prepare_v2(q->db,
                                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                                "name IN ('deliveries', 'runs', 'attempts')",
                                -1, &s, NULL);
    if (rc != SQLITE_OK || sqlite3_step(s) != SQLITE_ROW) {
        sqlite3_finalize(s);
        fail_db(q, err, errlen, "cannot read");
        lh_jq_close(q);
        return -1;
    }
    int tables = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    if (tables != 3) {
        snprintf(err, errlen,
                 "%s holds no journal yet: start the server (this version) once with "
                 "--state-dir to add it",
                 db_path);
        lh_jq_close(q);
        return -1;
    }
    /* bodies in the journal's log came with schema 6 (state.c) */
    if (sqlite3_prepare_v2(q->db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW || sqlite3_column_int(s, 0) < 6) {
        sqlite3_finalize(s);
        snprintf(err, errlen,
                 "%s has an older journal: start the server (this version) once with "
                 "--state-dir to upgrade it",
                 db_path);
        lh_jq_close(q);
        return -1;
    }
    sqlite3_finalize(s);
    return 0;
}

void lh_jq_close(lh_jq_t *q)
{
    sqlite3_close(q->db);
    q->db = NULL;
}

/* ------------------------------------------------------------------ listing */

#define EVENT_COLUMNS                                                                              \
    "d.id, d.delivery, d.received, d.path, d.remote, d.action, d.project, d.status, "              \
    "d.finished, d.duplicate_of,"                                                                  \
    " coalesce(d.body_len, (SELECT length(b.body) FROM bodies b WHERE b.id = d.id)), "             \
    "(SELECT count(*) FROM runs r WHERE r.delivery = d.id), "                                      \
    "(SELECT count(*) FROM runs r WHERE r.delivery = d.id AND r.state IN ('retrying', 'dead')), "  \
    "(SELECT coalesce(sum(r.attempts), 0) FROM runs r WHERE r.delivery = d.id)"

static const char *col_text(sqlite3_stmt *s, int i)
{
    return (const char *)sqlite3_column_text(s, i);
}

static double col_time(sqlite3_stmt *s, int i)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

static void read_event(sqlite3_stmt *s, lh_jq_event_t *e)
{
    e->id = sqlite3_column_int64(s, 0);
    e->delivery = col_text(s, 1);
    e->received = sqlite3_column_double(s, 2);
    e->path = col_text(s, 3);
    e->remote = col_text(s, 4);
    e->action = col_text(s, 5);
    e->project = sqlite3_column_type(s, 6) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 6);
    e->status = col_text(s, 7);
    e->finished = col_time(s, 8);
    e->duplicate_of = sqlite3_column_int64(s, 9);
    e->body_bytes = sqlite3_column_int64(s, 10);
    e->runs = sqlite3_column_int(s, 11);
    e->failed = sqlite3_column_int(s, 12);
    e->attempts = sqlite3_column_int(s, 13);
}

static int64_t numeric_id(const char *key);

int lh_jq_list(lh_jq_t *q, const lh_jq_filter_t *f, int (*row)(void *data, const lh_jq_event_t *e),
               void *data, int *more, char *err, size_t errlen)
{
    char sql[2048];
    /* a search may match many (a short prefix): its ids are sorted and cut first, so that
    ** the columns (four subqueries each) are computed for one page, not every match */
    size_t o = (size_t)snprintf(sql, sizeof(sql),
                                f->search != NULL
                                    ? "SELECT " EVENT_COLUMNS " FROM deliveries d WHERE d.id IN "
                                      "(SELECT d.id FROM deliveries d WHERE 1"
                                    : "SELECT " EVENT_COLUMNS " FROM deliveries d WHERE 1");
    if (f->status != NULL) /* the index holds all but ok: say so, for the planner */
        o += (size_t)snprintf(sql + o, sizeof(sql) - o,
                              strcmp(f->status, "ok") == 0
                                  ? " AND d.status = ?1"
                                  : " AND d.status = ?1 AND d.status <> 'ok'");
    if (f->action != NULL)
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND d.action = ?2");
    /* the oldest id received since then, found by the index on received (min(id + 0): not
    ** by scanning ids from the oldest), bounds the scan by id; none: nothing to scan */
    if (f->since > 0)
        o += (size_t)snprintf(sql + o, sizeof(sql) - o,
                              " AND d.received >= ?3 AND d.id >= coalesce((SELECT min(id + 0) "
                              "FROM deliveries WHERE received >= ?3), 9223372036854775807)");
    if (f->before > 0)
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND d.id < ?4");
    /* the search: a range on the unique index of delivery ids (an exact id or a prefix of
    ** one), or a numeric id; no "?8 IS NULL OR": that hides the range from the planner,
    ** which then scans every delivery */
    char upper[256];
    size_t ulen = 0;
    int64_t sid = 0;
    if (f->search != NULL) {
        /* the first text after every one that starts with it: its last byte that can grow,
        ** grown (the BINARY collation compares bytes) */
        ulen = strlen(f->search);
        if (ulen >= sizeof(upper))
            ulen = sizeof(upper) - 1;
        memcpy(upper, f->search, ulen);
        while (ulen > 0 && (unsigned char)upper[ulen - 1] == 0xff)
            ulen--;
        if (ulen > 0)
            upper[ulen - 1] = (char)((unsigned char)upper[ulen - 1] + 1);
        sid = numeric_id(f->search);
        o += (size_t)snprintf(sql + o, sizeof(sql) - o, " AND (d.delivery >= ?7%s%s)",
                              ulen > 0 ? " AND d.delivery < ?8" : "",
                              sid > 0 ? " OR d.id = ?9" : "");
    }
    if (f->handler != NULL)
        /* IN, not EXISTS: a rare handler costs one scan of the runs' key index (45 ms at
        ** 100 000), not a look at every delivery row (300 ms and more) */
        o += (size_t)snprintf(sql + o, sizeof(sql) - o,
                              " AND d.id IN (SELECT delivery FROM runs WHERE handler = ?5)");
    snprintf(sql + o, sizeof(sql) - o,
             f->search != NULL ? " ORDER BY d.id DESC LIMIT ?6) ORDER BY d.id DESC"
                               : " ORDER BY d.id DESC LIMIT ?6");
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(q->db, sql, -1, &s, NULL) != SQLITE_OK)
        return fail_db(q, err, errlen, "cannot list");
    if (f->status != NULL)
        sqlite3_bind_text(s, 1, f->status, -1, SQLITE_STATIC);
    if (f->action != NULL)
        sqlite3_bind_text(s, 2, f->action, -1, SQLITE_STATIC);
    if (f->since > 0)
        sqlite3_bind_double(s, 3, f->since);
    if (f->before > 0)
        sqlite3_bind_int64(s, 4, f->before);
    if (f->handler != NULL)
        sqlite3_bind_text(s, 5, f->handler, -1, SQLITE_STATIC);
    if (f->search != NULL)
        sqlite3_bind_text(s, 7, f->search, -1, SQLITE_STATIC);
    if (ulen > 0)
        sqlite3_bind_text(s, 8, upper, (int)ulen, SQLITE_STATIC);
    if (sid > 0)
        sqlite3_bind_int64(s, 9, sid);
    sqlite3_bind_int(s, 6, f->limit + 1); /* one more: are there older ones? */
    int n = 0, rc;
    *more = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == f->limit) {
            *more = 1;
            break;
        }
        lh_jq_event_t e;
        read_event(s, &e);
        n++;
        if (row(data, &e) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        fail_db(q, err, errlen, "cannot list");
        sqlite3_finalize(s);
        return -1;
    }
    sqlite3_finalize(s);
    return 0;
}

void lh_jq_event_json(lh_jbuf_t *b, const lh_jq_event_t *e)
{
    lh_jbuf_addf(b, "{\"id\":%lld,\"delivery\":", (long long)e->id);
    lh_jbuf_str(b, e->delivery, e->delivery ? strlen(e->delivery) : 0);
    lh_jbuf_adds(b, ",\"received\":");
    lh_jbuf_time(b, e->received);
    lh_jbuf_adds(b, ",\"path\":");
    lh_jbuf_str(b, e->path, e->path ? strlen(e->path) : 0);
    lh_jbuf_adds(b, ",\"remote\":");
    lh_jbuf_str(b, e->remote, e->remote ? strlen(e->remote) : 0);
    lh_jbuf_adds(b, ",\"action\":");
    lh_jbuf_str(b, e->action, e->action ? strlen(e->action) : 0);
    if (e->project >= 0)
        lh_jbuf_addf(b, ",\"project\":%lld", (long long)e->project);
    else
        lh_jbuf_adds(b, ",\"project\":null");
    lh_jbuf_adds(b, ",\"status\":");
    lh_jbuf_str(b, e->status, e->status ? strlen(e->status) : 0);
    lh_jbuf_adds(b, ",\"finished\":");
    lh_jbuf_time(b, e->finished);
    if (e->duplicate_of > 0)
        lh_jbuf_addf(b, ",\"duplicate_of\":%lld", (long long)e->duplicate_of);
    else
        lh_jbuf_adds(b, ",\"duplicate_of\":null");
    lh_jbuf_addf(b, ",\"body_bytes\":%lld,\"handlers\":%d,\"failed\":%d,\"attempts\":%d}",
                 (long long)e->body_bytes, e->runs, e->failed, e->attempts);
}

/* ------------------------------------------------------------------ one delivery */

/* The numeric id when `key` is all digits, else 0. */
static int64_t numeric_id(const char *key)
{
    if (*key == '\0' || strlen(key) > 18)
        return 0;
    for (const char *p = key; *p; p++)
        if (!isdigit((unsigned char)*p))
            return 0;
    return strtoll(key, NULL, 10);
}

/* Finds the delivery named `key`: 1 and its id, 0 none, -1 error. */
static int find_delivery(lh_jq_t *q, const char *key, int64_t *id, char *err, size_t errlen)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(q->db,
                           "SELECT id FROM deliveries WHERE delivery = ?1 UNION ALL "
                           "SELECT id FROM deliveries WHERE id = ?2 LIMIT 1",
                           -1, &s, NULL) != SQLITE_OK)
        return fail_db(q, err, errlen, "cannot read");
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, numeric_id(key));
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return fail_db(q, err, errlen, "cannot read");
    return rc == SQLITE_ROW;
}

int lh_jq_show(lh_jq_t *q, const char *key, const lh_jq_show_t *cb, char *err, size_t errlen)
{
    int64_t id = 0;
    sqlite3_stmt *s = NULL, *a = NULL;
    int found = find_delivery(q, key, &id, err, errlen);
    if (found <= 0)
        return found;
    /* one read transaction: the delivery, its runs and attempts as of one moment */
    if (sqlite3_exec(q->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail_db(q, err, errlen, "cannot read");
    int ret = -1, rc;
    if (sqlite3_prepare_v2(q->db,
                           "SELECT " EVENT_COLUMNS
                           ", d.headers, b.body, d.body_at, d.body_len FROM deliveries d"
                           " LEFT JOIN bodies b ON b.id = d.id WHERE d.id = ?1",
                           -1, &s, NULL) != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_int64(s, 1, id);
    if ((rc = sqlite3_step(s)) != SQLITE_ROW) {
        if (rc == SQLITE_DONE) /* pruned between the two reads */
            ret = 0;
        else
            fail_db(q, err, errlen, "cannot read");
        goto done;
    }
    lh_jq_event_t e;
    read_event(s, &e);
    const char *body = sqlite3_column_blob(s, 15);
    size_t body_len = (size_t)sqlite3_column_bytes(s, 15);
    char *logged = NULL; /* the body, from the journal's log (jlog.h) */
    if (sqlite3_column_type(s, 15) == SQLITE_NULL && sqlite3_column_type(s, 16) != SQLITE_NULL) {
        body_len = (size_t)sqlite3_column_int64(s, 17);
        if ((logged = malloc(body_len + 1)) == NULL) {
            snprintf(err, errlen, "out of memory reading a body of %zu bytes", body_len);
            goto done;
        }
        char dir[sizeof(q->path)];
        const char *slash = strrchr(q->path, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - q->path) : 1,
                 slash ? q->path : ".");
        if (lh_jlog_read(dir, (uint64_t)sqlite3_column_int64(s, 16), logged, body_len, err,
                         errlen) != 0) {
            free(logged);
            goto done;
        }
        logged[body_len] = '\0';
        body = logged;
    }
    int stop = cb->event(cb->data, &e, col_text(s, 14), body ? body : "", body_len);
    free(logged);
    if (stop != 0) {
        ret = 1;
        goto done;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(
            q->db,
            "SELECT handler, state, attempts, next_at, error, traceback, updated, "
            "coalesce(started, updated) FROM runs WHERE delivery = ?1 ORDER BY handler",
            -1, &s, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(q->db,
                           "SELECT n, started, ended, outcome, error, traceback FROM attempts "
                           "WHERE delivery = ?1 AND handler = ?2 ORDER BY n",
                           -1, &a, NULL) != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_int64(s, 1, id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        lh_jq_run_t r = {
            .handler = col_text(s, 0),
            .state = col_text(s, 1),
            .attempts = sqlite3_column_int(s, 2),
            .next_at = col_time(s, 3),
            .error = col_text(s, 4),
            .traceback = col_text(s, 5),
            .updated = sqlite3_column_double(s, 6),
        };
        if (cb->run(cb->data, &r) != 0)
            break;
        sqlite3_reset(a);
        sqlite3_bind_int64(a, 1, id);
        sqlite3_bind_text(a, 2, r.handler, -1, SQLITE_TRANSIENT);
        int last_n = 0;
        while ((rc = sqlite3_step(a)) == SQLITE_ROW) {
            last_n = sqlite3_column_int(a, 0);
            lh_jq_attempt_t at = {
                .n = sqlite3_column_int(a, 0),
                .started = sqlite3_column_double(a, 1),
                .ended = col_time(a, 2),
                .outcome = col_text(a, 3),
                .error = col_text(a, 4),
                .traceback = col_text(a, 5),
            };
            if (cb->attempt(cb->data, &r, &at) != 0)
                break;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            goto db_fail;
        /* a first attempt that ended ok has no row of its own (journal.c): its run's */
        if (rc == SQLITE_DONE && last_n < r.attempts && r.state != NULL &&
            strcmp(r.state, "ok") == 0) {
            lh_jq_attempt_t at = {.n = r.attempts,
                                  .started = sqlite3_column_double(s, 7),
                                  .ended = r.updated,
                                  .outcome = "ok"};
            if (cb->attempt(cb->data, &r, &at) != 0)
                break;
        }
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto db_fail;
    ret = 1;
    goto done;
db_fail:
    fail_db(q, err, errlen, "cannot read");
done:
    sqlite3_finalize(s);
    sqlite3_finalize(a);
    sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL);
    return ret;
}

/* The API's show: runs as an array, each with its attempts ("history"). */
typedef struct {
    lh_jbuf_t *b;
    int runs, attempts; /* written so far: for commas and closing */
    size_t max;         /* the most of a body shown; 0: all */
} show_json_t;

static void close_run(show_json_t *j)
{
    if (j->runs > 0)
        lh_jbuf_adds(j->b, "]}");
}

static int show_event(void *data, const lh_jq_event_t *e, const char *headers, const char *body,
                      size_t body_len)
{
    show_json_t *j = data;
    char why[128];
    lh_jq_event_json(j->b, e);
    j->b->len--; /* reopen the object */
    lh_jbuf_adds(j->b, ",\"headers\":");
    if (headers == NULL || lh_jq_json_masked(j->b, headers, strlen(headers), 0, why, sizeof(why)))
        lh_jbuf_adds(j->b, "{}");
    lh_jbuf_addf(j->b, ",\"body_size\":%zu,\"body\":", body_len);
    if (j->max > 0 && body_len > j->max) {
        /* a part, as text: a cut JSON text is no JSON; the whole is a download */
        size_t cut = j->max;
        /* at a character's start: a character cut in two would show as U+FFFD */
        for (int k = 0; k < 3 && cut > 0 && ((unsigned char)body[cut] & 0xC0) == 0x80; k++)
            cut--;
        lh_jbuf_adds(j->b, "null,\"body_truncated\":true,\"body_text\":");
        lh_jq_text_masked(j->b, body, cut);
    } else if (lh_jq_json_masked(j->b, body, body_len, 0, why, sizeof(why)) != 0) {
        /* not JSON: as text, every "token" or "task_data_password" value masked */
        lh_jbuf_adds(j->b, "null,\"body_error\":");
        lh_jbuf_str(j->b, why, strlen(why));
        lh_jbuf_adds(j->b, ",\"body_text\":");
        lh_jq_text_masked(j->b, body, body_len);
    }
    lh_jbuf_adds(j->b, ",\"runs\":[");
    return 0;
}

static int show_run(void *data, const lh_jq_run_t *r)
{
    show_json_t *j = data;
    close_run(j);
    lh_jbuf_adds(j->b, j->runs++ ? ",{\"handler\":" : "{\"handler\":");
    lh_jbuf_str(j->b, r->handler, strlen(r->handler));
    lh_jbuf_adds(j->b, ",\"state\":");
    lh_jbuf_str(j->b, r->state, strlen(r->state));
    lh_jbuf_addf(j->b, ",\"attempts\":%d,\"next_at\":", r->attempts);
    lh_jbuf_time(j->b, r->next_at);
    lh_jbuf_adds(j->b, ",\"updated\":");
    lh_jbuf_time(j->b, r->updated);
    lh_jbuf_adds(j->b, ",\"error\":");
    lh_jbuf_str(j->b, r->error, r->error ? strlen(r->error) : 0);
    lh_jbuf_adds(j->b, ",\"traceback\":");
    lh_jbuf_str(j->b, r->traceback, r->traceback ? strlen(r->traceback) : 0);
    lh_jbuf_adds(j->b, ",\"history\":[");
    j->attempts = 0;
    return 0;
}

static int show_attempt(void *data, const lh_jq_run_t *r, const lh_jq_attempt_t *a)
{
    show_json_t *j = data;
    (void)r;
    lh_jbuf_addf(j->b, "%s{\"n\":%d,\"started\":", j->attempts++ ? "," : "", a->n);
    lh_jbuf_time(j->b, a->started);
    lh_jbuf_adds(j->b, ",\"ended\":");
    lh_jbuf_time(j->b, a->ended);
    lh_jbuf_adds(j->b, ",\"outcome\":");
    lh_jbuf_str(j->b, a->outcome, a->outcome ? strlen(a->outcome) : 0);
    lh_jbuf_adds(j->b, ",\"error\":");
    lh_jbuf_str(j->b, a->error, a->error ? strlen(a->error) : 0);
    lh_jbuf_adds(j->b, ",\"traceback\":");
    lh_jbuf_str(j->b, a->traceback, a->traceback ? strlen(a->traceback) : 0);
    lh_jbuf_adds(j->b, "}");
    return 0;
}

int lh_jq_show_json(lh_jq_t *q, const char *key, lh_jbuf_t *b, char *err, size_t errlen)
{
    return lh_jq_show_json_max(q, key, 0, b, err, errlen);
}

int lh_jq_show_json_max(lh_jq_t *q, const char *key, size_t max, lh_jbuf_t *b, char *err,
                        size_t errlen)
{
    show_json_t j = {b, 0, 0, max};
    lh_jq_show_t cb = {&j, show_event, show_run, show_attempt};
    size_t mark = b->len;
    int rc = lh_jq_show(q, key, &cb, err, errlen);
    if (rc == 1) {
        close_run(&j);
        lh_jbuf_adds(b, "]}");
    } else if (b->p != NULL) {
        b->len = mark;
        b->p[mark] = '\0';
    }
    return rc;
}

/* ------------------------------------------------------------------ counts */

int lh_jq_stats_json(lh_jq_t *q, lh_jbuf_t *b, char *err, size_t errlen)
{
    static const char *const run_states[] = {"pending", "running", "ok", "retrying", "dead", NULL};
    sqlite3_stmt *s = NULL;
    int64_t counts[8] = {0}, total = 0, rcounts[8] = {0};
    int rc;
    if (sqlite3_exec(q->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return fail_db(q, err, errlen, "cannot read");
    /* all but ok by their index; ok is what remains of the whole */
    if (sqlite3_prepare_v2(q->db,
                           "SELECT status, count(*) FROM deliveries WHERE status <> 'ok'"
                           " GROUP BY status UNION ALL SELECT NULL, count(*) FROM deliveries",
                           -1, &s, NULL) != SQLITE_OK)
        goto db_fail;
    int64_t not_ok = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *st = col_text(s, 0);
        int64_t n = sqlite3_column_int64(s, 1);
        if (st == NULL) {
            total = n;
            continue;
        }
        not_ok += n;
        for (int i = 0; lh_jq_statuses[i] != NULL; i++)
            if (strcmp(st, lh_jq_statuses[i]) == 0)
                counts[i] += n;
    }
    if (rc != SQLITE_DONE)
        goto db_fail;
    sqlite3_finalize(s);
    for (int i = 0; lh_jq_statuses[i] != NULL; i++)
        if (strcmp(lh_jq_statuses[i], "ok") == 0)
            counts[i] = total - not_ok;
    lh_jbuf_addf(b, "{\"deliveries\":{\"total\":%lld", (long long)total);
    for (int i = 0; lh_jq_statuses[i] != NULL; i++)
        lh_jbuf_addf(b, ",\"%s\":%lld", lh_jq_statuses[i], (long long)counts[i]);
    lh_jbuf_adds(b, "},\"runs\":{");
    /* by state: the runs not ok by their index (ok runs are not in it), and ok as what
    ** remains of the whole count (a count of pages, no row decoded) */
    if (sqlite3_prepare_v2(q->db,
                           "SELECT state, count(*) FROM runs WHERE state <> 'ok' GROUP BY state"
                           " UNION ALL SELECT NULL, count(*) FROM runs",
                           -1, &s, NULL) != SQLITE_OK)
        goto db_fail;
    int64_t all_runs = 0;
    not_ok = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *st = col_text(s, 0);
        int64_t n = sqlite3_column_int64(s, 1);
        if (st == NULL) {
            all_runs = n;
            continue;
        }
        not_ok += n;
        for (int i = 0; run_states[i] != NULL; i++)
            if (st != NULL && strcmp(st, run_states[i]) == 0)
                rcounts[i] += n;
    }
    if (rc != SQLITE_DONE)
        goto db_fail;
    sqlite3_finalize(s);
    rcounts[2] = all_runs - not_ok; /* run_states[2]: "ok" */
    for (int i = 0; run_states[i] != NULL; i++)
        lh_jbuf_addf(b, "%s\"%s\":%lld", i ? "," : "", run_states[i], (long long)rcounts[i]);
    /* per handler, the runs not ok only: found by index; counting the ok ones too would
    ** read every run (a quarter of a second at 100 000) */
    lh_jbuf_adds(b, "},\"handlers\":[");
    if (sqlite3_prepare_v2(
            q->db,
            "SELECT handler, state, count(*) FROM runs WHERE state <> 'ok' AND state IN "
            "('pending', 'running', 'retrying', 'dead') GROUP BY handler, state ORDER BY handler",
            -1, &s, NULL) != SQLITE_OK)
        goto db_fail;
    char current[512] = "";
    int64_t hcounts[8] = {0};
    int nh = 0;
    for (;;) {
        rc = sqlite3_step(s);
        const char *h = rc == SQLITE_ROW ? col_text(s, 0) : NULL;
        if (nh > 0 && (h == NULL || strcmp(h, current) != 0)) {
            lh_jbuf_adds(b, "{\"handler\":");
            lh_jbuf_str(b, current, strlen(current));
            for (int i = 0; run_states[i] != NULL; i++)
                if (strcmp(run_states[i], "ok") != 0)
                    lh_jbuf_addf(b, ",\"%s\":%lld", run_states[i], (long long)hcounts[i]);
            lh_jbuf_adds(b, "}");
            memset(hcounts, 0, sizeof(hcounts));
        }
        if (rc != SQLITE_ROW)
            break;
        if (h == NULL)
            h = "";
        if (nh == 0 || strcmp(h, current) != 0) {
            if (nh > 0)
                lh_jbuf_adds(b, ",");
            snprintf(current, sizeof(current), "%s", h);
            nh++;
        }
        const char *st = col_text(s, 1);
        for (int i = 0; run_states[i] != NULL; i++)
            if (st != NULL && strcmp(st, run_states[i]) == 0)
                hcounts[i] += sqlite3_column_int64(s, 2);
    }
    if (rc != SQLITE_DONE)
        goto db_fail;
    sqlite3_finalize(s);
    lh_jbuf_adds(b, "],\"oldest_due\":");
    if (sqlite3_prepare_v2(q->db,
                           "SELECT min(next_at) FROM runs WHERE state <> 'ok'"
                           " AND state IN ('pending', 'retrying')",
                           -1, &s, NULL) != SQLITE_OK ||
        sqlite3_step(s) != SQLITE_ROW)
        goto db_fail;
    lh_jbuf_time(b, col_time(s, 0));
    lh_jbuf_adds(b, "}");
    sqlite3_finalize(s);
    sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL);
    return 0;
db_fail:
    fail_db(q, err, errlen, "cannot count");
    sqlite3_finalize(s);
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* ------------------------------------------------------------------ replay */

/* Queues the chosen runs of delivery `id`; appends its entry to `out`. */
static int replay_one(lh_jq_t *q, const lh_jq_replay_t *r, sqlite3_stmt *up, int64_t id,
                      const char *delivery, lh_jbuf_t *out, int *entries)
{
    int n = 0, rc;
    if (r->all) {
        /* an ok first attempt lives in its run's row alone: give it its own before the
        ** run starts over, so the history keeps it */
        char sql[400];
        snprintf(sql, sizeof(sql),
                 "INSERT OR IGNORE INTO attempts(delivery, handler, n, started, ended, outcome)"
                 " SELECT delivery, handler, attempts, coalesce(started, updated), updated, 'ok'"
                 " FROM runs WHERE delivery = %lld AND state = 'ok'",
                 (long long)id);
        if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return -1;
    }
    sqlite3_reset(up);
    sqlite3_bind_int64(up, 3, id);
    while ((rc = sqlite3_step(up)) == SQLITE_ROW) {
        const char *h = col_text(up, 0);
        if (n++ == 0) {
            lh_jbuf_addf(out, "%s{\"id\":%lld,\"delivery\":", (*entries)++ ? "," : "",
                         (long long)id);
            lh_jbuf_str(out, delivery, strlen(delivery));
            lh_jbuf_adds(out, ",\"handlers\":[");
        } else {
            lh_jbuf_adds(out, ",");
        }
        lh_jbuf_str(out, h, h ? strlen(h) : 0);
        if (r->queued != NULL)
            r->queued(r->data, id, delivery, h ? h : "");
    }
    if (rc != SQLITE_DONE)
        return -1;
    if (n > 0) {
        lh_jbuf_adds(out, "]}");
        char sql[160];
        snprintf(sql, sizeof(sql),
                 "UPDATE deliveries SET status = 'pending', finished = NULL WHERE id = %lld",
                 (long long)id);
        if (sqlite3_exec(q->db, sql, NULL, NULL, NULL) != SQLITE_OK)
            return -1;
    }
    return n;
}

int lh_jq_replay(lh_jq_t *q, const lh_jq_replay_t *r, double now, lh_jbuf_t *out,
                 lh_jbuf_t *unknown, char *err, size_t errlen)
{
    sqlite3_stmt *up = NULL, *sel = NULL;
    int total = 0, entries = 0, nunknown = 0, rc;
    char sql[512];
    snprintf(sql, sizeof(sql),
             "UPDATE runs SET state = 'pending', next_at = ?1, updated = ?1 WHERE delivery = ?3 "
             "AND state IN (%s) AND (?2 IS NULL OR handler = ?2) RETURNING handler",
             r->dead  ? "'dead'"
             : r->all ? "'ok', 'retrying', 'dead'"
                      : "'retrying', 'dead'");
    /* IMMEDIATE: the write lock first, so nothing changes between the reads and the writes */
    if (sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return fail_db(q, err, errlen, "cannot replay");
    if (sqlite3_prepare_v2(q->db, sql, -1, &up, NULL) != SQLITE_OK)
        goto db_fail;
    sqlite3_bind_double(up, 1, now);
    if (r->handler != NULL)
        sqlite3_bind_text(up, 2, r->handler, -1, SQLITE_STATIC);
    lh_jbuf_adds(out, "{\"deliveries\":[");
    if (r->dead) {
        /* the deliveries with a dead run (of the handler), received since */
        if (sqlite3_prepare_v2(q->db,
                               "SELECT DISTINCT d.id, d.delivery FROM runs r JOIN deliveries d "
                               "ON d.id = r.delivery WHERE r.state <> 'ok' AND r.state = 'dead' "
                               "AND (?1 IS NULL OR "
                               "r.handler = ?1) AND d.received >= ?2 ORDER BY d.id",
                               -1, &sel, NULL) != SQLITE_OK)
            goto db_fail;
        if (r->handler != NULL)
            sqlite3_bind_text(sel, 1, r->handler, -1, SQLITE_STATIC);
        sqlite3_bind_double(sel, 2, r->since);
        while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
            int n =
                replay_one(q, r, up, sqlite3_column_int64(sel, 0), col_text(sel, 1), out, &entries);
            if (n < 0)
                goto db_fail;
            total += n;
        }
        if (rc != SQLITE_DONE)
            goto db_fail;
    } else {
        for (size_t i = 0; i < r->nkeys; i++) {
            int64_t id = 0;
            int found = find_delivery(q, r->keys[i], &id, err, errlen);
            if (found < 0)
                goto fail;
            if (found == 0) {
                lh_jbuf_adds(unknown, nunknown++ ? "," : "[");
                lh_jbuf_str(unknown, r->keys[i], strlen(r->keys[i]));
                continue;
            }
            if (nunknown > 0)
                continue; /* nothing will be queued: only the unknown ones are looked for */
            sqlite3_finalize(sel);
            if (sqlite3_prepare_v2(q->db, "SELECT delivery FROM deliveries WHERE id = ?1", -1, &sel,
                                   NULL) != SQLITE_OK)
                goto db_fail;
            sqlite3_bind_int64(sel, 1, id);
            if (sqlite3_step(sel) != SQLITE_ROW)
                goto db_fail;
            int n = replay_one(q, r, up, id, col_text(sel, 0), out, &entries);
            if (n < 0)
                goto db_fail;
            total += n;
        }
    }
    if (nunknown > 0) {
        lh_jbuf_adds(unknown, "]");
        size_t o =
            (size_t)snprintf(err, errlen, "no such deliver%s: ", nunknown == 1 ? "y" : "ies");
        int k = 0;
        for (size_t i = 0; i < r->nkeys && o < errlen; i++) {
            int64_t id;
            if (find_delivery(q, r->keys[i], &id, NULL, 0) == 0)
                o += (size_t)snprintf(err + o, errlen - o, "%s%s", k++ ? ", " : "", r->keys[i]);
        }
        if (o < errlen)
            snprintf(err + o, errlen - o, " (nothing was queued)");
        sqlite3_finalize(up);
        sqlite3_finalize(sel);
        sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
        return -2;
    }
    lh_jbuf_addf(out, "],\"queued\":%d}", total);
    sqlite3_finalize(up);
    sqlite3_finalize(sel);
    up = sel = NULL;
    if (out->oom) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        goto db_fail;
    return total;
db_fail:
    fail_db(q, err, errlen, "cannot replay");
fail:
    sqlite3_finalize(up);
    sqlite3_finalize(sel);
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}
