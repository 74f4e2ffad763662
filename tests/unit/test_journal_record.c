/* test_journal_record.c - the journal log's record meta (journal_record.h): events and attempt
 * ends written and read back field by field, NULL against empty strings, handler iteration,
 * every truncation and out-of-range length refused (exact-size copies, so ASan sees any
 * over-read), and the on-disk byte layout pinned against hand-written encodings. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal_record.h"
#include "test.h"

/* ------------------------------------------------------------------ helpers */

#define GUARD      16
#define GUARD_BYTE 0xA5

/* Exact-size heap copy: a read past `len` is an ASan error, not a silent pass. */
static unsigned char *dup_exact(const unsigned char *p, size_t len)
{
    unsigned char *q = malloc(len ? len : 1);
    if (q && len)
        memcpy(q, p, len);
    return q;
}

/* `got` (read back from [base, base+size)) is `want`: NULL stays NULL, "" stays "" and the
 * pointer lands inside the meta. */
static int same_str(const char *got, size_t got_len, const char *want, size_t want_len,
                    const unsigned char *base, size_t size)
{
    if (want == NULL)
        return got == NULL && got_len == 0;
    if (got == NULL || got_len != want_len)
        return 0;
    const unsigned char *g = (const unsigned char *)got;
    if (g < base || g + got_len > base + size)
        return 0;
    return memcmp(got, want, want_len) == 0;
}

/* Writes `in` between guard bytes (none may change) and into an exact-size buffer. */
static unsigned char *write_event(const lh_jrec_event_t *in, size_t *size)
{
    size_t n = lh_jrec_event_size(in);
    unsigned char *g = malloc(n + 2 * GUARD);
    memset(g, GUARD_BYTE, n + 2 * GUARD);
    lh_jrec_event_write(g + GUARD, in);
    int touched = 0;
    for (size_t i = 0; i < GUARD; i++)
        touched += g[i] != GUARD_BYTE || g[GUARD + n + i] != GUARD_BYTE;
    CHECK_EQ_INT(touched, 0);
    unsigned char *meta = malloc(n ? n : 1);
    lh_jrec_event_write(meta, in); /* ASan: no write past n */
    CHECK(memcmp(meta, g + GUARD, n) == 0);
    free(g);
    *size = n;
    return meta;
}

static unsigned char *write_end(const lh_jrec_end_t *in, size_t *size)
{
    size_t n = lh_jrec_end_size(in);
    unsigned char *g = malloc(n + 2 * GUARD);
    memset(g, GUARD_BYTE, n + 2 * GUARD);
    lh_jrec_end_write(g + GUARD, in);
    int touched = 0;
    for (size_t i = 0; i < GUARD; i++)
        touched += g[i] != GUARD_BYTE || g[GUARD + n + i] != GUARD_BYTE;
    CHECK_EQ_INT(touched, 0);
    unsigned char *meta = malloc(n);
    lh_jrec_end_write(meta, in);
    CHECK(memcmp(meta, g + GUARD, n) == 0);
    free(g);
    *size = n;
    return meta;
}

/* Handlers read from `out` (after a successful read): how many came before NULL, each
 * compared with in->handlers when `in` is given. */
static uint32_t count_handlers(lh_jrec_event_t *out, const lh_jrec_event_t *in,
                               const unsigned char *base, size_t size, uint32_t limit)
{
    uint32_t k = 0;
    while (k < limit) {
        size_t hl = 12345;
        const char *h = lh_jrec_event_handler(out, &hl);
        if (h == NULL)
            break;
        if (in)
            CHECK(same_str(h, hl, in->handlers[k], strlen(in->handlers[k]), base, size));
        k++;
    }
    return k;
}

/* Every field of `in` survives; then every shorter length is refused. `all_cuts` 0: only the
 * first and last 300 lengths and every 997th (a long record). */
