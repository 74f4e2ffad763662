/*
** actions — the action names Label Studio really sends (FACTS.md), and what to tell an
** operator whose on() names another one: the closest real name, or why a name that the
** docs mention never arrives.
*/
#ifndef LH_ACTIONS_H
#define LH_ACTIONS_H

#include <stddef.h>

/** 1 when Label Studio sends `action` (or it is "*"), else 0. */
int lh_actions_known(const char *action);

/**
 * Why `action` is suspicious, written into `buf` (`len` bytes): "Label Studio never sends
 * 'X': did you mean Y?" or the docs-only explanation, then how to silence it. Returns 0
 * when `action` is known (buf untouched), else 1.
 */
int lh_actions_explain(const char *action, char *buf, size_t len);

/** Levenshtein distance between `a` and `b`, case-insensitive (what every "did you mean"
 *  of luahook measures); names of 64 bytes or more count as 64 apart. */
size_t lh_actions_distance(const char *a, const char *b);

#endif
