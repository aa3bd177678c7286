-- Which central store (its identity, PostgreSQL migration 0012) this store's central sync
-- cursors ('central:*' in sync_cursors), daily counts' `sent` marks and erasure horizon belong
-- to (storage/central_identity.py). Recorded at the first round that finds one; a round that
-- finds another (the database dropped and made again, central.url pointed at another) sets
-- those back to nothing delivered, in the same transaction that records the new one, and the
-- node sends that store its whole history. One row. The sinks' cursors are not the central
-- store's and are left alone.
CREATE TABLE central_identity (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    identity TEXT NOT NULL, -- the central store's central_identity.identity
    recorded TEXT NOT NULL  -- when this store recorded it (ISO 8601 UTC)
);
