/* test_json.c - unit tests for the JSON decoder/encoder (src/json.c) and the `json` module. */
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "../../src/json.h"
#include "test.h"

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();

    luaL_openlibs(L);
    luaL_requiref(L, "json", luaopen_lh_json, 1); /* json */
    lua_pop(L, 1);
    return L;
}

/* Runs a Lua chunk; a failed assert() in it fails the current test. */
#define CHECK_LUA(L, code)                                                                         \
    do {                                                                                           \
        if (luaL_dostring((L), (code)) != LUA_OK) {                                                \
            TEST_FAILED_("Lua: %s", lua_tostring((L), -1));                                        \
            lua_pop((L), 1);                                                                       \
        }                                                                                          \
    } while (0)

static int encode_protected(lua_State *L)
{
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    lh_json_encode(L, 1, &b);
    luaL_pushresult(&b);
    return 1;
}

/* The value at idx as JSON text (pushed), or nil when it cannot be encoded. */
static void push_encoded(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, encode_protected); /* f */
    lua_pushvalue(L, idx);                  /* f v */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {  /* text | err */
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* A job over text, `budget` bytes a step, to its end: 1 or -1 as lh_json_job_step. */
static int job_run(lh_json_job_t *j, size_t budget, char *err, size_t errlen)
{
    int rc;
    int steps = 0;

    while ((rc = lh_json_job_step(j, budget, err, errlen)) == 0)
        steps++;
    CHECK(steps < 100000000);
    return rc;
}

/* The slices agree with the one-pass decoder: validation refuses exactly what it refuses, with
 * the same message, and a build in tiny steps makes the same value. */
static void check_jobs(lua_State *L, const char *copy, size_t len, int rc, const char *err)
{
    char verr[256] = "";
    char berr[256] = "";
    lh_json_job_t *v = lh_json_job_new(NULL, copy, len);
    lua_State *co = lua_newthread(L); /* [v] co */
    lh_json_job_t *b = lh_json_job_new(co, copy, len);
    int vrc = job_run(v, 7, verr, sizeof verr);
    int brc = job_run(b, 3, berr, sizeof berr);

    CHECK_EQ_INT(vrc, rc == 0 ? 1 : -1);
    CHECK_EQ_INT(brc, rc == 0 ? 1 : -1);
    if (rc != 0) {
        CHECK_STR(verr, err);
        CHECK_STR(berr, err);
        CHECK_EQ_INT(lua_gettop(co), 0);
    } else {
        CHECK_EQ_INT(lua_gettop(co), 1);
        CHECK(lh_json_job_type(v) == lh_json_job_type(b));
        lua_xmove(co, L, 1); /* v co bv */
        push_encoded(L, -3); /* v co bv text */
        push_encoded(L, -2); /* v co bv text btext */
        CHECK(lua_rawequal(L, -1, -2));
        lua_pop(L, 3); /* v co */
    }
    lua_pop(L, 1); /* [v] */
    lh_json_job_free(v);
    lh_json_job_free(b);
}

/* Decodes text[0..len) from an exactly sized heap copy (so ASan sees any over-read); returns 0 or
 * -1 like lh_json_decode and checks the stack grew by exactly one value or not at all. Every text
 * also goes through the jobs (check_jobs). */
static int decode_n(lua_State *L, const char *text, size_t len, char *err, size_t errlen)
{
    char *copy = malloc(len ? len : 1);
    int top = lua_gettop(L);
    int rc;

    memcpy(copy, text, len);
    rc = lh_json_decode(L, copy, len, err, errlen);
    CHECK_EQ_INT(lua_gettop(L), top + (rc == 0));
    if (errlen >= 256)
        check_jobs(L, copy, len, rc, err);
    CHECK_EQ_INT(lua_gettop(L), top + (rc == 0));
    free(copy);
    return rc;
}

static int decode(lua_State *L, const char *text)
{
    char err[256];
    int rc = decode_n(L, text, strlen(text), err, sizeof err);

    if (rc != 0)
        fprintf(stderr, "unexpected decode error for %s: %s\n", text, err);
    return rc;
}

/* The error message for text, which must be rejected ("" if it was accepted). */
static const char *decode_error(lua_State *L, const char *text)
{
    static char err[256];

    if (decode_n(L, text, strlen(text), err, sizeof err) == 0) {
        lua_pop(L, 1);
        return "";
    }
    return err;
}

/* Encodes the value at the top (popping it) and returns the text in buf. */
static const char *encode_top(lua_State *L, char *buf, size_t len)
{
    luaL_Buffer b;
    int top = lua_gettop(L);
    size_t n;
    const char *s;

    luaL_buffinit(L, &b); /* v [buf] */
    lh_json_encode(L, top, &b);
    luaL_pushresult(&b); /* v s */
    CHECK_EQ_INT(lua_gettop(L), top + 1);
    s = lua_tolstring(L, -1, &n);
    snprintf(buf, len, "%s", s);
    lua_pop(L, 2);
    return buf;
}

/* --- decoding: numbers --- */

static void check_int(lua_State *L, const char *text, lua_Integer want)
{
    if (decode(L, text) != 0) {
        TEST_FAILED_("rejected %s", text);
        return;
    }
    if (!lua_isinteger(L, -1))
        TEST_FAILED_("%s: not an integer", text);
    else if (lua_tointeger(L, -1) != want)
        TEST_FAILED_("%s: got %lld", text, (long long)lua_tointeger(L, -1));
    lua_pop(L, 1);
}

static void check_float(lua_State *L, const char *text, double want)
{
    double got;

    if (decode(L, text) != 0) {
        TEST_FAILED_("rejected %s", text);
        return;
    }
    got = lua_tonumber(L, -1);
    if (lua_type(L, -1) != LUA_TNUMBER || lua_isinteger(L, -1))
        TEST_FAILED_("%s: not a float", text);
    else if (memcmp(&got, &want, sizeof got) != 0)
        TEST_FAILED_("%s: got %.17g, want %.17g", text, got, want);
    lua_pop(L, 1);
}

static void test_integers(void)
{
    lua_State *L = new_state();

    check_int(L, "21", 21);
    check_int(L, "0", 0);
    check_int(L, "-0", 0);
    check_int(L, "-1", -1);
    check_int(L, "-6248493474747979863", -6248493474747979863LL);
    check_int(L, "9007199254740993", 9007199254740993LL);
    check_int(L, "9007199254740992", 9007199254740992LL);
    check_int(L, "-9007199254740993", -9007199254740993LL);
    check_int(L, "9223372036854775807", INT64_MAX);
    check_int(L, "-9223372036854775808", INT64_MIN);
    check_int(L, "1000000000000000000", 1000000000000000000LL);
    check_int(L, " \t\r\n42 \n", 42);
    /* The integer fast path ends at 19 digits and at anything but '.', 'e' or 'E'. */
    check_int(L, "1234567890123456789", 1234567890123456789LL);
    check_float(L, "9999999999999999999", 9999999999999999999.0);
    check_float(L, "10000000000000000000", 1e19);
    check_float(L, "1234567890123456789.5", 1234567890123456789.5);
    check_float(L, "12E3", 12000.0);
    check_float(L, "12e-1", 1.2);
    check_float(L, "7.0", 7.0);
    CHECK_LUA(L, "local t = json.decode('[1,22,333,{\"a\":4444}]')\n"
                 "assert(math.type(t[3]) == 'integer' and t[4].a == 4444)");
    CHECK(strstr(decode_error(L, "12."), "a digit after '.'") != NULL);
    CHECK(strstr(decode_error(L, "12e"), "a digit in the exponent") != NULL);
    CHECK(strstr(decode_error(L, "12x"), "unexpected data after the JSON value") != NULL);
    /* Outside int64: the closest double. */
    check_float(L, "9223372036854775808", 9223372036854775808.0);
    check_float(L, "-9223372036854775809", -9223372036854775808.0);
    check_float(L, "18446744073709551615", 18446744073709551616.0);
    check_float(L, "99999999999999999999", 1e20);
    check_float(L, "123456789012345678901234567890", 1.2345678901234568e29);
    check_float(L, "-123456789012345678901234567890", -1.2345678901234568e29);
    lua_close(L);
}

static void test_floats(void)
{
    lua_State *L = new_state();

    check_float(L, "1.0", 1.0);
    check_float(L, "1.5", 1.5);
    check_float(L, "-1.5", -1.5);
    check_float(L, "2.5e-3", 2.5e-3);
    check_float(L, "1e308", 1e308);
    check_float(L, "1E2", 100.0);
    check_float(L, "1e+2", 100.0);
    check_float(L, "0e0", 0.0);
    check_float(L, "-0.0", -0.0);
    check_float(L, "0.1", 0.1);
    check_float(L, "0.30000000000000004", 0.30000000000000004);
    check_float(L, "33.52777777777778", 33.52777777777778);
    check_float(L, "25.185185185185187", 25.185185185185187);
    check_float(L, "2.2250738585072014e-308", 2.2250738585072014e-308);
    check_float(L, "4.9406564584124654e-324", 4.9406564584124654e-324);
    check_float(L, "1.7976931348623157e308", 1.7976931348623157e308);
    check_float(L, "1e-400", 0.0);
    check_float(L, "-1e-400", -0.0);
    check_float(L, "1e400", HUGE_VAL); /* overflow: inf, like strtod (documented) */
    check_float(L, "0.000000000000000000000000000001", 1e-30);
    check_float(L, "123456789012345678901234567890.5e-10", 12345678901234567890.12345);
    check_float(L, "9007199254740993.0", 9007199254740992.0); /* ties to even */
    check_float(L, "1e22", 1e22);
    check_float(L, "1e23", 1e23);
    /* Halfway case that needs every digit: 2^-1075 * (2k+1) style boundary. */
    check_float(L, "2.4703282292062328e-324", 4.9406564584124654e-324);
    check_float(L, "2.4703282292062327e-324", 0.0);
    {
        /* 1 + 2^-53 exactly (halfway between 1 and the next double) rounds to even (1.0), but
         * one more nonzero digit far down must round up: tests the sticky digit. */
        char buf[1200];
        strcpy(buf, "1.00000000000000011102230246251565404236316680908203125");
        check_float(L, buf, 1.0);
        strcpy(buf, "1.00000000000000011102230246251565404236316680908203125");
        memset(buf + strlen(buf), '0', 900);
        strcpy(buf + 55 + 900, "1");
        check_float(L, buf, 1.0000000000000002);
    }
    lua_close(L);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rng(void)
{
    /* xorshift64*: deterministic */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* Random doubles printed with %.17g (and shorter forms) must decode to the same bits. */
static void test_float_roundtrip_random(void)
{
    lua_State *L = new_state();
    int bad = 0;

    for (int i = 0; i < 20000 && bad < 5; i++) {
        uint64_t bits = rng();
        double x;
        char text[64];

        memcpy(&x, &bits, sizeof x);
        if (!isfinite(x))
            continue;
        if (i % 2)
            x = (double)(bits % 100000000) / 1000.0; /* short decimals like 1234.567 */
        snprintf(text, sizeof text, "%.*g", 15 + i % 3, x);
        if (strchr(text, '.') == NULL && strchr(text, 'e') == NULL)
            strcat(text, ".0");
        if (decode(L, text) != 0) {
            bad++;
            continue;
        }
        double got = lua_tonumber(L, -1);
        double want = strtod(text, NULL);

        if (memcmp(&got, &want, sizeof got) != 0) {
            TEST_FAILED_("%s: got %.17g want %.17g", text, got, want);
            bad++;
        }
        lua_pop(L, 1);
    }
    lua_close(L);
}

/* Decoding and encoding must not depend on LC_NUMERIC (skipped if no comma locale exists). */
/* Up to 19 significant digits with a decimal exponent within 19 take the integer path
 * (exact_scaled): random ones of every length must decode to strtod's double. */
static void test_float_19_digits(void)
{
    lua_State *L = new_state();
    int bad = 0;

    for (int i = 0; i < 40000 && bad < 5; i++) {
        uint64_t r = rng();
        int digits = 1 + (int)(r % 19);
        int e10 = (int)(rng() % 39) - 19;
        char mant[24];
        char text[64];

        snprintf(mant, sizeof mant, "%019llu",
                 (unsigned long long)(rng() % 10000000000000000000ULL));
        mant[0] = (char)('1' + r % 9);
        if (i % 3 == 0) /* a decimal point instead of an exponent: 33.52777777777778 */
            snprintf(text, sizeof text, "%s%.*s.%.*s", i % 2 ? "-" : "", 2, mant, digits, mant + 2);
        else
            snprintf(text, sizeof text, "%s%.*se%d", i % 2 ? "-" : "", digits, mant, e10);
        if (decode(L, text) != 0) {
            bad++;
            continue;
        }
        double got = lua_tonumber(L, -1);
        double want = strtod(text, NULL);

        if (lua_isinteger(L, -1) || memcmp(&got, &want, sizeof got) != 0) {
            TEST_FAILED_("%s: got %.17g want %.17g", text, got, want);
            bad++;
        }
        lua_pop(L, 1);
    }
    /* Halfway cases: 2^53 + 1 (ties to even, down), 2^53 + 3 (ties to even, up), and one digit
     * past them deciding. */
    check_float(L, "9007199254740993e0", 9007199254740992.0);
    check_float(L, "9007199254740995e0", 9007199254740996.0);
    check_float(L, "90071992547409930001e-4", 9007199254740994.0);
    check_float(L, "900719925474099300.1e-2", 9007199254740994.0);
    check_float(L, "18014398509481985e-1", 1801439850948198.5);
    check_float(L, "9999999999999999999e19", 9.999999999999999999e37);
    check_float(L, "1e-19", 1e-19);
    check_float(L, "9999999999999999999e-19", 0.9999999999999999999);
    /* The quotient's bits below the 53 kept are exactly a half, and only the remainder of the
     * division says it is more. */
    check_float(L, "9516237000573218308e-19", 9516237000573218308e-19);
    check_float(L, "33.52777777777778", 33.52777777777778);
    check_float(L, "-31.296296296296298", -31.296296296296298);
    lua_close(L);
}

static void test_locale_independence(void)
{
    const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "ru_RU.UTF-8", NULL};
    const char *got = NULL;
    char buf[128];

    for (int i = 0; names[i] && got == NULL; i++)
        got = setlocale(LC_NUMERIC, names[i]);
    if (got == NULL) {
        printf("     (no comma-decimal locale installed: locale test skipped)\n");
        return;
    }
    {
        lua_State *L = new_state();

        check_float(L, "1.5", 1.5);
        check_float(L, "25.185185185185187", 25.185185185185187);
        check_float(L, "123456789012345678901234567890.5", 123456789012345678901234567890.5);
        lua_pushnumber(L, 1.5);
        CHECK_STR(encode_top(L, buf, sizeof buf), "1.5");
        lua_pushnumber(L, 25.185185185185187);
        CHECK_STR(encode_top(L, buf, sizeof buf), "25.185185185185187");
        lua_close(L);
    }
    setlocale(LC_NUMERIC, "C");
}

/* --- decoding: strings, literals, structure --- */

static void check_string(lua_State *L, const char *text, const char *want, size_t wantlen)
{
    size_t n;
    const char *s;

    if (decode(L, text) != 0) {
        TEST_FAILED_("rejected %s", text);
        return;
    }
    s = lua_tolstring(L, -1, &n);
    if (lua_type(L, -1) != LUA_TSTRING || n != wantlen || memcmp(s, want, n) != 0)
        TEST_FAILED_("%s: wrong string", text);
    lua_pop(L, 1);
}

#define CHECK_STRING(L, text, want) check_string(L, text, want, sizeof(want) - 1)

static void test_strings(void)
{
    lua_State *L = new_state();

    CHECK_STRING(L, "\"\"", "");
    CHECK_STRING(L, "\"abc\"", "abc");
    CHECK_STRING(L, "\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d");
    CHECK_STRING(L, "\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t");
    CHECK_STRING(L, "\"\\u0041\\u00e9\\u00E9\"", "A\xc3\xa9\xc3\xa9");
    CHECK_STRING(L, "\"\\u20ac\"", "\xe2\x82\xac");
    CHECK_STRING(L, "\"\\ud83d\\ude1e\"", "\xf0\x9f\x98\x9e");
    CHECK_STRING(L, "\"x\\uD83D\\uDE1Ey\"", "x\xf0\x9f\x98\x9ey");
    CHECK_STRING(L, "\"\\u0000\"", "\0");
    CHECK_STRING(L, "\"a\\u0000b\"", "a\0b");
    CHECK_STRING(L, "\"\\uffff\"", "\xef\xbf\xbf");
    CHECK_STRING(L, "\"\\u07ff\\u0800\"", "\xdf\xbf\xe0\xa0\x80");
    /* Raw UTF-8 (and any byte >= 0x80) passes through; DEL is not a control character. */
    CHECK_STRING(L, "\"caf\xc3\xa9 \xf0\x9f\x98\x9e\"", "caf\xc3\xa9 \xf0\x9f\x98\x9e");
    CHECK_STRING(L, "\"\xff\xfe\x80\x7f\"", "\xff\xfe\x80\x7f");
    /* Special characters at every offset of the 16- and 8-byte scans. */
    for (int i = 0; i < 40; i++) {
        char text[96];
        char want[64];
        const char *as = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"; /* 40 */

        memset(want, 'a', sizeof want);
        snprintf(text, sizeof text, "\"%.*s\\naaaaa\"", i, want);
        want[i] = '\n';
        check_string(L, text, want, (size_t)i + 6);
        snprintf(text, sizeof text, "\"%.*s\"", i, as);
        check_string(L, text, as, (size_t)i);
        snprintf(text, sizeof text, "\"%.*s\\\"\"", i, as);
        want[i] = '"';
        check_string(L, text, want, (size_t)i + 1);
        snprintf(text, sizeof text, "\"%.*s\x1f\"", i, as);
        CHECK(strstr(decode_error(L, text), "control character 0x1F") != NULL);
        snprintf(text, sizeof text, "\"%.*s\x7f\x80\xff\x20\"", i, as);
        memcpy(want + i, "\x7f\x80\xff\x20", 4);
        check_string(L, text, want, (size_t)i + 4);
        snprintf(text, sizeof text, "\"%.*s", i, as);
        CHECK(strstr(decode_error(L, text), "end of input inside a string") != NULL);
    }
    /* Escapes between runs of every length, copied 16 bytes at a time: the copy must keep the
     * bytes before each escape and nothing after. */
    for (int gap = 0; gap < 40; gap++) {
        char text[512];
        char want[512];
        size_t t = 0;
        size_t w = 0;

        text[t++] = '"';
        for (int run = 0; run < 6; run++) {
            for (int i = 0; i < gap + run; i++)
                text[t++] = want[w++] = (char)('A' + (i + run) % 26);
            memcpy(text + t, run % 2 ? "\\u00e9" : "\\\"", run % 2 ? 6 : 2);
            t += run % 2 ? 6 : 2;
            memcpy(want + w, run % 2 ? "\xc3\xa9" : "\"", run % 2 ? 2 : 1);
            w += run % 2 ? 2 : 1;
        }
        text[t++] = '"';
        text[t] = '\0';
        check_string(L, text, want, w);
    }
    /* Escaped strings around the size where one pass into the 2 KiB scratch gives way to
     * two (unescape_short): every length decodes the same, whatever comes last. */
    for (int n = 1840; n < 1960; n++) { /* output 1.07 bytes per n: the switch at n ~ 1900 */
        for (int tail = 0; tail < 3; tail++) {
            static char text[4400];
            static char want[4400];
            size_t t = 0;
            size_t w = 0;

            text[t++] = '"';
            for (int i = 0; i < n; i++) {
                if (i % 7 == 3) {
                    memcpy(text + t, i % 2 ? "\\n" : "\\u00e9", i % 2 ? 2 : 6);
                    t += i % 2 ? 2 : 6;
                    memcpy(want + w, i % 2 ? "\n" : "\xc3\xa9", i % 2 ? 1 : 2);
                    w += i % 2 ? 1 : 2;
                } else {
                    text[t++] = want[w++] = (char)('a' + i % 26);
                }
            }
            if (tail == 1) { /* an escape last */
                memcpy(text + t, "\\\"", 2);
                t += 2;
                want[w++] = '"';
            } else if (tail == 2) { /* a run of 16 and more last */
                for (int i = 0; i < 20; i++)
                    text[t++] = want[w++] = 'z';
            }
            text[t++] = '"';
            text[t] = '\0';
            check_string(L, text, want, w);
            text[t - 1] = '\0'; /* unterminated: the same message either way */
            CHECK(strstr(decode_error(L, text), "end of input inside a string") != NULL);
        }
    }
    {
        /* Long strings: plain, and escaped beyond the on-stack scratch buffer. */
        size_t n = 100000;
        char *text = malloc(n * 2 + 3);
        char *want = malloc(n * 2);
        size_t len;

        text[0] = '"';
        for (size_t i = 0; i < n; i++)
            text[1 + i] = want[i] = (char)('a' + i % 26);
        text[n + 1] = '"';
        text[n + 2] = '\0';
        check_string(L, text, want, n);
        len = 1;
        for (size_t i = 0; i < n / 2; i++) {
            text[len++] = '\\';
            text[len++] = i % 2 ? 't' : '"';
            want[i] = i % 2 ? '\t' : '"';
        }
        text[len++] = '"';
        text[len] = '\0';
        check_string(L, text, want, n / 2);
        free(text);
        free(want);
    }
    lua_close(L);
}

static void test_literals(void)
{
    lua_State *L = new_state();

    CHECK(decode(L, "true") == 0 && lua_isboolean(L, -1) && lua_toboolean(L, -1));
    lua_pop(L, 1);
    CHECK(decode(L, "false") == 0 && lua_isboolean(L, -1) && !lua_toboolean(L, -1));
    lua_pop(L, 1);
    CHECK(decode(L, " null ") == 0 && lua_islightuserdata(L, -1) && !lua_touserdata(L, -1));
    lua_pop(L, 1);
    lh_json_pushnull(L);
    CHECK(lua_islightuserdata(L, -1) && lua_touserdata(L, -1) == NULL);
    lua_pop(L, 1);
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

static void test_structures(void)
{
    lua_State *L = new_state();

    CHECK_LUA(L, "local t = json.decode('[]'); assert(type(t) == 'table' and next(t) == nil)");
    CHECK_LUA(L, "local t = json.decode('{}'); assert(type(t) == 'table' and next(t) == nil)");
    CHECK_LUA(L, "local t = json.decode(' [ 1 , \"a\" , true , null , [ ] , { } ] ')\n"
                 "assert(#t == 6 and t[1] == 1 and t[2] == 'a' and t[3] == true)\n"
                 "assert(t[4] == json.null and type(t[5]) == 'table' and type(t[6]) == 'table')");
    CHECK_LUA(L, "local t = json.decode('{\"a\": {\"b\": [1, {\"c\": null}]}, \"d\": -2.5}')\n"
                 "assert(t.a.b[1] == 1 and t.a.b[2].c == json.null and t.d == -2.5)");
    /* Duplicate keys: the last one wins, in small and in huge (chunked) objects. */
    CHECK_LUA(L, "local t = json.decode('{\"a\": 1, \"b\": 2, \"a\": 3}')\n"
                 "assert(t.a == 3 and t.b == 2)");
    CHECK_LUA(L, "local p = {}\n"
                 "for i = 1, 10000 do p[#p + 1] = ('\"k%d\": %d'):format(i % 3000, i) end\n"
                 "local t = json.decode('{' .. table.concat(p, ',') .. '}')\n"
                 "local n = 0 for k, v in pairs(t) do n = n + 1 end\n"
                 "assert(n == 3000, n)\n"
                 "for i = 7001, 10000 do assert(t['k' .. i % 3000] == i) end");
    /* Big arrays: more elements than one stack chunk. */
    CHECK_LUA(L, "local p = {} for i = 1, 100000 do p[i] = tostring(i) end\n"
                 "local t = json.decode('[' .. table.concat(p, ',') .. ']')\n"
                 "assert(#t == 100000)\n"
                 "for i = 1, 100000 do assert(t[i] == i and math.type(t[i]) == 'integer') end");
    CHECK_LUA(L, "local p = {}\n"
                 "for i = 1, 20000 do p[i] = '[' .. i .. ', {\"x\": [' .. i .. ']}]' end\n"
                 "local t = json.decode('[' .. table.concat(p, ',') .. ']')\n"
                 "assert(#t == 20000 and t[20000][1] == 20000 and t[777][2].x[1] == 777)");
    CHECK_LUA(L, "local t = json.decode('{\"tasks\": [{\"id\": 1}, {\"id\": 2}], \"\": 5}')\n"
                 "assert(t.tasks[2].id == 2 and t[''] == 5 and #t.tasks == 2)");
    lua_close(L);
}

/* Object keys go through a cache kept across decodes (keys of 1..40 bytes, compared by their
 * first and last 8 bytes and their middle): a key must never come back as another one. */
static void test_key_cache(void)
{
    lua_State *L = new_state();
    const char *abc = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    /* Every length around the word and cache limits, and keys that differ in one byte only (at
     * the start, in the middle, at the end), decoded twice so the second run hits the cache. */
    for (int round = 0; round < 2; round++) {
        for (int len = 0; len <= 45; len++) {
            for (int at = 0; at < len || (len == 0 && at == 0); at += len > 3 ? len / 3 : 1) {
                char text[256];
                char a[64], b[64];

                memcpy(a, abc, (size_t)len);
                memcpy(b, abc, (size_t)len);
                if (len > 0)
                    b[at] = '#';
                snprintf(text, sizeof text, "{\"%.*s\": 1, \"%.*s\": 2, \"%.*s\": 3}", len, a, len,
                         b, len, a);
                if (decode(L, text) != 0) {
                    TEST_FAILED_("rejected %s", text);
                    continue;
                }
                lua_pushlstring(L, a, (size_t)len); /* t a */
                lua_rawget(L, -2);                  /* t 3|2 */
                CHECK_EQ_INT((int)lua_tointeger(L, -1), 3);
                lua_pop(L, 1);
                if (len > 0) {
                    lua_pushlstring(L, b, (size_t)len); /* t b */
                    lua_rawget(L, -2);                  /* t 2 */
                    CHECK_EQ_INT((int)lua_tointeger(L, -1), 2);
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            }
        }
    }
    /* Keys of more than 16 bytes with the same first and last 8 bytes, and a key at the very end
     * of the text (too near it for a word load). */
    CHECK_LUA(L,
              "local t = json.decode('{\"abcdefgh-1-stuvwxyz\": 1, \"abcdefgh-2-stuvwxyz\": 2}')\n"
              "assert(t['abcdefgh-1-stuvwxyz'] == 1 and t['abcdefgh-2-stuvwxyz'] == 2)\n"
              "t = json.decode('{\"abcdefgh-12345678901234-stuvwxyz\": 1,"
              "\"abcdefgh-12345678901235-stuvwxyz\": 2}')\n"
              "assert(t['abcdefgh-12345678901234-stuvwxyz'] == 1)\n"
              "assert(t['abcdefgh-12345678901235-stuvwxyz'] == 2)\n"
              "assert(json.decode('{\"a\":1}').a == 1 and json.decode('{\"\":1}')[''] == 1)");
    /* Escaped keys bypass the cache but mean the same key; more distinct keys than the cache
     * holds, twice (evictions), each still mapped to its own value. */
    CHECK_LUA(L, "local t = json.decode('{\"k\\\\u0041\": 1, \"kA\": 2, \"a\\\\\"b\": 3}')\n"
                 "assert(t.kA == 2 and t['a\"b'] == 3)\n"
                 "for round = 1, 2 do\n"
                 "  local p = {}\n"
                 "  for i = 1, 3000 do p[i] = ('\"key%d\": %d'):format(i, i) end\n"
                 "  local t = json.decode('{' .. table.concat(p, ',') .. '}')\n"
                 "  for i = 1, 3000 do assert(t['key' .. i] == i) end\n"
                 "end");
    /* Keys known distinct go into the table in any order: a repeated key must still win last,
     * also when the cache replaced it meanwhile (more keys between than it holds, in the same or
     * a nested object), and deeper than the objects that track their keys. */
    CHECK_LUA(L,
              "local p = {}\n"
              "for i = 1, 3000 do p[i] = ('\"key%d\": %d'):format(i, i) end\n"
              "local many = table.concat(p, ',')\n"
              "for round = 1, 2 do\n"
              "  local t = json.decode('{\"dup\": 1, ' .. many .. ', \"dup\": 2}')\n"
              "  assert(t.dup == 2 and t.key3000 == 3000)\n"
              "  t = json.decode('{\"dup\": 1, \"x\": {' .. many .. '}, \"dup\": 2, \"y\": 3}')\n"
              "  assert(t.dup == 2 and t.y == 3 and t.x.key1 == 1)\n"
              "  for j = 1, 50 do\n"
              "    local k = 'dup' .. j\n"
              "    t = json.decode(('{\"%s\": 1, \"x\": {%s}, \"%s\": 2}'):format(k, many, k))\n"
              "    assert(t[k] == 2, k)\n"
              "  end\n"
              "  t = json.decode('[{\"dup\": 1, \"z\": 0, \"dup\": 2}, {\"dup\": 3}]')\n"
              "  assert(t[1].dup == 2 and t[2].dup == 3)\n"
              "end\n"
              "local s = ''\n"
              "for i = 1, 40 do s = s .. '{\"a\": 1, \"b\": 2, \"a\": ' .. i .. ', \"n\": ' end\n"
              "s = s .. '0' .. ('}'):rep(40)\n"
              "local t = json.decode(s)\n"
              "for i = 1, 40 do assert(t.a == i and t.b == 2, i) t = t.n end");
    /* A build in slices on a thread while other decodes on the same state replace the cache's
     * entries between its steps. */
    {
        const char *text = "{\"alpha\": 1, \"beta\": {\"alpha\": 2, \"gamma\": [3]}, \"delta\": 4, "
                           "\"alpha\": 5}";
        lua_State *co = lua_newthread(L); /* co */
        lh_json_job_t *j = lh_json_job_new(co, text, strlen(text));
        char err[256];
        int rc;

        while ((rc = lh_json_job_step(j, 1, err, sizeof err)) == 0) {
            char other[2048];
            size_t n = 0;

            n += (size_t)snprintf(other, sizeof other, "{");
            for (int i = 0; i < 100; i++)
                n += (size_t)snprintf(other + n, sizeof other - n, "%s\"x%d\": %d", i ? "," : "",
                                      i + rc * 1000, i);
            snprintf(other + n, sizeof other - n, "}");
            CHECK_EQ_INT(lh_json_decode(L, other, strlen(other), err, sizeof err), 0);
            lua_pop(L, 1);
        }
        CHECK_EQ_INT(rc, 1);
        lua_xmove(co, L, 1); /* co t */
        lua_setglobal(L, "sliced");
        CHECK_LUA(L, "assert(sliced.alpha == 5 and sliced.beta.alpha == 2)\n"
                     "assert(sliced.beta.gamma[1] == 3 and sliced.delta == 4)");
        lh_json_job_free(j);
        lua_pop(L, 1);
    }
    lua_close(L);
}

static void test_depth(void)
{
    lua_State *L = new_state();
    char *text = malloc(300002);
    char err[256];

    /* 1000 levels are fine, 1001 are not. */
    for (int i = 0; i < 1000; i++) {
        text[i] = '[';
        text[1000 + i] = ']';
    }
    CHECK(decode_n(L, text, 2000, err, sizeof err) == 0);
    lua_pop(L, 1);
    for (int i = 0; i < 1001; i++)
        text[i] = '[';
    CHECK(decode_n(L, text, 1001, err, sizeof err) == -1);
    CHECK_STR(err, "invalid JSON at line 1, column 1001 (byte 1000): nesting deeper than 1000 "
                   "levels");
    /* Deep objects, and absurd depth that must not touch the C stack limits. */
    for (int i = 0; i < 300000; i += 5)
        memcpy(text + i, "{\"k\":", 5);
    CHECK(decode_n(L, text, 300000, err, sizeof err) == -1);
    CHECK(strstr(err, "nesting deeper than 1000 levels") != NULL);
    memset(text, '[', 300000);
    CHECK(decode_n(L, text, 300000, err, sizeof err) == -1);
    CHECK(strstr(err, "nesting deeper than 1000 levels") != NULL);
    /* Nested objects at depth 1000 with values pending at every level. */
    {
        size_t n = 0;

        for (int i = 0; i < 499; i++)
            n += (size_t)sprintf(text + n, "{\"a\":1,\"b\":[1,2,");
        n += (size_t)sprintf(text + n, "{\"z\":[]}");
        for (int i = 0; i < 499; i++)
            n += (size_t)sprintf(text + n, "]}");
        CHECK(decode_n(L, text, n, err, sizeof err) == 0);
        lua_pop(L, 1);
    }
    free(text);
    lua_close(L);
}

/* --- decoding: errors --- */

static void test_errors(void)
{
    lua_State *L = new_state();

    CHECK_STR(decode_error(L, ""), "invalid JSON at line 1, column 1 (byte 0): empty input");
    CHECK_STR(decode_error(L, " \r\n\t "),
              "invalid JSON at line 1, column 1 (byte 0): empty input");
    CHECK_STR(decode_error(L, "{\"action\": \"x\" 5}"),
              "invalid JSON at line 1, column 16 (byte 15): expected ',' or '}' after object "
              "member");
    CHECK_STR(decode_error(L, "{\"action\": \"xy\" 5}"),
              "invalid JSON at line 1, column 17 (byte 16): expected ',' or '}' after object "
              "member");
    CHECK_STR(decode_error(L, "{\n  \"a\": [1, 2, 3],\n  \"b\": {\"c\": true}\n}\n"
                              "\n\n  x"),
              "invalid JSON at line 7, column 3 (byte 45): unexpected data after the JSON value");
    CHECK_STR(decode_error(L, "{\"a\": 1}\n\n{\"b\": 2}"),
              "invalid JSON at line 3, column 1 (byte 10): unexpected data after the JSON value");
    CHECK_STR(decode_error(L, "{\"a\": 1"),
              "invalid JSON at line 1, column 8 (byte 7): unexpected end of input, expected ',' "
              "or '}' after object member");
    CHECK_STR(decode_error(L, "[1, 2"),
              "invalid JSON at line 1, column 6 (byte 5): unexpected end of input, expected ',' "
              "or ']' after array element");
    CHECK_STR(decode_error(L, "[1 2]"),
              "invalid JSON at line 1, column 4 (byte 3): expected ',' or ']' after array element");
    CHECK_STR(decode_error(L, "[1,]"),
              "invalid JSON at line 1, column 4 (byte 3): trailing comma before ']'");
    CHECK_STR(decode_error(L, "{\"a\":1,}"),
              "invalid JSON at line 1, column 8 (byte 7): trailing comma before '}'");
    CHECK_STR(decode_error(L, "{\"a\" 1}"),
              "invalid JSON at line 1, column 6 (byte 5): expected ':' after object key");
    CHECK_STR(decode_error(L, "{a: 1}"),
              "invalid JSON at line 1, column 2 (byte 1): expected a string key for object member");
    CHECK_STR(decode_error(L, "{'a': 1}"),
              "invalid JSON at line 1, column 2 (byte 1): expected a string key for object member");
    CHECK_STR(decode_error(L, "['a']"),
              "invalid JSON at line 1, column 2 (byte 1): single-quoted strings are not valid "
              "JSON");
    CHECK_STR(decode_error(L, "[1, // c\n 2]"),
              "invalid JSON at line 1, column 5 (byte 4): comments are not valid JSON");
    CHECK_STR(decode_error(L, "/* c */ 1"),
              "invalid JSON at line 1, column 1 (byte 0): comments are not valid JSON");
    CHECK_STR(decode_error(L, "[NaN]"),
              "invalid JSON at line 1, column 2 (byte 1): NaN is not valid JSON");
    CHECK_STR(decode_error(L, "Infinity"),
              "invalid JSON at line 1, column 1 (byte 0): Infinity is not valid JSON");
    CHECK_STR(decode_error(L, "-Infinity"),
              "invalid JSON at line 1, column 1 (byte 0): -Infinity is not valid JSON");
    CHECK_STR(decode_error(L, "01"),
              "invalid JSON at line 1, column 1 (byte 0): invalid number: leading zeros are not "
              "allowed");
    CHECK_STR(decode_error(L, "-01"),
              "invalid JSON at line 1, column 1 (byte 0): invalid number: leading zeros are not "
              "allowed");
    CHECK_STR(decode_error(L, "1."),
              "invalid JSON at line 1, column 3 (byte 2): unexpected end of input, expected a "
              "digit after '.' in number");
    CHECK_STR(decode_error(L, "1.e5"),
              "invalid JSON at line 1, column 3 (byte 2): expected a digit after '.' in number");
    CHECK_STR(decode_error(L, "1e+"),
              "invalid JSON at line 1, column 4 (byte 3): unexpected end of input, expected a "
              "digit in the exponent of number");
    CHECK_STR(decode_error(L, "-"),
              "invalid JSON at line 1, column 2 (byte 1): unexpected end of input, expected a "
              "digit after '-'");
    CHECK_STR(decode_error(L, "--1"),
              "invalid JSON at line 1, column 2 (byte 1): expected a digit after '-'");
    CHECK_STR(decode_error(L, "+1"),
              "invalid JSON at line 1, column 1 (byte 0): unexpected character '+', expected a "
              "JSON value");
    CHECK_STR(decode_error(L, ".5"),
              "invalid JSON at line 1, column 1 (byte 0): unexpected character '.', expected a "
              "JSON value");
    CHECK_STR(decode_error(L, "0x10"),
              "invalid JSON at line 1, column 2 (byte 1): unexpected data after the JSON value");
    CHECK_STR(decode_error(L, "tru"),
              "invalid JSON at line 1, column 4 (byte 3): unexpected end of input inside the "
              "literal 'true'");
    CHECK_STR(decode_error(L, "[trUe]"),
              "invalid JSON at line 1, column 2 (byte 1): invalid literal, expected 'true'");
    CHECK_STR(decode_error(L, "nul"),
              "invalid JSON at line 1, column 4 (byte 3): unexpected end of input inside the "
              "literal 'null'");
    CHECK_STR(decode_error(L, "None"),
              "invalid JSON at line 1, column 1 (byte 0): unexpected character 'N', expected a "
              "JSON value");
    CHECK_STR(decode_error(L, "\"abc"),
              "invalid JSON at line 1, column 5 (byte 4): unexpected end of input inside a string");
    CHECK_STR(decode_error(L, "\"abc\\"),
              "invalid JSON at line 1, column 6 (byte 5): unexpected end of input inside a string");
    CHECK_STR(decode_error(L, "\"a\tb\""),
              "invalid JSON at line 1, column 3 (byte 2): control character 0x09 in string must "
              "be escaped");
    CHECK_STR(decode_error(L, "[\"a\\nb\nc\"]"),
              "invalid JSON at line 1, column 7 (byte 6): control character 0x0A in string must "
              "be escaped");
    CHECK_STR(decode_error(L, "\"a\\x\""),
              "invalid JSON at line 1, column 3 (byte 2): invalid escape '\\x' in string");
    CHECK_STR(decode_error(L, "\"a\\\x01\""),
              "invalid JSON at line 1, column 3 (byte 2): invalid escape in string: backslash "
              "followed by byte 0x01");
    CHECK_STR(decode_error(L, "\"\\u12\""),
              "invalid JSON at line 1, column 2 (byte 1): invalid \\u escape in string: expected "
              "4 hex digits");
    CHECK_STR(decode_error(L, "\"\\u12G4\""),
              "invalid JSON at line 1, column 2 (byte 1): invalid \\u escape in string: expected "
              "4 hex digits");
    CHECK_STR(decode_error(L, "\"ab\\ud83d\""),
              "invalid JSON at line 1, column 4 (byte 3): lone UTF-16 high surrogate \\uD83D in "
              "string (not followed by a \\uDC00-\\uDFFF escape)");
    CHECK_STR(decode_error(L, "\"\\ud83d\\u0041\""),
              "invalid JSON at line 1, column 2 (byte 1): lone UTF-16 high surrogate \\uD83D in "
              "string (not followed by a \\uDC00-\\uDFFF escape)");
    CHECK_STR(decode_error(L, "\"\\ud83dx\\ude1e\""),
              "invalid JSON at line 1, column 2 (byte 1): lone UTF-16 high surrogate \\uD83D in "
              "string (not followed by a \\uDC00-\\uDFFF escape)");
    CHECK_STR(decode_error(L, "\"\\ude1e\""),
              "invalid JSON at line 1, column 2 (byte 1): lone UTF-16 low surrogate \\uDE1E in "
              "string");
    CHECK_STR(decode_error(L, "\"\\ud83d\\ud83d\""),
              "invalid JSON at line 1, column 2 (byte 1): lone UTF-16 high surrogate \\uD83D in "
              "string (not followed by a \\uDC00-\\uDFFF escape)");
    CHECK_STR(decode_error(L, "[1]]"),
              "invalid JSON at line 1, column 4 (byte 3): unexpected data after the JSON value");
    CHECK_STR(decode_error(L, "]"),
              "invalid JSON at line 1, column 1 (byte 0): unexpected character ']', expected a "
              "JSON value");
    CHECK_STR(decode_error(L, "[\x01]"),
              "invalid JSON at line 1, column 2 (byte 1): unexpected byte 0x01, expected a JSON "
              "value");
    CHECK_STR(decode_error(L, "\xef\xbb\xbf{}"),
              "invalid JSON at line 1, column 1 (byte 0): unexpected byte 0xEF, expected a JSON "
              "value");
    CHECK_STR(decode_error(L, "{\"a\":"),
              "invalid JSON at line 1, column 6 (byte 5): unexpected end of input, expected a "
              "JSON value");
    /* Columns count characters, bytes count bytes. */
    CHECK_STR(decode_error(L, "{\"\xc3\xa9t\xc3\xa9\": x}"),
              "invalid JSON at line 1, column 9 (byte 10): unexpected character 'x', expected a "
              "JSON value");
    CHECK_STR(decode_error(L, "[1,\r\n 2,\r\n x]"),
              "invalid JSON at line 3, column 2 (byte 11): unexpected character 'x', expected a "
              "JSON value");
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

static void test_error_buffer(void)
{
    lua_State *L = new_state();
    char err[16];
    char big[256];

    memset(err, 'X', sizeof err);
    CHECK(lh_json_decode(L, "[1,", 3, err, sizeof err) == -1);
    CHECK_STR(err, "invalid JSON at");
    CHECK(lh_json_decode(L, "[1,", 3, err, 0) == -1); /* writes nothing */
    CHECK_STR(err, "invalid JSON at");
    CHECK(lh_json_decode(L, "", 0, NULL, 0) == -1);
    CHECK(lh_json_decode(L, NULL, 0, err, sizeof err) == -1);
    /* The buffer is not NUL-terminated: only len bytes count. */
    CHECK(lh_json_decode(L, "12345", 2, err, sizeof err) == 0);
    CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == 12);
    lua_pop(L, 1);
    CHECK(lh_json_decode(L, "[1]xyz", 3, err, sizeof err) == 0);
    lua_pop(L, 1);
    CHECK(lh_json_decode(L, "\"ab\"", 3, err, sizeof err) == -1);
    /* NUL bytes are data, not terminators. */
    CHECK(lh_json_decode(L, "[1,\0]", 5, big, sizeof big) == -1);
    CHECK(strstr(big, "(byte 3): unexpected byte 0x00, expected a JSON value") != NULL);
    CHECK(lh_json_decode(L, "\"a\0b\"", 5, big, sizeof big) == -1);
    CHECK(strstr(big, "(byte 2): control character 0x00 in string must be escaped") != NULL);
    CHECK(lh_json_decode(L, "1 \0", 3, big, sizeof big) == -1);
    CHECK(strstr(big, "(byte 2): unexpected data after the JSON value") != NULL);
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

/* The top-level type comes from the decoder: an object and an array are both tables. */
static void test_top_type(void)
{
    static const struct {
        const char *text;
        lh_json_type_t type;
    } cases[] = {
        {"{}", LH_JSON_OBJECT},     {" \r\n\t{\"a\":[1]}", LH_JSON_OBJECT},
        {"[]", LH_JSON_ARRAY},      {"\n [ {} ]", LH_JSON_ARRAY},
        {"null", LH_JSON_NULL},     {"true", LH_JSON_BOOLEAN},
        {"false", LH_JSON_BOOLEAN}, {"-1.5e3", LH_JSON_NUMBER},
        {"0", LH_JSON_NUMBER},      {" \"s\" ", LH_JSON_STRING},
    };
    lua_State *L = new_state();
    char err[128];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lh_json_type_t t = (lh_json_type_t)-1;
        CHECK(lh_json_decode_typed(L, cases[i].text, strlen(cases[i].text), err, sizeof err, &t) ==
              0);
        CHECK_EQ_INT(t, cases[i].type);
        lua_pop(L, 1);
    }
    /* on failure the type is left alone */
    lh_json_type_t t = LH_JSON_STRING;
    CHECK(lh_json_decode_typed(L, "{", 1, err, sizeof err, &t) == -1);
    CHECK_EQ_INT(t, LH_JSON_STRING);
    CHECK(lh_json_decode_typed(L, "[1]", 3, err, sizeof err, NULL) == 0);
    lua_pop(L, 1);
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

/* --- robustness: truncation and mutation --- */

static const char sample[] =
    "{\"action\": \"ANNOTATION_CREATED\", \"annotation\": {\"id\": 2745, \"result\": [{\"value\":"
    " {\"x\": 21.34375, \"y\": 33.52777777777778, \"rotation\": 0, \"labels\": [\"Car\"]},"
    " \"id\": \"b4Xq9LmZ2e\", \"meta\": {}, \"tags\": []}], \"was_cancelled\": false,"
    " \"ground_truth\": true, \"lead_time\": -41.927e-1, \"import_id\": null,"
    " \"big\": -6248493474747979863, \"huge\": 123456789012345678901234567890,"
    " \"text\": \"caf\\u00e9 \\ud83d\\ude1e \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t \xc3\xa9\"},"
    " \"task\": {\"id\": 18342, \"data\": {\"image\": \"s3://bucket/a.jpg\"}}}";

static void test_truncation(void)
{
    lua_State *L = new_state();
    size_t n = strlen(sample);
    char err[256];

    CHECK(decode_n(L, sample, n, err, sizeof err) == 0);
    lua_pop(L, 1);
    for (size_t i = 0; i < n; i++) {
        int rc = decode_n(L, sample, i, err, sizeof err);

        if (rc == 0) {
            TEST_FAILED_("prefix of %zu bytes accepted", i);
            lua_pop(L, 1);
        } else if (strncmp(err, "invalid JSON", 12) != 0) {
            TEST_FAILED_("prefix of %zu bytes: odd message %s", i, err);
        }
    }
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

static void test_mutations(void)
{
    static const char alphabet[] = "{}[]\":,\\ \t\n0123456789-+.eEtrufalsn\x01\x7f\x80\xff";
    lua_State *L = new_state();
    size_t n = strlen(sample);
    char *buf = malloc(n + 8);
    char err[256];
    int ok = 0;

    for (int iter = 0; iter < 5000; iter++) {
        size_t len = n;
        int edits = 1 + (int)(rng() % 4);

        memcpy(buf, sample, n);
        for (int k = 0; k < edits; k++) {
            size_t at = (size_t)(rng() % len);
            char c = rng() % 2 ? alphabet[rng() % (sizeof alphabet - 1)] : (char)rng();

            switch (rng() % 3) {
            case 0: /* replace */
                buf[at] = c;
                break;
            case 1: /* insert */
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = c;
                len++;
                break;
            default: /* delete */
                memmove(buf + at, buf + at + 1, len - at - 1);
                len--;
            }
        }
        if (decode_n(L, buf, len, err, sizeof err) == 0) {
            ok++;
            lua_pop(L, 1);
        } else if (strncmp(err, "invalid JSON", 12) != 0) {
            TEST_FAILED_("odd message %s", err);
        }
        /* And every truncation of some mutants. */
        if (iter % 50 == 0) {
            for (size_t i = 0; i < len; i++) {
                if (decode_n(L, buf, i, err, sizeof err) == 0)
                    lua_pop(L, 1);
            }
        }
    }
    CHECK(ok > 0); /* some mutations keep it valid (e.g. inside strings) */
    CHECK_EQ_INT(lua_gettop(L), 0);
    free(buf);
    lua_close(L);
}

/* Allocation failures raise a Lua error (only that), leaving nothing to leak. */
static long alloc_budget;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (alloc_budget-- <= 0)
        return NULL;
    return realloc(ptr, nsize);
}

static int pdecode(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    char err[256];

    return lh_json_decode(L, s, len, err, sizeof err) == 0;
}

static int pstep(lua_State *L)
{
    char err[256];

    lua_pushinteger(L, lh_json_job_step(lua_touserdata(L, 1), 1 << 20, err, sizeof err));
    return 1;
}

/* A building job is set up outside lua_pcall (dispatch.c's big bodies): in a state that has no
 * key cache yet, with every allocation failing, setting it up must not raise (that would abort
 * the process); its first step, under lua_pcall, fails for memory, and a later job works. */
static void test_job_out_of_memory(void)
{
    const char *text = "{\"tasks\": [{\"id\": 1}, {\"id\": 2}]}";
    lua_State *L;
    lua_State *co;
    lh_json_job_t *j;

    alloc_budget = 1000000;
    L = lua_newstate(limited_alloc, NULL);
    co = lua_newthread(L); /* co */
    alloc_budget = 0;
    j = lh_json_job_new(co, text, strlen(text));
    CHECK(j != NULL);
    lua_pushcfunction(L, pstep);            /* co f */
    lua_pushlightuserdata(L, j);            /* co f j */
    CHECK(lua_pcall(L, 1, 1, 0) != LUA_OK); /* co err */
    alloc_budget = 1000000;
    lh_json_job_free(j);
    lua_settop(L, 0);
    co = lua_newthread(L); /* co */
    j = lh_json_job_new(co, text, strlen(text));
    lua_pushcfunction(L, pstep);                 /* co f */
    lua_pushlightuserdata(L, j);                 /* co f j */
    CHECK_EQ_INT(lua_pcall(L, 1, 1, 0), LUA_OK); /* co rc */
    CHECK_EQ_INT((int)lua_tointeger(L, -1), 1);
    CHECK_EQ_INT(lua_gettop(co), 1);
    lh_json_job_free(j);
    lua_close(L);
}

static void test_out_of_memory(void)
{
    int raised = 0;

    for (long budget = 0; budget < 400; budget += 3) {
        lua_State *L;

        alloc_budget = 1000000;
        L = lua_newstate(limited_alloc, NULL);
        lua_pushcfunction(L, pdecode); /* f */
        lua_pushstring(L, sample);     /* f s */
        alloc_budget = budget;
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) { /* err | ok */
            CHECK(lua_type(L, -1) == LUA_TSTRING || lua_isnil(L, -1));
            raised++;
        }
        alloc_budget = 1000000;
        lua_close(L);
    }
    CHECK(raised > 0);
}

/* --- encoding --- */

static void test_encode_scalars(void)
{
    lua_State *L = new_state();
    char buf[256];

    lua_pushinteger(L, 21);
    CHECK_STR(encode_top(L, buf, sizeof buf), "21");
    lua_pushinteger(L, 9007199254740993LL);
    CHECK_STR(encode_top(L, buf, sizeof buf), "9007199254740993");
    lua_pushinteger(L, LUA_MININTEGER);
    CHECK_STR(encode_top(L, buf, sizeof buf), "-9223372036854775808");
    lua_pushinteger(L, LUA_MAXINTEGER);
    CHECK_STR(encode_top(L, buf, sizeof buf), "9223372036854775807");
    lua_pushinteger(L, 0);
    CHECK_STR(encode_top(L, buf, sizeof buf), "0");
    lua_pushnumber(L, 2.0);
    CHECK_STR(encode_top(L, buf, sizeof buf), "2.0");
    lua_pushnumber(L, -0.0);
    CHECK_STR(encode_top(L, buf, sizeof buf), "-0.0");
    lua_pushnumber(L, 0.1);
    CHECK_STR(encode_top(L, buf, sizeof buf), "0.1");
    lua_pushnumber(L, 1.5);
    CHECK_STR(encode_top(L, buf, sizeof buf), "1.5");
    lua_pushnumber(L, 0.1 + 0.2);
    CHECK_STR(encode_top(L, buf, sizeof buf), "0.30000000000000004");
    lua_pushnumber(L, 1.0 / 3);
    CHECK_STR(encode_top(L, buf, sizeof buf), "0.3333333333333333");
    lua_pushnumber(L, 1e300);
    CHECK_STR(encode_top(L, buf, sizeof buf), "1e+300");
    lua_pushnumber(L, 1e21);
    CHECK_STR(encode_top(L, buf, sizeof buf), "1e+21");
    lua_pushnumber(L, 123456789012345678.0);
    CHECK_STR(encode_top(L, buf, sizeof buf), "1.2345678901234568e+17");
    lua_pushnumber(L, 5e-324);
    CHECK_STR(encode_top(L, buf, sizeof buf), "4.94065645841247e-324"); /* 15 digits suffice */
    lua_pushboolean(L, 1);
    CHECK_STR(encode_top(L, buf, sizeof buf), "true");
    lua_pushboolean(L, 0);
    CHECK_STR(encode_top(L, buf, sizeof buf), "false");
    lh_json_pushnull(L);
    CHECK_STR(encode_top(L, buf, sizeof buf), "null");
    lua_pushnil(L);
    CHECK_STR(encode_top(L, buf, sizeof buf), "null");
    lua_pushstring(L, "a\"b\\c/d\b\f\n\r\t\x01\x1f\x7f caf\xc3\xa9");
    CHECK_STR(encode_top(L, buf, sizeof buf),
              "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f caf\xc3\xa9\""); /* DEL too */
    lua_pushlstring(L, "a\0b", 3);
    CHECK_STR(encode_top(L, buf, sizeof buf), "\"a\\u0000b\"");
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

static void test_encode_tables(void)
{
    lua_State *L = new_state();

    CHECK_LUA(L, "assert(json.encode({}) == '{}')");
    CHECK_LUA(L, "assert(json.encode({1, 2, 3}) == '[1,2,3]')");
    CHECK_LUA(L, "assert(json.encode({'a', {}, {true}, json.null}) == '[\"a\",{},[true],null]')");
    CHECK_LUA(L, "assert(json.encode({a = 1}) == '{\"a\":1}')");
    CHECK_LUA(L, "assert(json.encode({[\"x y\"] = {b = {1.5}}}) == '{\"x y\":{\"b\":[1.5]}}')");
    CHECK_LUA(L, "local s = json.encode({a = 1, b = 'x', c = {1, 2}})\n"
                 "local t = json.decode(s)\n"
                 "assert(t.a == 1 and t.b == 'x' and t.c[2] == 2)\n"
                 "assert(#s == #'{\"a\":1,\"b\":\"x\",\"c\":[1,2]}')");
    /* Output larger than the initial buffer. */
    CHECK_LUA(L, "local t = {} for i = 1, 50000 do t[i] = {id = i, s = ('x'):rep(i % 50)} end\n"
                 "local s = json.encode(t)\n"
                 "local u = json.decode(s)\n"
                 "assert(#u == 50000 and u[49999].id == 49999 and #u[49999].s == 49999 % 50)");
    CHECK_LUA(L, "local big = ('\\0\"\\\\'):rep(100000)\n"
                 "assert(json.decode(json.encode(big)) == big)");
    lua_close(L);
}

/* lh_json_encode appends to a buffer that may already hold data and go on afterwards. */
static void test_encode_buffer(void)
{
    lua_State *L = new_state();
    luaL_Buffer b;
    size_t n;
    const char *s;

    CHECK_LUA(L, "small = {a = {1, 2}} big = {} for i = 1, 3000 do big[i] = 'item' .. i end");
    for (int round = 0; round < 4; round++) {
        int top;

        lua_getglobal(L, round % 2 ? "big" : "small"); /* v */
        top = lua_gettop(L);
        luaL_buffinit(L, &b); /* v [buf] */
        if (round >= 2) {
            for (int i = 0; i < 1000; i++)
                luaL_addstring(&b, "0123456789"); /* the buffer has its own box now */
        }
        luaL_addstring(&b, "x=");
        lh_json_encode(L, -1 - (lua_gettop(L) - top), &b); /* a relative index */
        luaL_addstring(&b, ";");
        luaL_pushresult(&b); /* v s */
        CHECK_EQ_INT(lua_gettop(L), top + 1);
        s = lua_tolstring(L, -1, &n);
        if (round >= 2) {
            CHECK(n > 10000 && memcmp(s, "0123456789", 10) == 0);
            s += 10000;
            n -= 10000;
        }
        CHECK(n > 4 && memcmp(s, "x=", 2) == 0 && s[n - 1] == ';');
        if (round % 2 == 0)
            CHECK_STR(s, "x={\"a\":[1,2]};");
        else
            CHECK(n > 20000 && memcmp(s, "x=[\"item1\",\"item2\",", 19) == 0);
        lua_pop(L, 2);
    }
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

#define CHECK_ENCODE_ERROR(L, expr, msg)                                                           \
    CHECK_LUA(L, "local ok, e = pcall(json.encode, " expr ")\n"                                    \
                 "assert(not ok, 'accepted')\n"                                                    \
                 "assert(e == " msg ", e)")

static void test_encode_errors(void)
{
    lua_State *L = new_state();

    CHECK_ENCODE_ERROR(L, "print", "'json.encode: cannot encode a function'");
    CHECK_ENCODE_ERROR(L, "{tasks = {1, {f = print}}}",
                       "'json.encode: cannot encode a function at .tasks[2].f'");
    CHECK_ENCODE_ERROR(L, "{['odd key'] = {coroutine.create(print)}}",
                       "'json.encode: cannot encode a thread at [\"odd key\"][1]'");
    CHECK_ENCODE_ERROR(L, "{x = io.stdout}", "'json.encode: cannot encode a userdata at .x'");
    CHECK_ENCODE_ERROR(L, "{x = 0/0}", "'json.encode: cannot encode NaN at .x'");
    CHECK_ENCODE_ERROR(L, "{1, 1/0}", "'json.encode: cannot encode inf at [2]'");
    CHECK_ENCODE_ERROR(L, "-math.huge", "'json.encode: cannot encode -inf'");
    CHECK_ENCODE_ERROR(L, "{1, 2, x = 3}",
                       "'json.encode: cannot encode a table mixing integer keys and string keys'");
    CHECK_ENCODE_ERROR(L, "{a = {[1] = 1, [3] = 3}}",
                       "'json.encode: cannot encode a sparse array (2 elements, largest key 3) "
                       "at .a'");
    CHECK_ENCODE_ERROR(L, "{[0] = 'z'}",
                       "'json.encode: cannot encode a table with integer key 0 (arrays need keys "
                       "1..n)'");
    CHECK_ENCODE_ERROR(L, "{[1.5] = 'z'}",
                       "'json.encode: cannot encode a table with float key 1.5 (arrays need keys "
                       "1..n)'");
    CHECK_ENCODE_ERROR(L, "{[true] = 'z'}",
                       "'json.encode: cannot encode a table with a boolean key (arrays need keys "
                       "1..n)'");
    CHECK_LUA(L, "local t = {} t.self = t\n"
                 "local ok, e = pcall(json.encode, t)\n"
                 "assert(not ok and e:find('nesting deeper than 1000 levels (a cycle?) at ...', 1,"
                 " true) and e:find('.self.self$'), e)\n"
                 "assert(#e < 400, #e)");
    /* Mixed keys where the string key comes first in traversal order. */
    CHECK_LUA(L, "local t = {x = 1} t[2] = 5\n"
                 "local ok, e = pcall(json.encode, {t})\n"
                 "assert(not ok and (e:find('mixing string keys and integer key 2 at [1]', 1, true)"
                 " or e:find('mixing integer keys and string keys at [1]', 1, true)), e)");
    /* 1000 levels encode, 1001 do not. */
    CHECK_LUA(L, "local t = {} local c = t for i = 1, 999 do c[1] = {} c = c[1] end\n"
                 "assert(#json.encode(t) == 2000 - 1 + 1)\n"
                 "c[1] = {}\n"
                 "assert(not pcall(json.encode, t))");
    lua_close(L);
}

/* --- the Lua module and round trips --- */

static void test_module(void)
{
    lua_State *L = new_state();

    CHECK_LUA(L,
              "assert(json.decode('null') == json.null)\n"
              "assert(type(json.null) == 'userdata')\n"
              "local v, e = json.decode('{\"a\": 1 \"b\": 2}')\n"
              "assert(v == nil and e == \"invalid JSON at line 1, column 9 (byte 8): "
              "expected ',' or '}' after object member\", e)\n"
              "local v, e = json.decode('')\n"
              "assert(v == nil and e == 'invalid JSON at line 1, column 1 (byte 0): empty input')\n"
              "assert(not pcall(json.decode, {}))\n"
              "assert(not pcall(json.decode))\n"
              "assert(not pcall(json.encode))\n"
              "assert(select('#', json.decode('[1]')) == 1)\n"
              "assert(math.type(json.decode('21')) == 'integer')\n"
              "assert(math.type(json.decode('1.0')) == 'float')");
    /* cjson.null is the same value, when lua-cjson is installed. */
    CHECK_LUA(L, "local ok, cjson = pcall(require, 'cjson')\n"
                 "if ok then\n"
                 "  assert(cjson.null == json.null and json.decode('null') == cjson.null)\n"
                 "  assert(json.encode({cjson.null}) == '[null]')\n"
                 "  assert(cjson.decode(json.encode({a = {1, 2.5, 'x'}})).a[3] == 'x')\n"
                 "else print('     (lua-cjson not found: cjson.null check skipped)') end");
    lua_close(L);
}

static void test_roundtrip(void)
{
    lua_State *L = new_state();

    CHECK_LUA(L, "local p53 = math.tointeger(2^53)\n"
                 "for _, v in ipairs({0, -1, 1, p53 - 1, p53, p53 + 1, -p53 - 1, -p53 + 1,\n"
                 "    math.maxinteger, math.mininteger, math.maxinteger - 1, 21}) do\n"
                 "  local s = json.encode(v)\n"
                 "  local w = json.decode(s)\n"
                 "  assert(math.type(w) == 'integer' and w == v, s)\n"
                 "  assert(s == string.format('%d', v), s)\n"
                 "end\n"
                 "for _, v in ipairs({0.0, -0.0, 1.0, 2.0, 0.1, 1/3, 1e308, 5e-324, -2.5e-3,\n"
                 "    2^53, 2^63, 123456.789}) do\n"
                 "  local w = json.decode(json.encode(v))\n"
                 "  assert(math.type(w) == 'float' and w == v and 1/w == 1/v, json.encode(v))\n"
                 "end\n"
                 "local doc = {action = 'TASKS_CREATED',\n"
                 "  tasks = {{id = 1, data = {image = 's3://x'},"
                 "  meta = {}, comment_authors = {'a', 'b'}, last = json.null, ok = false,\n"
                 "  text = 'caf\\u{e9} \\u{1F61E} \\\"q\\\" \\\\ / \\b\\f\\n\\r\\t \\0'}},\n"
                 "  project = {id = 42, x = 21.34375}}\n"
                 "local function same(a, b)\n"
                 "  if type(a) ~= type(b) then return false end\n"
                 "  if type(a) ~= 'table' then return a == b and math.type(a) == math.type(b) end\n"
                 "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
                 "  for k in pairs(b) do if a[k] == nil then return false end end\n"
                 "  return true\n"
                 "end\n"
                 "local s = json.encode(doc)\n"
                 "assert(same(json.decode(s), doc), s)\n"
                 "assert(json.encode(json.decode(s)) == s)\n"
                 "assert(json.decode('\"\\\\ud83d\\\\ude1e\"') == '\\u{1F61E}')\n"
                 "assert(json.encode('\\u{1F61E}') == '\"\\u{1F61E}\"')");
    lua_close(L);
}

/* A real Label Studio body: integers stay integers, the 64-bit hash stays exact, and it
** survives a round trip. */
static void test_payload(void)
{
    lua_State *L = new_state();

    CHECK_LUA(L, "local f = assert(io.open('" LH_FIXTURES
                 "/labelstudio/ANNOTATION_CREATED.json', 'rb'))\n"
                 "local s = f:read('a') f:close()\n"
                 "local t = assert(json.decode(s))\n"
                 "assert(t.action == 'ANNOTATION_CREATED')\n"
                 "assert(math.type(t.annotation.id) == 'integer')\n"
                 "local h = s:match('\"label_config_hash\": (%-?%d+)')\n"
                 "assert(h and tostring(t.project.label_config_hash) == h, h)\n"
                 "assert(t.annotation.draft_created_at == json.null)\n"
                 "local function same(a, b)\n"
                 "  if type(a) ~= type(b) then return false end\n"
                 "  if type(a) ~= 'table' then return a == b and math.type(a) == math.type(b) end\n"
                 "  for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
                 "  for k in pairs(b) do if a[k] == nil then return false end end\n"
                 "  return true\n"
                 "end\n"
                 "assert(same(json.decode(json.encode(t)), t))");
    lua_close(L);
}

/* --- marks: decoded empty arrays and json.array/json.object --- */

/* Decodes text and encodes it again: a text already in canonical form (compact, keys sorted)
 * comes back the same. */
static void check_roundtrip(lua_State *L, const char *text)
{
    char buf[512];

    if (decode(L, text) != 0) {
        TEST_FAILED_("cannot decode %s", text);
        return;
    }
    CHECK_STR(encode_top(L, buf, sizeof buf), text);
}

static void test_marks_roundtrip(void)
{
    /* A bare state: the decoder creates the mark itself, no json module needed. */
    lua_State *L = luaL_newstate();
    static const char *const texts[] = {
        "[]",
        "{}",
        "[[]]",
        "[[],[[]],[[],[]]]",
        "[{}]",
        "{\"result\":[]}",
        "{\"a\":[],\"b\":{},\"c\":[[],{},[[]]],\"d\":{\"e\":{\"f\":[]}}}",
        "{\"\":[],\"tasks\":[{\"annotations\":[],\"id\":1,\"predictions\":[]}]}",
        "[1,[],\"x\",[],null,{\"k\":[]}]",
    };

    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        check_roundtrip(L, texts[i]);
    /* An error after marked arrays leaves the stack as it was (decode_n checks). */
    CHECK_STR(decode_error(L, "[[],[],x]"),
              "invalid JSON at line 1, column 8 (byte 7): unexpected character 'x', expected a "
              "JSON value");
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);

    /* Many empty arrays in one document, as deep as the decoder goes: each one is marked. */
    L = new_state();
    CHECK_LUA(L, "local n = 0\n"
                 "local parts = {} for i = 1, 3000 do parts[i] = '[]' end\n"
                 "local text = '[' .. table.concat(parts, ',') .. ']'\n"
                 "local v = json.decode(text)\n"
                 "for i = 1, 3000 do if getmetatable(v[i]) == getmetatable(json.array()) then n = "
                 "n + 1 end end\n"
                 "assert(n == 3000, n)\n"
                 "assert(json.encode(v) == text)\n"
                 "local deep = ('['):rep(1000) .. (']'):rep(1000)\n"
                 "assert(json.encode(json.decode(deep)) == deep)");
    lua_close(L);
}

static void test_marks_decoded(void)
{
    lua_State *L = new_state();

    /* Only empty arrays carry a mark: an empty object, and filled arrays, are unambiguous. */
    CHECK(decode(L, "[[],{},[1]]") == 0); /* v */
    lua_rawgeti(L, 1, 1);                 /* v [] */
    CHECK_EQ_INT(lh_json_marked(L, -1), LH_JSON_ARRAY);
    CHECK_EQ_INT(lua_gettop(L), 2);
    lua_rawgeti(L, 1, 2); /* v [] {} */
    CHECK_EQ_INT(lh_json_marked(L, -1), LH_JSON_NULL);
    lua_rawgeti(L, 1, 3); /* v [] {} [1] */
    CHECK_EQ_INT(lh_json_marked(L, -1), LH_JSON_NULL);
    CHECK_EQ_INT(lh_json_marked(L, 1), LH_JSON_NULL);
    CHECK_EQ_INT(lua_gettop(L), 4);
    /* All empty arrays share one metatable, the one json.array sets. */
    CHECK(lua_getmetatable(L, 2)); /* .. amt */
    CHECK_LUA(L, "A = getmetatable(json.array({}))");
    lua_getglobal(L, "A"); /* .. amt A */
    CHECK(lua_rawequal(L, -1, -2));
    lua_settop(L, 0);
    /* Another metatable is no mark. */
    CHECK_LUA(L, "T = setmetatable({}, {})");
    lua_getglobal(L, "T");
    CHECK_EQ_INT(lh_json_marked(L, -1), LH_JSON_NULL);
    lua_pop(L, 1);

    /* The mark survives what a handler does to the table. */
    CHECK_LUA(L, "local v = json.decode('{\"result\":[],\"n\":1}')\n"
                 "table.insert(v.result, {id = 2})\n"
                 "assert(json.encode(v) == '{\"n\":1,\"result\":[{\"id\":2}]}', json.encode(v))\n"
                 "table.remove(v.result)\n"
                 "assert(json.encode(v) == '{\"n\":1,\"result\":[]}', json.encode(v))\n"
                 "local copy = {result = v.result}\n"
                 "assert(json.encode(copy) == '{\"result\":[]}')");
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

static void test_marks_by_hand(void)
{
    lua_State *L = new_state();
    char buf[256];

    CHECK_LUA(L, "assert(json.encode(json.array({})) == '[]')\n"
                 "assert(json.encode(json.object({})) == '{}')\n"
                 "assert(json.encode(json.array()) == '[]')\n"
                 "assert(json.encode({json.array(), json.object(), {}}) == '[[],{},{}]')\n"
                 "local t = {}\n"
                 "assert(rawequal(json.array(t), t) and rawequal(json.object(t), t))\n"
                 "assert(json.encode(json.array({'a', 'b'})) == '[\"a\",\"b\"]')\n"
                 "assert(json.encode(json.object({'a', 'b'})) == '{\"1\":\"a\",\"2\":\"b\"}')\n"
                 "assert(json.encode(json.object({[10] = 1, [9] = 2, [-3] = 3, x = 4}))\n"
                 "       == '{\"-3\":3,\"10\":1,\"9\":2,\"x\":4}')\n"
                 "assert(json.encode(json.object({[math.mininteger] = 0}))\n"
                 "       == '{\"-9223372036854775808\":0}')");
    /* lh_json_mark from C, with the stack unchanged. */
    lua_newtable(L); /* t */
    lh_json_mark(L, -1, LH_JSON_ARRAY);
    CHECK_EQ_INT(lua_gettop(L), 1);
    lua_pushvalue(L, 1); /* t t */
    CHECK_STR(encode_top(L, buf, sizeof buf), "[]");
    lh_json_mark(L, 1, LH_JSON_OBJECT);
    CHECK_EQ_INT(lh_json_marked(L, 1), LH_JSON_OBJECT);
    CHECK_STR(encode_top(L, buf, sizeof buf), "{}");
    CHECK_EQ_INT(lua_gettop(L), 0);

    CHECK_ENCODE_ERROR(L, "json.object({[1] = 'a', ['1'] = 'b'})",
                       "'json.encode: cannot encode a json.object with both integer key 1 and "
                       "string key \"1\"'");
    CHECK_ENCODE_ERROR(L, "{x = {json.object({[2.5] = 1})}}",
                       "'json.encode: cannot encode a json.object with float key 2.5 (keys must "
                       "be strings or integers) at .x[1]'");
    CHECK_ENCODE_ERROR(L, "json.object({[true] = 1})",
                       "'json.encode: cannot encode a json.object with a boolean key (keys must "
                       "be strings or integers)'");
    CHECK_ENCODE_ERROR(L, "{list = json.array({id = 1})}",
                       "'json.encode: cannot encode a json.array with a string key \"id\" at "
                       ".list'");
    CHECK_ENCODE_ERROR(L, "json.array({1, nil, 3})",
                       "'json.encode: cannot encode a sparse array (2 elements, largest key 3)'");
    CHECK_LUA(L, "local ok, e = pcall(json.array, setmetatable({}, {}))\n"
                 "assert(not ok and e:find('the table has a metatable', 1, true), e)\n"
                 "assert(not pcall(json.object, nil) and not pcall(json.array, 'x'))");
    lua_close(L);
}

/* Object members come in byte order of their keys, whatever the insertion order and the hash
 * seed: the same value gives the same text in every process. */
static void test_sorted_keys(void)
{
    static const char *const want =
        "{\"\":0,\"A\":1,\"B\":2,\"_\":3,\"a\":4,\"a\\u0000\":5,\"a\\u0001\":6,\"ab\":7,"
        "\"b\":8,\"z\":9,\"\xc3\xa9\":10}";
    char buf[512];

    for (int round = 0; round < 4; round++) {
        /* A new state each round: another string hash seed, another insertion order. */
        lua_State *L = new_state();

        CHECK_LUA(L, round % 2 ? "T = {['\\u{e9}'] = 10, z = 9, b = 8, ab = 7, ['a\\1'] = 6,\n"
                                 "  ['a\\0'] = 5, a = 4, _ = 3, B = 2, A = 1, [''] = 0}"
                               : "T = {} for i, k in ipairs({'', 'A', 'B', '_', 'a', 'a\\0',\n"
                                 "  'a\\1', 'ab', 'b', 'z', '\\u{e9}'}) do T[k] = i - 1 end");
        lua_getglobal(L, "T");
        CHECK_STR(encode_top(L, buf, sizeof buf), want);
        lua_close(L);
    }

    /* Large objects (sorted in a userdata, collected over several stack checks), nested ones,
     * and int64 values kept exact. */
    lua_State *L = new_state();
    CHECK_LUA(L, "local t = {}\n"
                 "for i = 1, 1000 do t[string.format('k%04d', (i * 389) % 1000)] = i end\n"
                 "local s = json.encode(t)\n"
                 "local prev = ''\n"
                 "local n = 0\n"
                 "for k in s:gmatch('\"(k%d+)\":') do\n"
                 "  assert(k > prev, k .. ' after ' .. prev) prev = k n = n + 1\n"
                 "end\n"
                 "assert(n == 1000, n)\n"
                 "assert(json.encode({b = {y = {}, x = json.array()}, a = {d = 1, c = 2}})\n"
                 "       == '{\"a\":{\"c\":2,\"d\":1},\"b\":{\"x\":[],\"y\":{}}}')\n"
                 "local d = {} local c = d for i = 1, 999 do c.k = {} c = c.k end\n"
                 "assert(#json.encode(d) == 999 * #'{\"k\":}' + 2)\n"
                 "c.k = {}\n"
                 "assert(not pcall(json.encode, d))\n"
                 "local text = '{\"max\":9223372036854775807,\"min\":-9223372036854775808,'\n"
                 "  .. '\"p53\":9007199254740993}'\n"
                 "assert(json.encode(json.decode(text)) == text)");
    CHECK_EQ_INT(lua_gettop(L), 0);
    lua_close(L);
}

/* lh_json_escape: the escapes, and cuts that never split an escape or a UTF-8 sequence. */
static void test_escape(void)
{
    char out[64];
    size_t n;

    n = lh_json_escape(out, sizeof out, "a\"b\\c\n\t\x01\x7f\xc3\xa9", 11);
    out[n] = 0;
    CHECK_STR(out, "a\\\"b\\\\c\\n\\t\\u0001\\u007f\xc3\xa9");
    n = lh_json_escape(out, sizeof out, "ab\0c", 4); /* NULs inside are escaped, not ends */
    out[n] = 0;
    CHECK_STR(out, "ab\\u0000c");
    /* cap 4: "ab" then \u0001 (6 bytes) does not fit: cut before it */
    n = lh_json_escape(out, 4, "ab\x01", 3);
    CHECK_EQ_INT(n, 2);
    /* cap 3: "a" then "\"" needs 2: fits; then 'b' does not */
    n = lh_json_escape(out, 3, "a\"b", 3);
    CHECK_EQ_INT(n, 3);
    CHECK(memcmp(out, "a\\\"", 3) == 0);
    /* a two-byte and a three-byte sequence cut in the middle are dropped whole */
    n = lh_json_escape(out, 2, "a\xc3\xa9", 3);
    CHECK_EQ_INT(n, 1);
    n = lh_json_escape(out, 3, "a\xe2\x82\xac", 4);
    CHECK_EQ_INT(n, 1);
    n = lh_json_escape(out, 4, "a\xe2\x82\xac", 4);
    CHECK_EQ_INT(n, 4);
    n = lh_json_escape(out, 0, "abc", 3);
    CHECK_EQ_INT(n, 0);
}

/* Every Label Studio fixture, whole, cut short and with bytes changed: validation and slices
** agree with the one-pass decoder (decode_n checks), and validation finds the event's action
** and project id as the table has them. */
static void test_fixtures_in_slices(void)
{
    static const char *const names[] = {
        "ANNOTATION_CREATED.json",    "ANNOTATIONS_CREATED.json", "ANNOTATIONS_DELETED.json",
        "ANNOTATION_UPDATED.json",    "LABEL_LINK_CREATED.json",  "PROJECT_CREATED.json",
        "PROJECT_UPDATED.json",       "START_TRAINING.json",      "TASKS_CREATED.json",
        "TASKS_CREATED.storage.json", "TASKS_DELETED.json",
    };
    static const char swaps[] = {',', ']', '}', '"', '\\', 1, ' ', '0'};
    lua_State *L = new_state();
    char err[256];

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        FILE *f;
        long len;
        char *text;

        snprintf(path, sizeof path, "%s/labelstudio/%s", LH_FIXTURES, names[i]);
        f = fopen(path, "rb");
        CHECK(f != NULL);
        if (f == NULL)
            continue;
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        rewind(f);
        text = malloc((size_t)len);
        CHECK(fread(text, 1, (size_t)len, f) == (size_t)len);
        fclose(f);
        CHECK(decode_n(L, text, (size_t)len, err, sizeof err) == 0);
        {
            lh_json_job_t *v = lh_json_job_new(NULL, text, (size_t)len);
            size_t n;
            const char *a;

            CHECK(job_run(v, 64, err, sizeof err) == 1);
            a = lh_json_job_member(v, LH_JSON_MEMBER_ACTION, &n);
            lua_getfield(L, -1, "action"); /* t action */
            CHECK(a != NULL && n == lua_rawlen(L, -1) + 2 && a[0] == '"' &&
                  memcmp(a + 1, lua_tostring(L, -1), n - 2) == 0);
            lua_pop(L, 1);
            a = lh_json_job_member(v, LH_JSON_MEMBER_PROJECT_ID, &n);
            lua_getfield(L, -1, "project"); /* t project */
            if (lua_istable(L, -1)) {
                char want[32];

                lua_getfield(L, -1, "id"); /* t project id */
                snprintf(want, sizeof want, "%lld", (long long)lua_tointeger(L, -1));
                CHECK(a != NULL && n == strlen(want) && memcmp(a, want, n) == 0);
                lua_pop(L, 1);
            } else {
                CHECK(a == NULL);
            }
            lua_pop(L, 1);
            lh_json_job_free(v);
        }
        lua_pop(L, 1);
        for (long cut = 0; cut < len; cut += len / 41 + 1) {
            if (decode_n(L, text, (size_t)cut, err, sizeof err) == 0)
                lua_pop(L, 1);
        }
        for (long at = 1; at < len; at += len / 29 + 1) {
            char keep = text[at];

            for (size_t k = 0; k < sizeof swaps; k++) {
                text[at] = swaps[k];
                if (decode_n(L, text, (size_t)len, err, sizeof err) == 0)
                    lua_pop(L, 1);
            }
            text[at] = keep;
        }
        free(text);
    }
    lua_close(L);
}

/* Appends to b the text of an array of n integers from `from`. */
static void put_ints(luaL_Buffer *b, int n, int from)
{
    luaL_addchar(b, '[');
    for (int i = 0; i < n; i++) {
        char num[24];
        snprintf(num, sizeof num, "%s%d", i ? "," : "", from + i);
        luaL_addstring(b, num);
    }
    luaL_addchar(b, ']');
}

/* Builds text in steps of `budget` with the sizes `sizes` (taken), leaving its value pushed. */
static void build_with(lua_State *L, const char *text, size_t len, lh_json_sizes_t *sizes)
{
    char err[256];
    lua_State *co = lua_newthread(L); /* co */
    lh_json_job_t *b = lh_json_job_new(co, text, len);
    lh_json_job_use_sizes(b, sizes);
    CHECK_EQ_INT(job_run(b, 5000, err, sizeof err), 1);
    lua_xmove(co, L, 1); /* co v */
    lua_remove(L, -2);   /* v */
    lh_json_job_free(b);
}

/* Validation notes the sizes of arrays and objects too big for one chunk, and a build given
 * them makes the same value, with those tables at their full size at once. */
static void test_sizes(void)
{
    lua_State *L = new_state();
    luaL_Buffer b;
    char err[256];

    /* big arrays (one nested in another), a big object with a repeated key, small ones */
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "{\"a\":");
    put_ints(&b, 3000, 0);
    luaL_addstring(&b, ",\"n\":[[1,2],");
    put_ints(&b, 1500, 7);
    luaL_addstring(&b, ",[]],\"o\":{");
    for (int i = 0; i < 2000; i++) {
        char kv[40];
        snprintf(kv, sizeof kv, "%s\"k%d\":%d", i ? "," : "", i % 1900, i);
        luaL_addstring(&b, kv);
    }
    luaL_addstring(&b, "},\"s\":[1,2]}");
    luaL_pushresult(&b); /* text */
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);

    lh_json_job_t *v = lh_json_job_new(NULL, text, len);
    CHECK_EQ_INT(job_run(v, 100, err, sizeof err), 1);
    lh_json_sizes_t *sizes = lh_json_job_take_sizes(v);
    CHECK(sizes != NULL);
    CHECK(lh_json_job_take_sizes(v) == NULL); /* moved out */
    lh_json_job_free(v);

    CHECK(lh_json_decode(L, text, len, err, sizeof err) == 0); /* text one */
    push_encoded(L, -1);                                       /* text one etext */
    build_with(L, text, len, sizes);                           /* text one etext built */
    push_encoded(L, -1);                                       /* ... built ebuilt */
    CHECK(lua_isstring(L, -1) && lua_rawequal(L, -1, -3));
    lua_pop(L, 2); /* text one etext */

    /* sizes of another text only cost or save memory: the value is the same */
    static const char other[] = "{\"z\":[1,2,3]}";
    char *wide = malloc(8000);
    int w = snprintf(wide, 8000, "[[%s", "");
    for (int i = 0; i < 1200; i++)
        w += snprintf(wide + w, 8000 - (size_t)w, "%s%d", i ? "," : "", i % 10);
    snprintf(wide + w, 8000 - (size_t)w, "]]");
    v = lh_json_job_new(NULL, wide, strlen(wide));
    CHECK_EQ_INT(job_run(v, 100, err, sizeof err), 1);
    sizes = lh_json_job_take_sizes(v);
    CHECK(sizes != NULL);
    lh_json_job_free(v);
    build_with(L, text, len, sizes); /* text one etext built */
    push_encoded(L, -1);
    CHECK(lua_isstring(L, -1) && lua_rawequal(L, -1, -3));
    lua_pop(L, 4); /* text */
    free(wide);

    /* a small document has none; a validation job given sizes frees them */
    v = lh_json_job_new(NULL, other, strlen(other));
    CHECK_EQ_INT(job_run(v, 100, err, sizeof err), 1);
    CHECK(lh_json_job_take_sizes(v) == NULL);
    lh_json_job_t *v2 = lh_json_job_new(NULL, text, len);
    CHECK_EQ_INT(job_run(v2, 1 << 20, err, sizeof err), 1);
    lh_json_job_use_sizes(v, lh_json_job_take_sizes(v2));
    lh_json_job_free(v);
    lh_json_job_free(v2);
    lua_pop(L, 1);

    /* 200 000 elements: sized at once, the array holds 200 000 slots; grown by doubling, it
     * holds 262 144 (about 1 MB more) */
    luaL_buffinit(L, &b);
    put_ints(&b, 200000, 1);
    luaL_pushresult(&b); /* text */
    text = lua_tolstring(L, -1, &len);
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCSTOP);
    int before = lua_gc(L, LUA_GCCOUNT);
    build_with(L, text, len, NULL); /* text grown */
    int grown = lua_gc(L, LUA_GCCOUNT) - before;
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    lua_gc(L, LUA_GCSTOP);
    v = lh_json_job_new(NULL, text, len);
    CHECK_EQ_INT(job_run(v, 1 << 20, err, sizeof err), 1);
    sizes = lh_json_job_take_sizes(v);
    lh_json_job_free(v);
    before = lua_gc(L, LUA_GCCOUNT);
    build_with(L, text, len, sizes); /* text sized */
    int sized = lua_gc(L, LUA_GCCOUNT) - before;
    CHECK(grown - sized > 512); /* KB */
    CHECK_EQ_INT((int)lua_rawlen(L, -1), 200000);
    lua_rawgeti(L, -1, 200000);
    CHECK_EQ_INT((int)lua_tointeger(L, -1), 200000);
    lua_pop(L, 3);
    lua_close(L);
}

int main(void)
{
    setlocale(LC_ALL, "C");
    RUN_TEST(test_integers);
    RUN_TEST(test_floats);
    RUN_TEST(test_float_roundtrip_random);
    RUN_TEST(test_float_19_digits);
    RUN_TEST(test_locale_independence);
    RUN_TEST(test_strings);
    RUN_TEST(test_literals);
    RUN_TEST(test_structures);
    RUN_TEST(test_key_cache);
    RUN_TEST(test_depth);
    RUN_TEST(test_errors);
    RUN_TEST(test_error_buffer);
    RUN_TEST(test_top_type);
    RUN_TEST(test_truncation);
    RUN_TEST(test_mutations);
    RUN_TEST(test_out_of_memory);
    RUN_TEST(test_job_out_of_memory);
    RUN_TEST(test_escape);
    RUN_TEST(test_encode_scalars);
    RUN_TEST(test_encode_tables);
    RUN_TEST(test_encode_buffer);
    RUN_TEST(test_encode_errors);
    RUN_TEST(test_module);
    RUN_TEST(test_roundtrip);
    RUN_TEST(test_payload);
    RUN_TEST(test_fixtures_in_slices);
    RUN_TEST(test_sizes);
    RUN_TEST(test_marks_roundtrip);
    RUN_TEST(test_marks_decoded);
    RUN_TEST(test_marks_by_hand);
    RUN_TEST(test_sorted_keys);
    return TEST_SUMMARY();
}
