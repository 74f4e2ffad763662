/* json.h - JSON <-> Lua values: a strict, fast decoder and an encoder. */
#ifndef LH_JSON_H
#define LH_JSON_H

#include <stddef.h>

#include <lua.h>
#include <lauxlib.h>

#include "json_escape.h"

/* Deepest nesting of arrays/objects accepted by the decoder and produced by the encoder. */
#define LH_JSON_MAX_DEPTH 1000

/** Decodes the JSON text s[0..len) and pushes the value onto L. Returns 0 on success.
 *  On malformed input returns -1, pushes nothing, and writes a precise NUL-terminated message into
 *  err (at most errlen bytes) naming what is wrong and where, e.g.
 *  "invalid JSON at line 1, column 17 (byte 16): expected ',' or '}' after object member"
 *  or "invalid JSON at line 3, column 1 (byte 40): unexpected data after the JSON value".
 *  Empty input (or only whitespace): "invalid JSON: empty input".
 *  May raise a Lua error only on memory exhaustion: call it under lua_pcall if you must survive
 *  that. s need not be NUL-terminated; it is never read outside [s, s + len), and must stay
 *  valid during the call (a Lua string must stay anchored, e.g. on the stack). */
int lh_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen);

/* The type of a decoded document's top-level value: an object and an array both become
** tables, null a light userdata, so the Lua value alone cannot tell every case apart. */
typedef enum {
    LH_JSON_NULL = 0,
    LH_JSON_BOOLEAN,
    LH_JSON_NUMBER,
    LH_JSON_STRING,
    LH_JSON_ARRAY,
    LH_JSON_OBJECT,
} lh_json_type_t;

/** As lh_json_decode; on success also stores the top-level value's type in *type (when
 *  `type` is not NULL). */
int lh_json_decode_typed(lua_State *L, const char *s, size_t len, char *err, size_t errlen,
                         lh_json_type_t *type);

/* ---- decoding in slices: a big body must not hold the event loop ---- */

typedef struct lh_json_job_s lh_json_job_t;

/** Starts a decode of s[0..len) that runs in steps. With L NULL it validates: it builds
 *  nothing and refuses exactly what lh_json_decode refuses, with the same message. Else it
 *  builds the value on L, which must be a thread nothing else touches until the job ended
 *  (its stack holds the values built so far). s is borrowed: it must stay valid and in place
 *  until lh_json_job_free. Returns NULL when out of memory. */
lh_json_job_t *lh_json_job_new(lua_State *L, const char *s, size_t len);

/** Decodes about `budget` more bytes of text: it stops before the first value that starts
 *  past them (one string or number is never cut). Returns 0 when there is more to do, 1 when
 *  the document is complete and valid (when building, its value is on top of L), -1 when it
 *  is not (err as lh_json_decode's; L's stack is back where it was). Once it returned 1 or
 *  -1 it returns the same again. When building it may raise a Lua error on memory
 *  exhaustion: call it under lua_pcall, and drop the job and its thread then. */
int lh_json_job_step(lh_json_job_t *j, size_t budget, char *err, size_t errlen);

/** The type of the document's top-level value (after a step returned 1). */
lh_json_type_t lh_json_job_type(const lh_json_job_t *j);

/* The members a validation finds, so that an event is known before its tables exist. */
typedef enum {
    LH_JSON_MEMBER_ACTION,     /* the top-level object's "action" */
    LH_JSON_MEMBER_PROJECT_ID, /* the "id" of its "project" object */
} lh_json_member_t;

/** After a validation returned 1: the text of the member's value (the last one of that name,
 *  as in the decoded table) and its length, or NULL when the document has none. */
const char *lh_json_job_member(const lh_json_job_t *j, lh_json_member_t which, size_t *len);

/** Frees the job (NULL: nothing). A building job's values left on L are the caller's. */
void lh_json_job_free(lh_json_job_t *j);

/* The sizes of a text's arrays and objects too big for one chunk of a build, from its
** validation: a build given them creates those tables at their full size at once (growing a
** 300 000-element array by doubling held the loop for 18 ms in one step). */
typedef struct lh_json_sizes_s lh_json_sizes_t;

/** After a validation returned 1: its sizes, moved out of the job; NULL when it found no big
 *  table (or had no memory to note them: they only save time). */
lh_json_sizes_t *lh_json_job_take_sizes(lh_json_job_t *j);

/** Gives a building job of the same text the sizes (taken: freed with the job; NULL: none). */
void lh_json_job_use_sizes(lh_json_job_t *j, lh_json_sizes_t *sizes);

void lh_json_sizes_free(lh_json_sizes_t *sizes);

/* The marks that say how a table encodes whatever its contents: shared metatables (named so in
** the registry), set on decoded empty arrays and by json.array/json.object. */
#define LH_JSON_ARRAY_MT  "json.array"
#define LH_JSON_OBJECT_MT "json.object"

/** Sets the mark of kind (LH_JSON_ARRAY or LH_JSON_OBJECT) on the table at idx: its metatable
 *  becomes the shared one of that kind. The caller has checked the table has no other
 *  metatable. */
void lh_json_mark(lua_State *L, int idx, lh_json_type_t kind);

/** The mark of the table at idx: LH_JSON_ARRAY, LH_JSON_OBJECT, or LH_JSON_NULL for none (also
 *  when its metatable is some other one). */
lh_json_type_t lh_json_marked(lua_State *L, int idx);

/** Encodes the value at index idx into b (a luaL_Buffer that the caller has initialised with
 *  luaL_buffinit on L). Object members come in byte order of their keys, so the same value gives
 *  the same text in every process. An empty table is [] when marked json.array, else {}; a table
 *  marked json.object is an object, its integer keys written as decimal strings. Raises a Lua error
 * (luaL_error) naming the path and problem on unencodable values (functions, userdata other than
 * json.null, NaN/inf, cycles/too deep, mixed/sparse tables, a string key in a json.array, a
 * duplicate key), e.g. "json.encode: cannot encode a function at .tasks[2].f". */
void lh_json_encode(lua_State *L, int idx, luaL_Buffer *b);

/** Pushes json.null (a NULL light userdata, the same value as cjson.null, so the two compare
 *  equal). */
void lh_json_pushnull(lua_State *L);

/** The Lua module `json` (in lib_json.c): returns the table {encode, decode, null, array,
 *  object}. */
int luaopen_lh_json(lua_State *L);

#endif
