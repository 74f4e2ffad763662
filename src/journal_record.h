/*
** journal_record — the meta of the journal log's records (jlog.h): what an accepted event
** and an attempt's end hold, written on the loop and read back by the index (journal.c),
** at start-up after a crash, and by tests. Little-endian; a string is a u32 length and its
** bytes (0xFFFFFFFF: none).
**
**   EVENT: u64 id, f64 received, u8 flags (1 project, 2 digest, 4 duplicate), i64 project,
**          i64 dup_of, [32 bytes digest], str delivery, path, remote, action, headers,
**          u32 n, str handler * n; the record's body is the event's body.
**   END:   u64 id, u32 attempt, f64 started, ended, next_at, u32 state, u8 only_run,
**          str handler, outcome, error, traceback.
*/
#ifndef LH_JOURNAL_RECORD_H
#define LH_JOURNAL_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "retry.h"

typedef struct lh_jrec_event_s {
    int64_t id;
    double received;
    int has_project;
    int64_t project;
    int64_t dup_of;              /* the original's id: a duplicate (--dedup-window); 0: none */
    const unsigned char *digest; /* 32 bytes (--dedup-window), or NULL */
    const char *delivery, *path, *remote, *action, *headers; /* remote, action: may be NULL */
    size_t delivery_len, path_len, remote_len, action_len, headers_len;
    uint32_t nhandlers;
    const char *const *handlers;     /* writing: the handler ids */
    const unsigned char *next, *end; /* reading: where the handler ids are */
    uint32_t handlers_read;          /* reading: how many lh_jrec_event_handler gave */
} lh_jrec_event_t;

typedef struct lh_jrec_end_s {
    int64_t id;
    int attempt, only_run;
    double started, ended, next_at; /* next_at 0: none */
    lh_run_state_t state;
    const char *handler, *outcome, *error, *traceback; /* error, traceback: may be NULL */
    size_t handler_len, outcome_len, error_len, traceback_len;
} lh_jrec_end_t;

/** Bytes of meta `e` takes; its meta written into `out` (that many bytes). */
size_t lh_jrec_event_size(const lh_jrec_event_t *e);
void lh_jrec_event_write(unsigned char *out, const lh_jrec_event_t *e);
/** Reads meta into `e` (pointers into it). 0, or -1 when it is not an event's meta. */
int lh_jrec_event_read(const unsigned char *meta, size_t len, lh_jrec_event_t *e);
/** After lh_jrec_event_read: the next handler id (NULL after the last, or if malformed). */
const char *lh_jrec_event_handler(lh_jrec_event_t *e, size_t *len);

/** The delivery id a record's meta starts with (an event's or an end's); 0 when too short. */
int64_t lh_jrec_id(const unsigned char *meta, size_t len);

size_t lh_jrec_end_size(const lh_jrec_end_t *e);
void lh_jrec_end_write(unsigned char *out, const lh_jrec_end_t *e);
int lh_jrec_end_read(const unsigned char *meta, size_t len, lh_jrec_end_t *e);

#endif
