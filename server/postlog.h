/* The post log of an async run: a redo log, beside the SQLite database, of
 * the posts acknowledged since the run's last lam snapshot in SQLite
 * (docs/STORAGE.md, "Async posts: the post log"). SQLite stays the source
 * of truth for everything else; a record only says "this post was applied
 * as lam version V" and is dead once a snapshot with blob_version >= V is
 * committed.
 *
 * Files: <db>-plog-<run>-<gen>, one per generation; the committer starts a
 * new generation when it takes a lam snapshot and retires the old ones once
 * that snapshot is committed (one retired file is kept and renamed for the
 * next generation, so that its pages are rewritten in the page cache).
 * Records are self-validating (a CRC-32C of the header, which holds the
 * generation, the length and CRC-32Cs of the data): recovery reads each
 * file up to its first invalid record (a torn, never acknowledged tail, or
 * an older generation's leftovers in a reused file).
 *
 * Thread-safety: none; the engine calls everything under the run lock,
 * except postlog_data_crc (pure) and postlog_fsync (on an fd taken under the
 * lock, which only the committer thread closes). */
#ifndef HD_SERVER_POSTLOG_H
#define HD_SERVER_POSTLOG_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

typedef struct postlog postlog_t;

/* One post. All pointers are borrowed. */
typedef struct {
    int64_t episode, t, first_slot, k; /* as the async_log row */
    int64_t version;                   /* lam version the post produced */
    int64_t used;                      /* lam version the worker computed it with */
    const char *lease;                 /* NUL-terminated, at most POSTLOG_LEASE_MAX bytes */
    const void *data;                  /* the post as received (f4) or as doubles (f8) */
    size_t len;                        /* bytes of data */
    uint32_t data_crc[3];              /* postlog_data_crc(data, len) */
} postlog_rec;

#define POSTLOG_LEASE_MAX 39

/* CRC-32C (Castagnoli) of buf; SSE4.2 when the CPU has it. Thread-safe. */
uint32_t postlog_crc(const void *buf, size_t len);
/* The CRC-32Cs of the three parts of a record's data (len / 24 * 8 bytes,
 * as many, the rest), computed as three independent chains: ~3x faster
 * than one CRC of the whole. Thread-safe. */
void postlog_data_crc(const void *buf, size_t len, uint32_t out[3]);

/* A log for run `run` of the database at db_path (copied); no file is
 * touched. sync_full: postlog_take_sync reports writes to fsync. Returns
 * HD_OK or HD_ENOMEM. */
hd_rc postlog_new(const char *db_path, int64_t run, int sync_full, postlog_t **out, hd_err *err);
/* Close the files (they stay on disk). NULL allowed. */
void postlog_free(postlog_t *pl);

/* Recovery (before any append): read every generation file of the run in
 * generation order and call cb for each valid record, as a store_row of
 * STORE_T_ALOG (i: episode t first_slot k version used; t1 lease; b1 data),
 * stopping each file at its first invalid record. New records then go to a
 * generation above every file found. Returns HD_OK, the callback's error,
 * HD_EDB on I/O errors or HD_ENOMEM. */
hd_rc postlog_replay(postlog_t *pl, store_row_cb cb, void *ctx, hd_err *err);

/* Delete every file of the run (before any append): a new run must not
 * inherit the files of an older database's run with the same id, and a
 * finished run needs none. Returns HD_OK or HD_EDB. */
hd_rc postlog_purge(postlog_t *pl, hd_err *err);

/* Append rec to the current generation (creating or reusing its file).
 * When it returns HD_OK the record is in the page cache (it survives a
 * crash of the process). On failure nothing is counted as written (the next
 * append overwrites what a partial write left). Returns HD_OK or HD_EDB. */
hd_rc postlog_append(postlog_t *pl, const postlog_rec *rec, hd_err *err);
/* Undo the last append (its post was not applied): its header is zeroed,
 * so recovery stops before it, and the next append overwrites it. */
void postlog_unappend(postlog_t *pl);

/* The committer takes a lam snapshot (lam at the newest logged version):
 * the next append starts a new generation. Returns the generation that the
 * snapshot covers (to pass to postlog_retire after the commit), or -1 when
 * nothing was appended since the last rotation. */
int64_t postlog_rotate(postlog_t *pl);
/* The snapshot that covers every generation <= gen is committed: delete
 * their files, keeping one for reuse unless keep_spare is 0 (the run
 * finished: postlog_retire(pl, INT64_MAX, 0) removes everything). */
void postlog_retire(postlog_t *pl, int64_t gen, int keep_spare);

/* The fd of the current file when appends since the last call need an
 * fdatasync (else -1): with --sync full always, else only when force is set
 * (a commit is about to store a state that counts posts after the stored
 * lam: they must reach the disk first). *dir is set to 1 when a file was
 * created or renamed since (its directory must be fsynced too). */
int postlog_take_sync(postlog_t *pl, int force, int *dir);
/* fdatasync(fd) and, when dir, fsync the directory. Returns HD_OK or HD_EDB. */
hd_rc postlog_fsync(const postlog_t *pl, int fd, int dir, hd_err *err);

#endif