static void check_event(const lh_jrec_event_t *in, int all_cuts)
{
    size_t size;
    unsigned char *meta = write_event(in, &size);
    lh_jrec_event_t out;
    memset(&out, 0x5A, sizeof(out)); /* read must set every field */
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), 0);
    CHECK_EQ_INT(out.id, in->id);
    CHECK(memcmp(&out.received, &in->received, sizeof(double)) == 0);
    CHECK_EQ_INT(out.has_project, in->has_project ? 1 : 0);
    CHECK_EQ_INT(out.project, in->has_project ? in->project : 0);
    CHECK_EQ_INT(out.dup_of, in->dup_of);
    if (in->digest) {
        CHECK(out.digest != NULL && out.digest >= meta && out.digest + 32 <= meta + size);
        CHECK(out.digest && memcmp(out.digest, in->digest, 32) == 0);
    } else {
        CHECK(out.digest == NULL);
    }
    CHECK(same_str(out.delivery, out.delivery_len, in->delivery, in->delivery_len, meta, size));
    CHECK(same_str(out.path, out.path_len, in->path, in->path_len, meta, size));
    CHECK(same_str(out.remote, out.remote_len, in->remote, in->remote_len, meta, size));
    CHECK(same_str(out.action, out.action_len, in->action, in->action_len, meta, size));
    CHECK(same_str(out.headers, out.headers_len, in->headers, in->headers_len, meta, size));
    CHECK_EQ_INT(out.nhandlers, in->nhandlers);
    /* exactly nhandlers names, then NULL (and NULL again) */
    CHECK_EQ_INT(count_handlers(&out, in, meta, size, in->nhandlers), in->nhandlers);
    size_t hl;
    CHECK(lh_jrec_event_handler(&out, &hl) == NULL);
    CHECK(lh_jrec_event_handler(&out, &hl) == NULL);

    /* truncations: refused, or (inside the handler ids) a NULL before the count */
    int bad = 0;
    for (size_t len = 0; len < size; len++) {
        if (!all_cuts && len > 300 && len + 300 < size && len % 997 != 0)
            continue;
        unsigned char *cut = dup_exact(meta, len);
        lh_jrec_event_t t;
        if (lh_jrec_event_read(cut, len, &t) == 0 &&
            count_handlers(&t, NULL, cut, len, in->nhandlers) >= in->nhandlers) {
            fprintf(stderr, "truncation to %zu of %zu accepted\n", len, size);
            bad++;
        }
        free(cut);
    }
    CHECK_EQ_INT(bad, 0);
    free(meta);
}

static void check_end(const lh_jrec_end_t *in, int all_cuts)
{
    size_t size;
    unsigned char *meta = write_end(in, &size);
    lh_jrec_end_t out;
    memset(&out, 0x5A, sizeof(out));
    CHECK_EQ_INT(lh_jrec_end_read(meta, size, &out), 0);
    CHECK_EQ_INT(out.id, in->id);
    CHECK_EQ_INT(out.attempt, in->attempt);
    CHECK_EQ_INT(out.only_run, in->only_run != 0);
    CHECK(memcmp(&out.started, &in->started, sizeof(double)) == 0);
    CHECK(memcmp(&out.ended, &in->ended, sizeof(double)) == 0);
    CHECK(memcmp(&out.next_at, &in->next_at, sizeof(double)) == 0);
    CHECK_EQ_INT(out.state, in->state);
    CHECK(same_str(out.handler, out.handler_len, in->handler, in->handler_len, meta, size));
    CHECK(same_str(out.outcome, out.outcome_len, in->outcome, in->outcome_len, meta, size));
    CHECK(same_str(out.error, out.error_len, in->error, in->error_len, meta, size));
    CHECK(same_str(out.traceback, out.traceback_len, in->traceback, in->traceback_len, meta, size));
    int bad = 0;
    for (size_t len = 0; len < size; len++) {
        if (!all_cuts && len > 300 && len + 300 < size && len % 997 != 0)
            continue;
        unsigned char *cut = dup_exact(meta, len);
        lh_jrec_end_t t;
        if (lh_jrec_end_read(cut, len, &t) != -1) {
            fprintf(stderr, "end truncation to %zu of %zu accepted\n", len, size);
            bad++;
        }
        free(cut);
    }
    CHECK_EQ_INT(bad, 0);
    free(meta);
}

static const unsigned char DIGEST[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,   10,
                                         11, 12, 13, 14, 15, 16, 17, 18, 19, 20,  21,
                                         22, 23, 24, 25, 26, 27, 28, 29, 30, 0xFF};

/* A small event (every string non-empty, no digest, 0 handlers) for the malformed tests. */
static lh_jrec_event_t small_event(void)
{
    lh_jrec_event_t e = {.id = 5,
                         .received = 2.0,
                         .delivery = "dd",
                         .delivery_len = 2,
                         .path = "/p",
                         .path_len = 2,
                         .remote = "rr",
                         .remote_len = 2,
                         .action = "aa",
                         .action_len = 2,
                         .headers = "hh",
                         .headers_len = 2};
    return e;
}

