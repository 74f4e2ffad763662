/* json.c - JSON text -> Lua value (one pass over an explicit stack, resumable) and Lua value ->
 * JSON text.
 *
 * The decoder runs on attacker-controlled bytes: it never reads outside [s, s + len) (the text is
 * not NUL-terminated), nesting is bounded by LH_JSON_MAX_DEPTH (in an array of frames, not in C
 * recursion), and on any syntax error it restores the Lua stack and reports the position. Speed
 * comes from building every array and object on the Lua stack first and creating the table at the
 * close with its exact size (no rehashing), from scanning string bodies 8 bytes at a time, and
 * from a small per-decode cache of object keys (repeated keys skip Lua's string hashing). The
 * same parser validates without building, and stops and resumes between values (jobs), so a big
 * body can be checked and decoded in slices between other work. */
#include "json.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Values of one array/object collected on the Lua stack before they are moved into the table. */
#define CHUNK 1024
/* Stack slots a value may need besides its parent's pending values (key, value, scratch). */
#define SLACK 8
/* Unescaped strings up to this size are built on the C stack, longer ones in a userdata. */
#define SCRATCH 2048
/* Object keys seen lately, kept across decodes in a userdata of the registry (the Lua strings in
 * its user values): pushing a known key is a compare of two words and a copy, instead of hashing
 * and interning it. Four ways per set, so that the keys of a document that hash alike do not evict
 * each other on every object (with two ways, the ~120 keys of a typical event missed a tenth of
 * the time). KEYMAX is Lua's longest interned string. */
#define KEYSET_BITS 7
#define KEYSETS     (1 << KEYSET_BITS)
#define KEYWAYS     4
#define KEYMAX      40

#if defined(__GNUC__)
#define LIKELY(x)     __builtin_expect(!!(x), 1)
#define UNLIKELY(x)   __builtin_expect(!!(x), 0)
#define ALWAYS_INLINE __attribute__((always_inline)) inline
#define NOINLINE      __attribute__((noinline))
#else
#define LIKELY(x)     (x)
#define UNLIKELY(x)   (x)
#define ALWAYS_INLINE inline
#define NOINLINE
#endif

void lh_json_pushnull(lua_State *L)
{
    lua_pushlightuserdata(L, NULL);
}

/* ---------------------------------------------------------------------------------------------
 * Marks: a shared metatable per kind. Only an empty table is ambiguous, and a metatable costs
 * neither memory per table nor a lookup in the encoder unless the table has one; it is also what
 * lua-cjson's array_mt does, so the idea is familiar.
 * ------------------------------------------------------------------------------------------- */

/* Registry keys of the two metatables: a light userdata key is found without hashing a name.
 * They are also registered by name (luaL_newmetatable), which gives them their __name. */
static const char array_key;
static const char object_key;

/* Pushes the shared metatable of kind, creating it on first use in this state. */
static void push_mark(lua_State *L, lh_json_type_t kind)
{
    const void *key = kind == LH_JSON_ARRAY ? &array_key : &object_key;

    if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) != LUA_TNIL) /* mt */
        return;
    lua_pop(L, 1);
    luaL_newmetatable(L, kind == LH_JSON_ARRAY ? LH_JSON_ARRAY_MT : LH_JSON_OBJECT_MT); /* mt */
    lua_pushvalue(L, -1);                                                               /* mt mt */
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);                                             /* mt */
}

void lh_json_mark(lua_State *L, int idx, lh_json_type_t kind)
{
    idx = lua_absindex(L, idx);
    push_mark(L, kind);       /* mt */
    lua_setmetatable(L, idx); /* */
}

lh_json_type_t lh_json_marked(lua_State *L, int idx)
{
    lh_json_type_t kind = LH_JSON_NULL;

    if (!lua_getmetatable(L, idx)) /* mt? */
        return LH_JSON_NULL;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_key); /* mt amt|nil */
    if (lua_rawequal(L, -1, -2)) {
        kind = LH_JSON_ARRAY;
    } else {
        lua_pop(L, 1);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &object_key); /* mt omt|nil */
        if (lua_rawequal(L, -1, -2))
            kind = LH_JSON_OBJECT;
    }
    lua_pop(L, 2);
    return kind;
}

/* ---------------------------------------------------------------------------------------------
 * Decoder
 * ------------------------------------------------------------------------------------------- */

/* One key of the cache. Its first and last 8 bytes (overlapping, zero-padded when shorter) decide
 * equality up to 16 bytes; a longer key also compares its middle. */
typedef struct {
    uint64_t head, tail;
    uint32_t len;             /* 0: empty */
    char middle[KEYMAX - 16]; /* bytes 8 .. len - 8 */
} KeyEntry;

typedef struct {
    KeyEntry e[KEYSETS][KEYWAYS];
    unsigned char victim[KEYSETS]; /* the way a miss replaces next, round robin */
    uint64_t evictions;            /* keys replaced so far (by any decode of this state) */
} KeyCache;

/* Objects nested up to this deep note which cache entries their keys came from (a bit each), so
 * that keys known distinct go into the table in any order; deeper ones keep the text's order. */
#define SEENDEPTH 16
#define SEENWORDS (KEYSETS * KEYWAYS / 64)

/* One open array or object. In validation only `kind` is used. */
typedef struct {
    char kind;          /* '[' or '{' */
    int created;        /* its table exists (values were flushed into it) */
    int pending;        /* values (arrays) or key/value pairs (objects) above tbl */
    int room;           /* pending values the Lua stack has room for */
    int tbl;            /* stack slot of the table (nil until created) */
    lua_Integer stored; /* array elements already in the table */
    int ordered;        /* object: its keys may repeat, so they go in in the text's order */
    uint64_t evictions; /* object: the cache's evictions when it opened */
    const char *open;   /* its '[' or '{' */
} Frame;

/* One big array's or object's size: its values or members, by the offset of its bracket. */
typedef struct {
    size_t at;
    size_t n;
} Size;

struct lh_json_sizes_s {
    Size *v; /* sorted by `at` once taken */
    size_t n, cap;
};

/* A top-level member's value found by validation: its text [s, e). */
typedef struct {
    const char *s, *e;
} Span;

/* The whole state of a decode, so that it can stop at a value boundary and resume later: the
 * nesting lives in `frames`, not in C recursion, and in build mode the values built so far
 * live on the Lua stack of L. */
typedef struct lh_json_job_s {
    lua_State *L;       /* NULL: validation, which builds nothing */
    int build;          /* L != NULL */
    int base;           /* L's top before the decode */
    const char *start;  /* the text */
    const char *end;    /* one past the last byte */
    const char *errpos; /* where the error is */
    const char *p;      /* where a stopped decode resumes: at a value */
    const char *stop;   /* stop at the first value that starts past this */
    int depth;          /* open arrays/objects */
    int cacheslot;      /* stack slot of the key cache, 0 when unused */
    int markslot;       /* stack slot of the array mark, nil until the first empty array */
    int done;           /* 1: complete, -1: failed */
    KeyCache *keys;     /* the key cache's memory (the userdata in cacheslot) */
    int keyslot;        /* cache entry of the key just pushed, -1 when it did not go through it */
    lh_json_sizes_t *sizes; /* validation: noted; build: used; NULL: none */
    /* validation: the string just read, unescaped (in the text or scratch); NULL when its
     * escapes make it longer than scratch */
    const char *str;
    size_t str_len;
    int member, member2; /* the key being read at depth 1, and at depth 2 of "project" */
    Span action, project_id;
    char msg[160];         /* what is wrong (without the position) */
    char scratch[SCRATCH]; /* unescaped string bodies */
    Frame frames[LH_JSON_MAX_DEPTH + 1];
    uint64_t seen[SEENDEPTH][SEENWORDS]; /* per open object: the cache entries of its keys */
} Decoder;

static const char *fail(Decoder *d, const char *pos, const char *fmt, ...)
{
    va_list ap;

    d->errpos = pos;
    va_start(ap, fmt);
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    va_end(ap);
    return NULL;
}

/* "expected X" at pos, saying so when the text simply stopped there. */
static const char *expected(Decoder *d, const char *pos, const char *what)
{
    if (pos >= d->end)
        return fail(d, d->end, "unexpected end of input, expected %s", what);
    return fail(d, pos, "expected %s", what);
}

/* Describes the byte at pos for messages: 'x' if printable, else its hex value. */
static const char *describe(const char *pos, char *buf, size_t len)
{
    unsigned char c = (unsigned char)*pos;

    if (c > 0x20 && c < 0x7f)
        snprintf(buf, len, "character '%c'", c);
    else
        snprintf(buf, len, "byte 0x%02X", c);
    return buf;
}

