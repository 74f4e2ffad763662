#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "actions.h"

/*
** Options are a table, as Fluent Bit's config_map: each row names the option, its
** environment variable, where its value lives in lh_config_t (offsetof), the function
** that parses and stores it, its default and its --help line. Applying a value is one
** call through the row; nothing switches on which option it is.
*/

typedef struct opt_s opt_t;

/* Why a value is refused; NULL when it was stored. OOM: an allocation failed. */
static const char OOM[] = "out of memory";

/* Parses `v` and stores it at `field` (inside `cfg`). Returns NULL, OOM, or why `v` is
** wrong; `buf` (`len` bytes) may hold the reason. */
typedef const char *(*opt_set_fn)(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                                  char *buf, size_t len);

struct opt_s {
    const char *name;           /* --name */
    const char *env;            /* LUAHOOK_NAME; NULL: none (fire's own options) */
    size_t offset;              /* offsetof(lh_config_t, field) */
    opt_set_fn set;             /* parses and stores */
    const char *def;            /* applied before the environment; NULL: none */
    uint64_t min;               /* set_size: the smallest value but 0 ... */
    int zero_ok;                /* ... which means "none" where this is set */
    const char *too_small;      /* set_size: why a value under min is refused */
    const char *const *choices; /* set_choice: the names, in the enum's order */
    const char *empty;          /* strings: why "" is refused */
    int flag;                   /* takes no value on the command line */
    int fire_only;              /* an option of luahook fire: env must be NULL */
    int test_only;              /* an option of luahook test: env must be NULL */
    int recipes_only;           /* an option of luahook recipes: env must be NULL */
    int secret;                 /* never echoed in a message */
    const char *help;           /* the --help line(s); NULL: described elsewhere */
};

static const char *set_string(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                              char *buf, size_t len)
{
    char **p = field, *copy;
    (void)cfg, (void)buf, (void)len;
    if (*v == '\0')
        return o->empty;
    if ((copy = strdup(v)) == NULL)
        return OOM;
    free(*p);
    *p = copy;
    return NULL;
}

/* The secret. `--token "$SECRET"` with SECRET unset makes the next argument the secret:
** a script path, or an option. Neither is a plausible secret, so neither is taken. */
static const char *set_token(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                             char *buf, size_t len)
{
    struct stat st;
    size_t n = strlen(v);
    if (n > 4 && strcmp(v + n - 4, ".lua") == 0)
        return "this is a script's name, not a secret: is the variable you meant to pass "
               "empty or unset (--token \"$SECRET\")?";
    if (stat(v, &st) == 0)
        return "this is an existing file or folder, not a secret: is the variable you meant "
               "to pass empty or unset (--token \"$SECRET\")?";
    if (v[0] == '-' && v[1] == '-')
        return "this is an option, not a secret: is the variable you meant to pass empty or "
               "unset (--token \"$SECRET\")?";
    return set_string(o, cfg, field, v, buf, len);
}

/* One more GLOB of a repeatable option: the field is a list, its count right after it. */
static const char *set_append(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                              char *buf, size_t len)
{
    char ***list = field;
    size_t *n = (size_t *)(list + 1);
    (void)cfg, (void)buf, (void)len;
    if (*v == '\0')
        return o->empty;
    char **grown = realloc(*list, (*n + 1) * sizeof(**list));
    if (grown == NULL)
        return OOM;
    *list = grown;
    if ((grown[*n] = strdup(v)) == NULL)
        return OOM;
    (*n)++;
    return NULL;
}

/* Folders, colon-separated (PATH-like, for LUAHOOK_RECIPES; one --recipes may hold
** several too), each appended to the list as set_append does. */
static const char *set_dirs(const opt_t *o, lh_config_t *cfg, void *field, const char *v, char *buf,
                            size_t len)
{
    const char *p = v;
    if (*v == '\0')
        return o->empty;
    while (*p != '\0') {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        if (n > 0) {
            char *one = strndup(p, n);
            if (one == NULL)
                return OOM;
            const char *why = set_append(o, cfg, field, one, buf, len);
            free(one);
            if (why != NULL)
                return why;
        }
        p += n + (colon != NULL);
    }
    return NULL;
}

/* Trusted proxies: addresses or CIDR blocks, comma- or space-separated (one
** LUAHOOK_TRUSTED_PROXY holds them all), each appended to the field's array. */
static const char *set_proxies(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                               char *buf, size_t len)
{
    lh_cidr_t **list = field;
    size_t *n = (size_t *)(list + 1);
    int any = 0;
    (void)cfg;
    for (const char *p = v; *p != '\0';) {
        size_t k = strcspn(p, ", \t");
        if (k > 0) {
            char one[128];
            snprintf(one, sizeof(one), "%.*s", (int)(k < 127 ? k : 127), p);
            lh_cidr_t c;
            if (k >= sizeof(one) || lh_cidr_parse(one, &c, buf, len) != 0)
                return k >= sizeof(one) ? "expected an IPv4 or IPv6 address or CIDR block" : buf;
            lh_cidr_t *grown = realloc(*list, (*n + 1) * sizeof(**list));
            if (grown == NULL)
                return OOM;
            *list = grown;
            grown[(*n)++] = c;
            any = 1;
        }
        p += k + (p[k] != '\0');
    }
    return any ? NULL : o->empty;
}

