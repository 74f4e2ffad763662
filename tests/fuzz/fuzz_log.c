/*
** fuzz_log — the log line writer (src/log.c) with arbitrary messages, field names and
** values. Issue 15's invariant: whatever the input, a line is one line, and in JSON format
** one valid JSON object in well-formed UTF-8; in text format it holds no control character
** (C0, DEL, C1) and only well-formed UTF-8, so a sender can forge neither a line nor a
** terminal escape.
**
** Input: a first byte (bit 0: JSON format; bits 1-2: level; bits 3-7: the number of
** fields), then pieces, each a 16-bit little-endian length and that many bytes (cut at the
** end of the input): the message, then a name and a value per field. A field whose name
** piece starts with 0x01 is a number, written from the value's bytes as a JSON number.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

#include "log.h"
#include "json_check.h"

#define MAX_FIELDS 31

typedef struct {
    const uint8_t *p;
    size_t n;
} input_t;

static size_t piece(input_t *in, const uint8_t **out)
{
    size_t len = 0;
    if (in->n >= 2) {
        len = (size_t)in->p[0] | (size_t)in->p[1] << 8;
        in->p += 2, in->n -= 2;
    } else {
        in->p += in->n, in->n = 0;
    }
    if (len > in->n)
        len = in->n;
    *out = in->p;
    in->p += len, in->n -= len;
    return len;
}

/* a NUL-terminated copy, cut at the first NUL (messages and names are C strings) */
static char *cstr(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    assert(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void fail(const char *why, const char *line, size_t len, size_t at)
{
    fprintf(stderr, "fuzz_log: %s at byte %zu of a line of %zu:\n", why, at, len);
    for (size_t i = 0; i < len; i++) { /* escaped: the line must not break this report */
        unsigned char c = (unsigned char)line[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputc('\n', stderr);
    abort();
}

static void check_text(const char *line, size_t len)
{
    const unsigned char *s = (const unsigned char *)line;
    for (size_t i = 0; i < len;) {
        if (s[i] < 0x20 || s[i] == 0x7f)
            fail("a control character", line, len, i);
        size_t n = lh_fuzz_utf8_len(s + i, len - i);
        if (n == 0)
            fail("ill-formed UTF-8", line, len, i);
        if (n == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0)
            fail("a C1 control character", line, len, i);
        i += n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static FILE *sink;
    static int saved = -1;
    if (sink == NULL) {
        sink = tmpfile();
        saved = dup(STDERR_FILENO);
        assert(sink != NULL && saved >= 0);
        /* a sanitizer's report from inside the writer must not land in the sink */
        __sanitizer_set_report_fd((void *)(intptr_t)saved);
    }
    if (size == 0)
        return 0;
    input_t in = {data + 1, size - 1};
    int json = data[0] & 1;
    lh_level_t level = (lh_level_t)((data[0] >> 1) & 3);
    size_t nfields = (size_t)(data[0] >> 3);

    const uint8_t *p;
    size_t n = piece(&in, &p);
    char *msg = cstr(p, n);
    lh_field_t fields[MAX_FIELDS];
    char *owned[2 * MAX_FIELDS];
    size_t nowned = 0, nf = 0;
    for (; nf < nfields; nf++) {
        n = piece(&in, &p);
        int number = n > 0 && p[0] == 1;
        char *key = owned[nowned++] = cstr(p, n);
        n = piece(&in, &p);
        if (number) {
            /* a number field's value is the caller's number literal, never sender text */
            int64_t v = 0;
            memcpy(&v, p, n < sizeof(v) ? n : sizeof(v));
            char *num = owned[nowned++] = malloc(24);
            assert(num != NULL);
            snprintf(num, 24, "%lld", (long long)v);
            fields[nf] = (lh_field_t){key, num, (size_t)-1, 1};
        } else {
            fields[nf] = (lh_field_t){key, (const char *)p, n, 0}; /* may hold NULs */
        }
    }

    /* the writer's one write(2) goes to the sink, not to libFuzzer's own stderr */
    assert(ftruncate(fileno(sink), 0) == 0 && lseek(fileno(sink), 0, SEEK_SET) == 0);
    lh_log_setup(LH_DEBUG, json ? LH_LOG_JSON : LH_LOG_TEXT);
    assert(dup2(fileno(sink), STDERR_FILENO) == STDERR_FILENO);
    lh_log_fields(level, msg, fields, nf);
    assert(dup2(saved, STDERR_FILENO) == STDERR_FILENO);

    static char out[65536];
    ssize_t got = pread(fileno(sink), out, sizeof(out), 0);
    assert(got > 0);
    size_t len = (size_t)got;
    const char *nl = memchr(out, '\n', len);
    if (nl == NULL || (size_t)(nl - out) != len - 1)
        fail("not exactly one line", out, len, nl ? (size_t)(nl - out) : len);
    len--; /* the line without its newline */
    if (json) {
        size_t at;
        if (len == 0 || out[0] != '{' || !lh_fuzz_json_valid(out, len, &at))
            fail("not one JSON object", out, len, len == 0 || out[0] != '{' ? 0 : at);
    } else {
        check_text(out, len);
    }

    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(msg);
    return 0;
}