static inline const char *skip_ws(const char *p, const char *end)
{
    /* most often no whitespace, or the one space after ',' or ':' */
    if (LIKELY(p < end && (unsigned char)*p > ' '))
        return p;
    if (LIKELY(end - p >= 2 && *p == ' ' && (unsigned char)p[1] > ' '))
        return p + 1;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* --- strings --- */

#define ONES  0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Nonzero iff one of the 8 bytes is '"', '\\' or < 0x20; the lowest set bit marks the first.
 * (The zero-byte trick can flag bytes above a true hit because of the borrow, never below.) */
static inline uint64_t special_bytes(uint64_t v)
{
    uint64_t q = v ^ (ONES * '"');
    uint64_t b = v ^ (ONES * '\\');

    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v)) & HIGHS;
}

static inline int is_special(unsigned char c)
{
    return c == '"' || c == '\\' || c < 0x20;
}

#if defined(__SSE2__) && defined(__GNUC__)
/* 0xFF in each byte of v that is '"', '\\' or < 0x20 (min(v, 0x1F) == v, unsigned). */
static inline __m128i special16(__m128i v)
{
    __m128i q = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i b = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    __m128i c = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);

    return _mm_or_si128(_mm_or_si128(q, b), c);
}
#endif

/* First byte in [p, end) that is '"', '\\' or a control character, or end. 16 bytes at a time
 * where SSE2 is there (every x86-64), then 8. */
static inline const char *scan_string(const char *p, const char *end)
{
#if defined(__SSE2__) && defined(__GNUC__)
    while (end - p >= 16) {
        int bits = _mm_movemask_epi8(special16(_mm_loadu_si128((const __m128i *)(const void *)p)));

        if (bits != 0)
            return p + __builtin_ctz((unsigned)bits);
        p += 16;
    }
#endif
    while (end - p >= 8) {
        uint64_t v;
        uint64_t m;

        memcpy(&v, p, 8);
        m = special_bytes(v);
        if (m) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return p + (__builtin_ctzll(m) >> 3);
#else
            break;
#endif
        }
        p += 8;
    }
    while (p < end && !is_special((unsigned char)*p))
        p++;
    return p;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The 4 hex digits at p (which has at least 4 bytes), or -1. */
static long hex4(const char *p)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);

        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

static char *put_utf8(char *o, unsigned long cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | (cp >> 12 & 0x3F));
        *o++ = (char)(0x80 | (cp >> 6 & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

#if defined(__SSE2__) && defined(__GNUC__)
/* Copies the 16 bytes at *q to *o, then moves both on to the first special byte among them
 * (1), or by 16 (0). The caller leaves room for the whole store. */
static inline int copy16(const char **q, char **o)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)*q);
    int bits = _mm_movemask_epi8(special16(v));
    int n = bits != 0 ? __builtin_ctz((unsigned)bits) : 16;

    _mm_storeu_si128((__m128i *)(void *)*o, v);
    *q += n;
    *o += n;
    return bits != 0;
}
#endif