/* Offsets of the five string length fields of small_event() (no digest): 33 fixed bytes. */
static const size_t SMALL_STR_AT[5] = {33, 39, 45, 51, 57};

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* ------------------------------------------------------------------ events */

static void test_event_all_fields(void)
{
    static const char path[] = "/hook\0\xff/x";            /* a NUL and a high byte inside */
    static const char headers[] = "A: b\r\n\0X: \x01\x80"; /* binary header bytes */
    const char *handlers[] = {"first", "second.handler", "3"};
    lh_jrec_event_t e = {.id = INT64_C(0x0102030405060708),
                         .received = 1700000000.123456,
                         .has_project = 1,
                         .project = -42,
                         .dup_of = INT64_C(0x7FFFFFFFFFFFFFFF),
                         .digest = DIGEST,
                         .delivery = "deliv-1",
                         .delivery_len = 7,
                         .path = path,
                         .path_len = sizeof(path) - 1,
                         .remote = "10.0.0.1",
                         .remote_len = 8,
                         .action = "push",
                         .action_len = 4,
                         .headers = headers,
                         .headers_len = sizeof(headers) - 1,
                         .nhandlers = 3,
                         .handlers = handlers};
    check_event(&e, 1);
}

static void test_event_nulls_and_minimal(void)
{
    /* no project, digest or dup_of; NULL remote and action; no handlers */
    lh_jrec_event_t e = {.id = 1,
                         .received = 0.0,
                         .project = 99, /* ignored without has_project: written as 0 */
                         .delivery = "x",
                         .delivery_len = 1,
                         .path = "/",
                         .path_len = 1,
                         .headers = "",
                         .headers_len = 0};
    check_event(&e, 1);
}

static void test_event_empty_strings(void)
{
    /* "" is kept apart from NULL: non-NULL with length 0 */
    const char *handlers[] = {""};
    lh_jrec_event_t e = {.id = -7,
                         .received = -1.25,
                         .has_project = 1,
                         .project = 0, /* project 0 still has_project */
                         .delivery = "",
                         .path = "",
                         .remote = "",
                         .action = "",
                         .headers = "",
                         .nhandlers = 1,
                         .handlers = handlers};
    check_event(&e, 1);

    size_t size;
    unsigned char *meta = write_event(&e, &size);
    lh_jrec_event_t out;
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), 0);
    CHECK(out.remote != NULL && out.remote_len == 0);
    CHECK(out.action != NULL && out.action_len == 0);
    size_t hl = 9;
    const char *h = lh_jrec_event_handler(&out, &hl);
    CHECK(h != NULL && hl == 0);
    free(meta);
}

static void test_event_each_flag_alone(void)
{
    /* each flag on its own: a flag leaking into another field shows here */
    const char *handlers[] = {"h1", "h2"};
    lh_jrec_event_t e = small_event();
    e.nhandlers = 2;
    e.handlers = handlers;
    e.has_project = 1;
    e.project = 123;
    check_event(&e, 1);
    e.has_project = 0;
    e.dup_of = 456;
    check_event(&e, 1);
    e.dup_of = 0;
    e.digest = DIGEST;
    check_event(&e, 1);
    e.remote = NULL;
    check_event(&e, 1);
    e.remote = "rr";
    e.action = NULL;
    check_event(&e, 1);
}

static void test_event_long(void)
{
    size_t big = 100000;
    char *headers = malloc(big);
    for (size_t i = 0; i < big; i++)
        headers[i] = (char)(i * 7); /* every byte value, NULs included */
    char *longname = malloc(5001);
    memset(longname, 'n', 5000);
    longname[5000] = '\0';
    enum { NH = 300 };
    char names[NH][12];
    const char *handlers[NH];
    for (int i = 0; i < NH; i++) {
        snprintf(names[i], sizeof(names[i]), "h%d", i);
        handlers[i] = names[i];
    }
    handlers[150] = longname;
    lh_jrec_event_t e = {.id = 3,
                         .received = 1e9,
                         .digest = DIGEST,
                         .delivery = longname,
                         .delivery_len = 5000,
                         .path = longname,
                         .path_len = 4999,
                         .remote = "r",
                         .remote_len = 1,
                         .headers = headers,
                         .headers_len = big,
                         .nhandlers = NH,
                         .handlers = handlers};
    check_event(&e, 0);
    free(headers);
    free(longname);
}

