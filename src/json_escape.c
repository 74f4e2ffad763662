/*
** json_escape — UTF-8 checking for the text luahook writes itself (log lines, /metrics,
** answers). The byte-exact escaper, lh_json_escape, stays in json.c beside json.encode,
** which must keep a handler's bytes as they are.
*/
#include "json_escape.h"

size_t lh_utf8_seq(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    unsigned char c, lo = 0x80, hi = 0xBF;
    size_t len;
    if (n == 0)
        return 0; /* before reading s[0]: p may point at the end of its buffer */
    c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF; /* <= U+10FFFF */
    else
        return 0; /* a continuation byte, an overlong lead (C0, C1) or F5..FF */
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* U+0080..U+009F: C1 controls, which some terminals obey (U+009B is CSI) */
static int is_c1(const char *p, size_t len)
{
    return len == 2 && (unsigned char)p[0] == 0xC2 && (unsigned char)p[1] < 0xA0;
}

size_t lh_json_escape_utf8(char *out, size_t cap, const char *s, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    static const char repl[] = "\xEF\xBF\xBD"; /* U+FFFD */
    size_t o = 0, i = 0;

    while (i < n) {
        /* a run of valid characters that surely fits goes through the one escaper whole */
        size_t j = i, budget = (cap - o) / 6;
        for (;;) {
            size_t len = lh_utf8_seq(s + j, n - j);
            if (len == 0 || is_c1(s + j, len) || j + len - i > budget)
                break;
            j += len;
        }
        if (j > i) {
            o += lh_json_escape(out + o, cap - o, s + i, j - i);
            i = j;
            continue;
        }
        size_t len = lh_utf8_seq(s + i, n - i);
        if (len == 0) { /* not UTF-8: the replacement character */
            if (cap - o < 3)
                break;
            for (int k = 0; k < 3; k++)
                out[o++] = repl[k];
            i++;
        } else if (is_c1(s + i, len)) {
            if (cap - o < 6)
                break;
            unsigned char c = (unsigned char)s[i + 1];
            out[o++] = '\\', out[o++] = 'u', out[o++] = '0', out[o++] = '0';
            out[o++] = hex[c >> 4], out[o++] = hex[c & 15];
            i += 2;
        } else { /* one character near the end of room: whole, or the text ends here */
            size_t w = lh_json_escape(out + o, cap - o, s + i, len);
            if (w == 0)
                break;
            o += w;
            i += len;
        }
    }
    if (used != NULL)
        *used = i;
    return o;
}