/* The byte each one-letter escape stands for (\" \\ \/ \b \f \n \r \t); 0: not one. */
static const char unescaped[256] = {
    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
    ['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
};

/* Slow path of parse_string: the body [p, close) contains escapes; q is the first backslash.
 * Every escape decodes to no more bytes than it occupies, so close - p bytes of output suffice
 * (a \uXXXX escape is 6 bytes for at most 3 of UTF-8, a surrogate pair 12 for 4).
 * Validation checks the same escapes; it keeps the output only when it fits in scratch (a key
 * it must compare), else writes each escape over the last ("sink"). */
static const char *parse_escaped(Decoder *d, const char *p, const char *q, const char *close)
{
    lua_State *L = d->L;
    size_t cap = (size_t)(close - p);
    char *buf = d->scratch;
    char *o;
    int boxed = d->build && cap > sizeof d->scratch;
    int sink = !d->build && cap > sizeof d->scratch;

    if (boxed)
        buf = lua_newuserdatauv(L, cap, 0); /* box */
    o = buf;
    if (!sink) {
        memcpy(buf, p, (size_t)(q - p));
        o = buf + (q - p);
    }
    while (q < close) {
        unsigned char c = (unsigned char)*q;

        if (c == '\\') {
            const char *esc = q;
            long cp;

            q++; /* q < close: the body cannot end in a lone backslash */
            unsigned char e = (unsigned char)*q++;
            if (unescaped[e]) {
                *o++ = unescaped[e];
            } else if (e == 'u') {
                if (close - q < 4 || (cp = hex4(q)) < 0)
                    return fail(d, esc, "invalid \\u escape in string: expected 4 hex digits");
                q += 4;
                /* A lone surrogate is an error rather than U+FFFD: valid senders (e.g. Python's
                 * json.dumps of a str) never produce one, so it means a corrupt body, and silently
                 * substituting would change the data. */
                if (cp >= 0xDC00 && cp <= 0xDFFF)
                    return fail(d, esc, "lone UTF-16 low surrogate \\u%04lX in string", cp);
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    long lo;

                    if (close - q < 6 || q[0] != '\\' || q[1] != 'u' || (lo = hex4(q + 2)) < 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return fail(d, esc,
                                    "lone UTF-16 high surrogate \\u%04lX in string "
                                    "(not followed by a \\uDC00-\\uDFFF escape)",
                                    cp);
                    q += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                o = put_utf8(o, (unsigned long)cp);
            } else {
                if (q[-1] > 0x20 && q[-1] < 0x7f)
                    return fail(d, esc, "invalid escape '\\%c' in string", q[-1]);
                return fail(d, esc, "invalid escape in string: backslash followed by byte 0x%02X",
                            (unsigned char)q[-1]);
            }
            if (sink)
                o = buf;
        } else if (c < 0x20) {
            return fail(d, q, "control character 0x%02X in string must be escaped", c);
        } else if (sink) {
            q = scan_string(q, close);
        } else {
            const char *r;

#if defined(__SSE2__) && defined(__GNUC__)
            /* Copy 16 bytes, then keep those before the first special one. The store stays in
             * buf: the output never runs ahead of the input (o - buf <= q - p). */
            if (close - q >= 16) {
                copy16(&q, &o);
                continue;
            }
#endif
            r = scan_string(q, close);
            memcpy(o, q, (size_t)(r - q));
            o += r - q;
            q = r;
        }
    }
    if (!d->build) {
        d->str = sink ? NULL : buf;
        d->str_len = (size_t)(o - buf);
        return close + 1;
    }
    lua_pushlstring(L, buf, (size_t)(o - buf)); /* [box] s */
    if (boxed)
        lua_remove(L, -2); /* s */
    return close + 1;
}

/* Fast path of an escaped string, build only: one pass from the first backslash q, writing
 * into scratch. A config or description full of \" and \n costs a third of the two passes.
 * NULL, with nothing pushed, at anything else (a \u surrogate, a control character, an error,
 * the end of the text, more than scratch holds): parse_escaped then decides, with its
 * messages. */
static const char *unescape_short(Decoder *d, const char *p, const char *q)
{
    const char *end = d->end;
    char *buf = d->scratch;
    char *lim = buf + sizeof d->scratch - 16; /* room for a 16-byte store, or an escape */
    char *o = buf + (q - p);
    long cp;

    if (q - p > lim - buf)
        return NULL;
    memcpy(buf, p, (size_t)(q - p));
    for (;;) {
        /* q: at a special byte */
        if (*q == '"') {
            lua_pushlstring(d->L, buf, (size_t)(o - buf)); /* s */
            return q + 1;
        }
        if (*q != '\\' || end - q < 2 || o > lim)
            return NULL;
        unsigned char e = (unsigned char)q[1];
        if (unescaped[e]) {
            *o++ = unescaped[e];
        } else if (e == 'u' && end - q >= 6 && (cp = hex4(q + 2)) >= 0 &&
                   (cp < 0xD800 || cp > 0xDFFF)) {
            o = put_utf8(o, (unsigned long)cp);
            q += 4;
        } else {
            return NULL;
        }
        q += 2;
        /* the run up to the next special byte */
#if defined(__SSE2__) && defined(__GNUC__)
        for (;;) {
            if (end - q < 16)
                break;
            if (o > lim)
                return NULL;
            if (copy16(&q, &o))
                goto special;
        }
#endif
        {
            const char *r = scan_string(q, end);
            if (r == end || (r - q) > lim - o)
                return NULL;
            memcpy(o, q, (size_t)(r - q));
            o += r - q;
            q = r;
        }
#if defined(__SSE2__) && defined(__GNUC__)
    special:;
#endif
    }
}

/* Pushes the string whose body starts at p (just after the opening quote). */
static const char *parse_string(Decoder *d, const char *p)
{
    const char *end = d->end;
    const char *q = scan_string(p, end);
    const char *close;

    if (LIKELY(q < end && *q == '"')) {
        if (LIKELY(d->build)) {
            lua_pushlstring(d->L, p, (size_t)(q - p)); /* s */
        } else {
            d->str = p;
            d->str_len = (size_t)(q - p);
        }
        return q + 1;
    }
    if (q == end)
        return fail(d, end, "unexpected end of input inside a string");
    if (*q != '\\')
        return fail(d, q, "control character 0x%02X in string must be escaped", (unsigned char)*q);
    if (d->build && (close = unescape_short(d, p, q)) != NULL)
        return close;
    /* Find the closing quote first: it bounds the output and every read below. */
    close = q;
    for (;;) {
        close = scan_string(close, end);
        if (close == end)
            return fail(d, end, "unexpected end of input inside a string");
        if (*close == '"')
            break;
        if (*close == '\\') {
            if (end - close < 2)
                return fail(d, end, "unexpected end of input inside a string");
            close += 2;
        } else {
            close++; /* a control character: reported by parse_escaped in order */
        }
    }
    return parse_escaped(d, p, q, close);
}

static inline uint64_t load8(const char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

/* The first n (< 8) bytes in memory of the word w, the others zeroed. */
static inline uint64_t first_bytes(uint64_t w, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return n == 0 ? 0 : w & ~(~0ULL >> (8 * n));
#else
    return w & ((1ULL << (8 * n)) - 1);
#endif
}

static inline int key_is(const KeyEntry *k, const char *p, size_t len, uint64_t head, uint64_t tail)
{
    return k->len == len && k->head == head && k->tail == tail &&
           (len <= 16 || memcmp(k->middle, p + 8, len - 16) == 0);
}

/* A key the cache does not hold: pushes it and puts it in the entry of its set that is next to go.
 */
static NOINLINE void cache_key(Decoder *d, const char *p, size_t len, unsigned set, uint64_t head,
                               uint64_t tail)
{
    lua_State *L = d->L;
    int way = d->keys->victim[set];
    KeyEntry *k = &d->keys->e[set][way];

    d->keys->victim[set] = (unsigned char)((way + 1) % KEYWAYS);
    d->keys->evictions += k->len != 0;
    d->keyslot = (int)(KEYWAYS * set) + way;
    lua_pushlstring(L, p, len);                         /* k */
    lua_pushvalue(L, -1);                               /* k k */
    lua_setiuservalue(L, d->cacheslot, d->keyslot + 1); /* k */
    k->head = head;
    k->tail = tail;
    k->len = (uint32_t)len;
    if (len > 16)
        memcpy(k->middle, p + 8, len - 16);
}

/* Pushes an object key: like parse_string, through the key cache. Inlined in the parser: it runs
 * for every member. */
static ALWAYS_INLINE const char *parse_key(Decoder *d, const char *p)
{
    const char *q = scan_string(p, d->end);
    size_t len = (size_t)(q - p);
    uint64_t head, tail;
    unsigned set;
    KeyEntry *k;

    /* escaped or unterminated (parse_string reports it), empty, too long to be interned, or too
     * near the end for a word load */
    d->keyslot = -1;
    if (UNLIKELY(q == d->end || *q != '"' || len - 1 >= KEYMAX || d->end - p < 8 || !d->build))
        return parse_string(d, p);
    head = load8(p);
    if (len < 8)
        tail = head = first_bytes(head, len);
    else
        tail = load8(p + len - 8);
    set = (unsigned)(((head ^ len) * 0x9E3779B97F4A7C15ULL + tail * 0xC2B2AE3D27D4EB4FULL) >>
                     (64 - KEYSET_BITS));
    k = d->keys->e[set];
    for (int way = 0; way < KEYWAYS; way++) {
        if (key_is(&k[way], p, len, head, tail)) {
            d->keyslot = (int)(KEYWAYS * set) + way;
            lua_getiuservalue(d->L, d->cacheslot, d->keyslot + 1); /* k */
            return q + 1;
        }
    }
    cache_key(d, p, len, set, head, tail); /* k */
    return q + 1;
}

/* --- numbers --- */

static const double pow10_exact[] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

static inline int is_digit(const char *p, const char *end)
{
    return p < end && (unsigned)(*p - '0') < 10;
}

/* Significant digits kept for strtod; 768 decide the rounding of any double, the rest is
 * summarised by a sticky nonzero digit. */
#define MAXDIG 780

/* Correctly rounded conversion of the validated literal [s, e) for the cases the fast path cannot
 * do exactly. The literal is rewritten as DIGITSeEXP, without a decimal point, so strtod does not
 * depend on the locale's LC_NUMERIC, and its length stays bounded whatever the input. */
static double slow_number(const char *s, const char *e)
{
    char buf[MAXDIG + 32];
    char *o = buf;
    const char *p = s;
    long long exp10 = 0;
    int nd = 0;
    int sticky = 0;

    if (*p == '-')
        *o++ = *p++;
    for (; p < e && *p >= '0' && *p <= '9'; p++) {
        if (nd == 0 && *p == '0')
            continue;
        if (nd < MAXDIG) {
            *o++ = *p;
            nd++;
        } else {
            exp10++;
            sticky |= *p != '0';
        }
    }
    if (p < e && *p == '.') {
        for (p++; p < e && *p >= '0' && *p <= '9'; p++) {
            if (nd == 0 && *p == '0') {
                exp10--;
            } else if (nd < MAXDIG) {
                *o++ = *p;
                nd++;
                exp10--;
            } else {
                sticky |= *p != '0';
            }
        }
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        long long ev = 0;
        int eneg = 0;

        p++;
        if (*p == '+' || *p == '-')
            eneg = *p++ == '-';
        for (; p < e; p++) {
            if (ev < 1000000000)
                ev = ev * 10 + (*p - '0');
        }
        exp10 += eneg ? -ev : ev;
    }
    if (nd == 0)
        *o++ = '0';
    if (sticky) {
        *o++ = '1';
        exp10--;
    }
    /* With at most MAXDIG + 1 digits, anything beyond this is 0 or inf anyway. */
    if (exp10 > 100000)
        exp10 = 100000;
    if (exp10 < -100000)
        exp10 = -100000;
    *o++ = 'e';
    if (exp10 < 0) {
        *o++ = '-';
        exp10 = -exp10;
    }
    {
        char digits[8];
        int n = 0;

        do {
            digits[n++] = (char)('0' + exp10 % 10);
            exp10 /= 10;
        } while (exp10 > 0);
        while (n > 0)
            *o++ = digits[--n];
    }
    *o = '\0';
    return strtod(buf, NULL);
}

#if defined(__SIZEOF_INT128__)
#define HAVE_EXACT_SCALED 1
static const uint64_t pow10_u64[20] = {
    1ULL,
    10ULL,
    100ULL,
    1000ULL,
    10000ULL,
    100000ULL,
    1000000ULL,
    10000000ULL,
    100000000ULL,
    1000000000ULL,
    10000000000ULL,
    100000000000ULL,
    1000000000000ULL,
    10000000000000ULL,
    100000000000000ULL,
    1000000000000000ULL,
    10000000000000000ULL,
    100000000000000000ULL,
    1000000000000000000ULL,
    10000000000000000000ULL,
};

/* m * 10^e10 correctly rounded (half to even), for 0 < m and -19 <= e10 <= 19: the exact
 * 128-bit product, or a quotient of at least 64 bits with a sticky bit for its remainder. This is
 * the common case the fast path above cannot take: 17 significant digits (33.52777777777778),
 * where m is beyond 2^53. */
static double exact_scaled(uint64_t m, int e10)
{
    unsigned __int128 x;
    int bexp = 0;   /* value = (x + fraction) * 2^bexp */
    int sticky = 0; /* the fraction is not zero */
    int bits;
    int shift;
    uint64_t mant;
    unsigned __int128 rest;
    unsigned __int128 half;

    if (e10 >= 0) {
        x = (unsigned __int128)m * pow10_u64[e10];
    } else {
        uint64_t div = pow10_u64[-e10];
        int lz = __builtin_clzll(m);
        unsigned __int128 n = (unsigned __int128)(m << lz) << 64;

        x = n / div;
        sticky = n % div != 0;
        bexp = -64 - lz;
    }
    bits = (uint64_t)(x >> 64) != 0 ? 128 - __builtin_clzll((uint64_t)(x >> 64))
                                    : 64 - __builtin_clzll((uint64_t)x);
    if (bits <= 53) /* exact (a product only: a quotient has 64 bits or more) */
        return ldexp((double)(uint64_t)x, bexp);
    shift = bits - 53;
    mant = (uint64_t)(x >> shift);
    rest = x & (((unsigned __int128)1 << shift) - 1); /* the bits below the 53 kept */
    half = (unsigned __int128)1 << (shift - 1);
    if (rest > half || (rest == half && (sticky || (mant & 1))))
        mant++;
    if (mant == (1ULL << 53)) {
        mant >>= 1;
        shift++;
    }
    return ldexp((double)mant, bexp + shift);
}
#endif

static const char *parse_number(Decoder *d, const char *p)
{
    const char *s = p;
    const char *end = d->end;
    uint64_t m = 0; /* up to 19 significant digits */
    int sig = 0;    /* significant digits in m */
    int e10 = 0;    /* value = m * 10^e10 (before the exponent part) */
    int lost = 0;   /* digits that did not fit in m */
    int isfloat = 0;
    int neg = 0;

    if (*p == '-') {
        neg = 1;
        p++;
        if (end - p >= 8 && memcmp(p, "Infinity", 8) == 0)
            return fail(d, s, "-Infinity is not valid JSON");
    }
    if (!is_digit(p, end))
        return expected(d, p, "a digit after '-'");
    if (*p == '0') {
        p++;
        if (is_digit(p, end))
            return fail(d, s, "invalid number: leading zeros are not allowed");
    } else {
        /* the first 19 digits without counting each: they fit in m */
        const char *lim = end - p > 19 ? p + 19 : end;
        const char *first = p;

        do {
            m = m * 10 + (unsigned)(*p - '0');
            p++;
        } while (p < lim && (unsigned)(*p - '0') < 10);
        sig = (int)(p - first);
        while (is_digit(p, end)) {
            lost = 1; /* e10 is unused then */
            p++;
        }
    }
    /* most numbers are integers that fit: done */
    if (LIKELY(!lost && (p == end || (*p != '.' && (*p | 0x20) != 'e')))) {
        if (!d->build)
            return p;
        if (!neg && m <= (uint64_t)INT64_MAX) {
            lua_pushinteger(d->L, (lua_Integer)m);
            return p;
        }
    }
    if (p < end && *p == '.') {
        isfloat = 1;
        p++;
        if (!is_digit(p, end))
            return expected(d, p, "a digit after '.' in number");
        do {
            if (sig < 19) {
                m = m * 10 + (unsigned)(*p - '0');
                sig += m != 0; /* leading zeros of 0.000123 are not significant */
                if (e10 > -1000)
                    e10--;
                else
                    lost = 1; /* absurdly many leading zeros: leave it to slow_number */
            } else {
                lost = 1;
            }
            p++;
        } while (is_digit(p, end));
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        int ev = 0;

        isfloat = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (!is_digit(p, end))
            return expected(d, p, "a digit in the exponent of number");
        do {
            if (ev < 100000)
                ev = ev * 10 + (*p - '0'); /* only the fast path's range matters here */
            p++;
        } while (is_digit(p, end));
        e10 += eneg ? -ev : ev;
    }
    if (!d->build) /* valid: the value itself is not needed */
        return p;
    if (!isfloat && !lost) {
        if (!neg && m <= (uint64_t)INT64_MAX) {
            lua_pushinteger(d->L, (lua_Integer)m);
            return p;
        }
        if (neg && m <= (uint64_t)INT64_MAX + 1) {
            lua_pushinteger(d->L, m == (uint64_t)INT64_MAX + 1 ? LUA_MININTEGER : -(lua_Integer)m);
            return p;
        }
        /* 19 digits beyond int64: uint64 -> double is correctly rounded */
        lua_pushnumber(d->L, neg ? -(double)m : (double)m);
        return p;
    }
#if FLT_EVAL_METHOD == 0
    /* Exact: m and 10^|e10| are exactly representable, so one IEEE operation rounds correctly. */
    if (!lost && m <= (1ULL << 53) && e10 >= -22 && e10 <= 22) {
        double x = (double)m;

        x = e10 < 0 ? x / pow10_exact[-e10] : x * pow10_exact[e10];
        lua_pushnumber(d->L, neg ? -x : x);
        return p;
    }
#endif
#if defined(HAVE_EXACT_SCALED)
    if (!lost && m != 0 && e10 >= -19 && e10 <= 19) {
        double x = exact_scaled(m, e10);

        lua_pushnumber(d->L, neg ? -x : x);
        return p;
    }
#endif
    lua_pushnumber(d->L, slow_number(s, p));
    return p;
}

/* --- literals, arrays, objects --- */

static const char *parse_literal(Decoder *d, const char *p, const char *word, size_t n)
{
    const char *end = d->end;
    size_t i = 0;

    while (i < n && p + i < end && p[i] == word[i])
        i++;
    if (i < n) {
        if (p + i >= end)
            return fail(d, end, "unexpected end of input inside the literal '%s'", word);
        return fail(d, p, "invalid literal, expected '%s'", word);
    }
    return p + n;
}

/* Room for more pending values on the Lua stack: CHUNK normally, 1 if the stack is nearly at its
 * limit (values then go into the table one by one), 0 if not even that. */
static int reserve(lua_State *L, int per_value)
{
    if (lua_checkstack(L, CHUNK * per_value + SLACK))
        return CHUNK;
    if (lua_checkstack(L, per_value + SLACK))
        return 1;
    return 0;
}

/* Moves the n values above the table slot tbl into the table as elements first+1..first+n;
 * `size`: the whole array's, when known (else 0). */
static void flush_array(lua_State *L, int tbl, int n, lua_Integer first, int *created, int size)
{
    if (!*created) {
        lua_createtable(L, size > n ? size : n, 0); /* t? v1..vn t */
        lua_replace(L, tbl);                        /* t v1..vn */
        *created = 1;
        for (int i = n; i > 0; i--)
            lua_rawseti(L, tbl, first + i); /* t v1..vi-1 */
    } else {
        /* In order, so that a growing table keeps its elements in the array part. */
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(L, tbl + i);      /* t v1..vn vi */
            lua_rawseti(L, tbl, first + i); /* t v1..vn */
        }
        lua_settop(L, tbl); /* t */
    }
}

/* Moves the n key/value pairs above the table slot tbl into the table: in order (last wins) when
 * a key may repeat, else popped from the top, which spares copying each pair. `size`: the whole
 * object's members, when known (else 0). */
static void flush_object(lua_State *L, int tbl, int n, int *created, int ordered, int size)
{
    if (!*created) {
        lua_createtable(L, 0, size > n ? size : n); /* t? k1 v1..kn vn t */
        lua_replace(L, tbl);                        /* t k1 v1..kn vn */
        *created = 1;
    }
    if (!ordered) {
        for (int i = 0; i < n; i++)
            lua_rawset(L, tbl); /* t k1 v1..kn-i vn-i */
        return;
    }
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, tbl + 1 + 2 * i); /* t k1 v1..kn vn ki */
        lua_pushvalue(L, tbl + 2 + 2 * i); /* t k1 v1..kn vn ki vi */
        lua_rawset(L, tbl);                /* t k1 v1..kn vn */
    }
    lua_settop(L, tbl); /* t */
}

