-- The store's own identity: a random value made once, when this migration runs on the file.
-- It moves with the file (a store copied to a new host is the same gateway) and a store made
-- anew has another, so the central store can tell two gateways given one storage.node apart
-- (storage/sync.py). One row: name 'instance'; a store whose version was set back keeps it.
CREATE TABLE IF NOT EXISTS store_identity (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT OR IGNORE INTO store_identity (name, value) VALUES ('instance', lower(hex(randomblob(16))));