/* A header name: compared with llhttp's lower-cased names. */
static const char *set_header_name(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                                   char *buf, size_t len)
{
    const char *why = set_string(o, cfg, field, v, buf, len);
    if (why == NULL)
        for (char *p = *(char **)field; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    return why;
}

static const char *set_listen(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                              char *buf, size_t len)
{
    static const char bad[] = "expected HOST:PORT (e.g. 127.0.0.1:9090 or [::1]:9090)";
    char **host_field = field, *host;
    const char *colon = strrchr(v, ':');
    const char *h = v;
    size_t hlen;
    (void)o, (void)buf, (void)len;
    if (colon == NULL || colon[1] == '\0')
        return bad;
    hlen = (size_t)(colon - v);
    if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') /* [::1]:9090 */
        h++, hlen -= 2;
    if (hlen == 0)
        return bad;
    char *endp;
    errno = 0;
    long port = strtol(colon + 1, &endp, 10);
    if (errno != 0 || *endp != '\0' || port < 0 || port > 65535)
        return bad;
    if ((host = strndup(h, hlen)) == NULL)
        return OOM;
    free(*host_field);
    *host_field = host;
    cfg->listen_port = (int)port;
    return NULL;
}

/* A SIZE of at least o->min; 0 only where o->zero_ok. */
static const char *set_size(const opt_t *o, lh_config_t *cfg, void *field, const char *v, char *buf,
                            size_t len)
{
    uint64_t n;
    (void)cfg, (void)buf, (void)len;
    if (lh_config_parse_size(v, &n) != 0 || (n == 0 && !o->zero_ok))
        return "expected a size in bytes, or a number with k, m or g (e.g. 32m)";
    if (n != 0 && n < o->min)
        return o->too_small;
    *(uint64_t *)field = n;
    return NULL;
}

static const char *set_count(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                             char *buf, size_t len)
{
    uint64_t n;
    (void)o, (void)cfg, (void)buf, (void)len;
    if (lh_config_parse_size(v, &n) != 0 || n == 0 || n > 10000000)
        return "expected a whole number from 1 to 10000000";
    *(uint64_t *)field = n;
    return NULL;
}

static const char *set_seconds(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                               char *buf, size_t len)
{
    (void)o, (void)cfg, (void)buf, (void)len;
    if (lh_config_parse_seconds(v, field) != 0)
        return "expected a positive number of seconds (e.g. 2.5)";
    return NULL;
}

/* A DURATION: seconds, or a number with s, m, h or d ("7d"); 0 only where o->zero_ok. */
static const char *set_duration(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                                char *buf, size_t len)
{
    (void)cfg, (void)buf, (void)len;
    if (lh_config_parse_duration(v, (double *)field) != 0 || (*(double *)field == 0 && !o->zero_ok))
        return o->zero_ok ? "expected 0 or a duration: seconds, or a number with s, m, h or d "
                            "(e.g. 90s, 10m, 7d)"
                          : "expected a duration: seconds, or a number with s, m, h or d (e.g. "
                            "90s, 10m, 7d)";
    return NULL;
}

/* A whole number from 0 to 1000, in an int. */
static const char *set_retries(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                               char *buf, size_t len)
{
    uint64_t n;
    (void)o, (void)cfg, (void)buf, (void)len;
    if (lh_config_parse_size(v, &n) != 0 || n > 1000)
        return "expected a whole number from 0 to 1000";
    *(int *)field = (int)n;
    return NULL;
}

/* One of o->choices, stored as its index in an enum field. */
static const char *set_choice(const opt_t *o, lh_config_t *cfg, void *field, const char *v,
                              char *buf, size_t len)
{
    size_t off;
    (void)cfg;
    for (int i = 0; o->choices[i] != NULL; i++) {
        if (strcmp(o->choices[i], v) == 0) {
            *(int *)field = i;
            return NULL;
        }
    }
    off = (size_t)snprintf(buf, len, "expected one of: ");
    for (int i = 0; o->choices[i] != NULL && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", o->choices[i]);
    return buf;
}

static const char *set_flag(const opt_t *o, lh_config_t *cfg, void *field, const char *v, char *buf,
                            size_t len)
{
    (void)o, (void)cfg, (void)buf, (void)len;
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
        *(int *)field = 1;
    else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
        *(int *)field = 0;
    else
        return "expected 1, true, yes, 0, false or no";
    return NULL;
}

/* set_choice stores an int: the enums it fills must be ints */
_Static_assert(sizeof(lh_ack_t) == sizeof(int), "lh_ack_t is an int");
_Static_assert(sizeof(lh_level_t) == sizeof(int), "lh_level_t is an int");
_Static_assert(sizeof(lh_log_format_t) == sizeof(int), "lh_log_format_t is an int");

/* set_append finds a list's count right after the list */
_Static_assert(offsetof(lh_config_t, nexcludes) ==
                   offsetof(lh_config_t, excludes) + sizeof(char **),
               "nexcludes follows excludes");
_Static_assert(offsetof(lh_config_t, nrecipes) == offsetof(lh_config_t, recipes) + sizeof(char **),
               "nrecipes follows recipes");

_Static_assert(offsetof(lh_config_t, ntrusted_proxies) ==
                   offsetof(lh_config_t, trusted_proxies) + sizeof(lh_cidr_t *),
               "ntrusted_proxies follows trusted_proxies");

static const char *const console_choices[] = {"on", "off", NULL};
static const char *const ack_choices[] = {"accept", "handled", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_choices[] = {"text", "json", NULL};
static const char *const sync_choices[] = {"full", "normal", NULL};

#define AT(field) offsetof(lh_config_t, field)

/* In --help order. */
static const opt_t options[] = {
    {"listen", "LUAHOOK_LISTEN", AT(listen_host), set_listen, "127.0.0.1:9090",
     .help = "  --listen HOST:PORT       address to listen on (127.0.0.1:9090; port 0 picks a "
             "free one)\n"},
    {"token", "LUAHOOK_TOKEN", AT(token), set_token, NULL, .secret = 1,
     .empty = "the token must not be empty",
     .help = "  --token SECRET           require 'Authorization: Token SECRET', 'Bearer SECRET'\n"
             "                           or the bare SECRET\n"},
    {"auth-header", "LUAHOOK_AUTH_HEADER", AT(auth_header), set_header_name, "Authorization",
     .empty = "expected a header name",
     .help = "  --auth-header NAME       read the secret from this header instead "
             "(Authorization)\n"},
    {"max-body", "LUAHOOK_MAX_BODY", AT(max_body), set_size, "64m", .min = 1,
     .help = "  --max-body SIZE          largest request body (64m); larger gets 413\n"},
    {"big-body", "LUAHOOK_BIG_BODY", AT(big_body), set_size, "1m", .min = 1,
     .help = "  --big-body SIZE          bodies this big or bigger are checked, answered and\n"
             "                           decoded in slices between other work (1m)\n"},
    {"max-header", "LUAHOOK_MAX_HEADER", AT(max_header), set_size, "32k", .min = 256,
     .too_small = "must be at least 256 bytes",
     .help = "  --max-header SIZE        largest request line + headers (32k); larger gets "
             "431\n"},
    {"max-connections", "LUAHOOK_MAX_CONNECTIONS", AT(max_connections), set_count, "1024",
     .help = "  --max-connections N      open connections (1024); more get 503\n"},
    {"max-pending", "LUAHOOK_MAX_PENDING", AT(max_pending), set_count, "10000",
     .help = "  --max-pending N          handler runs in flight (10000); new events beyond get "
             "503\n"},
    {"idle-timeout", "LUAHOOK_IDLE_TIMEOUT", AT(idle_timeout), set_seconds, "60",
     .help = "  --idle-timeout SECONDS   close a keep-alive connection idle this long (60)\n"},
    {"read-timeout", "LUAHOOK_READ_TIMEOUT", AT(read_timeout), set_seconds, "10",
     .help = "  --read-timeout SECONDS   time to send the headers, and between body reads (10); "
             "408\n"},
    {"shutdown-timeout", "LUAHOOK_SHUTDOWN_TIMEOUT", AT(shutdown_timeout), set_seconds, "10",
     .help = "  --shutdown-timeout SECONDS  on SIGTERM/SIGINT, wait this long for handlers "
             "(10)\n"},
    {"handler-timeout", "LUAHOOK_HANDLER_TIMEOUT", AT(handler_timeout), set_seconds, "30",
     .help = "  --handler-timeout SECONDS   stop a handler run after this long, waiting or "
             "computing (30)\n"},
    {"memory-limit", "LUAHOOK_MEMORY_LIMIT", AT(memory_limit), set_size, "1g", .min = 1024 * 1024,
     .zero_ok = 1, .too_small = "must be 0 (no limit) or at least 1m",
     .help = "  --memory-limit SIZE      Lua heap of all handlers together (1g; 0: none)\n"},
    {"watch", "LUAHOOK_WATCH", AT(watch), set_flag, NULL, .flag = 1,
     .help = "  --watch                  reload when a loaded script changes (as on SIGHUP)\n"},
    {"ack", "LUAHOOK_ACK", AT(ack), set_choice, "accept", .choices = ack_choices,
     .help = "  --ack accept|handled     answer when the event is accepted (default), or after\n"
             "                           every handler finished (500 listing failures)\n"},
    {"log-level", "LUAHOOK_LOG_LEVEL", AT(log_level), set_choice, "info", .choices = level_choices,
     .help = "  --log-level debug|info|warn|error   (info)\n"},
    {"log-format", "LUAHOOK_LOG_FORMAT", AT(log_format), set_choice, "text",
     .choices = format_choices, .help = "  --log-format text|json   (text)\n"},
    {"state-dir", "LUAHOOK_STATE_DIR", AT(state_dir), set_string, NULL,
     .empty = "expected a folder",
     .help = "  --state-dir DIR          keep the store in DIR/luahook.db (default: in memory,\n"
             "                           lost when the server stops)\n"},
    {"store-max-keys", "LUAHOOK_STORE_MAX_KEYS", AT(store_max_keys), set_count, "100000",
     .help = "  --store-max-keys N       keys in the store, every script together (100000)\n"},
    {"recipes", "LUAHOOK_RECIPES", AT(recipes), set_dirs, NULL,
     .empty = "expected a folder of recipes",
     .help = "  --recipes DIR            look for use()'d recipes in DIR/NAME/recipe.lua, then\n"
             "                           the bundled ones (repeatable, in order;\n"
             "                           LUAHOOK_RECIPES: DIR:DIR...)\n"},
    /* luahook recipes's own */
    {"markdown", NULL, AT(markdown), set_flag, NULL, .flag = 1, .recipes_only = 1},
    {"console", "LUAHOOK_CONSOLE", AT(console_off), set_choice, "on", .choices = console_choices,
     .help = "  --console on|off         the web console at /-/ (on; served only with --token);\n"
             "                           off: /-/api/ alone, behind the token\n"},
    {"trusted-proxy", "LUAHOOK_TRUSTED_PROXY", AT(trusted_proxies), set_proxies, NULL,
     .empty = "expected an IPv4 or IPv6 address or CIDR block",
     .help = "  --trusted-proxy ADDR     believe X-Forwarded-For/-Proto from this address or\n"
             "                           CIDR block only (repeatable; none by default)\n"},
    /* the journal (with --state-dir) */
    {"sync", "LUAHOOK_SYNC", AT(sync_normal), set_choice, "full", .choices = sync_choices,
     .help = "  --sync full|normal       journal: fsync before each answer (full: survives power\n"
             "                           loss), or not (normal: survives a crash)\n"},
    {"retries", "LUAHOOK_RETRIES", AT(retries), set_retries, "18",
     .help = "  --retries N              journal: retries of a failed handler run before it is\n"
             "                           dead (18: about a day)\n"},
    {"retry-first", "LUAHOOK_RETRY_FIRST", AT(retry_first), set_duration, "5s",
     .help = "  --retry-first DURATION   journal: wait before the first retry, doubling after\n"
             "                           (5s)\n"},
    {"retry-cap", "LUAHOOK_RETRY_CAP", AT(retry_cap), set_duration, "3h",
     .help = "  --retry-cap DURATION     journal: the longest wait between retries (3h)\n"},
    {"dedup-window", "LUAHOOK_DEDUP_WINDOW", AT(dedup_window), set_duration, "0", .zero_ok = 1,
     .help = "  --dedup-window DURATION  journal: an event identical (path, body) to one taken\n"
             "                           this recently is a duplicate (0: off)\n"},
    {"keep", "LUAHOOK_KEEP", AT(keep), set_duration, "7d",
     .help = "  --keep DURATION          journal: keep finished deliveries this long (7d)\n"},
    {"keep-dead", "LUAHOOK_KEEP_DEAD", AT(keep_dead), set_duration, "30d",
     .help = "  --keep-dead DURATION     journal: keep dead ones this long (30d)\n"},
    {"journal-max-size", "LUAHOOK_JOURNAL_MAX_SIZE", AT(journal_max_size), set_size, "0",
     .min = 1024 * 1024, .zero_ok = 1, .too_small = "must be 0 (no bound) or at least 1m",
     .help = "  --journal-max-size SIZE  journal: bound the database and its log; the oldest\n"
             "                           finished deliveries go first, then new events get 503\n"
             "                           (0: none)\n"},
    /* luahook fire's own: no environment variable, described in their own paragraph */
    {"sample", NULL, AT(sample), set_string, NULL, .fire_only = 1,
     .empty = "expected an action name"},
    {"action", NULL, AT(fire_action), set_string, NULL, .fire_only = 1,
     .empty = "expected an action name"},
    /* luahook test's own */
    {"exclude", NULL, AT(excludes), set_append, NULL, .test_only = 1,
     .empty = "expected a GLOB (e.g. 'vendor' or 'other/*')"},
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const char usage_head[] =
    "usage: luahook [serve] [OPTIONS] PATH...    serve webhooks with the handlers in PATH\n"
    "       luahook check PATH...                load every script, report problems, exit 0/1\n"
    "       luahook fire [OPTIONS] PATH... EVENT.json|-\n"
    "       luahook fire [OPTIONS] --sample ACTION PATH...\n"
    "                                            run the handlers on one event, no server;\n"
    "                                            exit 1 if one failed\n"
    "       luahook test [--exclude GLOB] [TESTFILE|DIR...]\n"
    "                                            run *_test.lua files (default: .), HTTP\n"
    "                                            mocked; 'N passed, N failed'; exit 1 on failure\n"
    "       luahook stubs [DIR]                  write the API's type annotations for\n"
    "                                            lua-language-server (default: .luahook/stubs)\n"
    "       luahook store --state-dir DIR list [PREFIX] | get KEY | set KEY VALUE | delete KEY\n"
    "                                            look at and change the handlers' store\n"
    "       luahook events [--state-dir DIR] [--status S] ... | events show ID\n"
    "                                            the journal's deliveries (events --help)\n"
    "       luahook replay [--state-dir DIR] ID... | --dead\n"
    "                                            run failed handler runs again\n"
    "       luahook sample [ACTION]              print a realistic body of a Label Studio\n"
    "                                            action (no ACTION: list them)\n"
    "       luahook recipes [NAME] [--markdown]  list the recipes, or show one's config keys\n"
    "                                            and README\n"
    "       luahook new-recipe NAME [DIR]        write a recipe skeleton in DIR/NAME (DIR: .)\n"
    "       luahook --version | --help | COMMAND --help\n"
    "\n"
    "PATH is a Lua script, or a folder whose *.lua files load in name order.\n"
    "\n"
    "Options (each also as the environment variable LUAHOOK_<NAME>, e.g. LUAHOOK_MAX_BODY;\n"
    "the command line wins):\n";

static const char usage_tail[] =
    "\n"
    "fire options: --sample ACTION (a built-in sample body of that Label Studio action),\n"
    "  --action X (override the event's action); serve's options apply too (--ack is\n"
    "  always 'handled', --handler-timeout and --memory-limit hold).\n"
    "\n"
    "SIGHUP reloads the scripts: a complete new set is loaded beside the running one and\n"
    "takes over only if it loads without a problem; running handlers finish on the old.\n"
    "\n"
    "SIZE is bytes or a number with k, m or g (KiB, MiB, GiB). SECONDS may be fractional.\n"
    "Exit codes: 0 ok, 1 scripts failed, 2 usage or configuration error.\n";

static const char check_usage[] =
    "usage: luahook check PATH...\n"
    "\n"
    "Loads every script as serve would and prints one 'file:line: message' per problem.\n"
    "Exit codes: 0 every script loads, 1 a problem was found, 2 usage error.\n";

static const char fire_usage[] =
    "usage: luahook fire [OPTIONS] PATH... EVENT.json|-\n"
    "       luahook fire [OPTIONS] --sample ACTION PATH...\n"
    "\n"
    "Runs the handlers in PATH on one event, with the VM and standard library of serve\n"
    "(http is real), and prints one line per handler: 'ok   script:line  (ms)' or\n"
    "'FAIL script:line  error', then 'N passed, N failed'. Log lines go to stderr.\n"
    "\n"
    "  EVENT.json | -           the event body, from a file or from stdin\n"
    "  --sample ACTION          a built-in sample body of that Label Studio action\n"
    "  --action X               replace the event's action by X\n"
    "  serve's options apply too: --handler-timeout, --memory-limit, --log-level,\n"
    "  --log-format.\n"
    "\n"
    "Exit codes: 0 every handler succeeded, 1 one failed (or the event was refused, or a\n"
    "script did not load), 2 the event could not be read or usage error.\n";

static const char test_usage[] =
    "usage: luahook test [--exclude GLOB]... [TESTFILE|DIR...]\n"
    "\n"
    "Runs *_test.lua files (a DIR is searched recursively; default: the current folder),\n"
    "skipping folders named build or node_modules, dot folders, and every file or folder\n"
    "whose path or name matches an --exclude GLOB (e.g. --exclude vendor --exclude\n"
    "'other/*'),\n"
    "each in a fresh Lua VM where http is answered by mocks and sleep and timers run on a\n"
    "virtual clock. Prints one line per test ('ok   file: name' or 'FAIL file: name' with\n"
    "the failing file:line and an expected/actual diff), then 'N passed, N failed'.\n"
    "bundled:NAME (bundled: for all) runs a bundled recipe's tests from the binary's copy.\n"
    "In a test file: handlers(path...), use(recipe, cfg [, opts]), test(name, fn),\n"
    "fire(event [, opts]),\n"
    "sample(action [, overrides]), eq, neq, ok, nok, match, fails, near, mock.http,\n"
    "mock.calls, mock.env, clock.now, clock.advance, logs. See README.md, Testing handlers.\n"
    "\n"
    "Exit codes: 0 every test passed, 1 a test failed, 2 no test file found.\n";

static const char stubs_usage[] =
    "usage: luahook stubs [DIR]\n"
    "\n"
    "Writes ---@meta files for lua-language-server into DIR (default: .luahook/stubs,\n"
    "created if missing): every function of luahook's Lua API with its parameters and\n"
    "results, the shape of each Label Studio event, and the API of *_test.lua files. Point\n"
    "workspace.library of .luarc.json at DIR (see README.md, Editor support).\n"
    "\n"
    "Exit codes: 0 written, 2 usage error or DIR cannot be written.\n";
static const char store_usage[] =
    "usage: luahook store --state-dir DIR list [PREFIX]\n"
    "       luahook store --state-dir DIR get KEY\n"
    "       luahook store --state-dir DIR set KEY VALUE\n"
    "       luahook store --state-dir DIR delete KEY\n"
    "\n"
    "Looks at and changes the store of a state folder, with its server running or not (a\n"
    "running server sees a change within a second). KEY is SCRIPT:KEY, the script's name\n"
    "as the server loads it (counter.lua:count). VALUE is read as JSON when it is JSON\n"
    "(5, 5.0, true, \"text\", {\"a\": 1}), else as a string. list prints one\n"
    "'SCRIPT:KEY<TAB>VALUE' line per key (VALUE as JSON), under PREFIX if given.\n"
    "Run as root on a folder owned by another user, it runs as that user.\n"
    "\n"
    "Exit codes: 0 ok, 1 no such key (get, delete), 2 usage or state folder error.\n";
static const char sample_usage[] =
    "usage: luahook sample [ACTION]\n"
    "\n"
    "Prints the built-in realistic body of a Label Studio action (the one that\n"
    "'luahook fire --sample' and sample() in tests use) on stdout; without ACTION, lists\n"
    "the actions. To post one to a running server:\n"
    "  luahook sample ANNOTATION_CREATED | curl -sS -H 'Authorization: Token SECRET' \\\n"
    "      -H 'Content-Type: application/json' --data-binary @- http://127.0.0.1:9090/\n"
    "\n"
    "Exit codes: 0 printed, 2 no such sample or usage error.\n";

static const char recipes_usage[] =
    "usage: luahook recipes [--recipes DIR]... [NAME] [--markdown]\n"
    "\n"
    "Without NAME, lists every recipe use() can find: name, version, where it comes from\n"
    "(its folder, or bundled) and description; a folder recipe hides a bundled one of its\n"
    "name. With NAME, shows that recipe: every config key with its type, default, whether\n"
    "it is required or secret, its description and example, then its README.md.\n"
    "--markdown prints the same as Markdown (README.md's recipe reference is made of it).\n"
    "\n"
    "Exit codes: 0 shown, 1 a recipe does not load, 2 no such recipe or usage error.\n";
static const char new_recipe_usage[] =
    "usage: luahook new-recipe NAME [DIR]\n"
    "\n"
    "Writes a working recipe skeleton into DIR/NAME (DIR: the current folder): recipe.lua\n"
    "with a small schema, README.md, NAME_test.lua, which pass 'luahook test DIR/NAME'\n"
    "as written, and a rockspec for luarocks. Refuses to overwrite an existing folder.\n"
    "\n"
    "Exit codes: 0 written, 2 bad name, existing folder or usage error.\n";

const char *lh_config_usage(lh_command_t command)
{
    /* the whole text: built once from the table, then never changed */
    static char usage_text[8192];
    switch (command) {
    case LH_CMD_CHECK:
        return check_usage;
    case LH_CMD_FIRE:
        return fire_usage;
    case LH_CMD_TEST:
        return test_usage;
    case LH_CMD_STUBS:
        return stubs_usage;
    case LH_CMD_STORE:
        return store_usage;
    case LH_CMD_SAMPLE:
        return sample_usage;
    case LH_CMD_RECIPES:
        return recipes_usage;
    case LH_CMD_NEW_RECIPE:
        return new_recipe_usage;
    default:
        break;
    }
    if (usage_text[0] == '\0') {
        size_t off = (size_t)snprintf(usage_text, sizeof(usage_text), "%s", usage_head);
        for (size_t i = 0; i < NOPTIONS && off < sizeof(usage_text); i++)
            if (options[i].help != NULL)
                off += (size_t)snprintf(usage_text + off, sizeof(usage_text) - off, "%s",
                                        options[i].help);
        if (off < sizeof(usage_text))
            snprintf(usage_text + off, sizeof(usage_text) - off, "%s", usage_tail);
    }
    return usage_text;
}

int lh_config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    uint64_t mul = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mul = 1024, end++;
        break;
    case 'm':
        mul = 1024 * 1024, end++;
        break;
    case 'g':
        mul = 1024 * 1024 * 1024, end++;
        break;
    default:
        return -1;
    }
    if (*end == 'b' || *end == 'B') /* "64mb", "1kB" */
        end++;
    if (*end != '\0' || v > UINT64_MAX / mul)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

int lh_config_parse_duration(const char *s, double *out)
{
    char *end;
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    double v = strtod(s, &end), mul = 1;
    switch (*end) {
    case 's':
        end++;
        break;
    case 'm':
        mul = 60, end++;
        break;
    case 'h':
        mul = 3600, end++;
        break;
    case 'd':
        mul = 86400, end++;
        break;
    default:
        break;
    }
    if (errno != 0 || *end != '\0' || !isfinite(v) || v < 0 || v * mul > 1e9)
        return -1;
    *out = v * mul;
    return 0;
}

int lh_config_parse_seconds(const char *s, double *out)
{
    char *end;
    if (*s == '\0' || isspace((unsigned char)*s))
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !isfinite(v) || v <= 0 || v > 1e7)
        return -1;
    *out = v;
    return 0;
}

/* Applies one value through its row; `from` says where it came from, for the message. */
static int apply(lh_config_t *cfg, const opt_t *o, const char *v, const char *from, char *err,
                 size_t errlen)
{
    char buf[160];
    const char *why = o->set(o, cfg, (char *)cfg + o->offset, v, buf, sizeof(buf));
    if (why == OOM) {
        snprintf(err, errlen, "%s --%s: out of memory", from, o->name);
        return -1;
    }
    if (why != NULL) {
        /* never echo a secret back */
        snprintf(err, errlen, "%s --%s '%s': %s", from, o->name, o->secret ? "(hidden)" : v, why);
        return -1;
    }
    return 0;
}

static const opt_t *find_option(const char *name, size_t len)
{
    for (size_t k = 0; k < NOPTIONS; k++)
        if (strlen(options[k].name) == len && strncmp(options[k].name, name, len) == 0)
            return &options[k];
    return NULL;
}

static int parse_args(lh_config_t *cfg, int argc, char **argv, int i, char *err, size_t errlen);

static int add_path(lh_config_t *cfg, const char *p)
{
    char **np = realloc(cfg->paths, (cfg->npaths + 1) * sizeof(*np));
    if (np == NULL)
        return -1;
    cfg->paths = np;
    if ((np[cfg->npaths] = strdup(p)) == NULL)
        return -1;
    cfg->npaths++;
    return 0;
}

/* The option whose name (or LUAHOOK_ variable, with `env`) is closest to `name`, when
** close enough to be a typo; NULL otherwise. */
static const opt_t *closest_option(const char *name, int env)
{
    const opt_t *best = NULL;
    size_t bestd = (size_t)-1;
    for (size_t k = 0; k < NOPTIONS; k++) {
        const char *cand = env ? options[k].env : options[k].name;
        if (cand == NULL)
            continue;
        size_t d = lh_actions_distance(name, cand);
        if (d < bestd)
            best = &options[k], bestd = d;
    }
    return bestd <= strlen(name) / 3 + 1 ? best : NULL;
}

static int add_warning(lh_config_t *cfg, const char *w)
{
    char **ws = realloc(cfg->warnings, (cfg->nwarnings + 1) * sizeof(*ws));
    if (ws == NULL)
        return -1;
    cfg->warnings = ws;
    if ((ws[cfg->nwarnings] = strdup(w)) == NULL)
        return -1;
    cfg->nwarnings++;
    return 0;
}

extern char **environ;

/* A LUAHOOK_* variable that no option reads is a typo more often than not (LUAHOOK_TOKN:
** a server without its secret): each one is a warning, with the closest real name. */
static int check_environment(lh_config_t *cfg)
{
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        char name[128], w[320];
        size_t n = eq != NULL ? (size_t)(eq - *e) : strlen(*e);
        if (n < 8 || strncmp(*e, "LUAHOOK_", 8) != 0 || n >= sizeof(name))
            continue;
        memcpy(name, *e, n);
        name[n] = '\0';
        /* the project's own scripts and tests read these; they are no option either */
        static const char *const tooling[] = {"LUAHOOK_BIN", "LUAHOOK_SANITIZED",
                                              "LUAHOOK_TEST_BUDGET"};
        int known = 0;
        for (size_t k = 0; k < sizeof(tooling) / sizeof(tooling[0]) && !known; k++)
            known = strcmp(tooling[k], name) == 0;
        for (size_t k = 0; k < NOPTIONS && !known; k++)
            known = options[k].env != NULL && strcmp(options[k].env, name) == 0;
        if (known)
            continue;
        const opt_t *o = closest_option(name, 1);
        if (o != NULL)
            snprintf(w, sizeof(w),
                     "environment %s is not a luahook option and is ignored: did you mean "
                     "%s?",
                     name, o->env);
        else
            snprintf(w, sizeof(w),
                     "environment %s is not a luahook option and is ignored (luahook --help "
                     "lists them)",
                     name);
        if (add_warning(cfg, w) != 0)
            return -1;
    }
    return 0;
}

int lh_config_parse(lh_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    char from[80];
    memset(cfg, 0, sizeof(*cfg));

    for (size_t k = 0; k < NOPTIONS; k++) {
        const opt_t *o = &options[k];
        if (o->def != NULL && apply(cfg, o, o->def, "default", err, errlen) != 0)
            return -1;
    }
    for (size_t k = 0; k < NOPTIONS; k++) {
        const opt_t *o = &options[k];
        const char *v = o->env != NULL ? getenv(o->env) : NULL;
        if (v != NULL && *v == '\0' && o->secret) {
            /* an env file's `LUAHOOK_TOKEN=` would otherwise mean: no authentication */
            snprintf(err, errlen, "environment %s: %s (unset the variable to run without a secret)",
                     o->env, o->empty);
            return -1;
        }
        if (v != NULL && *v != '\0') {
            snprintf(from, sizeof(from), "environment %s:", o->env);
            if (apply(cfg, o, v, from, err, errlen) != 0)
                return -1;
        }
    }

    if (check_environment(cfg) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    int i = 1;
    if (i < argc) {
        if (strcmp(argv[i], "serve") == 0)
            cfg->command = LH_CMD_SERVE, i++;
        else if (strcmp(argv[i], "check") == 0)
            cfg->command = LH_CMD_CHECK, i++;
        else if (strcmp(argv[i], "fire") == 0)
            cfg->command = LH_CMD_FIRE, i++;
        else if (strcmp(argv[i], "test") == 0)
            cfg->command = LH_CMD_TEST, i++;
        else if (strcmp(argv[i], "stubs") == 0)
            cfg->command = LH_CMD_STUBS, i++;
        else if (strcmp(argv[i], "store") == 0)
            cfg->command = LH_CMD_STORE, i++;
        else if (strcmp(argv[i], "sample") == 0)
            cfg->command = LH_CMD_SAMPLE, i++;
        else if (strcmp(argv[i], "recipes") == 0)
            cfg->command = LH_CMD_RECIPES, i++;
        else if (strcmp(argv[i], "new-recipe") == 0)
            cfg->command = LH_CMD_NEW_RECIPE, i++;
    }
    /* the command line wins: --recipes folders replace LUAHOOK_RECIPES's */
    char **env_recipes = cfg->recipes;
    size_t nenv_recipes = cfg->nrecipes;
    cfg->recipes = NULL, cfg->nrecipes = 0;
    lh_cidr_t *env_proxies = cfg->trusted_proxies; /* the same for --trusted-proxy */
    size_t nenv_proxies = cfg->ntrusted_proxies;
    cfg->trusted_proxies = NULL, cfg->ntrusted_proxies = 0;
    int rc = parse_args(cfg, argc, argv, i, err, errlen);
    if (cfg->ntrusted_proxies == 0) {
        free(cfg->trusted_proxies);
        cfg->trusted_proxies = env_proxies, cfg->ntrusted_proxies = nenv_proxies;
    } else {
        free(env_proxies);
    }
    if (cfg->nrecipes == 0) {
        free(cfg->recipes);
        cfg->recipes = env_recipes, cfg->nrecipes = nenv_recipes;
    } else {
        for (size_t k = 0; k < nenv_recipes; k++)
            free(env_recipes[k]);
        free(env_recipes);
    }
    /* a misspelt folder would fall back to a bundled recipe of the same name in silence */
    for (size_t k = 0; rc == 0 && k < cfg->nrecipes; k++) {
        struct stat sb;
        char w[PATH_MAX + 96];
        if (stat(cfg->recipes[k], &sb) == 0 && S_ISDIR(sb.st_mode))
            continue;
        snprintf(w, sizeof(w), "recipe folder %s: %s (--recipes / LUAHOOK_RECIPES)",
                 cfg->recipes[k],
                 stat(cfg->recipes[k], &sb) == 0 ? "not a folder" : strerror(errno));
        if (add_warning(cfg, w) != 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        }
    }
    return rc;
}

/* The arguments from argv[i] on: options and paths, then what the command needs. */
static int parse_args(lh_config_t *cfg, int argc, char **argv, int i, char *err, size_t errlen)
{
    int only_paths = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        /* luahook store ... set KEY -1: a negative number is a value, not an option */
        int number = cfg->command == LH_CMD_STORE && a[0] == '-' && isdigit((unsigned char)a[1]);
        if (only_paths || a[0] != '-' || a[1] == '\0' || number) {
            if (add_path(cfg, a) != 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_paths = 1;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            cfg->help_for = cfg->command;
            cfg->command = LH_CMD_HELP;
            return 0;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            cfg->command = LH_CMD_VERSION;
            return 0;
        }
        if (a[1] != '-') {
            snprintf(err, errlen, "unknown option '%s' (see luahook --help)", a);
            return -1;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_t *o = find_option(name, nlen);
        if (o == NULL) {
            char typed[64];
            snprintf(typed, sizeof(typed), "%.*s", (int)nlen, name);
            const opt_t *near = closest_option(typed, 0);
            if (near != NULL)
                snprintf(err, errlen, "unknown option '--%s': did you mean --%s?", typed,
                         near->name);
            else
                snprintf(err, errlen, "unknown option '--%s' (see luahook --help)", typed);
            return -1;
        }
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (o->flag) {
            v = "1";
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "option --%s needs a value", o->name);
            return -1;
        }
        if (o->fire_only && cfg->command != LH_CMD_FIRE) {
            snprintf(err, errlen, "option --%s belongs to 'luahook fire'", o->name);
            return -1;
        }
        if (o->test_only && cfg->command != LH_CMD_TEST) {
            snprintf(err, errlen, "option --%s belongs to 'luahook test'", o->name);
            return -1;
        }
        if (o->recipes_only && cfg->command != LH_CMD_RECIPES) {
            snprintf(err, errlen, "option --%s belongs to 'luahook recipes'", o->name);
            return -1;
        }
        if (apply(cfg, o, v, "option", err, errlen) != 0)
            return -1;
    }
    if (cfg->command == LH_CMD_STORE) {
        if (cfg->state_dir == NULL) {
            snprintf(err, errlen,
                     "store: give the state folder: --state-dir DIR (or "
                     "LUAHOOK_STATE_DIR)");
            return -1;
        }
        if (cfg->npaths == 0) {
            snprintf(err, errlen,
                     "store: give a command: list [PREFIX], get KEY, set KEY "
                     "VALUE or delete KEY");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_RECIPES) {
        if (cfg->npaths > 1) {
            snprintf(err, errlen, "recipes: give one recipe name at most");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_NEW_RECIPE) {
        if (cfg->npaths < 1 || cfg->npaths > 2) {
            snprintf(err, errlen,
                     "new-recipe: give a NAME, and a folder to put it in (default: .)");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_SAMPLE) {
        if (cfg->npaths > 1) {
            snprintf(err, errlen, "sample: give one action (luahook sample ANNOTATION_CREATED)");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_TEST) {
        if (cfg->npaths == 0 && add_path(cfg, ".") != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_STUBS) {
        if (cfg->npaths > 1) {
            snprintf(err, errlen, "stubs: give one folder at most");
            return -1;
        }
        if (cfg->npaths == 0 && add_path(cfg, ".luahook/stubs") != 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if (cfg->command == LH_CMD_FIRE && cfg->sample == NULL && cfg->npaths > 0) {
        /* the event is the last argument: a .json file, or - for stdin */
        const char *last = cfg->paths[cfg->npaths - 1];
        size_t n = strlen(last);
        if (strcmp(last, "-") == 0 || (n > 5 && strcmp(last + n - 5, ".json") == 0)) {
            cfg->event_path = cfg->paths[--cfg->npaths];
        } else {
            snprintf(err, errlen,
                     "fire: give the event as the last argument (a .json file, "
                     "or - for stdin), or --sample ACTION");
            return -1;
        }
    }
    if (cfg->npaths == 0) {
        snprintf(err, errlen, "no script given: name a .lua file or a folder of them");
        return -1;
    }
    return 0;
}

void lh_config_dispose(lh_config_t *cfg)
{
    free(cfg->listen_host);
    free(cfg->token);
    free(cfg->auth_header);
    for (size_t i = 0; i < cfg->npaths; i++)
        free(cfg->paths[i]);
    free(cfg->paths);
    free(cfg->event_path);
    free(cfg->sample);
    free(cfg->fire_action);
    free(cfg->state_dir);
    for (size_t i = 0; i < cfg->nexcludes; i++)
        free(cfg->excludes[i]);
    free(cfg->excludes);
    for (size_t i = 0; i < cfg->nrecipes; i++)
        free(cfg->recipes[i]);
    free(cfg->recipes);
    free(cfg->trusted_proxies);
    for (size_t i = 0; i < cfg->nwarnings; i++)
        free(cfg->warnings[i]);
    free(cfg->warnings);
    memset(cfg, 0, sizeof(*cfg));
}
