/*
** log — the one sink every part writes to (C side and Lua's log.*).
** A line is a level, a message and key/value fields; text or JSON per --log-format.
** The sink is process-wide, like Redis's serverLog: a log line never depends on loop state.
*/
#ifndef LH_LOG_H
#define LH_LOG_H

#include <stddef.h>

typedef enum {
    LH_DEBUG = 0,
    LH_INFO,
    LH_WARN,
    LH_ERROR,
} lh_level_t;

typedef enum {
    LH_LOG_TEXT = 0,
    LH_LOG_JSON,
} lh_log_format_t;

/* A field value is a string or a raw JSON number; `number` fields are written unquoted. */
typedef struct {
    const char *key;
    const char *val; /* borrowed for the duration of the call */
    size_t len;      /* (size_t)-1: NUL-terminated */
    int number;      /* 1: val is a number literal */
} lh_field_t;

/*
** A list of fields that keeps copies of its keys and values: a line built by several parts
** before it is written (the start-up line: main adds the scripts and the secret, the state
** layer where state is kept). Bounded; what does not fit is dropped.
*/
#define LH_FIELDSET_MAX 16
typedef struct lh_fieldset_s {
    lh_field_t fields[LH_FIELDSET_MAX]; /* key and val point into buf */
    size_t n;
    char buf[2048]; /* owned storage of the copies */
    size_t used;
} lh_fieldset_t;

/** Appends a copy of key=val (`number`: written unquoted), or replaces the value of the
 *  field `key` already there, keeping its place. -1 when it does not fit. */
int lh_fieldset_set(lh_fieldset_t *s, const char *key, const char *val, int number);

void lh_log_setup(lh_level_t level, lh_log_format_t format);
int lh_log_enabled(lh_level_t level);

/** Writes one line with `n` fields if `level` is enabled. */
void lh_log_fields(lh_level_t level, const char *msg, const lh_field_t *fields, size_t n);

/** printf-style message without fields; formats only when the level is enabled. */
void lh_log_printf(lh_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/**
 * The error line of a run of Lua code that failed — a handler ("handler failed") or a
 * timer callback ("timer failed"): `msg`, then id, action and handler (the handler's stable
 * id) when not NULL, script, line, outcome, error and traceback ("" when NULL). Everything
 * is borrowed for the call.
 */
void lh_log_run_failed(const char *msg, const char *id, const char *action, const char *handler,
                       const char *script, int line, const char *outcome, const char *err,
                       const char *traceback);

#define LH_FIELD(k, v)     ((lh_field_t){(k), (v), (size_t)-1, 0})
#define LH_FIELDN(k, v, n) ((lh_field_t){(k), (v), (n), 0})
#define LH_FIELD_NUM(k, v) ((lh_field_t){(k), (v), (size_t)-1, 1})

#define LH_LOG(level, ...)                                                                         \
    do {                                                                                           \
        if (lh_log_enabled(level))                                                                 \
            lh_log_printf(level, __VA_ARGS__);                                                     \
    } while (0)

#endif
