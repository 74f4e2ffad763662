/* test_urlencoded.c - the form and query string decoder of the API and the console. */
#include <string.h>

#include "test.h"
#include "urlencoded.h"

static long dec(const char *s, char *out, size_t outlen)
{
    return lh_url_decode(s, strlen(s), out, outlen);
}

static void test_decodes(void)
{
    char out[64];
    CHECK_EQ_INT(dec("a+b%20c%2Bd%25", out, sizeof(out)), 8);
    CHECK_STR(out, "a b c+d%");
    CHECK_EQ_INT(dec("%e2%82%AC", out, sizeof(out)), 3); /* either case */
    CHECK_STR(out, "\xe2\x82\xac");
    CHECK_EQ_INT(dec("", out, sizeof(out)), 0);
    CHECK_STR(out, "");
}

static void test_refuses(void)
{
    char out[8];
    CHECK_EQ_INT(dec("%", out, sizeof(out)), -1);
    CHECK_EQ_INT(dec("%4", out, sizeof(out)), -1);
    CHECK_EQ_INT(dec("%zz", out, sizeof(out)), -1);
    CHECK_EQ_INT(dec("a%00b", out, sizeof(out)), -1);  /* no C string holds it */
    CHECK_EQ_INT(dec("1234567", out, sizeof(out)), 7); /* fits with its NUL */
    CHECK_EQ_INT(dec("12345678", out, sizeof(out)), -1);
    CHECK_EQ_INT(dec("x", out, 0), -1);
}

int main(void)
{
    RUN_TEST(test_decodes);
    RUN_TEST(test_refuses);
    return TEST_SUMMARY();
}
