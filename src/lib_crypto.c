/*
** crypto — hashing, HMAC, hex and base64, a constant-time compare, random bytes, and
** Standard Webhooks (https://www.standardwebhooks.com/) signatures, on OpenSSL's
** libcrypto. Nothing here waits: every function may run at load time or in a handler.
**
** Signatures (the stubs for editors are generated from this table):
**
**   crypto.hmac(alg, key, data [, enc]) -> string        alg: "sha1"|"sha256"|"sha384"|"sha512"
**   crypto.sha1(data [, enc]) -> string                  enc: "hex" (default)|"base64"|"raw"
**   crypto.sha256(data [, enc]) -> string
**   crypto.sha384(data [, enc]) -> string
**   crypto.sha512(data [, enc]) -> string
**   crypto.hex(s) -> string                              lower-case
**   crypto.unhex(s) -> string | nil, msg                 either case
**   crypto.base64(s [, variant]) -> string               variant: "std" (default, padded)
**   crypto.unbase64(s [, variant]) -> string | nil, msg    | "url" (-_ alphabet, unpadded)
**   crypto.equal(a, b) -> boolean                        constant time; lengths may leak
**   crypto.random(n) -> string | nil, msg                n raw bytes, 0 <= n <= 65536
**   crypto.webhook_sign(secret, msg_id, timestamp, body) -> "v1,<base64>"
**   crypto.webhook_headers(secret, body [, msg_id [, timestamp]])
**       -> { ["webhook-id"], ["webhook-timestamp"], ["webhook-signature"] }
**   crypto.webhook_verify(secret, headers, body [, tolerance_s]) -> true | nil, msg, kind
**       kind: "missing" | "timestamp" | "signature"; tolerance_s defaults to 300
**
** A Standard Webhooks secret "whsec_<base64>" is decoded; any other string is the key's
** raw bytes. Misuse (a wrong type, an unknown algorithm or encoding, a bad whsec_ secret)
** raises; input that merely fails to decode or verify returns nil, msg[, kind].
**
** Memory: outputs are built in Lua buffers or on the C stack, and OpenSSL's contexts live
** only between two lines that call no Lua, so a Lua error never leaks.
*/
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <lauxlib.h>

#include "lib.h"

#define WEBHOOK_SECRET_PREFIX "whsec_"
#define WEBHOOK_TOLERANCE_S   300.0
#define RANDOM_MAX            65536

static const char *const alg_names[] = {"sha1", "sha256", "sha384", "sha512", NULL};
enum { ENC_HEX, ENC_BASE64, ENC_RAW };
static const char *const enc_names[] = {"hex", "base64", "raw", NULL};
static const char *const b64_variants[] = {"std", "url", NULL};

static const EVP_MD *md_of(int alg)
{
    switch (alg) {
    case 0:
        return EVP_sha1();
    case 1:
        return EVP_sha256();
    case 2:
        return EVP_sha384();
    default:
        assert(alg == 3);
        return EVP_sha512();
    }
}

/* ------------------------------------------------------------------ encodings */

static const char hex_digits[] = "0123456789abcdef";
static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_len(size_t n, int url)
{
    return url ? (n / 3) * 4 + (n % 3 == 0 ? 0 : n % 3 + 1) : (n + 2) / 3 * 4;
}

/* Writes b64_len(n, url) characters to out (no terminator). */
static void b64_encode(const unsigned char *p, size_t n, char *out, int url)
{
    const char *a = url ? b64_url : b64_std;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *out++ = a[v >> 18];
        *out++ = a[(v >> 12) & 63];
        *out++ = a[(v >> 6) & 63];
        *out++ = a[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *out++ = a[v >> 18];
        *out++ = a[(v >> 12) & 63];
        if (i + 1 < n)
            *out++ = a[(v >> 6) & 63];
        else if (!url)
            *out++ = '=';
        if (!url)
            *out++ = '=';
    }
}

