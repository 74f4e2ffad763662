/*
** fuzz_request — HTTP request assembly (src/request.c) from arbitrary bytes cut at
** arbitrary points. The same stream is parsed twice, whole and in pieces whose sizes come
** from the input, and both must tell the same story: the same heads, requests (method,
** url, path, headers, body, keep-alive) and refusal (status, offset), and the same state at
** the end. Each run also checks what request.h promises (bytes used, NUL-terminated path
** and body, lower-case names, the body limit, an error's status and offset).
**
** Input: byte 0 picks --max-header, byte 1 --max-body, byte 2 which heads have their body
** skipped (bit i: the i-th request, as conn does for a request answered on its head),
** byte 3 the number of piece sizes that follow (0 to 15, one byte each, used in turn);
** the rest is the stream.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

typedef struct {
    char *p;
    size_t len, cap;
} trace_t;

static void put(trace_t *t, const void *s, size_t n)
{
    if (t->len + n > t->cap) {
        t->cap = (t->len + n) * 2;
        t->p = realloc(t->p, t->cap);
        assert(t->p != NULL);
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
}

/* the trace is text, so that a difference can be shown: strings with \xNN escapes */
static void put_str(trace_t *t, const char *s, size_t n)
{
    char esc[8];
    put(t, " \"", 2);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
            put(t, s + i, 1);
        else
            put(t, esc, (size_t)snprintf(esc, sizeof(esc), "\\x%02x", c));
    }
    put(t, "\"", 1);
}

static void put_int(trace_t *t, uint64_t v)
{
    char num[24];
    put(t, num, (size_t)snprintf(num, sizeof(num), " %llu", (unsigned long long)v));
}

static void put_tag(trace_t *t, const char *tag)
{
    put(t, "\n", 1);
    put(t, tag, strlen(tag));
}

static void record_request(trace_t *t, const lh_request_t *r, int done, uint64_t max_body,
                           int skipped)
{
    put_tag(t, done ? "done" : "head");
    put_int(t, (uint64_t)r->method);
    put_str(t, r->method_name, strlen(r->method_name));
    put_str(t, r->url, r->url_len);
    assert(r->path != NULL && r->path[r->path_len] == '\0');
    put_str(t, r->path, r->path_len);
    put_int(t, r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        const lh_header_t *h = &r->headers[i];
        assert(h->name[h->name_len] == '\0');
        for (size_t k = 0; k < h->name_len; k++)
            assert(!(h->name[k] >= 'A' && h->name[k] <= 'Z'));
        put_str(t, h->name, h->name_len);
        put_str(t, h->value, h->value_len);
    }
    put_int(t, (uint64_t)r->keep_alive);
    put_int(t, (uint64_t)r->expect_continue);
    if (done) {
        if (!skipped) { /* a skipped body is dropped: nothing is kept of it */
            assert(r->body != NULL && r->body[r->body_len] == '\0');
            assert(r->body_len <= max_body);
            put_str(t, r->body, r->body_len);
        }
    }
}

/* Parses `stream` fed in pieces of the sizes in `cuts` (used in turn; none: whole). */
static void parse(trace_t *t, const uint8_t *stream, size_t len, const uint8_t *cuts, size_t ncuts,
                  uint64_t max_header, uint64_t max_body, uint8_t skips)
{
    lh_request_parser_t *p = lh_request_parser_new(max_header, max_body);
    assert(p != NULL);
    size_t fed = 0, heads = 0;
    int skipped = 0, failed = 0;
    for (size_t c = 0; fed < len && !failed; c++) {
        size_t n = ncuts ? (size_t)cuts[c % ncuts] + 1 : len;
        if (n > len - fed)
            n = len - fed;
        const char *data = (const char *)stream + fed;
        size_t off = 0;
        for (;;) {
            size_t used = (size_t)-1;
            lh_parse_result_t r = lh_request_parser_feed(p, data + off, n - off, &used);
            assert(used <= n - off);
            off += used;
            if (r == LH_PARSE_MORE) {
                assert(off == n);
                break;
            }
            if (r == LH_PARSE_ERROR) {
                const lh_request_error_t *e = lh_request_parser_error(p);
                /* 501: a transfer coding other than chunked (the conn lane's, issue 15) */
                assert(e->status == 400 || e->status == 413 || e->status == 431 ||
                       e->status == 500 || e->status == 501);
                assert(e->reason != NULL && e->offset <= fed + n);
                put_tag(t, "error");
                put_int(t, (uint64_t)e->status);
                put_int(t, e->offset);
                size_t again = 1;
                assert(lh_request_parser_feed(p, "x", 1, &again) == LH_PARSE_ERROR && again == 0);
                failed = 1;
                break;
            }
            lh_request_t *req = lh_request_parser_request(p);
            if (r == LH_PARSE_HEAD) {
                skipped = heads < 8 && (skips >> heads & 1);
                heads++;
                record_request(t, req, 0, max_body, skipped);
                if (skipped)
                    lh_request_parser_skip_body(p);
                continue; /* fed again even with nothing left: a bodiless request completes */
            }
            assert(r == LH_PARSE_DONE);
            record_request(t, req, 1, max_body, skipped);
            assert(!lh_request_parser_started(p));
            if (off == n)
                break;
        }
        fed += n;
    }
    put_tag(t, "end");
    put_int(t, (uint64_t)lh_request_parser_started(p));
    put_int(t, (uint64_t)lh_request_parser_body_pending(p));
    lh_request_parser_free(p);
}

static uint64_t limit(uint8_t b)
{
    return b < 16 ? (uint64_t)1 << 20 : (uint64_t)b * 4; /* mostly small: limits get hit */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint64_t max_header = limit(data[0]), max_body = limit(data[1]);
    uint8_t skips = data[2];
    size_t ncuts = data[3] % 16;
    if (size < 4 + ncuts)
        return 0;
    const uint8_t *cuts = data + 4, *stream = data + 4 + ncuts;
    size_t len = size - 4 - ncuts;

    trace_t whole = {0}, pieces = {0};
    parse(&whole, stream, len, NULL, 0, max_header, max_body, skips);
    static const uint8_t one[1] = {0}; /* no sizes given: byte by byte */
    parse(&pieces, stream, len, ncuts ? cuts : one, ncuts ? ncuts : 1, max_header, max_body, skips);
    if (whole.len != pieces.len || memcmp(whole.p, pieces.p, whole.len) != 0) {
        fprintf(stderr,
                "fuzz_request: the stream whole and cut in pieces parse differently\n"
                "whole:%.*s\npieces:%.*s\n",
                (int)whole.len, whole.p, (int)pieces.len, pieces.p);
        abort();
    }
    free(whole.p);
    free(pieces.p);
    return 0;
}
