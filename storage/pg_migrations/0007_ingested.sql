-- The transaction that inserted each row (its xid), for the reporting mirror (storage/mirror.py):
-- a mirror round reads the rows with prev <= ingested < pg_snapshot_xmin(pg_current_snapshot()),
-- where every transaction below that horizon has ended, so no row committed later can fall into
-- a window already read. Two steps: a constant default adds the column without rewriting the
-- table (rows from before get 0: the mirror's first round reads them), then new rows take
-- their transaction's id. The sync lists its columns (those both sides have), so a node's rows
-- take the default. erased_keys too: its upserts set it again when an erasure moves a key.
ALTER TABLE erasures ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE erasures ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX erasures_ingested ON erasures (ingested, id);

ALTER TABLE touchpoints ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE touchpoints ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX touchpoints_ingested ON touchpoints (ingested, id);

ALTER TABLE identities ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE identities ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX identities_ingested ON identities (ingested, id);

ALTER TABLE conversions ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE conversions ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX conversions_ingested ON conversions (ingested, id);

ALTER TABLE verdict_changes ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE verdict_changes ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX verdict_changes_ingested ON verdict_changes (ingested, id);

ALTER TABLE creator_standings ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE creator_standings ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX creator_standings_ingested ON creator_standings (ingested, id);

ALTER TABLE erased_keys ADD COLUMN ingested xid8 NOT NULL DEFAULT '0';
ALTER TABLE erased_keys ALTER COLUMN ingested SET DEFAULT pg_current_xact_id();
CREATE INDEX erased_keys_ingested ON erased_keys (ingested, key);
