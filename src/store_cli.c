/*
** luahook store — an operator's look at the store of a state folder, and changes to it,
** with the server running or stopped. Everything goes through state.c: a change is
** committed with a record in store_changes, which a running server reads within a second
** (PRAGMA data_version tells it that something changed).
*/
#include "store_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "state.h"
#include "store.h"

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Writes a value as JSON (a float always with a '.' or an exponent: 5.0, not 5). */
static void print_value(FILE *out, const lh_state_row_t *r)
{
    char buf[64];
    switch (r->type) {
    case LH_SV_BOOL:
        fputs(r->i ? "true" : "false", out);
        break;
    case LH_SV_INT:
        fprintf(out, "%lld", (long long)r->i);
        break;
    case LH_SV_FLOAT:
        if (!isfinite(r->f)) {
            fputs(r->f != r->f ? "nan" : r->f > 0 ? "inf" : "-inf", out);
            break;
        }
        snprintf(buf, sizeof(buf), "%.17g", r->f);
        fputs(buf, out);
        if (strpbrk(buf, ".e") == NULL)
            fputs(".0", out);
        break;
    case LH_SV_STRING: {
        fputc('"', out);
        for (size_t i = 0; i < r->len; i++) {
            unsigned char c = (unsigned char)r->bytes[i];
            if (c == '"' || c == '\\')
                fprintf(out, "\\%c", c);
            else if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\u%04x", c);
            else
                fputc(c, out);
        }
        fputc('"', out);
        break;
    }
    default: /* JSON */
        fwrite(r->bytes, 1, r->len, out);
        break;
    }
}

static int print_row(void *data, const lh_state_row_t *r)
{
    (void)data;
    printf("%s:%s\t", r->ns, r->key);
    print_value(stdout, r);
    if (r->expires > 0)
        printf("\tttl=%.0fs", r->expires - now_s() > 0 ? r->expires - now_s() : 0);
    putchar('\n');
    return 0;
}

typedef struct {
    const char *ns, *key;
    int found;
} get_t;

static int get_row(void *data, const lh_state_row_t *r)
{
    get_t *g = data;
    if (strcmp(r->ns, g->ns) != 0 || strcmp(r->key, g->key) != 0)
        return 0;
    g->found = 1;
    print_value(stdout, r);
    putchar('\n');
    return 1;
}

/* "counter.lua:count" → ns and key (in `buf`). */
static int split_key(const char *arg, char *buf, size_t len, const char **ns, const char **key)
{
    const char *colon = strchr(arg, ':');
    size_t klen = colon ? strlen(colon + 1) : 0;
    if (colon == NULL || colon == arg || klen == 0 || klen > LH_STORE_MAX_KEY ||
        strlen(arg) >= len) {
        fprintf(stderr, "luahook store: '%s': a key is SCRIPT:KEY (e.g. counter.lua:count)\n", arg);
        return -1;
    }
    memcpy(buf, arg, strlen(arg) + 1);
    buf[colon - arg] = '\0';
    *ns = buf;
    *key = buf + (colon - arg) + 1;
    return 0;
}

/* VALUE: JSON when it parses (a number, true/false, a string, an object or array), else
** the text itself. Fills `r` (its bytes may point into `text` or L's stack). */
static int parse_value(lua_State *L, const char *text, lh_state_row_t *r)
{
    char err[200];
    lh_json_type_t type;
    size_t len = strlen(text);
    r->type = LH_SV_STRING, r->bytes = text, r->len = len;
    if (lh_json_decode_typed(L, text, len, err, sizeof(err), &type) != 0)
        return 0; /* not JSON: the text as a string */
    switch (type) {
    case LH_JSON_NULL:
        fprintf(stderr, "luahook store: null is no value: use delete\n");
        return -1;
    case LH_JSON_BOOLEAN:
        r->type = LH_SV_BOOL, r->i = lua_toboolean(L, -1);
        break;
    case LH_JSON_NUMBER:
        if (lua_isinteger(L, -1))
            r->type = LH_SV_INT, r->i = (int64_t)lua_tointeger(L, -1);
        else
            r->type = LH_SV_FLOAT, r->f = (double)lua_tonumber(L, -1);
        break;
    case LH_JSON_STRING:
        r->bytes = lua_tolstring(L, -1, &r->len);
        break;
    default: /* a table: kept as the JSON given */
        r->type = LH_SV_JSON;
        break;
    }
    if (r->len > LH_STORE_MAX_VALUE) {
        fprintf(stderr, "luahook store: a value is at most %d bytes\n", LH_STORE_MAX_VALUE);
        return -1;
    }
    return 0;
}

static int usage(void)
{
    fputs("luahook store: expected list [PREFIX], get KEY, set KEY VALUE or delete KEY (see "
          "luahook store --help)\n",
          stderr);
    return 2;
}

int lh_store_cli_run(const lh_config_t *cfg)
{
    char err[9000], keybuf[LH_STORE_MAX_KEY + 1024], path[4096];
    const char *cmd = cfg->paths[0], *ns = NULL, *key = NULL;
    size_t nargs = cfg->npaths - 1;
    char *const *args = cfg->paths + 1;
    lh_state_t *st = NULL;
    lua_State *L = NULL;
    int rc = 2;
    struct stat sb;

    int list = strcmp(cmd, "list") == 0, get = strcmp(cmd, "get") == 0;
    int set = strcmp(cmd, "set") == 0, del = strcmp(cmd, "delete") == 0;
    if ((list && nargs > 1) || ((get || del) && nargs != 1) || (set && nargs != 2) ||
        !(list || get || set || del))
        return usage();
    if (!list && split_key(args[0], keybuf, sizeof(keybuf), &ns, &key) != 0)
        return 2;
    /* root on the service's folder: become its owner before any file is touched */
    if (lh_state_check_owner(cfg->state_dir, 1, err, sizeof(err)) != 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/%s", cfg->state_dir, LH_STATE_DB_NAME);
    if (stat(path, &sb) != 0) {
        snprintf(err, sizeof(err),
                 "%s does not exist: a server started with --state-dir %s creates it", path,
                 cfg->state_dir);
        goto fail;
    }
    if (lh_state_open(&st, cfg->state_dir, err, sizeof(err)) != 0)
        goto fail;
    if (list || get) {
        get_t g = {ns, key, 0};
        if (lh_state_cli_list(st, list ? (nargs ? args[0] : "") : args[0], now_s(),
                              list ? print_row : get_row, list ? NULL : &g, err, sizeof(err)) != 0)
            goto fail;
        rc = 0;
        if (get && !g.found) {
            fprintf(stderr, "luahook store: %s: not found\n", args[0]);
            rc = 1;
        }
        goto done;
    }
    lh_state_row_t r = {.ns = ns, .key = key};
    if (set) {
        if ((L = luaL_newstate()) == NULL) {
            snprintf(err, sizeof(err), "out of memory");
            goto fail;
        }
        if (parse_value(L, args[1], &r) != 0)
            goto done;
    }
    int existed = lh_state_cli_write(st, &r, err, sizeof(err));
    if (existed < 0)
        goto fail;
    rc = 0;
    if (del && !existed) {
        fprintf(stderr, "luahook store: %s: not found\n", args[0]);
        rc = 1;
    }
    goto done;
fail:
    fprintf(stderr, "luahook store: %s\n", err);
    rc = 2;
done:
    if (L != NULL)
        lua_close(L);
    lh_state_stop(st);
    lh_state_free(st);
    return rc;
}
