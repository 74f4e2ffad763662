#include "json_check.h"

#include <string.h>

size_t lh_fuzz_utf8_len(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* the second byte's range (Unicode 15, table 3-7) */
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* past U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

typedef struct {
    const unsigned char *s;
    size_t n, i;
    int depth;
} cur_t;

static void skip_ws(cur_t *c)
{
    while (c->i < c->n &&
           (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

static int is_hex(unsigned char h)
{
    return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
}

static int string(cur_t *c)
{
    c->i++; /* the opening quote */
    while (c->i < c->n) {
        unsigned char b = c->s[c->i];
        if (b == '"') {
            c->i++;
            return 1;
        }
        if (b < 0x20)
            return 0;
        if (b == '\\') {
            if (++c->i >= c->n)
                return 0;
            b = c->s[c->i];
            if (b == 'u') {
                if (c->n - c->i < 5)
                    return 0;
                for (size_t k = 1; k <= 4; k++)
                    if (!is_hex(c->s[c->i + k]))
                        return 0;
                c->i += 5;
            } else if (strchr("\"\\/bfnrt", b) != NULL && b != 0)
                c->i++;
            else
                return 0;
            continue;
        }
        size_t len = lh_fuzz_utf8_len(c->s + c->i, c->n - c->i);
        if (len == 0)
            return 0;
        c->i += len;
    }
    return 0;
}

static int digits(cur_t *c)
{
    size_t start = c->i;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9')
        c->i++;
    return c->i > start;
}

static int number(cur_t *c)
{
    if (c->s[c->i] == '-')
        c->i++;
    if (c->i < c->n && c->s[c->i] == '0')
        c->i++;
    else if (!digits(c))
        return 0;
    if (c->i < c->n && c->s[c->i] == '.') {
        c->i++;
        if (!digits(c))
            return 0;
    }
    if (c->i < c->n && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->n && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (!digits(c))
            return 0;
    }
    return 1;
}

static int literal(cur_t *c, const char *word)
{
    size_t len = strlen(word);
    if (c->n - c->i < len || memcmp(c->s + c->i, word, len) != 0)
        return 0;
    c->i += len;
    return 1;
}

static int value(cur_t *c);

/* an array or an object: `close` ends it, members are "key": value when `object` */
static int members(cur_t *c, unsigned char close, int object)
{
    if (++c->depth > 10000)
        return 0;
    c->i++;
    skip_ws(c);
    if (c->i < c->n && c->s[c->i] == close) {
        c->i++;
        c->depth--;
        return 1;
    }
    for (;;) {
        skip_ws(c);
        if (object) {
            if (c->i >= c->n || c->s[c->i] != '"' || !string(c))
                return 0;
            skip_ws(c);
            if (c->i >= c->n || c->s[c->i] != ':')
                return 0;
            c->i++;
        }
        if (!value(c))
            return 0;
        skip_ws(c);
        if (c->i >= c->n)
            return 0;
        if (c->s[c->i] == close) {
            c->i++;
            c->depth--;
            return 1;
        }
        if (c->s[c->i] != ',')
            return 0;
        c->i++;
    }
}

static int value(cur_t *c)
{
    skip_ws(c);
    if (c->i >= c->n)
        return 0;
    switch (c->s[c->i]) {
    case '"':
        return string(c);
    case '{':
        return members(c, '}', 1);
    case '[':
        return members(c, ']', 0);
    case 't':
        return literal(c, "true");
    case 'f':
        return literal(c, "false");
    case 'n':
        return literal(c, "null");
    default:
        return number(c);
    }
}

int lh_fuzz_json_valid(const char *s, size_t n, size_t *at)
{
    cur_t c = {(const unsigned char *)s, n, 0, 0};
    int ok = value(&c);
    if (ok) {
        skip_ws(&c);
        ok = c.i == n;
    }
    if (at != NULL)
        *at = c.i;
    return ok;
}
