/* config: sizes, seconds, listen addresses, environment vs command line, messages. */
#include <stdlib.h>

#include "config.h"
#include "test.h"

static int parse(lh_config_t *cfg, char *err, int argc, char **argv)
{
    return lh_config_parse(cfg, argc, argv, err, 256);
}

static void test_sizes(void)
{
    uint64_t v = 0;
    CHECK(lh_config_parse_size("123", &v) == 0 && v == 123);
    CHECK(lh_config_parse_size("32k", &v) == 0 && v == 32 * 1024);
    CHECK(lh_config_parse_size("64m", &v) == 0 && v == 64ull << 20);
    CHECK(lh_config_parse_size("2G", &v) == 0 && v == 2ull << 30);
    CHECK(lh_config_parse_size("64mb", &v) == 0 && v == 64ull << 20);
    CHECK(lh_config_parse_size("", &v) != 0);
    CHECK(lh_config_parse_size("-1", &v) != 0);
    CHECK(lh_config_parse_size("1x", &v) != 0);
    CHECK(lh_config_parse_size("1.5m", &v) != 0);
    CHECK(lh_config_parse_size("99999999999999999999", &v) != 0);
    CHECK(lh_config_parse_size("17179869184g", &v) != 0); /* overflows 64 bits */
}

static void test_seconds(void)
{
    double s = 0;
    CHECK(lh_config_parse_seconds("30", &s) == 0 && s == 30);
    CHECK(lh_config_parse_seconds("0.25", &s) == 0 && s == 0.25);
    CHECK(lh_config_parse_seconds("0", &s) != 0);
    CHECK(lh_config_parse_seconds("-1", &s) != 0);
    CHECK(lh_config_parse_seconds("nan", &s) != 0);
    CHECK(lh_config_parse_seconds("inf", &s) != 0);
    CHECK(lh_config_parse_seconds("1s", &s) != 0);
}

static void test_defaults(void)
{
    lh_config_t cfg;
    char err[256];
    char *argv[] = {"luahook", "x.lua", NULL};
    CHECK(parse(&cfg, err, 2, argv) == 0);
    CHECK(cfg.command == LH_CMD_SERVE);
    CHECK_STR(cfg.listen_host, "127.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 9090);
    CHECK(cfg.max_body == 64ull << 20);
    CHECK(cfg.token == NULL);
    CHECK_STR(cfg.auth_header, "authorization");
    CHECK(cfg.ack == LH_ACK_ACCEPT);
    CHECK_EQ_INT(cfg.npaths, 1);
    CHECK_STR(cfg.paths[0], "x.lua");
    lh_config_dispose(&cfg);
}

static void test_options(void)
{
    lh_config_t cfg;
    char err[256];
    char *argv[] = {
        "luahook",       "check",   "--listen", "[::1]:0", "--max-body=1k", "--ack", "handled",
        "--auth-header", "X-Token", "a.lua",    "--",      "--b.lua",       NULL};
    CHECK(parse(&cfg, err, 12, argv) == 0);
    CHECK(cfg.command == LH_CMD_CHECK);
    CHECK_STR(cfg.listen_host, "::1");
    CHECK_EQ_INT(cfg.listen_port, 0);
    CHECK(cfg.max_body == 1024);
    CHECK(cfg.ack == LH_ACK_HANDLED);
    CHECK_STR(cfg.auth_header, "x-token");
    CHECK_EQ_INT(cfg.npaths, 2);
    CHECK_STR(cfg.paths[1], "--b.lua");
    lh_config_dispose(&cfg);
}

static void test_env_and_precedence(void)
{
    lh_config_t cfg;
    char err[256];
    setenv("LUAHOOK_MAX_BODY", "2k", 1);
    setenv("LUAHOOK_TOKEN", "s3cret", 1);
    char *argv[] = {"luahook", "--max-body", "3k", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, argv) == 0);
    CHECK(cfg.max_body == 3 * 1024); /* the command line wins */
    CHECK_STR(cfg.token, "s3cret");
    lh_config_dispose(&cfg);

    setenv("LUAHOOK_MAX_BODY", "lots", 1);
    char *argv2[] = {"luahook", "x.lua", NULL};
    CHECK(parse(&cfg, err, 2, argv2) != 0);
    CHECK(strstr(err, "LUAHOOK_MAX_BODY") != NULL);
    lh_config_dispose(&cfg);
    unsetenv("LUAHOOK_MAX_BODY");
    unsetenv("LUAHOOK_TOKEN");
}

static void test_errors(void)
{
    lh_config_t cfg;
    char err[256];
    char *a1[] = {"luahook", "--nope", "x.lua", NULL};
    CHECK(parse(&cfg, err, 3, a1) != 0 && strstr(err, "--nope") != NULL);
    lh_config_dispose(&cfg);
    char *a2[] = {"luahook", "x.lua", "--listen", NULL};
    CHECK(parse(&cfg, err, 3, a2) != 0 && strstr(err, "needs a value") != NULL);
    lh_config_dispose(&cfg);
    char *a3[] = {"luahook", "--listen", "nohost", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, a3) != 0 && strstr(err, "HOST:PORT") != NULL);
    lh_config_dispose(&cfg);
    char *a4[] = {"luahook", "--ack", "later", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, a4) != 0 && strstr(err, "accept, handled") != NULL);
    lh_config_dispose(&cfg);
    char *a5[] = {"luahook", NULL};
    CHECK(parse(&cfg, err, 1, a5) != 0 && strstr(err, "no script") != NULL);
    lh_config_dispose(&cfg);
    char *a6[] = {"luahook", "--listen", "1.2.3.4:70000", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, a6) != 0);
    lh_config_dispose(&cfg);
    /* a bad token value is never echoed back */
    char *a7[] = {"luahook", "--token", "", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, a7) != 0 && strstr(err, "(hidden)") != NULL);
    lh_config_dispose(&cfg);
    char *a8[] = {"luahook", "--help", NULL};
    CHECK(parse(&cfg, err, 2, a8) == 0 && cfg.command == LH_CMD_HELP);
    lh_config_dispose(&cfg);
}

int main(void)
{
    RUN_TEST(test_sizes);
    RUN_TEST(test_seconds);
    RUN_TEST(test_defaults);
    RUN_TEST(test_options);
    RUN_TEST(test_env_and_precedence);
    RUN_TEST(test_errors);
    return TEST_SUMMARY();
}