static int b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes base64 into out (room for n / 4 * 3 + 2 bytes); the '=' padding is optional but,
** when there, must be right. Returns the decoded length, or -1 with *why set. */
static ptrdiff_t b64_decode(const char *s, size_t n, unsigned char *out, int url, const char **why,
                            size_t *at)
{
    size_t m = n;
    if (n > 0 && n % 4 == 0 && s[n - 1] == '=') {
        m--;
        if (s[n - 2] == '=')
            m--;
    }
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < m; i++) {
        int v = b64_value((unsigned char)s[i], url);
        if (v < 0) {
            *why = "invalid character", *at = i + 1;
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (m % 4 == 1 || (m != n && m % 4 + (n - m) != 4)) {
        *why = "wrong length or padding", *at = 0;
        return -1;
    }
    return (ptrdiff_t)o;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)(c | 0x20);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Pushes p[0..n) encoded as enc. */
static void push_encoded(lua_State *L, const unsigned char *p, size_t n, int enc)
{
    luaL_Buffer b;
    if (enc == ENC_RAW) {
        lua_pushlstring(L, (const char *)p, n);
    } else if (enc == ENC_HEX) {
        if (n > (SIZE_MAX - 1) / 2)
            luaL_error(L, "crypto: string too large to encode");
        char *o = luaL_buffinitsize(L, &b, 2 * n);
        for (size_t i = 0; i < n; i++) {
            o[2 * i] = hex_digits[p[i] >> 4];
            o[2 * i + 1] = hex_digits[p[i] & 15];
        }
        luaL_pushresultsize(&b, 2 * n);
    } else {
        assert(enc == ENC_BASE64);
        if (n > SIZE_MAX / 4 * 3 - 3)
            luaL_error(L, "crypto: string too large to encode");
        size_t len = b64_len(n, 0);
        b64_encode(p, n, luaL_buffinitsize(L, &b, len), 0);
        luaL_pushresultsize(&b, len);
    }
}

static int crypto_hex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    push_encoded(L, (const unsigned char *)s, n, ENC_HEX);
    return 1;
}

static int crypto_unhex(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (n % 2 != 0) {
        luaL_pushfail(L);
        lua_pushfstring(L, "unhex: odd length (%I)", (lua_Integer)n);
        return 2;
    }
    luaL_Buffer b;
    unsigned char *o = (unsigned char *)luaL_buffinitsize(L, &b, n / 2);
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_value((unsigned char)s[i]), lo = hex_value((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0) {
            luaL_pushfail(L);
            lua_pushfstring(L, "unhex: not a hex digit at byte %I",
                            (lua_Integer)(hi < 0 ? i + 1 : i + 2));
            return 2;
        }
        o[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    luaL_pushresultsize(&b, n / 2);
    return 1;
}

static int crypto_base64(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int url = luaL_checkoption(L, 2, "std", b64_variants);
    if (n > SIZE_MAX / 4 * 3 - 3)
        return luaL_error(L, "base64: string too large");
    luaL_Buffer b;
    size_t len = b64_len(n, url);
    b64_encode((const unsigned char *)s, n, luaL_buffinitsize(L, &b, len), url);
    luaL_pushresultsize(&b, len);
    return 1;
}

static int crypto_unbase64(lua_State *L)
{
    size_t n, at = 0;
    const char *s = luaL_checklstring(L, 1, &n);
    int url = luaL_checkoption(L, 2, "std", b64_variants);
    const char *why = NULL;
    luaL_Buffer b;
    unsigned char *o = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 2);
    ptrdiff_t len = b64_decode(s, n, o, url, &why, &at);
    if (len < 0) {
        luaL_pushfail(L);
        if (at > 0)
            lua_pushfstring(L, "unbase64: %s at byte %I", why, (lua_Integer)at);
        else
            lua_pushfstring(L, "unbase64: %s", why);
        return 2;
    }
    luaL_pushresultsize(&b, (size_t)len);
    return 1;
}

/* ------------------------------------------------------------------ digests, HMAC */

/* Returns nil, "<what>: <OpenSSL's reason>" (a failure of the library, not of the input). */
static int openssl_fail(lua_State *L, const char *what)
{
    char reason[256];
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e != 0)
        ERR_error_string_n(e, reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "failed");
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", what, reason);
    return 2;
}

static int digest(lua_State *L, int alg, const char *name)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    int enc = luaL_checkoption(L, 2, "hex", enc_names);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(s, n, md, &len, md_of(alg), NULL))
        return openssl_fail(L, name);
    push_encoded(L, md, len, enc);
    return 1;
}

