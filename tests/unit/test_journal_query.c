/* journal_query's pieces without a database: the masked JSON printer, the JSON string
** writer (bytes that are not UTF-8), and --since. */
#include <math.h>
#include <stdlib.h>

#include "journal_query.h"
#include "test.h"

/* The compact masked form of `json`, or "ERR: why". Static: valid until the next call. */
static const char *masked(const char *json, int indent)
{
    static char out[4096];
    char why[128];
    lh_jbuf_t b = {0};
    if (lh_jq_json_masked(&b, json, strlen(json), indent, why, sizeof(why)) != 0)
        snprintf(out, sizeof(out), "ERR: %s", why);
    else
        snprintf(out, sizeof(out), "%s", b.p ? b.p : "");
    lh_jbuf_free(&b);
    return out;
}

static void test_mask(void)
{
    CHECK_STR(masked("{\"action\":\"X\",\"project\":{\"id\":1,\"token\":\"abc\","
                     "\"task_data_password\":\"pw\"}}",
                     0),
              "{\"action\":\"X\",\"project\":{\"id\":1,\"token\":\"***\","
              "\"task_data_password\":\"***\"}}");
    /* secrets of any type; a null one is no secret; the whole value goes */
    CHECK_STR(
        masked("{\"project\":{\"token\":{\"a\":[1,\"abc\"]},\"task_data_password\":null}}", 0),
        "{\"project\":{\"token\":\"***\",\"task_data_password\":null}}");
    /* a project nested anywhere (a task's), and a name written with escapes */
    CHECK_STR(masked("{\"task\":{\"project\":{\"\\u0074oken\":\"abc\"}}}", 0),
              "{\"task\":{\"project\":{\"\\u0074oken\":\"***\"}}}");
    /* a token outside a project is not the project's secret */
    CHECK_STR(masked("{\"token\":\"t\",\"user\":{\"token\":1}}", 0),
              "{\"token\":\"t\",\"user\":{\"token\":1}}");
    /* numbers kept as sent: int64 beyond 2^53, exponents */
    CHECK_STR(masked(" [ 9223372036854775807 , -1.5e-3, true, false, null, \"\\\"é\" ] ", 0),
              "[9223372036854775807,-1.5e-3,true,false,null,\"\\\"é\"]");
    CHECK_STR(masked("{\"a\":[1,{}],\"b\":[]}", 2),
              "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
}

static void test_not_json(void)
{
    const char *bad[] = {"",  "{",        "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01",    "1.",
                         "-", "\"\x01\"", "nul",  "{} x",      "\"\\x\"",    "[1 2]", NULL};
    for (int i = 0; bad[i] != NULL; i++) {
        const char *r = masked(bad[i], 0);
        if (strncmp(r, "ERR: ", 5) != 0)
            fprintf(stderr, "accepted as JSON: %s -> %s\n", bad[i], r);
        CHECK(strncmp(r, "ERR: ", 5) == 0);
    }
    CHECK_STR(masked("[1,]", 0), "ERR: unexpected character at byte 3");
    /* bytes that are not UTF-8 in a string: taken (as the event decoder does), shown as
    ** U+FFFD so that the output is UTF-8 */
    CHECK_STR(masked("{\"a\xff\":\"b\xc3\"}", 0), "{\"a\\ufffd\":\"b\\ufffd\"}");
    /* too deep: refused, not a stack overflow */
    char deep[1200];
    memset(deep, '[', sizeof(deep) - 1);
    deep[sizeof(deep) - 1] = '\0';
    CHECK(strncmp(masked(deep, 0), "ERR: ", 5) == 0);
}

static void test_string(void)
{
    lh_jbuf_t b = {0};
    lh_jbuf_str(&b, "a\"\n\xff\xc3\xa9\xe2\x82", 8);
    CHECK_STR(b.p, "\"a\\\"\\n\\ufffd\xc3\xa9\\ufffd\\ufffd\"");
    lh_jbuf_free(&b);
    lh_jbuf_str(&b, NULL, 0);
    CHECK_STR(b.p, "null");
    lh_jbuf_free(&b);
}

/* What is not JSON is masked by its look: any "token" or "task_data_password" value. */
static void test_text_masked(void)
{
    lh_jbuf_t b = {0};
    const char *t =
        "{\"project\": {\"token\" : \"ab\\\"c\", \"task_data_password\":12}, \"x\xff\": [";
    lh_jq_text_masked(&b, t, strlen(t));
    CHECK_STR(b.p, "\"{\\\"project\\\": {\\\"token\\\" : \\\"***\\\", "
                   "\\\"task_data_password\\\":\\\"***\\\"}, \\\"x\\ufffd\\\": [\"");
    lh_jbuf_free(&b);
    t = "token: \"token\" \"token\":";
    lh_jq_text_masked(&b, t, strlen(t));
    CHECK_STR(b.p, "\"token: \\\"token\\\" \\\"token\\\":\\\"***\\\"\"");
    lh_jbuf_free(&b);
}

static void test_since(void)
{
    double t = 0;
    CHECK(lh_jq_parse_since("90s", 1000, &t) == 0 && t == 910);
    CHECK(lh_jq_parse_since("2m", 1000, &t) == 0 && t == 880);
    CHECK(lh_jq_parse_since("1h", 10000, &t) == 0 && t == 6400);
    CHECK(lh_jq_parse_since("7d", 1e6, &t) == 0 && t == 1e6 - 7 * 86400);
    CHECK(lh_jq_parse_since("30", 100, &t) == 0 && t == 70);
    CHECK(lh_jq_parse_since("1970-01-02", 0, &t) == 0 && t == 86400);
    CHECK(lh_jq_parse_since("2026-11-27T18:00:00Z", 0, &t) == 0 && t == 1795802400);
    const char *bad[] = {"",
                         "h",
                         "1x",
                         "1hh",
                         "-1h",
                         "2026-13-01",
                         "2026-11-27T25:00:00",
                         "2026-11-27Tnoon",
                         "yesterday",
                         NULL};
    for (int i = 0; bad[i] != NULL; i++)
        CHECK(lh_jq_parse_since(bad[i], 0, &t) != 0);
}

int main(void)
{
    RUN_TEST(test_mask);
    RUN_TEST(test_not_json);
    RUN_TEST(test_string);
    RUN_TEST(test_text_masked);
    RUN_TEST(test_since);
    return TEST_SUMMARY();
}
