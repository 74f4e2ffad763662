/*
** urlencoded — decoding application/x-www-form-urlencoded text: the API's query strings
** and the console's sign-in and sign-out forms.
*/
#ifndef LH_URLENCODED_H
#define LH_URLENCODED_H

#include <stddef.h>

/**
 * Decodes s[0..n) (%XX escapes, '+' for a space) into `out`, which holds `outlen` bytes,
 * NUL-terminated. Returns the decoded length, or -1 on a bad escape, an escaped NUL byte
 * (no C string could hold the value), or no room. The decoded text is never longer than n.
 */
long lh_url_decode(const char *s, size_t n, char *out, size_t outlen);

#endif