static int crypto_sha1(lua_State *L)
{
    return digest(L, 0, "sha1");
}

static int crypto_sha256(lua_State *L)
{
    return digest(L, 1, "sha256");
}

static int crypto_sha384(lua_State *L)
{
    return digest(L, 2, "sha384");
}

static int crypto_sha512(lua_State *L)
{
    return digest(L, 3, "sha512");
}

typedef struct {
    const void *p;
    size_t n;
} part_t;

/* HMAC of the concatenated parts into out (EVP_MAX_MD_SIZE bytes). Calls no Lua: the
** OpenSSL objects are freed before it returns. Returns 0, or -1 (OpenSSL's error queue
** says why). */
static int hmac_parts(int alg, const void *key, size_t keylen, const part_t *parts, int nparts,
                      unsigned char *out, size_t *outlen)
{
    int rc = -1;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)alg_names[alg], 0),
        OSSL_PARAM_construct_end(),
    };
    if (ctx == NULL || !EVP_MAC_init(ctx, keylen > 0 ? key : "", keylen, params))
        goto done;
    for (int i = 0; i < nparts; i++)
        if (!EVP_MAC_update(ctx, parts[i].p, parts[i].n))
            goto done;
    if (!EVP_MAC_final(ctx, out, outlen, EVP_MAX_MD_SIZE))
        goto done;
    rc = 0;
done:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

static int crypto_hmac(lua_State *L)
{
    int alg = luaL_checkoption(L, 1, NULL, alg_names);
    size_t keylen, n;
    const char *key = luaL_checklstring(L, 2, &keylen);
    const char *data = luaL_checklstring(L, 3, &n);
    int enc = luaL_checkoption(L, 4, "hex", enc_names);
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t len = 0;
    part_t part = {data, n};
    if (hmac_parts(alg, key, keylen, &part, 1, md, &len) < 0)
        return openssl_fail(L, "hmac");
    push_encoded(L, md, len, enc);
    return 1;
}

/* ------------------------------------------------------------------ equal, random */

static int crypto_equal(lua_State *L)
{
    size_t na, nb;
    luaL_checktype(L, 1, LUA_TSTRING);
    luaL_checktype(L, 2, LUA_TSTRING);
    const char *a = lua_tolstring(L, 1, &na);
    const char *b = lua_tolstring(L, 2, &nb);
    lua_pushboolean(L, na == nb && CRYPTO_memcmp(a, b, na) == 0);
    return 1;
}

static int crypto_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0 && n <= RANDOM_MAX, 1, "from 0 to 65536 bytes");
    luaL_Buffer b;
    unsigned char *o = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
    if (n > 0 && RAND_bytes(o, (int)n) != 1)
        return openssl_fail(L, "random");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* ------------------------------------------------------------------ Standard Webhooks */

/* The key of a secret at arg: "whsec_<base64>" decoded (into a userdata left on the stack),
** or the string's own bytes. A whsec_ secret that does not decode raises. */
static const unsigned char *check_secret(lua_State *L, int arg, size_t *keylen)
{
    size_t n, at = 0;
    const char *s = luaL_checklstring(L, arg, &n);
    size_t plen = sizeof(WEBHOOK_SECRET_PREFIX) - 1;
    if (n < plen || memcmp(s, WEBHOOK_SECRET_PREFIX, plen) != 0) {
        *keylen = n;
        return (const unsigned char *)s;
    }
    const char *why = NULL;
    unsigned char *key = lua_newuserdatauv(L, (n - plen) / 4 * 3 + 2, 0);
    ptrdiff_t len = b64_decode(s + plen, n - plen, key, 0, &why, &at);
    if (len <= 0)
        luaL_argerror(L, arg, "a whsec_ secret must be followed by base64 (whsec_MfKQ9r8G...)");
    *keylen = (size_t)len;
    return key;
}

