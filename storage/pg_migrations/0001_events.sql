-- The central store: every node's append-only events, mirroring the local tables (storage/
-- migrations), with PostgreSQL types. A column added to a local table reaches the central one
-- by a migration here adding the same column: the sync copies the columns both sides have.

CREATE TABLE touchpoints (
    id            uuid PRIMARY KEY,     -- UUIDv7 minted at the edge: unique across nodes
    ts            timestamptz NOT NULL,
    node          text NOT NULL,
    visitor_key   text NOT NULL,
    source        text,
    medium        text,
    campaign      text,
    term          text,
    content       text,
    creator_id    text,
    sub_id        text,
    click_id_kind text,
    click_id      text,
    referrer_host text,
    landing_path  text NOT NULL,
    raw_params    jsonb NOT NULL DEFAULT '{}'
);
-- Journeys are one index range per visitor; time windows are id ranges (UUIDv7), so no ts index.
CREATE INDEX touchpoints_visitor ON touchpoints (visitor_key, id);

CREATE TABLE identities (
    id          uuid PRIMARY KEY,
    ts          timestamptz NOT NULL,
    node        text NOT NULL,
    visitor_key text NOT NULL,
    user_key    text NOT NULL,
    rule        text NOT NULL,
    origin      text NOT NULL
);
CREATE INDEX identities_user ON identities (user_key, id);
CREATE INDEX identities_visitor ON identities (visitor_key, id);

CREATE TABLE conversions (
    id          uuid PRIMARY KEY,
    ts          timestamptz NOT NULL,
    node        text NOT NULL,
    name        text NOT NULL,
    dedup_key   text NOT NULL UNIQUE,   -- two nodes seeing the same order count it once here too
    visitor_key text,
    user_key    text,
    value       double precision,
    currency    text,
    order_id    text,
    origin      text NOT NULL,
    rule        text NOT NULL,
    CHECK (visitor_key IS NOT NULL OR user_key IS NOT NULL)
);
CREATE INDEX conversions_user ON conversions (user_key, id);
CREATE INDEX conversions_visitor ON conversions (visitor_key, id);

CREATE TABLE erasures (
    id       uuid PRIMARY KEY,
    ts       timestamptz NOT NULL,
    node     text NOT NULL,
    user_key text NOT NULL,
    visitors jsonb NOT NULL,
    counts   jsonb NOT NULL
);

-- Every user and visitor key an erasure covered, with the erasure's time: rows about them
-- that arrive later from a node that had not synced yet, and are older than the erasure,
-- are not inserted (a user who signs up again afterwards is recorded as new).
-- Visitor and user keys are keyed hashes under different keys: one key space is safe.
CREATE TABLE erased_keys (
    key       text PRIMARY KEY,
    erased_at timestamptz NOT NULL
);
