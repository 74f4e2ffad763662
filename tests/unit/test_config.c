/* config: sizes, seconds, listen addresses, environment vs command line, messages; the
** option table row by row (config.c is included to reach it). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* config.c's copies fail on demand: countdown allocations succeed, then one fails */
static int alloc_countdown = -1; /* -1: never fail */

static int alloc_fails(void)
{
    if (alloc_countdown < 0)
        return 0;
    return alloc_countdown-- == 0;
}

static char *test_strdup(const char *s)
{
    return alloc_fails() ? NULL : strdup(s);
}

static char *test_strndup(const char *s, size_t n)
{
    return alloc_fails() ? NULL : strndup(s, n);
}

#define strdup  test_strdup
#define strndup test_strndup
#include "config.c"
#undef strdup
#undef strndup

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

static void test_stubs(void)
{
    lh_config_t cfg;
    char err[256];
    char *a1[] = {"luahook", "stubs", NULL};
    CHECK(parse(&cfg, err, 2, a1) == 0);
    CHECK(cfg.command == LH_CMD_STUBS);
    CHECK_EQ_INT(cfg.npaths, 1);
    CHECK_STR(cfg.paths[0], ".luahook/stubs");
    lh_config_dispose(&cfg);
    char *a2[] = {"luahook", "stubs", "out", NULL};
    CHECK(parse(&cfg, err, 3, a2) == 0);
    CHECK_STR(cfg.paths[0], "out");
    lh_config_dispose(&cfg);
    char *a3[] = {"luahook", "stubs", "a", "b", NULL};
    CHECK(parse(&cfg, err, 4, a3) != 0);
    CHECK(strstr(err, "one folder") != NULL);
    lh_config_dispose(&cfg);
    char *a4[] = {"luahook", "stubs", "--help", NULL};
    CHECK(parse(&cfg, err, 3, a4) == 0 && cfg.command == LH_CMD_HELP);
    CHECK(strstr(lh_config_usage(cfg.help_for), "lua-language-server") != NULL);
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

/* LUAHOOK_RECIPES is PATH-like (empty parts skipped); --recipes repeats, may hold a ':'
** list too, and replaces the environment's folders. */
static void test_recipe_folders(void)
{
    lh_config_t cfg;
    char err[256];
    setenv("LUAHOOK_RECIPES", "a::b/:", 1);
    char *argv[] = {"luahook", "recipes", NULL};
    CHECK(parse(&cfg, err, 2, argv) == 0);
    CHECK(cfg.command == LH_CMD_RECIPES);
    CHECK_EQ_INT(cfg.nrecipes, 2);
    CHECK_STR(cfg.recipes[0], "a");
    CHECK_STR(cfg.recipes[1], "b/");
    lh_config_dispose(&cfg);
    char *argv2[] = {"luahook", "--recipes", "c", "--recipes=d:e", "x.lua", NULL};
    CHECK(parse(&cfg, err, 5, argv2) == 0);
    CHECK_EQ_INT(cfg.nrecipes, 3);
    CHECK_STR(cfg.recipes[0], "c");
    CHECK_STR(cfg.recipes[2], "e");
    lh_config_dispose(&cfg);
    unsetenv("LUAHOOK_RECIPES");
    char *argv3[] = {"luahook", "check", "--markdown", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, argv3) != 0);
    CHECK_STR(err, "option --markdown belongs to 'luahook recipes'");
    lh_config_dispose(&cfg);
    char *argv4[] = {"luahook", "new-recipe", NULL};
    CHECK(parse(&cfg, err, 2, argv4) != 0);
    CHECK(strncmp(err, "new-recipe: give a NAME", 23) == 0);
    lh_config_dispose(&cfg);
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

/* ------------------------------------------------------------------ the table */

typedef struct {
    const char *name;
    const char *a, *b; /* two good values that store differently */
    const char *bad;   /* refused, with a message naming the option */
} row_case_t;

static const row_case_t row_cases[] = {
    {"listen", "10.0.0.1:81", "[::1]:82", "10.0.0.1"},
    {"token", "tok-a", "tok-b", ""},
    {"auth-header", "X-Secret", "X-Other", ""},
    {"max-body", "2k", "3m", "0"},
    {"big-body", "256k", "2m", "0"},
    {"max-header", "300", "1k", "255"},
    {"max-connections", "7", "8", "10000001"},
    {"max-pending", "9", "1k", "0"},
    {"idle-timeout", "1.5", "2", "0"},
    {"read-timeout", "2.5", "3", "-1"},
    {"shutdown-timeout", "3.5", "4", "nan"},
    {"handler-timeout", "4.5", "0.001", "1s"},
    {"memory-limit", "0", "2m", "1k"},
    {"watch", "yes", "0", "maybe"},
    {"ack", "handled", "accept", "later"},
    {"log-level", "debug", "error", "loud"},
    {"log-format", "json", "text", "xml"},
    {"state-dir", "/var/lib/a", "b", ""},
    {"store-max-keys", "5", "1k", "0"},
    {"sync", "normal", "full", "fast"},
    {"retries", "0", "3", "1001"},
    {"retry-first", "90s", "0.5", "0"},
    {"retry-cap", "2h", "1d", "-1h"},
    {"dedup-window", "0", "10m", "5w"},
    {"keep", "7d", "12h", "0"},
    {"keep-dead", "30d", "1m", "x"},
    {"journal-max-size", "0", "2m", "1000k"},
    {"console", "off", "on", "maybe"},
    {"trusted-proxy", "10.0.0.1", "fd00::/8", "10.0.0.0/33"},
    {"sample", "X", "Y", ""},
    {"action", "X", "Y", ""},
    {"exclude", "vendor", "other/*", ""},
    {"recipes", "a", "b:c", ""},
    {"markdown", "yes", "0", "maybe"},
};

#define NCASES (sizeof(row_cases) / sizeof(row_cases[0]))

static const row_case_t *case_of(const opt_t *o)
{
    for (size_t i = 0; i < NCASES; i++)
        if (strcmp(row_cases[i].name, o->name) == 0)
            return &row_cases[i];
    return NULL;
}

/* The row's field in x and y hold the same value. */
static int same_field(const opt_t *o, const lh_config_t *x, const lh_config_t *y)
{
    const void *fx = (const char *)x + o->offset, *fy = (const char *)y + o->offset;
    if (o->set == set_append || o->set == set_dirs) {
        char *const *lx = *(char **const *)fx, *const *ly = *(char **const *)fy;
        size_t nx = *(const size_t *)((const char *)fx + sizeof(char **));
        size_t ny = *(const size_t *)((const char *)fy + sizeof(char **));
        if (nx != ny)
            return 0;
        for (size_t i = 0; i < nx; i++)
            if (strcmp(lx[i], ly[i]) != 0)
                return 0;
        return 1;
    }
    if (o->set == set_proxies) {
        const lh_cidr_t *cx = *(lh_cidr_t *const *)fx, *cy = *(lh_cidr_t *const *)fy;
        size_t nx = *(const size_t *)((const char *)fx + sizeof(lh_cidr_t *));
        size_t ny = *(const size_t *)((const char *)fy + sizeof(lh_cidr_t *));
        return nx == ny && (nx == 0 || memcmp(cx, cy, nx * sizeof(*cx)) == 0);
    }
    if (o->set == set_string || o->set == set_token || o->set == set_header_name ||
        o->set == set_listen) {
        const char *sx = *(char *const *)fx, *sy = *(char *const *)fy;
        if (sx == NULL || sy == NULL)
            return sx == sy;
        return strcmp(sx, sy) == 0 && (o->set != set_listen || x->listen_port == y->listen_port);
    }
    if (o->set == set_size || o->set == set_count)
        return *(const uint64_t *)fx == *(const uint64_t *)fy;
    if (o->set == set_seconds || o->set == set_duration)
        return *(const double *)fx == *(const double *)fy;
    return *(const int *)fx == *(const int *)fy; /* set_choice, set_flag */
}

static void unset_all(void)
{
    for (size_t k = 0; k < NOPTIONS; k++)
        if (options[k].env != NULL)
            unsetenv(options[k].env);
    unsetenv("LUAHOOK_SAMPLE");
    unsetenv("LUAHOOK_ACTION");
}

/* Parses "luahook [fire] --name=value x.lua [e.json]" (no flag when value is NULL). */
static int parse_with(lh_config_t *cfg, char *err, const opt_t *o, const char *value)
{
    char arg[128];
    char *argv[6];
    int argc = 0;
    argv[argc++] = "luahook";
    if (o->fire_only)
        argv[argc++] = "fire";
    if (o->test_only)
        argv[argc++] = "test";
    if (o->recipes_only)
        argv[argc++] = "recipes";
    if (value != NULL) {
        snprintf(arg, sizeof(arg), "--%s=%s", o->name, value);
        argv[argc++] = arg;
    }
    argv[argc++] = "x.lua";
    if (o->fire_only)
        argv[argc++] = "e.json";
    argv[argc] = NULL;
    return parse(cfg, err, argc, argv);
}

static void test_table_rows(void)
{
    const char *usage = lh_config_usage(LH_CMD_SERVE);
    CHECK_EQ_INT(NOPTIONS, NCASES); /* a new option needs its case below */
    for (size_t k = 0; k < NOPTIONS; k++) {
        const opt_t *o = &options[k];
        char env[64], flag[64];
        int n = snprintf(env, sizeof(env), "LUAHOOK_");
        for (const char *p = o->name; *p; p++)
            env[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[n] = '\0';
        snprintf(flag, sizeof(flag), "  --%s", o->name);
        CHECK(case_of(o) != NULL);
        CHECK(o->set != NULL);
        CHECK(o->offset < sizeof(lh_config_t));
        if (o->fire_only || o->test_only || o->recipes_only) {
            CHECK(o->env == NULL && o->help == NULL);
            CHECK(strstr(usage, o->name) != NULL); /* in the fire or test paragraph */
        } else {
            CHECK(o->env != NULL && strcmp(o->env, env) == 0);
            CHECK(o->help != NULL && strncmp(o->help, flag, strlen(flag)) == 0);
            CHECK(o->help != NULL && strstr(usage, o->help) != NULL);
        }
    }
}

/* Every option by flag and by environment, each the same value; the flag wins over the
** environment; a bad value is refused from either, naming where it came from. */
static void test_table_every_option(void)
{
    unset_all();
    for (size_t k = 0; k < NOPTIONS; k++) {
        const opt_t *o = &options[k];
        const row_case_t *c = case_of(o);
        lh_config_t def, by_flag, by_env, both, other;
        char err[256];
        if (c == NULL)
            continue;
        CHECK(parse_with(&def, err, o, NULL) == 0);
        CHECK(parse_with(&by_flag, err, o, c->a) == 0);
        CHECK(parse_with(&other, err, o, c->b) == 0);
        CHECK(!same_field(o, &by_flag, &other));
        if (o->env != NULL) {
            setenv(o->env, c->a, 1);
            CHECK(parse_with(&by_env, err, o, NULL) == 0);
            CHECK(same_field(o, &by_flag, &by_env));
            CHECK(parse_with(&both, err, o, c->b) == 0); /* the command line wins */
            CHECK(same_field(o, &both, &other));
            lh_config_dispose(&by_env);
            lh_config_dispose(&both);

            setenv(o->env, c->bad, 1);
            int rc = parse_with(&by_env, err, o, NULL);
            if (c->bad[0] == '\0' && o->secret) { /* `LUAHOOK_TOKEN=`: no secret by mistake */
                CHECK(rc != 0 && strstr(err, "must not be empty") != NULL);
            } else if (c->bad[0] == '\0') { /* an empty variable counts as unset */
                CHECK(rc == 0 && same_field(o, &by_env, &def));
            } else {
                char want[128];
                snprintf(want, sizeof(want), "environment %s: --%s '", o->env, o->name);
                CHECK(rc != 0 && strncmp(err, want, strlen(want)) == 0);
            }
            lh_config_dispose(&by_env);
            unsetenv(o->env);
        } else { /* fire's own options have no variable */
            char var[64];
            snprintf(var, sizeof(var), "LUAHOOK_%s", o->name[0] == 's' ? "SAMPLE" : "ACTION");
            setenv(var, c->a, 1);
            CHECK(parse_with(&by_env, err, o, NULL) == 0);
            CHECK(same_field(o, &by_env, &def));
            lh_config_dispose(&by_env);
            unsetenv(var);
        }
        char want[128];
        snprintf(want, sizeof(want), "option --%s '", o->name);
        CHECK(parse_with(&by_env, err, o, c->bad) != 0);
        CHECK(strncmp(err, want, strlen(want)) == 0);
        if (o->secret)
            CHECK(strstr(err, "'(hidden)'") != NULL);
        lh_config_dispose(&by_env);
        lh_config_dispose(&def);
        lh_config_dispose(&by_flag);
        lh_config_dispose(&other);
    }
}

/* Spot checks that a value lands where it should, in the unit it should. */
static void test_table_values(void)
{
    lh_config_t cfg;
    char err[256];
    unset_all();
    char *argv[] = {"luahook",         "--listen=[::1]:82",
                    "--max-header=1k", "--memory-limit=0",
                    "--watch",         "--log-level=warn",
                    "--log-format",    "json",
                    "--idle-timeout",  "0.25",
                    "x.lua",           NULL};
    CHECK(parse(&cfg, err, 11, argv) == 0);
    CHECK_STR(cfg.listen_host, "::1");
    CHECK_EQ_INT(cfg.listen_port, 82);
    CHECK_EQ_INT(cfg.max_header, 1024);
    CHECK_EQ_INT(cfg.memory_limit, 0);
    CHECK_EQ_INT(cfg.watch, 1);
    CHECK(cfg.log_level == LH_WARN);
    CHECK(cfg.log_format == LH_LOG_JSON);
    CHECK(cfg.idle_timeout == 0.25);
    CHECK(cfg.read_timeout == 10 && cfg.shutdown_timeout == 10 && cfg.handler_timeout == 30);
    CHECK(cfg.max_connections == 1024 && cfg.max_pending == 10000);
    CHECK(cfg.memory_limit == 0 && cfg.max_body == 64ull << 20);
    lh_config_dispose(&cfg);
    /* --sample belongs to fire */
    char *a2[] = {"luahook", "--sample", "X", "x.lua", NULL};
    CHECK(parse(&cfg, err, 4, a2) != 0);
    CHECK_STR(err, "option --sample belongs to 'luahook fire'");
    lh_config_dispose(&cfg);
}

/* Every copy that fails is an error naming the option, never a silent NULL (a NULL token
** would mean no authentication). */
static void test_table_out_of_memory(void)
{
    lh_config_t cfg;
    char err[256];
    unset_all();
    char *argv[] = {"luahook",   "--token", "s3cret", "--auth-header", "X-Key", "--listen",
                    "0.0.0.0:1", "x.lua",   NULL};
    /* count the copies a full parse makes, then fail each in turn */
    int copies = 0;
    for (;; copies++) {
        alloc_countdown = copies;
        int rc = parse(&cfg, err, 8, argv);
        alloc_countdown = -1;
        if (rc == 0) {
            CHECK_STR(cfg.token, "s3cret");
            CHECK_STR(cfg.auth_header, "x-key");
            CHECK_STR(cfg.listen_host, "0.0.0.0");
            lh_config_dispose(&cfg);
            break;
        }
        CHECK(strstr(err, "out of memory") != NULL);
        CHECK(strstr(err, "s3cret") == NULL);
        lh_config_dispose(&cfg);
        if (copies > 100)
            break;
    }
    CHECK(copies >= 5);  /* 2 defaults, 3 options (paths go through add_path) */
    alloc_countdown = 2; /* the two defaults' copies succeed, --token's fails */
    CHECK(parse(&cfg, err, 8, argv) != 0);
    alloc_countdown = -1;
    CHECK_STR(err, "option --token: out of memory");
    lh_config_dispose(&cfg);
}

int main(void)
{
    RUN_TEST(test_sizes);
    RUN_TEST(test_seconds);
    RUN_TEST(test_defaults);
    RUN_TEST(test_options);
    RUN_TEST(test_stubs);
    RUN_TEST(test_env_and_precedence);
    RUN_TEST(test_recipe_folders);
    RUN_TEST(test_errors);
    RUN_TEST(test_table_rows);
    RUN_TEST(test_table_every_option);
    RUN_TEST(test_table_values);
    RUN_TEST(test_table_out_of_memory);
    return TEST_SUMMARY();
}
