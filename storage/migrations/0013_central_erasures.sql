-- Erasures made through other nodes, applied to this store (storage/sync.py): each central
-- sync round reads the central store's erased_keys (user and visitor keys, with the time of
-- their erasure) that moved since the last round, deletes this store's rows of those keys from
-- before their erasure, and records the key here: keys and times only, the proof that this
-- store applied it, and, with the erasures table, what keeps late rows of the key out
-- (storage/erased.py). Never synced back (it is not the erasures table: no loop). A key
-- erased again is recorded again under a new id (the id only grows: AUTOINCREMENT), so that
-- readers watching for erasures (the sinks, the reports, the landing writer) see it.
CREATE TABLE central_erasures (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    key       TEXT NOT NULL UNIQUE, -- a user or visitor key the central store erased
    erased_at TEXT NOT NULL,        -- when (the erasing node's clock, ISO 8601 UTC)
    applied   TEXT NOT NULL,        -- when this store applied it
    deleted   INTEGER NOT NULL      -- rows of this store it deleted then
);
-- How far into the central erased_keys this store has applied: a PostgreSQL transaction id
-- (xid8) horizon, below which every erased_keys row is applied. One row.
CREATE TABLE central_erasures_horizon (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    horizon INTEGER NOT NULL,
    updated TEXT NOT NULL
);