/* Marks the empty array on top of the stack. The metatable is looked up once per document and
 * kept in its stack slot: a document may hold many empty arrays. */
static void mark_empty_array(Decoder *d)
{
    lua_State *L = d->L;

    if (lua_type(L, d->markslot) == LUA_TNIL) {
        push_mark(L, LH_JSON_ARRAY); /* t mt */
        lua_replace(L, d->markslot); /* t */
    }
    lua_pushvalue(L, d->markslot); /* t mt */
    lua_setmetatable(L, -2);       /* t */
}

/* Validation: notes the size of the big array or object f closing now. */
static void note_size(Decoder *d, const Frame *f)
{
    lh_json_sizes_t *z = d->sizes;
    if (z == NULL && (z = d->sizes = calloc(1, sizeof *z)) == NULL)
        return;
    if (z->n == z->cap) {
        size_t cap = z->cap ? 2 * z->cap : 16;
        Size *v = realloc(z->v, cap * sizeof *v);
        if (v == NULL)
            return; /* sizes only save time */
        z->v = v;
        z->cap = cap;
    }
    z->v[z->n++] = (Size){(size_t)(f->open - d->start), (size_t)f->pending};
}

/* Build: the size validation noted for f's table, or 0. Looked up only when a first chunk of
 * it fills, so once per big table. */
static int size_of(const Decoder *d, const Frame *f)
{
    if (f->created || d->sizes == NULL)
        return 0;
    size_t at = (size_t)(f->open - d->start);
    size_t lo = 0, hi = d->sizes->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (d->sizes->v[mid].at < at)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == d->sizes->n || d->sizes->v[lo].at != at)
        return 0;
    size_t n = d->sizes->v[lo].n;
    return n > INT_MAX ? INT_MAX : (int)n; /* a larger one grows past it as usual */
}