/* Signature bytes of msg_id.timestamp.body into sig (EVP_MAX_MD_SIZE); 0 or -1. */
static int webhook_mac(const unsigned char *key, size_t keylen, const char *id, size_t idlen,
                       const char *ts, size_t tslen, const char *body, size_t bodylen,
                       unsigned char *sig, size_t *siglen)
{
    part_t parts[] = {{id, idlen}, {".", 1}, {ts, tslen}, {".", 1}, {body, bodylen}};
    return hmac_parts(1, key, keylen, parts, 5, sig, siglen);
}

/* "v1," + base64 of 32 bytes, and a terminator */
#define SIGNATURE_SIZE (3 + 44 + 1)

/* Pushes "v1,<base64>" for the message, or returns -1 (OpenSSL failed). */
static int push_signature(lua_State *L, const unsigned char *key, size_t keylen, const char *id,
                          size_t idlen, lua_Integer ts, const char *body, size_t bodylen)
{
    char tsbuf[32], out[SIGNATURE_SIZE] = "v1,";
    int tslen = snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
    unsigned char sig[EVP_MAX_MD_SIZE];
    size_t siglen = 0;
    if (webhook_mac(key, keylen, id, idlen, tsbuf, (size_t)tslen, body, bodylen, sig, &siglen) < 0)
        return -1;
    assert(siglen == 32);
    b64_encode(sig, siglen, out + 3, 0);
    lua_pushlstring(L, out, SIGNATURE_SIZE - 1);
    return 0;
}

static lua_Integer check_timestamp(lua_State *L, int arg)
{
    lua_Integer ts = luaL_checkinteger(L, arg);
    luaL_argcheck(L, ts >= 0, arg, "a timestamp is seconds since the epoch, not negative");
    return ts;
}

static lua_Integer wall_now(lua_State *L)
{
    lh_vm_t *vm = lua_touserdata(L, lua_upvalueindex(1));
    return (lua_Integer)floor(lh_clock_wall(vm->clock));
}

static int crypto_webhook_sign(lua_State *L)
{
    size_t keylen, idlen, bodylen;
    const char *id = luaL_checklstring(L, 2, &idlen);
    lua_Integer ts = check_timestamp(L, 3);
    const char *body = luaL_checklstring(L, 4, &bodylen);
    const unsigned char *key = check_secret(L, 1, &keylen);
    if (push_signature(L, key, keylen, id, idlen, ts, body, bodylen) < 0)
        return openssl_fail(L, "webhook_sign");
    return 1;
}

static int crypto_webhook_headers(lua_State *L)
{
    size_t keylen, idlen, bodylen;
    const char *body = luaL_checklstring(L, 2, &bodylen);
    lua_settop(L, 4);
    if (lua_isnil(L, 3)) {
        unsigned char rnd[16];
        if (RAND_bytes(rnd, sizeof(rnd)) != 1)
            return openssl_fail(L, "webhook_headers");
        lua_pushliteral(L, "msg_");
        push_encoded(L, rnd, sizeof(rnd), ENC_HEX);
        lua_concat(L, 2);
        lua_replace(L, 3);
    }
    const char *id = luaL_checklstring(L, 3, &idlen);
    lua_Integer ts = lua_isnil(L, 4) ? wall_now(L) : check_timestamp(L, 4);
    const unsigned char *key = check_secret(L, 1, &keylen); /* may push the key */
    lua_createtable(L, 0, 3);                               /* ... headers */
    lua_pushvalue(L, 3);
    lua_setfield(L, -2, "webhook-id");
    lua_pushfstring(L, "%I", ts);
    lua_setfield(L, -2, "webhook-timestamp");
    if (push_signature(L, key, keylen, id, idlen, ts, body, bodylen) < 0)
        return openssl_fail(L, "webhook_headers");
    lua_setfield(L, -2, "webhook-signature");
    return 1;
}

/* Pushes headers[name], or the value of a key equal to name ignoring case. */
static void get_header(lua_State *L, int idx, const char *name)
{
    if (lua_getfield(L, idx, name) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) { /* key value */
        if (lua_type(L, -2) == LUA_TSTRING && strcasecmp(lua_tostring(L, -2), name) == 0) {
            lua_remove(L, -2); /* value */
            return;
        }
        lua_pop(L, 1);
    }
    lua_pushnil(L);
}

