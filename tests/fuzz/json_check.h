/*
** json_check — is a text exactly one JSON value (RFC 8259) in well-formed UTF-8? A checker
** that builds nothing, written apart from src/json.c so that the fuzz targets never judge
** the code under test by itself.
*/
#ifndef LH_FUZZ_JSON_CHECK_H
#define LH_FUZZ_JSON_CHECK_H

#include <stddef.h>

/** 1 when s[0..n) is one JSON value with optional whitespace around it; else 0, and *at
 *  (when not NULL) gets the offset of the first byte that is wrong. */
int lh_fuzz_json_valid(const char *s, size_t n, size_t *at);

/** The length of the well-formed UTF-8 sequence at s (at most n bytes): 1 to 4, or 0 when
 *  the bytes there are not one (overlong, surrogate, past U+10FFFF, cut). */
size_t lh_fuzz_utf8_len(const unsigned char *s, size_t n);

#endif
