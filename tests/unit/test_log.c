/* test_log.c - the log line writer: every line is one valid line (JSON or escaped text)
** whatever the message, the field names and the values hold, cut or not. */
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "../../src/log.c"
#include "../../src/json.h"
#include "test.h"

static lua_State *L;

/* Valid UTF-8 with no control byte, no C1 control, and its one "\n" at the end. */
static int one_clean_line(const line_t *l)
{
    if (l->len == 0 || l->buf[l->len - 1] != '\n')
        return 0;
    for (size_t i = 0; i + 1 < l->len;) {
        unsigned char c = (unsigned char)l->buf[i];
        size_t len = lh_utf8_seq(l->buf + i, l->len - 1 - i);
        if (len == 0 || c < 0x20 || c == 0x7f || (c == 0xC2 && (unsigned char)l->buf[i + 1] < 0xA0))
            return 0;
        i += len;
    }
    return 1;
}

/* JSON: one object that json.decode takes whole. */
static int parses(const line_t *l)
{
    char err[256];
    int top = lua_gettop(L);
    int ok = lh_json_decode(L, l->buf, l->len - 1, err, sizeof err) == 0 && lua_istable(L, -1);
    if (!ok)
        fprintf(stderr, "not JSON (%s): %.*s\n", err, (int)l->len, l->buf);
    lua_settop(L, top);
    return ok;
}

static const char *field_of(const char *key)
{
    /* the string value of `key` in the object last decoded (kept at the stack's top) */
    lua_getfield(L, -1, key);
    const char *v = lua_tostring(L, -1);
    lua_pop(L, 1);
    return v;
}

static void test_text_escapes(void)
{
    line_t l;
    lh_log_setup(LH_DEBUG, LH_LOG_TEXT);
    lh_field_t f[] = {LH_FIELD("us er", "a\nb"), LH_FIELD("k=\x1b", "plain"),
                      LH_FIELD("bad", "\xff\xc3"), LH_FIELD("ok", "caf\xc3\xa9")};
    format_line(&l, LH_INFO, "from x\n2026 info forged\r\x1b[31m\\\xc2\x9b\xfe", f, 4);
    CHECK(one_clean_line(&l));
    l.buf[l.len - 1] = 0;
    const char *msg = strchr(strchr(l.buf, ' ') + 1, ' ') + 1; /* after ts and level */
    CHECK_STR(msg, "from x\\n2026 info forged\\r\\x1b[31m\\\\\\u009b\\xfe"
                   " us\\x20er=\"a\\nb\" k\\x3d\\x1b=plain bad=\"\xef\xbf\xbd\xef\xbf\xbd\""
                   " ok=caf\xc3\xa9");
}

static void test_json_escapes(void)
{
    line_t l;
    lh_log_setup(LH_DEBUG, LH_LOG_JSON);
    lh_field_t f[] = {LH_FIELD("k\xff", "v\x1b\xc2\x9b\xed\xa0\x80"), LH_FIELD_NUM("n", "12"),
                      LH_FIELD_NUM("t", "{\"a\":\"\xff\"}")};
    format_line(&l, LH_WARN, "m\xe2\x82", f, 3);
    CHECK(one_clean_line(&l));
    CHECK(parses(&l));
    lh_json_decode(L, l.buf, l.len - 1, NULL, 0);
    CHECK_STR(field_of("msg"), "m\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_STR(field_of("k\xef\xbf\xbd"), "v\x1b\xc2\x9b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    lua_getfield(L, -1, "n");
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 12);
    lua_pop(L, 1);
    lua_getfield(L, -1, "t");
    CHECK(lua_istable(L, -1));
    lua_pop(L, 2);
}

/* A value longer than the line: cut between characters, closed, marked truncated. */
static void test_cut(void)
{
    static const char *const pieces[] = {"\xe2\x82\xac",    "\n", "\x1b", "a", "\xff", "\"",
                                         "\xf0\x9f\x98\x80"};
    for (int fmt = 0; fmt < 2; fmt++) {
        for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
            /* every offset of the cut against the piece's bytes */
            for (size_t shift = 0; shift < 6; shift++) {
                char big[12000];
                size_t n = 0, pl = strlen(pieces[p]);
                for (; n < shift; n++)
                    big[n] = 'x';
                while (n + pl < sizeof(big) - 1)
                    memcpy(big + n, pieces[p], pl), n += pl;
                big[n] = 0;
                line_t l;
                lh_log_setup(LH_DEBUG, fmt ? LH_LOG_JSON : LH_LOG_TEXT);
                lh_field_t f[] = {LH_FIELD("a", "short"), LH_FIELD("big", big),
                                  LH_FIELD("after", "gone")};
                format_line(&l, LH_INFO, fmt ? "msg" : big, f, 3);
                CHECK(l.len <= sizeof(l.buf));
                CHECK(l.len > sizeof(l.buf) - 64); /* cut near the cap, not far before */
                CHECK(one_clean_line(&l));
                if (fmt) {
                    CHECK(parses(&l));
                    CHECK(memcmp(l.buf + l.len - 19, ",\"truncated\":true}\n", 19) == 0);
                    CHECK(strstr(l.buf, "\"after\"") == NULL);
                } else {
                    CHECK(memcmp(l.buf + l.len - 16, " truncated=true\n", 16) == 0);
                }
            }
        }
    }
}