/* ------------------------------------------------------------------ ends */

static void test_end_all_fields(void)
{
    static const char tb[] = "trace\0back\xfe";
    lh_jrec_end_t e = {.id = INT64_C(0x1122334455667788),
                       .attempt = 17,
                       .only_run = 1,
                       .started = 1700000000.5,
                       .ended = 1700000001.75,
                       .next_at = 1700000060.0,
                       .state = LH_RUN_RETRYING,
                       .handler = "on_push",
                       .handler_len = 7,
                       .outcome = "error",
                       .outcome_len = 5,
                       .error = "boom\0x",
                       .error_len = 6,
                       .traceback = tb,
                       .traceback_len = sizeof(tb) - 1};
    check_end(&e, 1);
}

/* lh_jrec_id: the id both kinds of meta start with, as written; 0 from a meta too short. */
static void test_id_of_either_kind(void)
{
    unsigned char ev[256], end[256];
    lh_jrec_event_t v = {.id = INT64_C(0x0102030405060708),
                         .delivery = "d",
                         .delivery_len = 1,
                         .path = "/",
                         .path_len = 1,
                         .headers = "{}",
                         .headers_len = 2};
    lh_jrec_end_t e = {.id = 77,
                       .attempt = 1,
                       .handler = "h",
                       .handler_len = 1,
                       .outcome = "ok",
                       .outcome_len = 2,
                       .state = LH_RUN_OK};
    CHECK(lh_jrec_event_size(&v) <= sizeof(ev) && lh_jrec_end_size(&e) <= sizeof(end));
    lh_jrec_event_write(ev, &v);
    lh_jrec_end_write(end, &e);
    CHECK(lh_jrec_id(ev, lh_jrec_event_size(&v)) == INT64_C(0x0102030405060708));
    CHECK(lh_jrec_id(end, lh_jrec_end_size(&e)) == 77);
    CHECK(lh_jrec_id(end, 8) == 77);
    CHECK(lh_jrec_id(end, 7) == 0);
    CHECK(lh_jrec_id(NULL, 0) == 0);
}

static void test_end_nulls_empties_states(void)
{
    lh_jrec_end_t e = {
        .id = 1, .attempt = 0, .handler = "h", .handler_len = 1, .outcome = "", .outcome_len = 0};
    /* every state, NULL error/traceback, next_at 0 */
    for (int s = LH_RUN_PENDING; s <= LH_RUN_DEAD; s++) {
        e.state = (lh_run_state_t)s;
        check_end(&e, 1);
    }
    /* "" error/traceback stay non-NULL */
    e.error = "";
    e.traceback = "";
    e.only_run = 7; /* any non-zero is written as 1 */
    check_end(&e, 1);
    size_t size;
    unsigned char *meta = write_end(&e, &size);
    lh_jrec_end_t out;
    CHECK_EQ_INT(lh_jrec_end_read(meta, size, &out), 0);
    CHECK(out.error != NULL && out.error_len == 0);
    CHECK(out.traceback != NULL && out.traceback_len == 0);
    CHECK(out.outcome != NULL && out.outcome_len == 0);
    free(meta);
    /* error set, traceback NULL: the two fields are not swapped */
    e.error = "e";
    e.error_len = 1;
    e.traceback = NULL;
    check_end(&e, 1);
}

static void test_end_long(void)
{
    size_t big = 70000;
    char *tb = malloc(big);
    for (size_t i = 0; i < big; i++)
        tb[i] = (char)(255 - i % 256);
    lh_jrec_end_t e = {.id = 2,
                       .attempt = 1,
                       .state = LH_RUN_DEAD,
                       .handler = tb,
                       .handler_len = 300,
                       .outcome = "timeout",
                       .outcome_len = 7,
                       .error = tb,
                       .error_len = 1000,
                       .traceback = tb,
                       .traceback_len = big};
    check_end(&e, 0);
    free(tb);
}

/* ------------------------------------------------------------------ malformed */

