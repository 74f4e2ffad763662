#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OPT_STRING, OPT_SIZE, OPT_SECONDS, OPT_COUNT, OPT_CHOICE, OPT_FLAG } opt_kind_t;

typedef struct {
    const char *name; /* --name; env LUAHOOK_NAME with '-' as '_' */
    opt_kind_t kind;
    const char *def;
    const char *const *choices; /* OPT_CHOICE */
    int fire_only;              /* an option of `fire`, with no environment variable */
} opt_t;

static const char *const ack_choices[] = {"accept", "handled", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_choices[] = {"text", "json", NULL};

enum {
    O_LISTEN,
    O_TOKEN,
    O_AUTH_HEADER,
    O_MAX_BODY,
    O_MAX_HEADER,
    O_MAX_CONNECTIONS,
    O_MAX_PENDING,
    O_IDLE_TIMEOUT,
    O_READ_TIMEOUT,
    O_SHUTDOWN_TIMEOUT,
    O_HANDLER_TIMEOUT,
    O_MEMORY_LIMIT,
    O_ACK,
    O_WATCH,
    O_LOG_LEVEL,
    O_LOG_FORMAT,
    O_SAMPLE,
    O_ACTION,
    O_COUNT_
};

static const opt_t options[O_COUNT_] = {
    [O_LISTEN] = {"listen", OPT_STRING, "127.0.0.1:9090", NULL},
    [O_TOKEN] = {"token", OPT_STRING, NULL, NULL},
    [O_AUTH_HEADER] = {"auth-header", OPT_STRING, "Authorization", NULL},
    [O_MAX_BODY] = {"max-body", OPT_SIZE, "64m", NULL},
    [O_MAX_HEADER] = {"max-header", OPT_SIZE, "32k", NULL},
    [O_MAX_CONNECTIONS] = {"max-connections", OPT_COUNT, "1024", NULL},
    [O_MAX_PENDING] = {"max-pending", OPT_COUNT, "10000", NULL},
    [O_IDLE_TIMEOUT] = {"idle-timeout", OPT_SECONDS, "60", NULL},
    [O_READ_TIMEOUT] = {"read-timeout", OPT_SECONDS, "10", NULL},
    [O_SHUTDOWN_TIMEOUT] = {"shutdown-timeout", OPT_SECONDS, "10", NULL},
    [O_HANDLER_TIMEOUT] = {"handler-timeout", OPT_SECONDS, "30", NULL},
    [O_MEMORY_LIMIT] = {"memory-limit", OPT_SIZE, "1g", NULL},
    [O_ACK] = {"ack", OPT_CHOICE, "accept", ack_choices},
    [O_WATCH] = {"watch", OPT_FLAG, NULL, NULL},
    [O_LOG_LEVEL] = {"log-level", OPT_CHOICE, "info", level_choices},
    [O_LOG_FORMAT] = {"log-format", OPT_CHOICE, "text", format_choices},
    [O_SAMPLE] = {"sample", OPT_STRING, NULL, NULL, 1},
    [O_ACTION] = {"action", OPT_STRING, NULL, NULL, 1},
};

static const char usage_text[] =
    "usage: luahook [serve] [OPTIONS] PATH...    serve webhooks with the handlers in PATH\n"
    "       luahook check PATH...                load every script, report problems, exit 0/1\n"
    "       luahook fire [OPTIONS] PATH... EVENT.json|-\n"
    "       luahook fire [OPTIONS] --sample ACTION PATH...\n"
    "                                            run the handlers on one event, no server;\n"
    "                                            exit 1 if one failed\n"
    "       luahook test [TESTFILE|DIR...]       run *_test.lua files (default: .), HTTP\n"
    "                                            mocked; 'N passed, N failed'; exit 1 on failure\n"
    "       luahook --version | --help | COMMAND --help\n"
    "\n"
    "PATH is a Lua script, or a folder whose *.lua files load in name order.\n"
    "\n"
    "Options (each also as the environment variable LUAHOOK_<NAME>, e.g. LUAHOOK_MAX_BODY;\n"
    "the command line wins):\n"
    "  --listen HOST:PORT       address to listen on (127.0.0.1:9090; port 0 picks a free one)\n"
    "  --token SECRET           require 'Authorization: Token SECRET' or 'Bearer SECRET'\n"
    "  --auth-header NAME       read the secret from this header instead (Authorization)\n"
    "  --max-body SIZE          largest request body (64m); larger gets 413\n"
    "  --max-header SIZE        largest request line + headers (32k); larger gets 431\n"
    "  --max-connections N      open connections (1024); more get 503\n"
    "  --max-pending N          handler runs in flight (10000); new events beyond get 503\n"
    "  --idle-timeout SECONDS   close a keep-alive connection idle this long (60)\n"
    "  --read-timeout SECONDS   time to send the headers, and between body reads (10); 408\n"
    "  --shutdown-timeout SECONDS  on SIGTERM/SIGINT, wait this long for handlers (10)\n"
    "  --handler-timeout SECONDS   stop a handler run after this long, waiting or computing (30)\n"
    "  --memory-limit SIZE      Lua heap of all handlers together (1g; 0: none)\n"
    "  --watch                  reload when a loaded script changes (as on SIGHUP)\n"
    "  --ack accept|handled     answer when the event is accepted (default), or after\n"
    "                           every handler finished (500 listing failures)\n"
    "  --log-level debug|info|warn|error   (info)\n"
    "  --log-format text|json   (text)\n"
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
    "usage: luahook test [TESTFILE|DIR...]\n"
    "\n"
    "Runs *_test.lua files (a DIR is searched recursively; default: the current folder),\n"
    "each in a fresh Lua VM where http is answered by mocks and sleep and timers run on a\n"
    "virtual clock. Prints one line per test ('ok   file: name' or 'FAIL file: name' with\n"
    "the failing file:line and an expected/actual diff), then 'N passed, N failed'.\n"
    "In a test file: handlers(path...), test(name, fn), fire(event [, opts]),\n"
    "sample(action [, overrides]), eq, neq, ok, nok, match, fails, near, mock.http,\n"
    "mock.calls, mock.env, clock.now, clock.advance, logs. See README.md, Testing handlers.\n"
    "\n"
    "Exit codes: 0 every test passed, 1 a test failed, 2 no test file found.\n";

const char *lh_config_usage(lh_command_t command)
{
    switch (command) {
    case LH_CMD_CHECK:
        return check_usage;
    case LH_CMD_FIRE:
        return fire_usage;
    case LH_CMD_TEST:
        return test_usage;
    default:
        return usage_text;
    }
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

static int parse_listen(lh_config_t *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    const char *host = s;
    size_t hlen;
    if (colon == NULL || colon[1] == '\0')
        return -1;
    hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') /* [::1]:9090 */
        host++, hlen -= 2;
    if (hlen == 0)
        return -1;
    char *endp;
    errno = 0;
    long port = strtol(colon + 1, &endp, 10);
    if (errno != 0 || *endp != '\0' || port < 0 || port > 65535)
        return -1;
    free(cfg->listen_host);
    cfg->listen_host = strndup(host, hlen);
    cfg->listen_port = (int)port;
    return cfg->listen_host == NULL ? -1 : 0;
}

static int choice_index(const opt_t *o, const char *v)
{
    for (int i = 0; o->choices[i] != NULL; i++)
        if (strcmp(o->choices[i], v) == 0)
            return i;
    return -1;
}

static void choices_text(const opt_t *o, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; o->choices[i] != NULL && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", o->choices[i]);
}

/* Applies one value; `from` says where it came from, for the message. */
static int apply(lh_config_t *cfg, int id, const char *v, const char *from, char *err,
                 size_t errlen)
{
    const opt_t *o = &options[id];
    uint64_t n = 0;
    double secs = 0;
    int ci = 0;
    const char *why = NULL;

    switch (o->kind) {
    case OPT_SIZE:
        /* only the memory limit may be 0: none */
        if (lh_config_parse_size(v, &n) != 0 || (n == 0 && id != O_MEMORY_LIMIT))
            why = "expected a size in bytes, or a number with k, m or g (e.g. 32m)";
        break;
    case OPT_COUNT:
        if (lh_config_parse_size(v, &n) != 0 || n == 0 || n > 10000000)
            why = "expected a whole number from 1 to 10000000";
        break;
    case OPT_SECONDS:
        if (lh_config_parse_seconds(v, &secs) != 0)
            why = "expected a positive number of seconds (e.g. 2.5)";
        break;
    case OPT_CHOICE:
        if ((ci = choice_index(o, v)) < 0) {
            static char buf[128];
            char list[96];
            choices_text(o, list, sizeof(list));
            snprintf(buf, sizeof(buf), "expected one of: %s", list);
            why = buf;
        }
        break;
    case OPT_FLAG:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
            n = 1;
        else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
            n = 0;
        else
            why = "expected 1, true, yes, 0, false or no";
        break;
    case OPT_STRING:
        break;
    }
    if (why == NULL) {
        switch (id) {
        case O_LISTEN:
            if (parse_listen(cfg, v) != 0)
                why = "expected HOST:PORT (e.g. 127.0.0.1:9090 or [::1]:9090)";
            break;
        case O_TOKEN:
            if (*v == '\0') {
                why = "the token must not be empty";
                break;
            }
            free(cfg->token);
            cfg->token = strdup(v);
            break;
        case O_AUTH_HEADER: {
            if (*v == '\0') {
                why = "expected a header name";
                break;
            }
            free(cfg->auth_header);
            cfg->auth_header = strdup(v);
            for (char *p = cfg->auth_header; p && *p; p++)
                *p = (char)tolower((unsigned char)*p);
            break;
        }
        case O_MAX_BODY:
            cfg->max_body = n;
            break;
        case O_MAX_HEADER:
            if (n < 256)
                why = "must be at least 256 bytes";
            cfg->max_header = n;
            break;
        case O_MAX_CONNECTIONS:
            cfg->max_connections = n;
            break;
        case O_MAX_PENDING:
            cfg->max_pending = n;
            break;
        case O_IDLE_TIMEOUT:
            cfg->idle_timeout = secs;
            break;
        case O_READ_TIMEOUT:
            cfg->read_timeout = secs;
            break;
        case O_SHUTDOWN_TIMEOUT:
            cfg->shutdown_timeout = secs;
            break;
        case O_HANDLER_TIMEOUT:
            cfg->handler_timeout = secs;
            break;
        case O_MEMORY_LIMIT:
            if (n != 0 && n < 1024 * 1024)
                why = "must be 0 (no limit) or at least 1m";
            cfg->memory_limit = n;
            break;
        case O_ACK:
            cfg->ack = (lh_ack_t)ci;
            break;
        case O_WATCH:
            cfg->watch = (int)n;
            break;
        case O_LOG_LEVEL:
            cfg->log_level = (lh_level_t)ci;
            break;
        case O_LOG_FORMAT:
            cfg->log_format = (lh_log_format_t)ci;
            break;
        case O_SAMPLE:
        case O_ACTION:
            if (*v == '\0') {
                why = "expected an action name";
                break;
            }
            free(id == O_SAMPLE ? cfg->sample : cfg->fire_action);
            *(id == O_SAMPLE ? &cfg->sample : &cfg->fire_action) = strdup(v);
            break;
        }
    }
    if (why != NULL) {
        /* never echo a secret back */
        const char *shown = id == O_TOKEN ? "(hidden)" : v;
        snprintf(err, errlen, "%s --%s '%s': %s", from, o->name, shown, why);
        return -1;
    }
    return 0;
}

static int env_name(const opt_t *o, char *buf, size_t len)
{
    int n = snprintf(buf, len, "LUAHOOK_");
    for (const char *p = o->name; *p && (size_t)n + 1 < len; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n] = '\0';
    return n;
}

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

int lh_config_parse(lh_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    char from[80];
    memset(cfg, 0, sizeof(*cfg));

    for (int id = 0; id < O_COUNT_; id++) {
        if (options[id].def != NULL && apply(cfg, id, options[id].def, "default", err, errlen))
            return -1;
    }
    for (int id = 0; id < O_COUNT_; id++) {
        char name[64];
        if (options[id].fire_only)
            continue;
        env_name(&options[id], name, sizeof(name));
        const char *v = getenv(name);
        if (v != NULL && *v != '\0') {
            snprintf(from, sizeof(from), "environment %s:", name);
            if (apply(cfg, id, v, from, err, errlen) != 0)
                return -1;
        }
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
    }
    int only_paths = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (only_paths || a[0] != '-' || a[1] == '\0') {
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
        int id = -1;
        for (int k = 0; k < O_COUNT_; k++) {
            if (strlen(options[k].name) == nlen && strncmp(options[k].name, name, nlen) == 0)
                id = k;
        }
        if (id < 0) {
            snprintf(err, errlen, "unknown option '--%.*s' (see luahook --help)", (int)nlen, name);
            return -1;
        }
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (options[id].kind == OPT_FLAG) {
            v = "1";
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            snprintf(err, errlen, "option --%s needs a value", options[id].name);
            return -1;
        }
        if (options[id].fire_only && cfg->command != LH_CMD_FIRE) {
            snprintf(err, errlen, "option --%s belongs to 'luahook fire'", options[id].name);
            return -1;
        }
        if (apply(cfg, id, v, "option", err, errlen) != 0)
            return -1;
    }
    if (cfg->command == LH_CMD_TEST) {
        if (cfg->npaths == 0 && add_path(cfg, ".") != 0) {
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
    memset(cfg, 0, sizeof(*cfg));
}