/* A key that does not fit is left out whole; a message that fills the line still closes. */
static void test_cut_key(void)
{
    static char key[9000];
    memset(key, 'k', sizeof(key) - 1);
    line_t l;
    lh_log_setup(LH_DEBUG, LH_LOG_JSON);
    lh_field_t f[] = {LH_FIELD("a", "1"), LH_FIELD(key, "v")};
    format_line(&l, LH_INFO, "m", f, 2);
    CHECK(parses(&l));
    CHECK(strstr(l.buf, "\"a\":\"1\",\"truncated\":true}") != NULL);
    lh_field_t g[] = {LH_FIELD_NUM("n", key)}; /* raw JSON goes whole or not at all */
    format_line(&l, LH_INFO, "m", g, 1);
    CHECK(parses(&l));
}

/* A huge message is cut to its share: the fields after it (the delivery id...) still show. */
static void test_huge_message_keeps_fields(void)
{
    static char msg[20000];
    memset(msg, '\n', sizeof(msg) - 1);
    line_t l;
    lh_field_t f[] = {LH_FIELD("action", "A"), LH_FIELD("id", "42")};
    lh_log_setup(LH_DEBUG, LH_LOG_JSON);
    format_line(&l, LH_INFO, msg, f, 2);
    CHECK(parses(&l));
    lh_json_decode(L, l.buf, l.len - 1, NULL, 0);
    CHECK_STR(field_of("id"), "42");
    lua_getfield(L, -1, "truncated");
    CHECK(lua_toboolean(L, -1));
    lua_pop(L, 2);
    lh_log_setup(LH_DEBUG, LH_LOG_TEXT);
    format_line(&l, LH_INFO, msg, f, 2);
    CHECK(one_clean_line(&l));
    l.buf[l.len - 1] = 0;
    CHECK(strstr(l.buf, "\\n action=A id=42 truncated=true") != NULL);
}

/* Random bytes from a hostile alphabet, in every place, in both formats. */
static void test_random(void)
{
    static const char alphabet[] = "a \"\\=\n\r\t\x01\x1b\x7f\x80\x9b\xc2\xc3\xa9\xe2\x82\xac\xed"
                                   "\xa0\xf0\x9f\x98\xf4\x90\xff";
    srand(7);
    for (int round = 0; round < 3000; round++) {
        char parts[3][3000];
        for (int k = 0; k < 3; k++) {
            size_t n = (size_t)(rand() % (round % 10 == 0 ? 2999 : 40));
            for (size_t i = 0; i < n; i++) {
                parts[k][i] = alphabet[rand() % (sizeof(alphabet) - 1)];
                if (parts[k][i] == 0)
                    parts[k][i] = 'z';
            }
            parts[k][n] = 0;
        }
        line_t l;
        int json = round & 1;
        lh_log_setup(LH_DEBUG, json ? LH_LOG_JSON : LH_LOG_TEXT);
        lh_field_t f[] = {LH_FIELD(parts[1], parts[2]), LH_FIELD(parts[2], parts[0]),
                          LH_FIELD(parts[0], parts[1]), LH_FIELD(parts[1], parts[1])};
        format_line(&l, LH_ERROR, parts[0], f, 4);
        CHECK(one_clean_line(&l));
        if (json)
            CHECK(parses(&l));
        if (test_state.cur_failed) {
            fprintf(stderr, "round %d: %.*s\n", round, (int)l.len, l.buf);
            return;
        }
    }
}

int main(void)
{
    L = luaL_newstate();
    RUN_TEST(test_text_escapes);
    RUN_TEST(test_json_escapes);
    RUN_TEST(test_cut);
    RUN_TEST(test_cut_key);
    RUN_TEST(test_huge_message_keeps_fields);
    RUN_TEST(test_random);
    lua_close(L);
    return TEST_SUMMARY();
}
