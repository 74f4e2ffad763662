/*
** fuzz_json_slices — a body decoded in slices (src/json.c's lh_json_job_*, issue 15
** defect 3) against the decoder in one go. For any input and any slice budget (from the
** input): validating in slices gives the same verdict and message as lh_json_decode, and
** so does building in slices, with a value equal to lh_json_decode's (same types, integers,
** floats bit for bit, keys, marks) and the same top-level type; the stack ends as it began.
** Built only where json.h has the slices (tests/fuzz/CMakeLists.txt).
**
** Input: byte 0 picks the budget of a step (1 to 256 bytes, or a large one), the rest is
** the body.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "json.h"
#include "same_value.h"

static void fail(const char *why, const char *a, const char *b)
{
    fprintf(stderr, "fuzz_json_slices: %s\n  in one go: %s\n  in slices: %s\n", why, a, b);
    abort();
}


typedef struct {
    const char *s;
    size_t len, budget;
    lh_json_sizes_t *sizes; /* from the validation, for the build (taken by it) */
    int whole, sliced;      /* 0: refused, 1: taken */
    lh_json_type_t wtype, stype;
    char werr[256], serr[256];
} run_t;

/* under lua_pcall: (run) -> whole-value sliced-value (nil for a refusal) */
static int both(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    lua_settop(L, 0);
    r->whole = lh_json_decode_typed(L, r->s, r->len, r->werr, sizeof(r->werr), &r->wtype) == 0;
    if (!r->whole)
        lua_pushnil(L);
    assert(lua_gettop(L) == 1);

    lua_State *co = lua_newthread(L); /* w co: the job's own stack */
    lh_json_job_t *j = lh_json_job_new(co, r->s, r->len);
    assert(j != NULL);
    lh_json_job_use_sizes(j, r->sizes); /* big tables made at their size: the same value */
    r->sizes = NULL;
    int st;
    while ((st = lh_json_job_step(j, r->budget, r->serr, sizeof(r->serr))) == 0)
        ;
    if (st == 1) {
        r->stype = lh_json_job_type(j);
        assert(lua_gettop(co) == 1);
        lua_xmove(co, L, 1); /* w co v */
    } else {
        assert(lua_gettop(co) == 0);
        lua_pushnil(L);
    }
    assert(lh_json_job_step(j, r->budget, r->serr, sizeof(r->serr)) == st); /* stays done */
    lh_json_job_free(j);
    r->sliced = st == 1;
    lua_remove(L, 2); /* w v */
    return 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    if (L == NULL) {
        L = luaL_newstate();
        assert(L != NULL);
    }
    if (size < 1)
        return 0;
    size_t budget = data[0] == 255 ? (size_t)1 << 20 : (size_t)data[0] + 1;
    const char *s = (const char *)data + 1;
    size_t len = size - 1;

    /* validation in slices: the same verdict and message as in one go */
    run_t r = {s, len, budget, NULL, 0, 0, 0, 0, "", ""};
    char verr[256] = "";
    lh_json_job_t *v = lh_json_job_new(NULL, s, len);
    assert(v != NULL);
    int vst;
    lh_json_type_t vtype = LH_JSON_NULL;
    while ((vst = lh_json_job_step(v, budget, verr, sizeof(verr))) == 0)
        ;
    if (vst == 1) {
        vtype = lh_json_job_type(v);
        r.sizes = lh_json_job_take_sizes(v);
    }
    lh_json_job_free(v);

    lua_settop(L, 0);
    lua_pushcfunction(L, both);
    lua_pushlightuserdata(L, &r);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK)
        fail("raised (out of memory?)", lua_tostring(L, -1), "");
    if ((vst == 1) != r.whole)
        fail("validating in slices disagrees", r.whole ? "taken" : r.werr,
             vst == 1 ? "taken" : verr);
    if (r.whole && vtype != r.wtype)
        fail("validating in slices finds another type", "", "");
    if (!r.whole && strcmp(verr, r.werr) != 0)
        fail("validating in slices refuses with another message", r.werr, verr);
    if (r.sliced != r.whole)
        fail("building in slices disagrees", r.whole ? "taken" : r.werr,
             r.sliced ? "taken" : r.serr);
    if (!r.whole && strcmp(r.serr, r.werr) != 0)
        fail("building in slices refuses with another message", r.werr, r.serr);
    if (r.whole && (r.stype != r.wtype || !same_value(L, 1, 2, 0)))
        fail("building in slices gives another value", "", "");
    lua_settop(L, 0);
    return 0;
}
