/*
** jlog — the journal's append-only log: the point of durability of every accepted event
** (issue 12). An event is answered 200 once its record is written here and synced; the
** SQLite database (journal.c, state.c) is an index built from these records afterwards,
** off the answer's path, and rebuilt from them after a crash.
**
** Files: DIR/journal/SSSSSSSSSSSSSSSS.log, one per segment, numbered from 1 in hex. A new
** segment starts at each open and when the current one passes its size; old ones go when
** the index no longer points into them (journal.c's retention). DIR/journal/next.spare is
** the next segment's file, made ahead (jlog_spare.h).
**
** A segment: a 16-byte header ("LHJLOG\0\1", the segment number, little-endian u64), then
** records, each 8-byte aligned:
**
**   u32 payload   bytes of meta and body
**   u32 crc       CRC-32C of (segment number u64, offset u32, type u32, meta u32, payload)
**   u32 type      LH_JLOG_EVENT, LH_JLOG_END
**   u32 meta      bytes of meta; the body is the rest of the payload
**   meta, body, zero padding to 8 bytes
**
** A record is valid when its header fits the file and its CRC matches. Reading stops at
** the first invalid one: a crash while a batch was written leaves a torn tail, and nothing
** in it was answered 200 (answers wait for the batch's sync). All multi-byte numbers are
** little-endian. The position of a byte of the log is `seg << 32 | offset`.
**
** One thread writes: the loop queues records (lh_jlog_append), the log's own thread writes
** what is queued with one write and one fdatasync (group commit), and the loop learns
** the outcome of each record through its `done` callback, in the order written: a batch's
** runs' ends first, then its events, each kind in the order queued. A segment
** is appended to (pwritev), or, once lh_jlog_use_spares made its file ahead of time (zeros
** or allocated blocks, jlog_spare.h), written over it with O_DIRECT, whole blocks at a time:
** a sync then writes no file size or new blocks. Either way the bytes after the last valid
** record read as invalid (zeros).
*/
#ifndef LH_JLOG_H
#define LH_JLOG_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define LH_JLOG_DIR     "journal"
#define LH_JLOG_HEADER  16u /* a segment's header, and a record's */
#define LH_JLOG_MAX_SEG (64u << 20)
/* The journal's zero_rate (lh_jlog_use_spares): 32 MiB a second, 6 000 typical events. */
#define LH_JLOG_ZERO_RATE (32u << 20)

enum { LH_JLOG_EVENT = 1, LH_JLOG_END = 2 };

typedef struct lh_jlog_s lh_jlog_t;
typedef struct lh_jlog_rec_s lh_jlog_rec_t;

/* A record queued for writing. Made by lh_jlog_rec_new; `meta` is the caller's to fill. */
struct lh_jlog_rec_s {
    lh_jlog_rec_t *next;
    int status;       /* after the write: 0, or a negative UV_E* (not stored) */
    uint64_t at;      /* after the write: the record's position */
    uint64_t body_at; /* after the write: its body's position */
    const char *body; /* borrowed until `done` runs */
    size_t body_len;
    void (*done)(void *data, lh_jlog_rec_t *r); /* on the loop; the record is its own */
    void *data;
    uint64_t mark; /* the caller's, once `done` ran */
    uint32_t type;
    uint32_t meta_len;
    unsigned char meta[];
};

/** A record with `meta_len` bytes of meta (uninitialised); NULL when out of memory. */
lh_jlog_rec_t *lh_jlog_rec_new(uint32_t type, size_t meta_len);

/** The end position of record `r` once written (where the next record starts). */
uint64_t lh_jlog_rec_end(const lh_jlog_rec_t *r);

/**
 * Opens the log of state folder `dir` (creating DIR/journal) for appending: a new segment,
 * numbered after every one present. `seg_max`: the size past which a segment is closed
 * (0: LH_JLOG_MAX_SEG). `sync_full`: fdatasync each batch (else the page cache is enough).
 * Blocking. 0, or -1 with a message in `err`.
 */
