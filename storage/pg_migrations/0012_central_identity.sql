-- The central store's own identity: a random value made once, when this migration runs on the
-- database. Each node records the identity its sync cursors belong to (local migration 0019,
-- storage/central_identity.py): a database dropped and made again, or another one named in
-- central.url, has another, and the node sends it its whole history again instead of only
-- the rows stored after its cursors. A dump restored (pg_restore) keeps it, and lacks what
-- was delivered after the dump: the operator gives it a new one by hand
-- (UPDATE central_identity SET identity = gen_random_uuid(); README, Central store and sync),
-- and every node sends it everything again. One row; the gateway never updates it.
CREATE TABLE central_identity (
    id       integer PRIMARY KEY CHECK (id = 1),
    identity uuid NOT NULL DEFAULT gen_random_uuid(),
    created  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO central_identity (id) VALUES (1);
