/* bench_decode.c - lh_json_decode vs lua-cjson's cjson.decode on one file, then lh_json_encode vs
 * cjson.encode of the decoded value.
 * Usage: bench_decode FILE.json [N]   (N decodes and N encodes with each; default 1000) */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "../../src/json.h"

int luaopen_cjson(lua_State *L);

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;
    size_t n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - n < 65536) {
            char *nb = realloc(buf, cap = cap * 2 + 65536);

            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);

        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Deep equality of the values at a and b. Numbers compare as doubles: lua-cjson 2.1 decodes
 * every number to a double, so it cannot keep integers beyond 2^53 exact as lh_json does. */
static int same(lua_State *L, int a, int b, int depth)
{
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    if (lua_type(L, a) != lua_type(L, b))
        return 0;
    if (lua_type(L, a) == LUA_TNUMBER)
        return lua_tonumber(L, a) == lua_tonumber(L, b);
    if (lua_type(L, a) != LUA_TTABLE)
        return lua_compare(L, a, b, LUA_OPEQ);
    if (depth > 1100 || lua_rawlen(L, a) != lua_rawlen(L, b))
        return 0;
    lua_pushnil(L);           /* k */
    while (lua_next(L, a)) {  /* k va */
        lua_pushvalue(L, -2); /* k va k */
        lua_rawget(L, b);     /* k va vb */
        if (!same(L, -2, -1, depth + 1)) {
            lua_pop(L, 3);
            return 0;
        }
        lua_pop(L, 2); /* k */
    }
    lua_pushnil(L);           /* k */
    while (lua_next(L, b)) {  /* k vb */
        lua_pushvalue(L, -2); /* k vb k */
        lua_rawget(L, a);     /* k vb va */
        if (lua_isnil(L, -1)) {
            lua_pop(L, 3);
            return 0;
        }
        lua_pop(L, 2); /* k */
    }
    return 1;
}

int main(int argc, char **argv)
{
    size_t len;
    char *text;
    long n = 1000;
    char err[256];
    lua_State *L;
    double t0, ours, theirs;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s FILE.json [N]\n", argv[0]);
        return 2;
    }
    if (argc == 3 && (n = strtol(argv[2], NULL, 10)) < 1) {
        fprintf(stderr, "N must be >= 1\n");
        return 2;
    }
    text = read_file(argv[1], &len);
    if (text == NULL) {
        perror(argv[1]);
        return 2;
    }
    L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "cjson", luaopen_cjson, 0); /* cjson */
    lua_getfield(L, -1, "decode");               /* cjson decode */
    lua_pushlstring(L, text, len);               /* cjson decode text */

    /* Both must accept the file and agree on its value. */
    if (lh_json_decode(L, text, len, err, sizeof err) != 0) { /* .. text v */
        fprintf(stderr, "lh_json_decode: %s\n", err);
        return 1;
    }
    lua_pushvalue(L, 2);                   /* .. text v decode */
    lua_pushvalue(L, 3);                   /* .. text v decode text */
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) { /* .. text v v2 */
        fprintf(stderr, "cjson.decode: %s\n", lua_tostring(L, -1));
        return 1;
    }
    printf("%s: %zu bytes, results %s\n", argv[1], len, same(L, -2, -1, 0) ? "agree" : "DIFFER");
    lua_pop(L, 2); /* cjson decode text */

    /* Warm up, then time; a full collection before each run, the incremental collector during. */
    for (long i = 0; i < n / 10 + 1; i++) {
        lh_json_decode(L, text, len, err, sizeof err);
        lua_pop(L, 1);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, 3);
        lua_call(L, 1, 1);
        lua_pop(L, 1);
    }
    lua_gc(L, LUA_GCCOLLECT);
    t0 = now_us();
    for (long i = 0; i < n; i++) {
        lh_json_decode(L, text, len, err, sizeof err); /* .. v */
        lua_pop(L, 1);
    }
    ours = (now_us() - t0) / (double)n;
    lua_gc(L, LUA_GCCOLLECT);
    t0 = now_us();
    for (long i = 0; i < n; i++) {
        lua_pushvalue(L, 2); /* .. decode */
        lua_pushvalue(L, 3); /* .. decode text */
        lua_call(L, 1, 1);   /* .. v */
        lua_pop(L, 1);
    }
    theirs = (now_us() - t0) / (double)n;
    printf("lh_json_decode: %10.2f us/decode\n", ours);
    printf("cjson.decode:   %10.2f us/decode\n", theirs);
    printf("speedup:        %10.2fx\n", theirs / ours);

    /* Encoding the same value (ours, decoded once) with each encoder. */
    lh_json_decode(L, text, len, err, sizeof err); /* cjson decode text v */
    lua_getfield(L, 1, "encode");                  /* .. v encode */
    for (long i = 0; i < n / 10 + 1; i++) {
        luaL_Buffer b;

        luaL_buffinit(L, &b);
        lh_json_encode(L, 4, &b);
        luaL_pushresult(&b);
        lua_pop(L, 1);
        lua_pushvalue(L, 5);
        lua_pushvalue(L, 4);
        lua_call(L, 1, 1);
        lua_pop(L, 1);
    }
    lua_gc(L, LUA_GCCOLLECT);
    t0 = now_us();
    for (long i = 0; i < n; i++) {
        luaL_Buffer b;

        luaL_buffinit(L, &b);
        lh_json_encode(L, 4, &b);
        luaL_pushresult(&b); /* .. s */
        lua_pop(L, 1);
    }
    ours = (now_us() - t0) / (double)n;
    lua_gc(L, LUA_GCCOLLECT);
    t0 = now_us();
    for (long i = 0; i < n; i++) {
        lua_pushvalue(L, 5); /* .. encode */
        lua_pushvalue(L, 4); /* .. encode v */
        lua_call(L, 1, 1);   /* .. s */
        lua_pop(L, 1);
    }
    theirs = (now_us() - t0) / (double)n;
    printf("lh_json_encode: %10.2f us/encode\n", ours);
    printf("cjson.encode:   %10.2f us/encode\n", theirs);
    printf("speedup:        %10.2fx\n", theirs / ours);
    lua_close(L);
    free(text);
    return 0;
}
