/* proxy: parsing and matching addresses and CIDR blocks, and the client a chain of
** X-Forwarded-For names. */
#include "proxy.h"

#include "test.h"

static int parses(const char *s)
{
    lh_cidr_t c;
    char err[160];
    return lh_cidr_parse(s, &c, err, sizeof(err)) == 0;
}

static void test_parse(void)
{
    const char *good[] = {
        "10.0.0.1",      "10.0.0.0/8", "0.0.0.0/0",       "192.168.1.0/24", "::1",     "fd00::/8",
        "2001:db8::/32", "::/0",       "::ffff:10.0.0.1", "1.2.3.4/32",     "::1/128", NULL};
    const char *bad[] = {
        "",       "10.0.0.0/33", "::/129",      "10.0.0.0/", "10.0.0.0/x",   "10.0.0.0/-1",
        "10.0.0", "10.0.0.256",  "example.com", "/8",        "10.0.0.1/8/8", "1.2.3.4 ",
        "[::1]",  NULL};
    for (int i = 0; good[i]; i++)
        if (!parses(good[i]))
            TEST_FAILED_("'%s' should parse", good[i]);
    for (int i = 0; bad[i]; i++)
        if (parses(bad[i]))
            TEST_FAILED_("'%s' should be refused", bad[i]);
    lh_cidr_t c;
    char err[160];
    CHECK(lh_cidr_parse("10.0.0.0/33", &c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "0 to 32") != NULL);
    CHECK(lh_cidr_parse("nope", &c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "'nope'") != NULL);
    /* a mapped IPv6 address is its IPv4 one */
    CHECK(lh_cidr_parse("::ffff:10.0.0.1", &c, err, sizeof(err)) == 0);
    CHECK_EQ_INT(c.family, 4);
    CHECK_EQ_INT(c.bits, 32);
    /* a mapped block's prefix counts the mapping's 96 bits: /104 is the IPv4 /8 */
    CHECK(lh_cidr_parse("::ffff:10.0.0.0/104", &c, err, sizeof(err)) == 0);
    CHECK_EQ_INT(c.family, 4);
    CHECK_EQ_INT(c.bits, 8);
    CHECK(lh_cidr_match(&c, 1, "10.20.30.40"));
    CHECK(lh_cidr_match(&c, 1, "::ffff:10.20.30.40"));
    CHECK(!lh_cidr_match(&c, 1, "11.0.0.1"));
    CHECK(lh_cidr_parse("::ffff:0.0.0.0/96", &c, err, sizeof(err)) == 0);
    CHECK(lh_cidr_match(&c, 1, "203.0.113.9"));
    /* shorter than the mapping: no IPv4 block, said so */
    CHECK(lh_cidr_parse("::ffff:10.0.0.0/8", &c, err, sizeof(err)) != 0);
    CHECK(strstr(err, "96 to 128") != NULL);
}

static void test_match(void)
{
    lh_cidr_t list[4];
    char err[160];
    CHECK(lh_cidr_parse("10.0.0.0/8", &list[0], err, sizeof(err)) == 0);
    CHECK(lh_cidr_parse("192.168.1.7", &list[1], err, sizeof(err)) == 0);
    CHECK(lh_cidr_parse("fd00::/8", &list[2], err, sizeof(err)) == 0);
    CHECK(lh_cidr_parse("172.16.0.0/12", &list[3], err, sizeof(err)) == 0);
    CHECK(lh_cidr_match(list, 4, "10.255.1.2"));
    CHECK(lh_cidr_match(list, 4, "10.0.0.0"));
    CHECK(!lh_cidr_match(list, 4, "11.0.0.1"));
    CHECK(lh_cidr_match(list, 4, "192.168.1.7"));
    CHECK(!lh_cidr_match(list, 4, "192.168.1.8"));
    CHECK(lh_cidr_match(list, 4, "fd12:3456::1"));
    CHECK(!lh_cidr_match(list, 4, "fe80::1"));
    /* a bit boundary inside a byte: /12 holds 172.16-172.31 */
    CHECK(lh_cidr_match(list, 4, "172.31.255.255"));
    CHECK(!lh_cidr_match(list, 4, "172.32.0.0"));
    CHECK(!lh_cidr_match(list, 4, "172.15.255.255"));
    /* IPv4 in IPv6 clothing (a dual-stack listener's peer) */
    CHECK(lh_cidr_match(list, 4, "::ffff:10.1.2.3"));
    /* families never mix, and text that is no address never matches */
    CHECK(!lh_cidr_match(list, 4, "::a00:1"));
    CHECK(!lh_cidr_match(list, 4, "10.0.0.1:80"));
    CHECK(!lh_cidr_match(list, 4, ""));
    CHECK(!lh_cidr_match(list, 0, "10.0.0.1"));
    lh_cidr_t all;
    CHECK(lh_cidr_parse("0.0.0.0/0", &all, err, sizeof(err)) == 0);
    CHECK(lh_cidr_match(&all, 1, "203.0.113.1"));
    CHECK(!lh_cidr_match(&all, 1, "::1"));
}