/* The members validation looks for: the top-level object's "action", and "id" in its
 * "project" object (what an event needs before its tables are built). */
enum { M_NONE = 0, M_ACTION, M_PROJECT, M_ID };

static int is_key(const Decoder *d, const char *word, size_t n)
{
    return d->str != NULL && d->str_len == n && memcmp(d->str, word, n) == 0;
}

/* Validation read the key of a member at depth 1 or 2: note whether its value is wanted. */
static void note_key(Decoder *d)
{
    if (d->depth == 1)
        d->member = is_key(d, "action", 6)    ? M_ACTION
                    : is_key(d, "project", 7) ? M_PROJECT
                                              : M_NONE;
    else if (d->depth == 2 && d->member == M_PROJECT)
        d->member2 = is_key(d, "id", 2) ? M_ID : M_NONE;
}

/* The span the value at depth d->depth belongs to, or NULL. */
static Span *wanted(Decoder *d)
{
    if (d->depth == 1 && d->frames[1].kind == '{') {
        if (d->member == M_ACTION)
            return &d->action;
    } else if (d->depth == 2 && d->member == M_PROJECT && d->frames[1].kind == '{' &&
               d->frames[2].kind == '{' && d->member2 == M_ID) {
        return &d->project_id;
    }
    return NULL;
}

/* Whether the pending pairs of the object f must go in in order: a key did not go through the
 * cache, or two came from one entry, or an entry was replaced meanwhile (a key seen before
 * could then come back from another entry unnoticed). */
static inline int keys_may_repeat(const Decoder *d, const Frame *f)
{
    return f->ordered || f->evictions != d->keys->evictions;
}

/*
 * The parser: a loop over an explicit stack of open arrays and objects, so that it can stop
 * before any value (when it passed d->stop) and resume there. Returns 1 when the top-level value
 * is complete (pushed, in build mode), 0 when it stopped (d->p says where), -1 on an error
 * (d->errpos and d->msg say what). The checks and messages are those of a recursive descent:
 * array and object members are read in order, values of one container are collected on the
 * Lua stack and moved into its table in chunks (with its exact size when it fits in one).
 */
static ALWAYS_INLINE int run_as(Decoder *d, const int build)
{
    lua_State *L = d->L;
    const char *end = d->end;
    const char *p = d->p;
    const char *stop = d->stop;
    Frame *f = &d->frames[d->depth];
    char what[32];

value: /* p: at a value (whitespace skipped) */
    if (UNLIKELY(p > stop)) {
        d->p = p;
        return 0;
    }
    if (!build && d->depth > 0 && d->depth <= 2) {
        Span *sp = wanted(d);
        if (sp != NULL)
            sp->s = p, sp->e = NULL;
        /* the last member of a name wins, as in the table: a new "project" drops an "id" */
        if (d->depth == 1 && d->member == M_PROJECT && d->frames[1].kind == '{')
            d->project_id.s = d->project_id.e = NULL;
    }
    if (p >= end) {
        expected(d, p, "a JSON value");
        return -1;
    }
    switch (*p) {
    case '"':
        p = parse_string(d, p + 1);
        break;
    case '[':
    case '{': {
        int obj = *p == '{';
        if (d->depth >= LH_JSON_MAX_DEPTH) {
            fail(d, p, "nesting deeper than %d levels", LH_JSON_MAX_DEPTH);
            return -1;
        }
        f = &d->frames[++d->depth];
        f->kind = *p;
        f->open = p;
        f->pending = 0;
        if (build) {
            f->room = reserve(L, obj ? 2 : 1);
            if (f->room == 0) {
                fail(d, p, "nesting too deep for the Lua stack");
                return -1;
            }
            lua_pushnil(L); /* t? (the table is created at the close, with its size) */
            f->tbl = lua_gettop(L);
            f->created = 0;
            f->stored = 0;
            if (obj) {
                f->ordered = d->depth >= SEENDEPTH;
                f->evictions = d->keys->evictions;
                if (!f->ordered)
                    memset(d->seen[d->depth], 0, sizeof d->seen[0]);
            }
        }
        p = skip_ws(p + 1, end);
        if (p < end && *p == (obj ? '}' : ']')) {
            if (build) {
                lua_createtable(L, 0, 0); /* t? t */
                if (!obj)
                    mark_empty_array(d); /* so that it encodes as [] again, not {} */
                lua_replace(L, f->tbl);  /* t */
            }
            p++;
            f = &d->frames[--d->depth];
            goto after;
        }
        if (obj)
            goto key;
        goto element;
    }
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        p = parse_number(d, p);
        break;
    case 't':
        p = parse_literal(d, p, "true", 4);
        if (p && build)
            lua_pushboolean(L, 1);
        break;
    case 'f':
        p = parse_literal(d, p, "false", 5);
        if (p && build)
            lua_pushboolean(L, 0);
        break;
    case 'n':
        p = parse_literal(d, p, "null", 4);
        if (p && build)
            lua_pushlightuserdata(L, NULL);
        break;
    case 'N':
        if (end - p >= 3 && memcmp(p, "NaN", 3) == 0)
            p = fail(d, p, "NaN is not valid JSON");
        else
            p = fail(d, p, "unexpected %s, expected a JSON value", describe(p, what, sizeof what));
        break;
    case 'I':
        if (end - p >= 8 && memcmp(p, "Infinity", 8) == 0)
            p = fail(d, p, "Infinity is not valid JSON");
        else
            p = fail(d, p, "unexpected %s, expected a JSON value", describe(p, what, sizeof what));
        break;
    case '\'':
        p = fail(d, p, "single-quoted strings are not valid JSON");
        break;
    case '/':
        p = fail(d, p, "comments are not valid JSON");
        break;
    default:
        p = fail(d, p, "unexpected %s, expected a JSON value", describe(p, what, sizeof what));
        break;
    }
    if (p == NULL)
        return -1;

after: /* a value ended just before p; f is its container's frame (frames[0] at the top) */
    if (d->depth == 0) {
        d->p = p;
        return 1;
    }
    if (!build && d->depth <= 2) {
        Span *sp = wanted(d);
        if (sp != NULL && sp->e == NULL)
            sp->e = p;
    }
    f->pending++;
    p = skip_ws(p, end);
    if (f->kind == '[') {
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            if (p < end && *p == ']') {
                fail(d, p, "trailing comma before ']'");
                return -1;
            }
            goto element;
        }
        if (p < end && *p == ']') {
            if (build)
                flush_array(L, f->tbl, f->pending, f->stored, &f->created, 0); /* t */
            else if (f->pending > CHUNK)
                note_size(d, f);
            p++;
            f = &d->frames[--d->depth];
            goto after;
        }
        expected(d, p, "',' or ']' after array element");
        return -1;
    }
    if (p < end && *p == ',') {
        p = skip_ws(p + 1, end);
        goto key;
    }
    if (p < end && *p == '}') {
        if (build)
            flush_object(L, f->tbl, f->pending, &f->created, keys_may_repeat(d, f), 0); /* t */
        else if (f->pending > CHUNK)
            note_size(d, f);
        p++;
        f = &d->frames[--d->depth];
        goto after;
    }
    expected(d, p, "',' or '}' after object member");
    return -1;

element: /* p: at an array element */
    if (build && f->pending == f->room) {
        flush_array(L, f->tbl, f->pending, f->stored, &f->created, size_of(d, f)); /* t */
        f->stored += f->pending;
        f->pending = 0;
        f->room = reserve(L, 1);
        if (f->room == 0) {
            fail(d, p, "nesting too deep for the Lua stack");
            return -1;
        }
    }
    goto value;

key: /* p: at an object member */
    if (p >= end || *p != '"') {
        if (p < end && *p == '}')
            fail(d, p, "trailing comma before '}'");
        else
            expected(d, p, "a string key for object member");
        return -1;
    }
    if (build && f->pending == f->room) {
        flush_object(L, f->tbl, f->pending, &f->created, keys_may_repeat(d, f), size_of(d, f));
        f->pending = 0;
        f->room = reserve(L, 2);
        if (f->room == 0) {
            fail(d, p, "nesting too deep for the Lua stack");
            return -1;
        }
    }
    p = parse_key(d, p + 1); /* t k1 v1..kn vn k */
    if (p == NULL)
        return -1;
    if (build && !f->ordered) {
        /* a cache entry seen twice in this object may be the same key twice */
        int e = d->keyslot;

        if (e < 0 || (d->seen[d->depth][e >> 6] & 1ULL << (e & 63)) != 0)
            f->ordered = 1;
        else
            d->seen[d->depth][e >> 6] |= 1ULL << (e & 63);
    }
    if (!build && d->depth <= 2)
        note_key(d);
    p = skip_ws(p, end);
    if (p >= end || *p != ':') {
        expected(d, p, "':' after object key");
        return -1;
    }
    p = skip_ws(p + 1, end);
    goto value;
}

