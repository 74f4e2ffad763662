/*
** fuzz_json — a JSON body to a Lua value and back (src/json.c). For any input the decoder
** either pushes one value or pushes nothing and explains why ("invalid JSON..."), and
** leaves the stack as it found it. For a value it decoded: the encoder takes it, the text
** it writes decodes again, that value equals the first (decode(encode(decode(x))) ==
** decode(x): same types, integers still integers, same floats bit for bit, same keys, same
** marks of empty tables), and encoding it again gives the same text. Then all of it once
** more under an allocator that fails.
*/
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "json.h"
#include "same_value.h"

static void fail(lua_State *L, const char *why)
{
    fprintf(stderr, "fuzz_json: %s\n", why);
    abort();
}

/* encode(v) under a protected call: the encoder raises on what it cannot write */
static int encode(lua_State *L)
{
    luaL_Buffer b;
    lua_settop(L, 1);     /* v */
    luaL_buffinit(L, &b); /* v [buf] */
    lh_json_encode(L, 1, &b);
    luaL_pushresult(&b); /* v s */
    return 1;
}

typedef struct {
    const char *s;
    size_t len;
    int ok;
    lh_json_type_t type;
    char err[256];
} decode_t;

static int decode(lua_State *L)
{
    decode_t *d = lua_touserdata(L, 1);
    lua_settop(L, 0);
    d->ok = lh_json_decode_typed(L, d->s, d->len, d->err, sizeof(d->err), &d->type) == 0;
    assert(lua_gettop(L) == (d->ok ? 1 : 0));
    return d->ok ? 1 : 0;
}


/*
** The same input again in a state whose allocator fails the Nth allocation (N from the
** input): decoding and encoding end in a memory error or as before, never a crash, a leak
** (libFuzzer checks each input) or a stack left unbalanced.
*/
static long alloc_left = -1; /* growing allocations before one fails; -1: no limit */

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (ptr == NULL || nsize > osize) { /* Lua needs shrinking to succeed */
        if (alloc_left == 0)
            return NULL;
        if (alloc_left > 0)
            alloc_left--;
    }
    return realloc(ptr, nsize);
}

static void under_failing_alloc(const uint8_t *data, size_t size, int decoded)
{
    static lua_State *L;
    if (L == NULL) {
        L = lua_newstate(budget_alloc, NULL);
        assert(L != NULL);
    }
    uint32_t h = 2166136261u; /* FNV-1a: N follows the input, the same every run */
    for (size_t i = 0; i < size && i < 64; i++)
        h = (h ^ data[i]) * 16777619u;
    lua_settop(L, 0);
    decode_t d = {(const char *)data, size, 0, 0, ""};
    lua_pushcfunction(L, decode);
    lua_pushlightuserdata(L, &d);
    /* The collector waits while allocations fail, and collects once they work again: a
    ** finalizer that Lua calls when there is no memory for its call (a CallInfo, stack) fails
    ** and is never called again, so what it would free leaks. A 30-minute run found that
    ** once, at exit: 36 buffers of lauxlib's luaL_Buffer boxes (the encoder's output),
    ** allocated in resizebox and freed only by the box's __close or __gc. That is Lua's, not
    ** the decoder's; emergency collections still run meanwhile, and they call no finalizers. */
    lua_gc(L, LUA_GCSTOP);
    alloc_left = (long)(h % 256);
    int status = lua_pcall(L, 1, 1, 0);
    if (status == LUA_OK && decoded) {
        lua_pushcfunction(L, encode); /* v encode */
        lua_insert(L, 1);             /* encode v */
        status = lua_pcall(L, 1, 1, 0);
    }
    alloc_left = -1;
    lua_gc(L, LUA_GCRESTART);
    if (status != LUA_OK && status != LUA_ERRMEM) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        fail(L, "under a failing allocator: an error other than memory");
    }
    if (status == LUA_OK && d.ok != decoded)
        fail(L, "under a failing allocator: a different verdict");
    if (lua_gettop(L) != 1)
        fail(L, "under a failing allocator: the stack unbalanced");
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (L == NULL) {
        L = luaL_newstate();
        assert(L != NULL);
    }
    lua_settop(L, 0);

    decode_t d1 = {(const char *)data, size, 0, 0, ""};
    lua_pushcfunction(L, decode);
    lua_pushlightuserdata(L, &d1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fail(L, "the decoder raised (out of memory?)");
    if (!d1.ok) {
        if (strncmp(d1.err, "invalid JSON", 12) != 0 || strlen(d1.err) >= sizeof(d1.err))
            fail(L, "a refusal without its message");
        lua_settop(L, 0);
        under_failing_alloc(data, size, 0);
        return 0;
    }
    /* 1: v1 */
    lua_pushcfunction(L, encode);
    lua_pushvalue(L, 1);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        /* a number past a double's range decodes as +-inf (as in cjson and Python), which
        ** JSON cannot write: the one value that has no way back */
        const char *why = lua_tostring(L, -1);
        if (why != NULL &&
            (strstr(why, "cannot encode inf") || strstr(why, "cannot encode -inf"))) {
            lua_settop(L, 0);
            return 0; /* no memory pass: its encode would fail as well */
        }
        fprintf(stderr, "fuzz_json: %s\n", why);
        fail(L, "a decoded value does not encode");
    }
    /* 1: v1, 2: t1 */
    size_t len1;
    const char *t1 = lua_tolstring(L, 2, &len1);
    decode_t d2 = {t1, len1, 0, 0, ""};
    lua_pushcfunction(L, decode);
    lua_pushlightuserdata(L, &d2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fail(L, "the decoder raised on the encoder's text");
    if (!d2.ok) {
        fprintf(stderr, "fuzz_json: %s in %.*s\n", d2.err, (int)(len1 > 400 ? 400 : len1), t1);
        fail(L, "the encoder's text does not decode");
    }
    /* 1: v1, 2: t1, 3: v2 */
    if (d1.type != d2.type || !same_value(L, 1, 3, 0))
        fail(L, "decode(encode(decode(x))) differs from decode(x)");
    lua_pushcfunction(L, encode);
    lua_pushvalue(L, 3);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fail(L, "a value decoded from the encoder's text does not encode");
    /* 1: v1, 2: t1, 3: v2, 4: t2 */
    if (!lua_rawequal(L, 2, 4))
        fail(L, "encoding the same value twice gives two texts");
    lua_settop(L, 0);
    under_failing_alloc(data, size, 1);
    return 0;
}