static const char *client(const lh_cidr_t *list, size_t n, const char *peer, const char *h1,
                          const char *h2, char *out)
{
    const char *v[2] = {h1, h2};
    size_t len[2] = {strlen(h1), h2 ? strlen(h2) : 0};
    lh_proxy_client(list, n, peer, v, len, h2 ? 2 : 1, out, 64);
    return out;
}

static void test_client(void)
{
    lh_cidr_t list[2];
    char err[160], out[64];
    CHECK(lh_cidr_parse("127.0.0.1", &list[0], err, sizeof(err)) == 0);
    CHECK(lh_cidr_parse("10.0.0.0/8", &list[1], err, sizeof(err)) == 0);
    CHECK_STR(client(list, 2, "127.0.0.1", "203.0.113.9", NULL, out), "203.0.113.9");
    /* the right-most that is not a trusted proxy: what the left says is the client's own */
    CHECK_STR(client(list, 2, "127.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.2", NULL, out),
              "203.0.113.9");
    /* several headers read as one list, in order */
    CHECK_STR(client(list, 2, "127.0.0.1", "1.1.1.1, 203.0.113.9", "10.0.0.2", out), "203.0.113.9");
    /* spaces, tabs and empty entries */
    CHECK_STR(client(list, 2, "127.0.0.1", " 203.0.113.9 ,\t, 10.0.0.2\t", NULL, out),
              "203.0.113.9");
    /* every hop trusted: the left-most */
    CHECK_STR(client(list, 2, "127.0.0.1", "10.0.0.3, 10.0.0.2", NULL, out), "10.0.0.3");
    /* not an address: nothing left of it is believed */
    CHECK_STR(client(list, 2, "127.0.0.1", "203.0.113.9, bogus, 10.0.0.2", NULL, out), "10.0.0.2");
    CHECK_STR(client(list, 2, "127.0.0.1", "bogus", NULL, out), "127.0.0.1");
    CHECK_STR(client(list, 2, "127.0.0.1", "203.0.113.9:1234", NULL, out), "127.0.0.1");
    CHECK_STR(client(list, 2, "127.0.0.1", "", NULL, out), "127.0.0.1");
    /* IPv6, and the canonical text of a mapped address */
    CHECK_STR(client(list, 2, "127.0.0.1", "2001:DB8::0:1", NULL, out), "2001:db8::1");
    CHECK_STR(client(list, 2, "127.0.0.1", "::ffff:203.0.113.9", NULL, out), "203.0.113.9");
    /* the answer says whether it differs from the peer */
    const char *v[1] = {"203.0.113.9"};
    size_t len[1] = {11};
    CHECK(lh_proxy_client(list, 2, "127.0.0.1", v, len, 1, out, sizeof(out)) == 1);
    v[0] = "10.0.0.1x";
    len[0] = 9;
    CHECK(lh_proxy_client(list, 2, "127.0.0.1", v, len, 1, out, sizeof(out)) == 0);
}

static void test_strip_port(void)
{
    char out[64];
    lh_proxy_strip_port("127.0.0.1:5555", out, sizeof(out));
    CHECK_STR(out, "127.0.0.1");
    lh_proxy_strip_port("[::1]:80", out, sizeof(out));
    CHECK_STR(out, "::1");
    lh_proxy_strip_port("203.0.113.9", out, sizeof(out));
    CHECK_STR(out, "203.0.113.9");
    lh_proxy_strip_port("2001:db8::1", out, sizeof(out));
    CHECK_STR(out, "2001:db8::1");
    lh_proxy_strip_port("?", out, sizeof(out));
    CHECK_STR(out, "?");
}

static void test_client_key(void)
{
    char out[64];
    lh_proxy_client_key("203.0.113.9", out, sizeof(out));
    CHECK_STR(out, "203.0.113.9");
    lh_proxy_client_key("::ffff:203.0.113.9", out, sizeof(out));
    CHECK_STR(out, "203.0.113.9");
    /* one IPv6 host holds a /64: its addresses are one client to the slow-down */
    lh_proxy_client_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", out, sizeof(out));
    CHECK_STR(out, "2001:db8:1:2::/64");
    lh_proxy_client_key("2001:db8:1:2::1", out, sizeof(out));
    CHECK_STR(out, "2001:db8:1:2::/64");
    lh_proxy_client_key("2001:db8:1:3::1", out, sizeof(out));
    CHECK_STR(out, "2001:db8:1:3::/64");
    lh_proxy_client_key("?", out, sizeof(out));
    CHECK_STR(out, "?");
}

int main(void)
{
    RUN_TEST(test_parse);
    RUN_TEST(test_match);
    RUN_TEST(test_client);
    RUN_TEST(test_strip_port);
    RUN_TEST(test_client_key);
    return TEST_SUMMARY();
}