/* Two copies of the parser, so that neither tests the mode at every value. */
static int run(Decoder *d)
{
    return d->build ? run_as(d, 1) : run_as(d, 0);
}

int lh_json_decode(lua_State *L, const char *s, size_t len, char *err, size_t errlen)
{
    return lh_json_decode_typed(L, s, len, err, errlen, NULL);
}

/* The type of the value that starts at p, a valid document's first byte. */
static lh_json_type_t top_type(const char *p)
{
    switch (*p) {
    case '{':
        return LH_JSON_OBJECT;
    case '[':
        return LH_JSON_ARRAY;
    case '"':
        return LH_JSON_STRING;
    case 'n':
        return LH_JSON_NULL;
    case 't':
    case 'f':
        return LH_JSON_BOOLEAN;
    default:
        return LH_JSON_NUMBER;
    }
}

/* Registry key of the key cache (one per Lua state, shared by its threads). */
static const char keycache_key;

/* Pushes the key cache, creating it on first use in this state. Its strings stay alive with it:
 * at most KEYSETS * KEYWAYS of at most KEYMAX bytes. */
static KeyCache *push_key_cache(lua_State *L)
{
    KeyCache *c;

    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keycache_key) == LUA_TUSERDATA) /* c */
        return lua_touserdata(L, -1);
    lua_pop(L, 1);
    c = lua_newuserdatauv(L, sizeof *c, KEYSETS * KEYWAYS); /* c */
    memset(c, 0, sizeof *c);
    lua_pushvalue(L, -1);                             /* c c */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &keycache_key); /* c */
    return c;
}

/* Sets up a decode of s[0..len) on L (NULL: validation). -1: the text is empty (err says so). */
static int start(Decoder *d, lua_State *L, const char *s, size_t len, char *err, size_t errlen)
{
    if (len == 0 || skip_ws(s, s + len) == s + len) {
        if (errlen > 0)
            snprintf(err, errlen, "invalid JSON at line 1, column 1 (byte 0): empty input");
        return -1;
    }
    d->L = L;
    d->build = L != NULL;
    d->sizes = NULL;
    d->start = s;
    d->end = s + len;
    d->stop = d->end; /* no stop: a value never starts past the end */
    d->errpos = s;
    d->depth = 0;
    d->done = 0;
    d->msg[0] = '\0';
    d->frames[0].kind = 0;
    d->frames[0].pending = 0;
    d->str = NULL;
    d->member = d->member2 = M_NONE;
    d->action.s = d->action.e = d->project_id.s = d->project_id.e = NULL;
    d->p = skip_ws(s, d->end);
    d->cacheslot = 0; /* a scalar document has no keys: the cache stays unused */
    if (!d->build)
        return 0;
    d->base = lua_gettop(L);
    if (!lua_checkstack(L, 2 + SLACK))
        luaL_error(L, "json: not enough Lua stack");
    if (*d->p == '{' || *d->p == '[') {
        /* Made on the first run (resume) when this state has none yet: a job is set up outside
         * lua_pcall, where an allocation must not raise. */
        d->keys = NULL;
        if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keycache_key) == LUA_TUSERDATA) /* cache|nil */
            d->keys = lua_touserdata(L, -1);
        lua_pushnil(L); /* cache|nil mark */
        d->cacheslot = d->base + 1;
        d->markslot = d->base + 2;
    }
    return 0;
}

/* Runs d on; at its end checks what follows the value, and leaves the value alone above the
 * base (build) or the stack as it was with the error in err (1, 0 or -1 as run). */
static int resume(Decoder *d, char *err, size_t errlen)
{
    int rc;

    if (d->build && d->cacheslot != 0 && d->keys == NULL) {
        d->keys = push_key_cache(d->L); /* .. cache */
        lua_replace(d->L, d->cacheslot);
    }
    rc = run(d);

    if (rc == 1) {
        const char *p = skip_ws(d->p, d->end);

        if (p != d->end) {
            fail(d, p, "unexpected data after the JSON value");
            rc = -1;
        }
    }
    if (rc == -1) {
        size_t line = 1;
        size_t col = 1;

        if (d->build)
            lua_settop(d->L, d->base);
        /* The column counts characters (UTF-8 continuation bytes do not start one). */
        for (const char *q = d->start; q < d->errpos; q++) {
            if (*q == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char)*q & 0xC0) != 0x80) {
                col++;
            }
        }
        if (errlen > 0)
            snprintf(err, errlen, "invalid JSON at line %zu, column %zu (byte %zu): %s", line, col,
                     (size_t)(d->errpos - d->start), d->msg);
    } else if (rc == 1 && d->build && d->cacheslot != 0) {
        lua_replace(d->L, d->base + 1); /* v cache.. */
        lua_settop(d->L, d->base + 1);  /* v */
    }
    if (rc != 0)
        d->done = rc;
    return rc;
}