int lh_jlog_open(lh_jlog_t **out, const char *dir, int sync_full, uint64_t seg_max, char *err,
                 size_t errlen);

/**
 * With sync_full, segments from now on are written with O_DIRECT over files made ahead of
 * time (jlog_spare.h): a sync then writes no file size or new blocks. The first such file
 * has `first` bytes, each next one twice the last, up to seg_max; until one is ready, and
 * wherever O_DIRECT is refused, segments are appended to. A file is written with zeros while
 * the segment before filled at less than `zero_rate` bytes a second (the first always),
 * else allocated (lh_jlog_spare_zeros). Before lh_jlog_start.
 */
void lh_jlog_use_spares(lh_jlog_t *log, uint64_t first, uint64_t zero_rate);
/** Starts the writing thread; `done` callbacks run on `loop`. 0 or a negative UV_E*. */
int lh_jlog_start(lh_jlog_t *log, uv_loop_t *loop);

/** Queues `r` (the log's until its `done` runs). Loop thread. */
void lh_jlog_append(lh_jlog_t *log, lh_jlog_rec_t *r);

/** Writes what is queued, stops the thread and runs every `done` left; closes the loop's
 *  handle (the loop must run before lh_jlog_free). After it, appends are written at once,
 *  on the caller. */
void lh_jlog_stop(lh_jlog_t *log);

/** Frees the log (after lh_jlog_stop). NULL is a no-op. */
void lh_jlog_free(lh_jlog_t *log);

typedef struct lh_jlog_stats_s {
    uint32_t segment; /* the one being written */
    uint64_t bytes;   /* of every segment on disk (ours) */
    uint64_t batches; /* written since the open: one write, and one sync when syncing, each */
} lh_jlog_stats_t;
lh_jlog_stats_t lh_jlog_stats(const lh_jlog_t *log);

/** What the last failed write or sync said. */
void lh_jlog_last_error(lh_jlog_t *log, char *buf, size_t len);

/** Counts `bytes` of a segment gone (retention), for lh_jlog_stats. */
void lh_jlog_forget(lh_jlog_t *log, uint64_t bytes);

/* ------------------------------------------------------------------ reading */

/* A valid record found by lh_jlog_scan; everything is borrowed for the call. */
typedef struct lh_jlog_found_s {
    uint32_t type;
    const unsigned char *meta;
    size_t meta_len;
    const char *body;
    size_t body_len;
    uint64_t at, body_at, end;
} lh_jlog_found_t;

/**
 * Calls `fn` for every valid record of DIR/journal from position `from` on, in order, segment
 * after segment (each up to its first invalid record). `fn` returns 0 to go on. Returns 0,
 * `fn`'s non-zero, or -1 with a message in `err` (a file that cannot be read).
 * `last_seg`: the highest segment number present (0: none), may be NULL.
 */
int lh_jlog_scan(const char *dir, uint64_t from, int (*fn)(void *data, const lh_jlog_found_t *f),
                 void *data, uint32_t *last_seg, char *err, size_t errlen);

/** Reads `len` bytes at position `at` of DIR/journal into `buf`. 0, or -1 with `err`. */
int lh_jlog_read(const char *dir, uint64_t at, char *buf, size_t len, char *err, size_t errlen);

/** The path of segment `seg` of state folder `dir` (DIR/journal/...) into `buf`. */
void lh_jlog_segment_path(const char *dir, uint32_t seg, char *buf, size_t len);

/** Segment numbers present in state folder `dir`'s DIR/journal, ascending, into *out (malloc'ed; *n
 * of them). 0, or -1 with `err`. */
int lh_jlog_segments(const char *dir, uint32_t **out, size_t *n, char *err, size_t errlen);

/** CRC-32C (Castagnoli) of `len` bytes, continuing `crc` (0 to start). */
uint32_t lh_jlog_crc(uint32_t crc, const void *p, size_t len);

#endif
