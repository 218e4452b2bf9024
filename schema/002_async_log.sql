-- hdserver schema, migration 2: the log of an async run's posts, in a table
-- of its own used as a ring of STORE_ALOG_RING (512) slots per run, so that
-- logging a post rewrites the pages of an old row in place: no index page,
-- no freed or allocated page (with 64 KiB pages every page a commit touches
-- is a 64 KiB WAL frame). docs/STORAGE.md describes what is written per
-- commit.
--
-- id = run * 2^20 + version mod 512. A row is live while its version is
-- above the lam version stored in run_lam (state.blob_version); the engine
-- never overwrites a live row and stores lam at least every 256 updates.
-- data is the post as received (float32 for a run whose wire dtype is f4,
-- float64 otherwise); used_version is the lam version the worker computed it
-- with (staleness). The idempotency answer of a logged post is
-- {"accepted":true,"lam_version":version}: it is written to idem only when
-- lam is stored. Rows that an older server wrote to posts are still
-- replayed from there.
CREATE TABLE async_log (
    id           INTEGER PRIMARY KEY,
    run          INTEGER NOT NULL,
    version      INTEGER NOT NULL,
    used_version INTEGER NOT NULL,
    episode      INTEGER NOT NULL,
    t            INTEGER NOT NULL,
    first_slot   INTEGER NOT NULL,
    k            INTEGER NOT NULL,
    lease        TEXT    NOT NULL,
    data         BLOB    NOT NULL
);
