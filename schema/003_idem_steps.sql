-- hdserver schema, migration 3: idempotency answers of async step posts,
-- written in batches. When an async run stores lam (every 256 updates), the
-- answers of the posts logged since the previous snapshot leave the async
-- log; one row per lease holds them all (steps: pairs of little-endian int64
-- (t, lam_version); the answer is {"accepted":true,"lam_version":V}) instead
-- of one idem row per post, whose three b-trees made that commit ~2 ms long
-- (docs/STORAGE.md).
CREATE TABLE idem_steps (
    run     INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    lease   TEXT    NOT NULL,
    steps   BLOB    NOT NULL
);
CREATE INDEX idem_steps_run ON idem_steps (run, episode);
