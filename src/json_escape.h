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

#endif