static void test_event_string_past_end(void)
{
    lh_jrec_event_t e = small_event();
    size_t size;
    unsigned char *meta = write_event(&e, &size);
    CHECK_EQ_INT(size, 33 + 5 * 6 + 4);
    for (int f = 0; f < 5; f++) {
        size_t at = SMALL_STR_AT[f];
        CHECK(meta[at] == 2 && meta[at + 1] == 0); /* the offsets are those of the strings */
        uint32_t lens[] = {(uint32_t)(size - at - 4 + 1), (uint32_t)(size - at), 0x7FFFFFFFu,
                           0xFFFFFFFEu};
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
            unsigned char *m = dup_exact(meta, size);
            put_u32(m + at, lens[k]);
            lh_jrec_event_t out;
            int rc = lh_jrec_event_read(m, size, &out);
            if (rc != -1)
                fprintf(stderr, "string %d length %u accepted\n", f, (unsigned)lens[k]);
            CHECK_EQ_INT(rc, -1);
            free(m);
        }
    }
    /* delivery, path and headers are required: "none" is refused; remote, action may be */
    for (int f = 0; f < 5; f++) {
        unsigned char *m = malloc(size - 2);
        memcpy(m, meta, SMALL_STR_AT[f]);
        put_u32(m + SMALL_STR_AT[f], 0xFFFFFFFFu);
        memcpy(m + SMALL_STR_AT[f] + 4, meta + SMALL_STR_AT[f] + 6, size - SMALL_STR_AT[f] - 6);
        lh_jrec_event_t out;
        int rc = lh_jrec_event_read(m, size - 2, &out);
        CHECK_EQ_INT(rc, (f == 2 || f == 3) ? 0 : -1);
        free(m);
    }
    free(meta);
}

static void test_event_handler_past_end(void)
{
    const char *handlers[] = {"abc", "de"};
    lh_jrec_event_t e = small_event();
    e.nhandlers = 2;
    e.handlers = handlers;
    size_t size;
    unsigned char *meta = write_event(&e, &size);
    /* the second id's length one past the end: the first is given, the second refused */
    size_t second = size - 4 - 2;
    CHECK(meta[second] == 2);
    put_u32(meta + second, 3);
    lh_jrec_event_t out;
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), 0);
    size_t hl;
    const char *h = lh_jrec_event_handler(&out, &hl);
    CHECK(h != NULL && hl == 3 && memcmp(h, "abc", 3) == 0);
    CHECK(lh_jrec_event_handler(&out, &hl) == NULL);
    CHECK(lh_jrec_event_handler(&out, &hl) == NULL); /* stays NULL, does not advance */
    /* a count larger than the ids present: NULL once they run out */
    put_u32(meta + second, 2);
    put_u32(meta + size - 4 - 2 - 4 - 3 - 4, 1000);
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), 0);
    CHECK_EQ_INT(out.nhandlers, 1000);
    CHECK_EQ_INT(count_handlers(&out, &e, meta, size, 1000), 2);
    free(meta);
}

/* The count read is what stops the handler ids, not where the meta ends: a meta whose count is 1
 * but which holds two ids gives one (it gave both once). */
static void test_event_handler_stops_at_count(void)
{
    const char *handlers[] = {"one", "two"};
    lh_jrec_event_t e = small_event();
    e.nhandlers = 2;
    e.handlers = handlers;
    size_t size;
    unsigned char *meta = write_event(&e, &size);
    size_t count_at = size - (4 + 3) * 2 - 4;
    CHECK(meta[count_at] == 2);
    put_u32(meta + count_at, 1);
    lh_jrec_event_t out;
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), 0);
    CHECK_EQ_INT(out.nhandlers, 1);
    size_t hl;
    const char *h = lh_jrec_event_handler(&out, &hl);
    CHECK(h != NULL && hl == 3 && memcmp(h, "one", 3) == 0);
    CHECK(lh_jrec_event_handler(&out, &hl) == NULL);
    free(meta);
}

static void test_event_digest_flag_short(void)
{
    /* the digest flag set on a record without the 32 bytes */
    lh_jrec_event_t e = small_event();
    size_t size;
    unsigned char *meta = write_event(&e, &size);
    meta[16] |= 2;
    lh_jrec_event_t out;
    /* now the strings are read as digest bytes, and what follows is too short */
    CHECK_EQ_INT(lh_jrec_event_read(meta, size, &out), -1);
    unsigned char *cut = dup_exact(meta, 33 + 31);
    CHECK_EQ_INT(lh_jrec_event_read(cut, 33 + 31, &out), -1);
    free(cut);
    free(meta);
}