static int verify_fail(lua_State *L, const char *kind, const char *fmt, const char *arg)
{
    luaL_pushfail(L);
    lua_pushfstring(L, fmt, arg);
    lua_pushstring(L, kind);
    return 3;
}

/* Does one "v1,<base64>" of the signature header match sig? */
static int signature_matches(const char *tok, size_t n, const unsigned char *sig, size_t siglen)
{
    unsigned char got[64];
    const char *why;
    size_t at;
    if (n < 3 || memcmp(tok, "v1,", 3) != 0 || (n - 3) / 4 * 3 + 2 > sizeof(got))
        return 0;
    ptrdiff_t len = b64_decode(tok + 3, n - 3, got, 0, &why, &at);
    return len == (ptrdiff_t)siglen && CRYPTO_memcmp(got, sig, siglen) == 0;
}

static int crypto_webhook_verify(lua_State *L)
{
    static const char *const names[] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
    size_t keylen, bodylen, v[3];
    const char *h[3];
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *body = luaL_checklstring(L, 3, &bodylen);
    double tolerance = luaL_optnumber(L, 4, WEBHOOK_TOLERANCE_S);
    luaL_argcheck(L, tolerance >= 0, 4, "tolerance is seconds, not negative");
    lua_settop(L, 4);
    const unsigned char *key = check_secret(L, 1, &keylen); /* may push the key */
    for (int i = 0; i < 3; i++) {
        get_header(L, 2, names[i]); /* stays on the stack: h[i] points into it */
        if (lua_type(L, -1) != LUA_TSTRING)
            return verify_fail(L, "missing", "webhook: no %s header", names[i]);
        h[i] = lua_tolstring(L, -1, &v[i]);
    }

    long long ts = (v[1] > 0 && v[1] <= 18 && strspn(h[1], "0123456789") == v[1])
                       ? strtoll(h[1], NULL, 10)
                       : -1;
    if (ts < 0)
        return verify_fail(L, "timestamp", "webhook: webhook-timestamp is not a number: %s",
                           v[1] > 32 ? "(long)" : h[1]);
    double age = (double)wall_now(L) - (double)ts;
    if (age > tolerance)
        return verify_fail(L, "timestamp", "webhook: timestamp %s is too old", h[1]);
    if (-age > tolerance)
        return verify_fail(L, "timestamp", "webhook: timestamp %s is in the future", h[1]);

    unsigned char sig[EVP_MAX_MD_SIZE];
    size_t siglen = 0;
    if (webhook_mac(key, keylen, h[0], v[0], h[1], v[1], body, bodylen, sig, &siglen) < 0)
        return openssl_fail(L, "webhook_verify");
    /* space-separated "v1,<base64>" (a comma after one: headers joined by ", ") */
    int ok = 0;
    for (const char *p = h[2], *e = h[2] + v[2]; p < e;) {
        size_t n = strcspn(p, " ");
        if (p + n > e)
            n = (size_t)(e - p);
        size_t m = n > 0 && p[n - 1] == ',' ? n - 1 : n;
        ok |= signature_matches(p, m, sig, siglen);
        p += n + 1;
    }
    if (!ok)
        return verify_fail(L, "signature", "webhook: %s", "no signature matches");
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------ module */

static const luaL_Reg crypto_funcs[] = {
    {"hmac", crypto_hmac},
    {"sha1", crypto_sha1},
    {"sha256", crypto_sha256},
    {"sha384", crypto_sha384},
    {"sha512", crypto_sha512},
    {"hex", crypto_hex},
    {"unhex", crypto_unhex},
    {"base64", crypto_base64},
    {"unbase64", crypto_unbase64},
    {"equal", crypto_equal},
    {"random", crypto_random},
    {"webhook_sign", crypto_webhook_sign},
    {"webhook_headers", crypto_webhook_headers},
    {"webhook_verify", crypto_webhook_verify},
    {NULL, NULL},
};

int luaopen_lh_crypto(lua_State *L)
{
    luaL_newlibtable(L, crypto_funcs);
    lua_pushvalue(L, lua_upvalueindex(1)); /* the VM: webhook timestamps read its clock */
    luaL_setfuncs(L, crypto_funcs, 1);
    return 1;
}