int lh_json_decode_typed(lua_State *L, const char *s, size_t len, char *err, size_t errlen,
                         lh_json_type_t *type)
{
    Decoder d;

    if (start(&d, L, s, len, err, errlen) != 0)
        return -1;
    if (resume(&d, err, errlen) != 1)
        return -1;
    if (type != NULL)
        *type = top_type(skip_ws(s, d.end));
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding in slices
 * ------------------------------------------------------------------------------------------- */

lh_json_job_t *lh_json_job_new(lua_State *L, const char *s, size_t len)
{
    Decoder *d = malloc(sizeof *d);

    if (d == NULL)
        return NULL;
    d->p = NULL;
    if (start(d, L, s, len, d->msg, sizeof d->msg) != 0) {
        /* the message is kept for the first step (start fills none of d but msg) */
        d->L = L;
        d->build = L != NULL;
        d->sizes = NULL;
        d->done = -1;
        d->start = s;
    }
    return d;
}

int lh_json_job_step(lh_json_job_t *d, size_t budget, char *err, size_t errlen)
{
    if (d->done == -1 && d->p == NULL) {
        snprintf(err, errlen, "%s", d->msg);
        return -1;
    }
    if (d->done != 0)
        return d->done;
    d->stop = (size_t)(d->end - d->p) > budget ? d->p + budget : d->end;
    return resume(d, err, errlen);
}

lh_json_type_t lh_json_job_type(const lh_json_job_t *d)
{
    return top_type(skip_ws(d->start, d->end));
}

const char *lh_json_job_member(const lh_json_job_t *d, lh_json_member_t which, size_t *len)
{
    const Span *sp = which == LH_JSON_MEMBER_ACTION ? &d->action : &d->project_id;

    if (d->done != 1 || d->build || sp->s == NULL || sp->e == NULL)
        return NULL;
    *len = (size_t)(sp->e - sp->s);
    return sp->s;
}

void lh_json_job_free(lh_json_job_t *d)
{
    if (d != NULL)
        lh_json_sizes_free(d->sizes);
    free(d);
}

static int size_cmp(const void *a, const void *b)
{
    size_t x = ((const Size *)a)->at, y = ((const Size *)b)->at;
    return (x > y) - (x < y);
}

lh_json_sizes_t *lh_json_job_take_sizes(lh_json_job_t *d)
{
    lh_json_sizes_t *z = d->sizes;
    if (d->build || d->done != 1 || z == NULL)
        return NULL;
    d->sizes = NULL;
    qsort(z->v, z->n, sizeof *z->v, size_cmp); /* noted as they closed: inner ones first */
    return z;
}

void lh_json_job_use_sizes(lh_json_job_t *d, lh_json_sizes_t *sizes)
{
    if (!d->build) {
        lh_json_sizes_free(sizes);
        return;
    }
    lh_json_sizes_free(d->sizes);
    d->sizes = sizes;
}

void lh_json_sizes_free(lh_json_sizes_t *sizes)
{
    if (sizes != NULL)
        free(sizes->v);
    free(sizes);
}

/* ---------------------------------------------------------------------------------------------
 * Encoder
 * ------------------------------------------------------------------------------------------- */

/* One step of the path to the value being encoded; the chain lives in the recursion's frames. */
typedef struct PathSeg {
    const struct PathSeg *up;
    const char *key; /* string key, or NULL for an array index */
    size_t klen;
    lua_Integer index;
} PathSeg;

typedef struct {
    lua_State *L;
    char *buf;
    size_t len;
    size_t cap;
    int box; /* stack slot for the userdata holding buf once it outgrows init */
    int depth;
    const PathSeg *path;   /* deepest step, NULL at the top level */
    const void *array_mt;  /* the marks' metatables (NULL until a mark was made in this state): */
    const void *object_mt; /* comparing pointers spares a registry lookup per marked table */
    char init[1024];
} Encoder;

/* The output grows in a userdata just above the caller's buffer: luaL_Buffer operations need the
 * stack at the buffer's level, which table traversal (lua_next) does not allow. */
static void grow(Encoder *e, size_t need)
{
    lua_State *L = e->L;
    size_t cap = e->cap;
    char *nb;

    while (cap - e->len < need) {
        if (cap > ((size_t)-1) / 4)
            luaL_error(L, "json.encode: output too large");
        cap *= 2;
    }
    nb = lua_newuserdatauv(L, cap, 0); /* enc box .. nbox */
    memcpy(nb, e->buf, e->len);
    lua_replace(L, e->box); /* enc nbox .. */
    e->buf = nb;
    e->cap = cap;
}

static inline char *reserve_out(Encoder *e, size_t n)
{
    if (UNLIKELY(e->cap - e->len < n))
        grow(e, n);
    return e->buf + e->len;
}

static inline void put(Encoder *e, const char *s, size_t n)
{
    memcpy(reserve_out(e, n), s, n);
    e->len += n;
}

static inline void putc_(Encoder *e, char c)
{
    *reserve_out(e, 1) = c;
    e->len++;
}

static int is_ident(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!(c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
            return 0;
    }
    return 1;
}

/* One path segment: .key, ["odd key"] or [index]. */
static size_t format_seg(const PathSeg *sg, char *out, size_t outlen)
{
    int n;

    if (sg->key == NULL) {
        n = snprintf(out, outlen, "[%lld]", (long long)sg->index);
    } else if (is_ident(sg->key, sg->klen) && sg->klen <= 40) {
        n = snprintf(out, outlen, ".%.*s", (int)sg->klen, sg->key);
    } else {
        char k[48];
        size_t m = sg->klen < 40 ? sg->klen : 40;

        for (size_t i = 0; i < m; i++) {
            unsigned char c = (unsigned char)sg->key[i];

            k[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
        }
        k[m] = '\0';
        n = snprintf(out, outlen, "[\"%s%s\"]", k, sg->klen > m ? "..." : "");
    }
    return n < 0 ? 0 : (size_t)n < outlen ? (size_t)n : outlen - 1;
}

/* Raises "json.encode: <problem> at <path>"; deep paths keep their last segments. */
static void encode_error(Encoder *e, const char *fmt, ...)
{
    const PathSeg *segs[64];
    char problem[160];
    char path[256];
    char seg[64];
    size_t total = 0;
    size_t n = 0;
    int nsegs = 0;
    const PathSeg *sg = e->path;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    if (sg == NULL)
        luaL_error(e->L, "json.encode: %s", problem);
    for (; sg != NULL && nsegs < 64; sg = sg->up) {
        size_t len = format_seg(sg, seg, sizeof seg);

        if (total + len > 200)
            break;
        total += len;
        segs[nsegs++] = sg;
    }
    if (sg != NULL)
        n += (size_t)snprintf(path, sizeof path, "...");
    while (nsegs > 0)
        n += format_seg(segs[--nsegs], path + n, sizeof path - n);
    luaL_error(e->L, "json.encode: %s at %s", problem, path);
}

static void encode_value(Encoder *e, int idx);

size_t lh_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *o = out, *end = out + cap;
    size_t i = 0;

    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (LIKELY(c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)) {
            if (UNLIKELY(o == end))
                break;
            *o++ = (char)c;
            continue;
        }
        char esc = 0;
        switch (c) {
        case '"':
            esc = '"';
            break;
        case '\\':
            esc = '\\';
            break;
        case '\b':
            esc = 'b';
            break;
        case '\f':
            esc = 'f';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        }
        if (UNLIKELY(end - o < (esc ? 2 : 6)))
            break;
        *o++ = '\\';
        if (esc) {
            *o++ = esc;
        } else {
            *o++ = 'u', *o++ = '0', *o++ = '0';
            *o++ = hex[c >> 4], *o++ = hex[c & 15];
        }
    }
    if (i < n) { /* cut: drop a UTF-8 sequence that did not fit whole */
        size_t k = 0;
        while (k < 3 && o - k > out && ((unsigned char)o[-1 - (ptrdiff_t)k] & 0xC0) == 0x80)
            k++;
        if (o - k > out) {
            unsigned char lead = (unsigned char)o[-1 - (ptrdiff_t)k];
            size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (want > k + 1)
                o -= k + 1;
        }
    }
    return (size_t)(o - out);
}

static void encode_string(Encoder *e, const char *s, size_t n)
{
    char *o = reserve_out(e, LH_JSON_ESCAPED_MAX(n) + 2);

    *o++ = '"';
    o += lh_json_escape(o, LH_JSON_ESCAPED_MAX(n), s, n);
    *o++ = '"';
    e->len = (size_t)(o - e->buf);
}

static void encode_integer(Encoder *e, lua_Integer v)
{
    char tmp[24];
    char *t = tmp + sizeof tmp;
    /* Through unsigned: -mininteger does not exist as a lua_Integer. */
    lua_Unsigned u = v < 0 ? 0 - (lua_Unsigned)v : (lua_Unsigned)v;

    do {
        *--t = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--t = '-';
    put(e, t, (size_t)(tmp + sizeof tmp - t));
}

static void encode_float(Encoder *e, double x)
{
    char tmp[40];
    char out[48];
    size_t n = 0;
    int dot = 0;

    if (isnan(x))
        encode_error(e, "cannot encode NaN");
    if (isinf(x))
        encode_error(e, "cannot encode %s", x > 0 ? "inf" : "-inf");
    /* Shortest of 15..17 significant digits that reads back as the same double. The round-trip
     * test uses the current locale on both sides, so it is consistent. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, x);
        if (prec == 17 || strtod(tmp, NULL) == x)
            break;
    }
    /* Whatever the locale's decimal point is (maybe several bytes), JSON wants '.'. */
    for (const char *t = tmp; *t; t++) {
        char c = *t;

        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') {
            out[n++] = c;
            dot |= c == 'e';
        } else if (!dot) {
            out[n++] = '.';
            dot = 1;
        }
    }
    /* Keep it a float on the way back: 2.0, not 2. */
    if (!dot) {
        out[n++] = '.';
        out[n++] = '0';
    }
    put(e, out, n);
}

static const char *key_kind(lua_State *L, int idx, char *buf, size_t len)
{
    int t = lua_type(L, idx);

    if (t == LUA_TNUMBER && lua_isinteger(L, idx))
        snprintf(buf, len, "integer key %lld", (long long)lua_tointeger(L, idx));
    else if (t == LUA_TNUMBER)
        snprintf(buf, len, "float key %.17g", lua_tonumber(L, idx));
    else
        snprintf(buf, len, "a %s key", lua_typename(L, t));
    return buf;
}

/* An object key as encode_object sorts it: its bytes, and the stack slot of the pair. */
typedef struct {
    uint64_t head; /* the first 8 bytes, big-endian, zero-padded: most keys differ there */
    const char *s;
    size_t len;
    int slot; /* the key (a string); its value is at slot + 1 */
} KeyRef;

static inline uint64_t key_head(const char *s, size_t len)
{
    unsigned char b[8] = {0};
    uint64_t h = 0;

    memcpy(b, s, len < 8 ? len : 8);
    for (int i = 0; i < 8; i++)
        h = h << 8 | b[i];
    return h;
}

/* Byte order, a prefix first: the order of strcmp, also for keys holding NUL bytes. */
static inline int key_cmp(const KeyRef *a, const KeyRef *b)
{
    int c;

    if (a->head != b->head)
        return a->head < b->head ? -1 : 1;
    c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static void insertion_sort(KeyRef *k, int n)
{
    for (int i = 1; i < n; i++) {
        KeyRef x = k[i];
        int j = i;

        for (; j > 0 && key_cmp(&k[j - 1], &x) > 0; j--)
            k[j] = k[j - 1];
        k[j] = x;
    }
}

/* Runs sorted by insertion (most objects are one run), then merged pairwise into the other of
 * k and tmp (n entries each). Returns the one that holds the sorted keys. The comparison is
 * inline, unlike qsort's. */
#define SORT_RUN 16

static KeyRef *sort_keys(KeyRef *k, KeyRef *tmp, int n)
{
    for (int lo = 0; lo < n; lo += SORT_RUN)
        insertion_sort(k + lo, n - lo < SORT_RUN ? n - lo : SORT_RUN);
    for (int w = SORT_RUN; w < n; w *= 2) {
        KeyRef *swap;

        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = n - lo < w ? n : lo + w;
            int hi = n - lo < 2 * w ? n : lo + 2 * w;
            int i = lo, j = mid, o = lo;

            while (i < mid && j < hi)
                tmp[o++] = key_cmp(&k[j], &k[i]) < 0 ? k[j++] : k[i++];
            while (i < mid)
                tmp[o++] = k[i++];
            while (j < hi)
                tmp[o++] = k[j++];
        }
        swap = k;
        k = tmp;
        tmp = swap;
    }
    return k;
}

