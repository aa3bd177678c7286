-- The daily counts of the visitors who sent Sec-GPC (or DNT) (local migration 0007: one row
-- per UTC day and campaign values, no visitor key, id or time of day), per store. Each row holds
-- the store's ABSOLUTE count for its key, sent again as it grows (storage/sync.py), and is
-- replaced only by a larger one: two syncs of one store (the task and a cron `sync --once`)
-- committing out of order never set it back. Keyed by the store instance (as in
-- node_instances), not by the node's name: the count belongs to the store file, which keeps its
-- instance when its node is renamed (`storage.node` changed, or left empty and the host name
-- changed with a new container), so a renamed node's grown count replaces its row instead of
-- adding a second one; two gateways given one storage.node, or a store made anew under its
-- node's name, count apart, and the reports add them up. `node` is the name the row was last
-- sent under. `ingested` is set on insert AND on update (the sync's upsert sets it again), so
-- the reporting mirror (storage/mirror.py) reads a grown count in its next window, as it reads
-- new rows of the other tables (0007).
CREATE TABLE daily_counts (
    node       text NOT NULL,
    instance   text NOT NULL,
    day        date NOT NULL,
    source     text NOT NULL DEFAULT '',
    medium     text NOT NULL DEFAULT '',
    campaign   text NOT NULL DEFAULT '',
    channel    text NOT NULL DEFAULT '',
    creator_id text NOT NULL DEFAULT '',
    count      bigint NOT NULL,
    ingested   xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (instance, day, source, medium, campaign, channel, creator_id)
);
CREATE INDEX daily_counts_ingested
    ON daily_counts (ingested, instance, day, source, medium, campaign, channel, creator_id);
