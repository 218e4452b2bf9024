-- hdserver schema, migration 1. Applied at server start inside one
-- transaction; the version is recorded in schema_migrations. Tensors are
-- BLOBs of little-endian float64 (the server's exact state, whatever the
-- run's wire dtype). The database is created with page_size 65536 (set by
-- the server before the first table exists) because large BLOB rows cost
-- CPU per page.

-- One row per run: the immutable spec and token. The hot state lives in
-- three tables of its own so that updating one (the engine state on every
-- commit, lam and the Adam moments on snapshots, phi once per episode) never
-- rewrites the large BLOBs of the others.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    created_at   REAL    NOT NULL,             -- unix seconds
    spec         TEXT    NOT NULL,             -- canonical spec JSON
    worker_token TEXT    NOT NULL,             -- 64 hex chars
    n_lam        INTEGER NOT NULL,
    n_w          INTEGER NOT NULL
);
CREATE TABLE run_state (
    run        INTEGER PRIMARY KEY,            -- runs.id
    state      TEXT    NOT NULL,               -- engine snapshot (JSON)
    updated_at REAL    NOT NULL
);
CREATE TABLE run_lam (
    run   INTEGER PRIMARY KEY,
    lam   BLOB NOT NULL,                       -- n_lam float64
    opt_m BLOB,                                -- Adam first moment (NULL for SGD)
    opt_v BLOB                                 -- Adam second moment
);
CREATE TABLE run_phi (
    run INTEGER PRIMARY KEY,
    phi BLOB NOT NULL                          -- n_w float64
);

-- Posts: the open step of a sync run (kept until all B slots are in), and
-- the log of an async run's posts since its lam was last stored (replayed on
-- restart; version = lam version the post produced).
-- Every lam version of the current episode of a sync run (and the last one
-- of the previous episode), so that a worker taking over a slot can replay.
CREATE TABLE lam_hist (
    run     INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lam     BLOB    NOT NULL
);
CREATE UNIQUE INDEX lam_hist_key ON lam_hist (run, version);

CREATE TABLE posts (
    run        INTEGER NOT NULL,
    episode    INTEGER NOT NULL,
    t          INTEGER NOT NULL,
    lease      TEXT    NOT NULL,
    first_slot INTEGER NOT NULL,
    k          INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    data       BLOB    NOT NULL
);
CREATE UNIQUE INDEX posts_key ON posts (run, episode, t, first_slot);

-- Final weights w_T of the current episode, until Reptile consumes them.
CREATE TABLE finals (
    run     INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    w       BLOB    NOT NULL
);
CREATE UNIQUE INDEX finals_key ON finals (run, episode, slot);

-- Idempotency records: the first answer to (lease, kind, key).
-- kind: 1 step (key t), 2 samples (key slot), 3 final (key slot),
-- 4 complete, 5 release.
CREATE TABLE idem (
    run     INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    lease   TEXT    NOT NULL,
    kind    INTEGER NOT NULL,
    key     INTEGER NOT NULL,
    status  INTEGER NOT NULL,
    body    TEXT    NOT NULL
);
CREATE UNIQUE INDEX idem_key ON idem (lease, kind, key);
CREATE INDEX idem_run ON idem (run, episode);

-- LinearEstimation samples, one row per (episode, slot).
CREATE TABLE samples (
    run     INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    slot    INTEGER NOT NULL,
    x       BLOB    NOT NULL,
    y       BLOB    NOT NULL
);
CREATE UNIQUE INDEX samples_key ON samples (run, episode, slot);

-- Per-episode metrics rows (JSON).
CREATE TABLE metrics (
    run     INTEGER NOT NULL,
    episode INTEGER NOT NULL,
    row     TEXT    NOT NULL
);
CREATE UNIQUE INDEX metrics_key ON metrics (run, episode);

CREATE TABLE workers (
    run       INTEGER NOT NULL,
    worker_id TEXT    NOT NULL,
    row       TEXT    NOT NULL
);
CREATE UNIQUE INDEX workers_key ON workers (worker_id);

CREATE TABLE leases (
    run      INTEGER NOT NULL,
    lease_id TEXT    NOT NULL,
    row      TEXT    NOT NULL
);
CREATE UNIQUE INDEX leases_key ON leases (lease_id);
CREATE INDEX leases_run ON leases (run);