static void test_end_bad_state_and_strings(void)
{
    lh_jrec_end_t e = {.id = 1,
                       .state = LH_RUN_DEAD,
                       .handler = "hh",
                       .handler_len = 2,
                       .outcome = "oo",
                       .outcome_len = 2,
                       .error = "ee",
                       .error_len = 2,
                       .traceback = "tt",
                       .traceback_len = 2};
    size_t size;
    unsigned char *meta = write_end(&e, &size);
    CHECK_EQ_INT(size, 8 + 4 + 24 + 4 + 1 + 4 * 6);
    lh_jrec_end_t out;
    const size_t state_at = 8 + 4 + 24;
    CHECK(meta[state_at] == LH_RUN_DEAD);
    uint32_t states[] = {LH_RUN_DEAD + 1, LH_RUN_DEAD + 2, 0x100u + LH_RUN_OK, 0xFFFFFFFFu};
    for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
        unsigned char *m = dup_exact(meta, size);
        put_u32(m + state_at, states[k]);
        CHECK_EQ_INT(lh_jrec_end_read(m, size, &out), -1);
        free(m);
    }
    /* string lengths past the end, each of the four */
    const size_t str_at[4] = {41, 47, 53, 59};
    for (int f = 0; f < 4; f++) {
        CHECK(meta[str_at[f]] == 2);
        uint32_t lens[] = {(uint32_t)(size - str_at[f] - 4 + 1), 0xFFFFFFFEu};
        for (size_t k = 0; k < 2; k++) {
            unsigned char *m = dup_exact(meta, size);
            put_u32(m + str_at[f], lens[k]);
            CHECK_EQ_INT(lh_jrec_end_read(m, size, &out), -1);
            free(m);
        }
    }
    /* handler and outcome are required; error and traceback may be none */
    for (int f = 0; f < 4; f++) {
        unsigned char *m = malloc(size - 2);
        memcpy(m, meta, str_at[f]);
        put_u32(m + str_at[f], 0xFFFFFFFFu);
        memcpy(m + str_at[f] + 4, meta + str_at[f] + 6, size - str_at[f] - 6);
        CHECK_EQ_INT(lh_jrec_end_read(m, size - 2, &out), f < 2 ? -1 : 0);
        free(m);
    }
    free(meta);
}

/* ------------------------------------------------------------------ layout */

static void check_bytes(const unsigned char *got, const unsigned char *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            TEST_FAILED_("byte %zu: 0x%02x, want 0x%02x", i, got[i], want[i]);
            return;
        }
}

static void test_event_layout(void)
{
    const char *handlers[] = {"x"};
    unsigned char digest[32];
    for (int i = 0; i < 32; i++)
        digest[i] = (unsigned char)(0xD0 + i);
    lh_jrec_event_t e = {.id = INT64_C(0x0102030405060708),
                         .received = 1.5,
                         .has_project = 1,
                         .project = -2,
                         .dup_of = 3,
                         .digest = digest,
                         .delivery = "ab",
                         .delivery_len = 2,
                         .path = "/",
                         .path_len = 1,
                         .remote = NULL,
                         .action = "",
                         .headers = "h",
                         .headers_len = 1,
                         .nhandlers = 1,
                         .handlers = handlers};
    unsigned char want[8 + 8 + 1 + 8 + 8 + 32 + 6 + 5 + 4 + 4 + 5 + 4 + 5] = {
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* id */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0x3F, /* received 1.5 */
        0x07,                                           /* flags: project|digest|dup */
        0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* project -2 */
        0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* dup_of 3 */
    };
    size_t at = 33;
    memcpy(want + at, digest, 32);
    at += 32;
    static const unsigned char tail[] = {
        0x02, 0x00, 0x00, 0x00, 'a', 'b', /* delivery */
        0x01, 0x00, 0x00, 0x00, '/',      /* path */
        0xFF, 0xFF, 0xFF, 0xFF,           /* remote: none */
        0x00, 0x00, 0x00, 0x00,           /* action: "" */
        0x01, 0x00, 0x00, 0x00, 'h',      /* headers */
        0x01, 0x00, 0x00, 0x00,           /* 1 handler */
        0x01, 0x00, 0x00, 0x00, 'x',      /* "x" */
    };
    CHECK_EQ_INT(at + sizeof(tail), sizeof(want));
    memcpy(want + at, tail, sizeof(tail));

    CHECK_EQ_INT(lh_jrec_event_size(&e), sizeof(want));
    size_t size;
    unsigned char *meta = write_event(&e, &size);
    if (size == sizeof(want))
        check_bytes(meta, want, size);
    free(meta);

    /* and the fixed bytes read back as those fields */
    lh_jrec_event_t out;
    CHECK_EQ_INT(lh_jrec_event_read(want, sizeof(want), &out), 0);
    CHECK_EQ_INT(out.id, INT64_C(0x0102030405060708));
    CHECK(out.received == 1.5);
    CHECK(out.has_project && out.project == -2 && out.dup_of == 3);
    CHECK(out.digest == want + 33);
    CHECK(out.remote == NULL && out.action != NULL && out.action_len == 0);

    /* no flags: project and dup_of are zeros, no digest bytes */
    lh_jrec_event_t p = small_event();
    p.project = 77; /* without has_project it is written as 0 */
    unsigned char *m2 = write_event(&p, &size);
    static const unsigned char head[] = {
        0x05, 0, 0, 0, 0,   0,  0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x40,    /* id 5, received 2.0 */
        0x00, 0, 0, 0, 0,   0,  0, 0, 0, 0, 0, 0, 0, 0, 0,    0,    0, /* flags, project, dup_of */
        0x02, 0, 0, 0, 'd', 'd'};
    check_bytes(m2, head, sizeof(head));
    free(m2);
}

