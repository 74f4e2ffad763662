/*
** json_escape — the one JSON string escaper (defined in json.c), for the parts that write
** JSON without Lua: answers, log lines. Kept apart from json.h so they need no Lua header.
*/
#ifndef LH_JSON_ESCAPE_H
#define LH_JSON_ESCAPE_H

#include <stddef.h>

/** The worst-case size of n bytes escaped by lh_json_escape: every byte as \u00XX. */
#define LH_JSON_ESCAPED_MAX(n) ((n)*6)

/**
 * Writes s[0..n) as the content of a JSON string (no quotes) into out, which holds cap
 * bytes; returns the bytes written. '"', '\\' and control characters (and DEL) are escaped.
 * When out is too small, the text is cut before the first byte that does not fit, never
 * inside an escape or a UTF-8 sequence, so the result is always valid JSON content. With
 * cap >= LH_JSON_ESCAPED_MAX(n) nothing is cut. The one JSON string escaper of luahook.
 */
size_t lh_json_escape(char *out, size_t cap, const char *s, size_t n);

/**
 * The length (1..4) of the UTF-8 character at p[0..n), or 0 when the bytes there are not
 * one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut short).
 */
size_t lh_utf8_seq(const char *p, size_t n);

/**
 * As lh_json_escape, and the result is valid UTF-8 whatever s holds: for text luahook
 * writes itself (log lines, answers), never for json.encode, which keeps a handler's
 * bytes. A byte that does not start a valid UTF-8 character becomes U+FFFD (3 bytes),
 * C1 controls (U+0080..U+009F) become \u0080..\u009f. A cut falls between characters.
 * `used` (if not NULL) gets how many bytes of s were written: n unless cut.
 */
size_t lh_json_escape_utf8(char *out, size_t cap, const char *s, size_t n, size_t *used);

#endif
