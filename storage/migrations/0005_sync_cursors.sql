-- Where each durable reader of the event log (the central sync, each sink) has got to, per
-- table. The position is the table's SQLite rowid (its insertion order), not the event id:
-- ids are UUIDv7 minted from the event's time, so a row written late (a backfill import, a
-- clock stepped back, a webhook carrying an old timestamp) can have a smaller id than rows
-- already delivered, and an id cursor would skip it for ever. The rowid only grows.
CREATE TABLE sync_cursors (
    name     TEXT PRIMARY KEY,          -- e.g. 'central:touchpoints', 'sink:segment:identities'
    position INTEGER NOT NULL DEFAULT 0, -- rowid of the last row delivered
    updated  TEXT                        -- when it last moved (ISO 8601 UTC)
);