static void test_end_layout(void)
{
    lh_jrec_end_t e = {.id = 9,
                       .attempt = 2,
                       .only_run = 1,
                       .started = 1.0,
                       .ended = 2.0,
                       .next_at = 0.0,
                       .state = LH_RUN_RETRYING,
                       .handler = "h",
                       .handler_len = 1,
                       .outcome = "ok",
                       .outcome_len = 2,
                       .error = NULL,
                       .traceback = ""};
    static const unsigned char want[] = {
        0x09,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* id */
        0x02,
        0,
        0,
        0, /* attempt */
        0,
        0,
        0,
        0,
        0,
        0,
        0xF0,
        0x3F, /* started 1.0 */
        0,
        0,
        0,
        0,
        0,
        0,
        0x00,
        0x40, /* ended 2.0 */
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0, /* next_at 0 */
        (unsigned char)LH_RUN_RETRYING,
        0,
        0,
        0,    /* state */
        0x01, /* only_run */
        0x01,
        0,
        0,
        0,
        'h', /* handler */
        0x02,
        0,
        0,
        0,
        'o',
        'k', /* outcome */
        0xFF,
        0xFF,
        0xFF,
        0xFF, /* error: none */
        0x00,
        0x00,
        0x00,
        0x00, /* traceback: "" */
    };
    CHECK_EQ_INT(LH_RUN_RETRYING, 3); /* the state numbers are on disk too */
    CHECK_EQ_INT(LH_RUN_DEAD, 4);
    CHECK_EQ_INT(lh_jrec_end_size(&e), sizeof(want));
    size_t size;
    unsigned char *meta = write_end(&e, &size);
    if (size == sizeof(want))
        check_bytes(meta, want, size);
    free(meta);
    lh_jrec_end_t out;
    CHECK_EQ_INT(lh_jrec_end_read(want, sizeof(want), &out), 0);
    CHECK(out.id == 9 && out.attempt == 2 && out.only_run == 1 && out.state == LH_RUN_RETRYING);
    CHECK(out.started == 1.0 && out.ended == 2.0 && out.next_at == 0.0);
    CHECK(out.handler == (const char *)want + 45 && out.outcome == (const char *)want + 50);
    CHECK(out.error == NULL && out.traceback != NULL && out.traceback_len == 0);
}

int main(void)
{
    RUN_TEST(test_event_all_fields);
    RUN_TEST(test_id_of_either_kind);
    RUN_TEST(test_event_nulls_and_minimal);
    RUN_TEST(test_event_empty_strings);
    RUN_TEST(test_event_each_flag_alone);
    RUN_TEST(test_event_long);
    RUN_TEST(test_end_all_fields);
    RUN_TEST(test_end_nulls_empties_states);
    RUN_TEST(test_end_long);
    RUN_TEST(test_event_string_past_end);
    RUN_TEST(test_event_handler_past_end);
    RUN_TEST(test_event_handler_stops_at_count);
    RUN_TEST(test_event_digest_flag_short);
    RUN_TEST(test_end_bad_state_and_strings);
    RUN_TEST(test_event_layout);
    RUN_TEST(test_end_layout);
    return TEST_SUMMARY();
}
