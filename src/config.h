/*
** config — every option with its default, its LUAHOOK_<NAME> environment variable and
** its validation. The command line wins over the environment.
*/
#ifndef LH_CONFIG_H
#define LH_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "proxy.h"

typedef enum {
    LH_ACK_ACCEPT = 0, /* answer once the event is decoded and its handlers started */
    LH_ACK_HANDLED,    /* answer after every handler finished */
} lh_ack_t;

typedef enum {
    LH_CMD_SERVE = 0,
    LH_CMD_CHECK,
    LH_CMD_FIRE,
    LH_CMD_TEST,
    LH_CMD_STUBS,
    LH_CMD_STORE,      /* luahook store ...: paths[] holds the subcommand and its arguments */
    LH_CMD_SAMPLE,     /* luahook sample [ACTION]: a built-in body on stdout */
    LH_CMD_RECIPES,    /* luahook recipes [NAME] [--markdown] */
    LH_CMD_NEW_RECIPE, /* luahook new-recipe NAME [DIR] */
    LH_CMD_HELP,
    LH_CMD_VERSION,
} lh_command_t;

typedef struct lh_config_s {
    lh_command_t command;
    lh_command_t help_for; /* with LH_CMD_HELP: the command asked about */
    char *listen_host;     /* owned */
    int listen_port;
    char *token;       /* owned; NULL: no authentication */
    char *auth_header; /* owned; lower-case */
    uint64_t max_body;
    uint64_t big_body; /* bodies from this size on are checked and decoded in slices */
    uint64_t max_header;
    uint64_t max_connections;
    uint64_t max_pending; /* handler runs in flight before new events get 503 */
    double idle_timeout;
    double read_timeout;
    double shutdown_timeout;
    double handler_timeout; /* wall clock per handler run */
    uint64_t memory_limit;  /* Lua heap per VM; 0: none */
    lh_ack_t ack;
    int watch; /* reload when a loaded file changes */
    lh_level_t log_level;
    lh_log_format_t log_format;
    char *state_dir;         /* owned; NULL: state lives in memory */
    uint64_t store_max_keys; /* store keys of every script together */
    /* the journal (with state_dir) */
    int sync_normal;           /* --sync: 0 full, 1 normal (a set_choice index) */
    int retries;               /* --retries */
    double retry_first;        /* --retry-first, seconds */
    double retry_cap;          /* --retry-cap */
    double dedup_window;       /* --dedup-window; 0: off */
    double keep, keep_dead;    /* --keep, --keep-dead */
    uint64_t journal_max_size; /* --journal-max-size; 0: none */
    /* the console (with a token) */
    int console_off;            /* --console: 0 on, 1 off (a set_choice index) */
    lh_cidr_t *trusted_proxies; /* owned; --trusted-proxy, each repeat appended */
    size_t ntrusted_proxies;
    char **paths; /* owned; scripts or folders (test: test files or folders), in order */
    size_t npaths;
    /* fire */
    char *event_path;  /* owned; a .json file or "-"; NULL with --sample */
    char *sample;      /* owned; --sample ACTION */
    char *fire_action; /* owned; --action X */
    char **recipes;    /* owned; --recipes DIR (repeatable), then LUAHOOK_RECIPES's folders:
                          where use() looks before the bundled recipes, in order */
    size_t nrecipes;
    int markdown; /* luahook recipes --markdown */
    /* test */
    char **excludes; /* owned; --exclude GLOB, in order (set_append: nexcludes follows) */
    size_t nexcludes;
    char **warnings; /* owned: what the environment got wrong without being fatal (an
                        unknown LUAHOOK_* variable); main logs them once logging is set */
    size_t nwarnings;
} lh_config_t;

/**
 * Fills `cfg` from the environment, then argv. Returns 0, or -1 after writing a message
 * naming the option and the problem into `err`. `lh_config_dispose` is safe either way.
 */
int lh_config_parse(lh_config_t *cfg, int argc, char **argv, char *err, size_t errlen);
void lh_config_dispose(lh_config_t *cfg);

/** "64m" → 67108864. Returns 0 or -1. */
int lh_config_parse_size(const char *s, uint64_t *out);
/** "90s", "10m", "2h", "7d", "1.5" → seconds; >= 0 and finite. Returns 0 or -1. */
int lh_config_parse_duration(const char *s, double *out);
/** "1.5" → 1.5 seconds; must be > 0 and finite. Returns 0 or -1. */
int lh_config_parse_seconds(const char *s, double *out);

/** The --help text: the whole of it for LH_CMD_SERVE, else the command's own. */
const char *lh_config_usage(lh_command_t command);

#endif
