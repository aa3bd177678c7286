-- The other keys an erasure erased the user under: the user ID keyed under every
-- identity.user_id_storage mode other than the current one (rows written before the mode
-- changed), so that the central store erases those rows too (storage/central.py). A JSON
-- list; the raw-ID form of "plain" is listed only when this node held rows under it.
ALTER TABLE erasures ADD COLUMN also_keys TEXT NOT NULL DEFAULT '[]';
