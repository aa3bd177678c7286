-- Which store instance (storage/migrations/0011: a random identity kept in each local store)
-- synced under each node name, and when last (the central server's clock): two gateways given
-- the same storage.node show as two instances syncing under it (storage/sync.py). A store lost
-- and made again under its name is a second instance too, until the old one has not synced
-- for an hour.
CREATE TABLE node_instances (
    node         text NOT NULL,
    instance     text NOT NULL,
    first_synced timestamptz NOT NULL DEFAULT now(),
    last_synced  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, instance)
);