/* Pairs gathered on the stack between checks that it has room for more. */
#define PAIRS_STEP 64
/* Keys of an object sorted in a C array up to this many, in a userdata beyond (the array is in
 * every frame of a recursion up to LH_JSON_MAX_DEPTH deep: keep it small). */
#define KEYS_LOCAL 16
_Static_assert(KEYS_LOCAL <= SORT_RUN, "a local key array is sorted in one run, without tmp");

/* Writes the table at idx as an object, members in byte order of their keys so that the text is
 * the same in every process (Lua's string hashes are seeded per state). The first pair is on the
 * stack (k v). Each pair is copied above it, then sorted by reference: no key is hashed again. */
static void encode_object(Encoder *e, int idx, lh_json_type_t mark)
{
    lua_State *L = e->L;
    int base = lua_gettop(L) - 2; /* pairs from base + 1 */
    int n = 0;
    int renamed = 0; /* integer keys written as strings: two keys may then be equal */
    KeyRef local[KEYS_LOCAL];
    KeyRef *keys = local;
    PathSeg sg = {e->path, NULL, 0, 0};
    char kind[64];

    do { /* pairs.. k v */
        if (n % PAIRS_STEP == 0 && !lua_checkstack(L, 2 * PAIRS_STEP + 8))
            encode_error(e, "cannot encode an object this large (%d keys fill the Lua stack)", n);
        lua_pushvalue(L, -2); /* pairs.. k v k */
        if (lua_type(L, -1) != LUA_TSTRING) {
            if (mark != LH_JSON_OBJECT)
                encode_error(e, "cannot encode a table mixing string keys and %s",
                             key_kind(L, -1, kind, sizeof kind));
            if (!lua_isinteger(L, -1))
                encode_error(e,
                             "cannot encode a json.object with %s (keys must be strings or "
                             "integers)",
                             key_kind(L, -1, kind, sizeof kind));
            lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, -1)); /* .. k v k "k" */
            lua_replace(L, -4);                                          /* .. "k" v k */
            renamed = 1;
        }
        n++;
    } while (lua_next(L, idx)); /* pairs.. */
    if (n > KEYS_LOCAL)
        keys = lua_newuserdatauv(L, 2 * (size_t)n * sizeof *keys, 0); /* pairs.. box (+ tmp) */
    for (int i = 0; i < n; i++) {
        keys[i].slot = base + 1 + 2 * i;
        keys[i].s = lua_tolstring(L, keys[i].slot, &keys[i].len);
        keys[i].head = key_head(keys[i].s, keys[i].len);
    }
    keys = sort_keys(keys, keys + n, n); /* n <= KEYS_LOCAL is one run: no tmp */
    putc_(e, '{');
    for (int i = 0; i < n; i++) {
        if (renamed && i > 0 && key_cmp(&keys[i - 1], &keys[i]) == 0)
            encode_error(e,
                         "cannot encode a json.object with both integer key %s and string "
                         "key \"%s\"",
                         keys[i].s, keys[i].s);
        sg.key = keys[i].s;
        sg.klen = keys[i].len;
        encode_string(e, sg.key, sg.klen);
        putc_(e, ':');
        e->depth++;
        e->path = &sg;
        encode_value(e, keys[i].slot + 1);
        e->path = sg.up;
        e->depth--;
        putc_(e, ',');
    }
    e->buf[e->len - 1] = '}'; /* replaces the last ',' */
    lua_settop(L, base);
}

/* As lh_json_marked, with the metatables looked up once per encode. */
static lh_json_type_t table_mark(Encoder *e, int idx)
{
    const void *mt;

    if (!lua_getmetatable(e->L, idx)) /* mt? */
        return LH_JSON_NULL;
    mt = lua_topointer(e->L, -1);
    lua_pop(e->L, 1);
    if (mt == e->array_mt)
        return LH_JSON_ARRAY;
    return mt == e->object_mt ? LH_JSON_OBJECT : LH_JSON_NULL;
}

static void encode_table(Encoder *e, int idx)
{
    lua_State *L = e->L;
    lh_json_type_t mark;
    char kind[64];

    if (e->depth >= LH_JSON_MAX_DEPTH)
        encode_error(e, "cannot encode: nesting deeper than %d levels (a cycle?)",
                     LH_JSON_MAX_DEPTH);
    luaL_checkstack(L, 4, "json.encode");
    mark = table_mark(e, idx);
    lua_pushnil(L); /* nil */
    if (!lua_next(L, idx)) {
        /* Unmarked, an empty table is an object: nothing tells an empty array apart (lua-cjson
         * agrees). */
        if (mark == LH_JSON_ARRAY)
            put(e, "[]", 2);
        else
            put(e, "{}", 2);
        return;
    }
    /* k v */
    if (mark == LH_JSON_OBJECT || (mark != LH_JSON_ARRAY && lua_type(L, -2) == LUA_TSTRING)) {
        encode_object(e, idx, mark);
        return;
    }
    /* The table must be a sequence 1..n. */
    lua_pop(L, 2);
    {
        lua_Integer n = 0;
        lua_Integer max = 0;
        PathSeg sg = {e->path, NULL, 0, 0};

        lua_pushnil(L);            /* nil */
        while (lua_next(L, idx)) { /* k v */
            lua_Integer k = lua_isinteger(L, -2) ? lua_tointeger(L, -2) : 0;

            if (lua_type(L, -2) == LUA_TSTRING) {
                if (mark == LH_JSON_ARRAY)
                    encode_error(e, "cannot encode a json.array with a string key \"%.40s\"",
                                 lua_tostring(L, -2));
                encode_error(e, "cannot encode a table mixing integer keys and string keys");
            }
            if (k < 1)
                encode_error(e, "cannot encode a table with %s (arrays need keys 1..n)",
                             key_kind(L, -2, kind, sizeof kind));
            n++;
            if (k > max)
                max = k;
            lua_pop(L, 1); /* k */
        }
        if (max != n)
            encode_error(e, "cannot encode a sparse array (%lld elements, largest key %lld)",
                         (long long)n, (long long)max);
        putc_(e, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i); /* v */
            sg.index = i;
            e->depth++;
            e->path = &sg;
            encode_value(e, lua_gettop(L));
            e->path = sg.up;
            e->depth--;
            putc_(e, ',');
            lua_pop(L, 1);
        }
        e->buf[e->len - 1] = ']';
    }
}

static void encode_value(Encoder *e, int idx)
{
    lua_State *L = e->L;

    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put(e, "null", 4);
        break;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put(e, "true", 4);
        else
            put(e, "false", 5);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            encode_integer(e, lua_tointeger(L, idx));
        else
            encode_float(e, lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);

        encode_string(e, s, n);
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {
            put(e, "null", 4);
            break;
        }
        encode_error(e, "cannot encode a light userdata");
        break;
    case LUA_TTABLE:
        encode_table(e, idx);
        break;
    default:
        encode_error(e, "cannot encode a %s", luaL_typename(L, idx));
    }
}

void lh_json_encode(lua_State *L, int idx, luaL_Buffer *b)
{
    Encoder e;

    e.L = L;
    e.buf = e.init;
    e.len = 0;
    e.cap = sizeof e.init;
    e.depth = 0;
    e.path = NULL;
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 4, "json.encode");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_key);  /* amt|nil */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &object_key); /* amt|nil omt|nil */
    e.array_mt = lua_topointer(L, -2);
    e.object_mt = lua_topointer(L, -1);
    lua_pop(L, 2);  /* (the registry keeps them) */
    lua_pushnil(L); /* box? (a userdata once the output outgrows e.init) */
    e.box = lua_gettop(L);
    encode_value(&e, idx);
    if (e.buf == e.init) {
        lua_pop(L, 1); /* (back at the buffer's level) */
        luaL_addlstring(b, e.buf, e.len);
    } else {
        lua_pushlstring(L, e.buf, e.len); /* box s */
        lua_remove(L, -2);                /* s */
        luaL_addvalue(b);
    }
}
