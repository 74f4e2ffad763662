/*
** jlog_spare — the journal log's next segment file, made ahead of time (issue 12).
**
** With --sync full every batch of the log is synced. Appending to a file makes each sync
** write the file's metadata too (its size, its new blocks), one more disk round trip per
** batch. A segment written over blocks that are already allocated and written needs only
** its data written and the disk's cache flushed. So, while a segment fills, a thread of its
** own makes the next one's file ahead: DIR/journal/next.spare, `size` bytes, then synced. The
** log's writer renames it into place when it starts a segment (lh_jlog_spare_take).
**
** A spare is of one of two kinds. Written with zeros (O_DIRECT, no page cache, a few ms of
** CPU for 64 MiB), its blocks need nothing more: a sync writes the batch's data alone. But
** the zeros are as many bytes again as the log's own, and while they are written the log's
** flushes carry them: when the log fills quickly, its syncs took 1.3 ms instead of 0.4, and
** the answers' p99 rose by 2 ms. Allocated (fallocate), a spare is ready at once and writes
** nothing; a sync that first writes into a block of it also commits the block's change from
** unwritten to written, one small metadata write. lh_jlog_spare_zeros picks.
**
** Never at the cost of the events: a spare is made only while the file system keeps room
** for it and three more segments, and a reserve (5 %, at most 256 MiB); a failed one is
** removed at once; where O_DIRECT is not supported no spare is made (the log appends, as
** before).
*/
#ifndef LH_JLOG_SPARE_H
#define LH_JLOG_SPARE_H

#include <stdint.h>

#define LH_JLOG_SPARE_NAME "next.spare"
#define LH_JLOG_ALIGN      4096u /* of O_DIRECT offsets, lengths and buffers */

typedef struct lh_jlog_spare_s lh_jlog_spare_t;

/** For journal folder `jdir` (DIR/journal), spares of at most `max` bytes. A spare left by
 *  the last run is ready at once (removed when bigger). Starts the thread. NULL when out of
 *  memory or no thread can be made. */
lh_jlog_spare_t *lh_jlog_spare_new(const char *jdir, uint64_t max);
/** Asks for a spare of `size` bytes (a multiple of LH_JLOG_ALIGN), written with zeros when
 *  `zeros`, else allocated, unless one is ready or being made. Any thread. */
void lh_jlog_spare_want(lh_jlog_spare_t *sp, uint64_t size, int zeros);
/** Whether the next spare is written with zeros, the segment before having filled with
 *  `bytes` in `ns`: when that is slower than `zero_rate` bytes a second (or `ns` is 0), where
 *  the zeros cost the log's syncs nothing it notices and spare them the metadata write. */
int lh_jlog_spare_zeros(uint64_t bytes, uint64_t ns, uint64_t zero_rate);
/** Renames the ready spare to `path`, its size into *size: 0; -1: none is ready. */
int lh_jlog_spare_take(lh_jlog_spare_t *sp, const char *path, uint64_t *size);
/** Bytes of the ready spare; 0: none is ready. */
uint64_t lh_jlog_spare_bytes(lh_jlog_spare_t *sp);
/** Removes a spare left in `jdir`, ready or half made (a log that makes none). */
void lh_jlog_spare_remove(const char *jdir);
/** Stops the thread (a spare half made is removed; a ready one stays for the next run) and
 *  frees. NULL is a no-op. */
void lh_jlog_spare_free(lh_jlog_spare_t *sp);

#endif
