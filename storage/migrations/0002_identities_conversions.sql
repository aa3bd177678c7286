-- Who a visitor becomes and what they achieve; signed deliveries seen once; bad events kept.

-- A visitor bound to a user. Many visitors per user (devices); a login repeats the binding.
CREATE TABLE identities (
    id          TEXT PRIMARY KEY,   -- UUIDv7
    ts          TEXT NOT NULL,
    node        TEXT NOT NULL,
    visitor_key TEXT NOT NULL,      -- keyed hash of the visitor ID
    user_key    TEXT NOT NULL,      -- keyed hash (or SIV ciphertext) of the site's user ID
    rule        TEXT NOT NULL,      -- identity rule or sender that bound them
    origin      TEXT NOT NULL       -- rule, webhook, segment, import
);
CREATE INDEX identities_user ON identities (user_key, id);
CREATE INDEX identities_visitor ON identities (visitor_key, id);

CREATE TABLE conversions (
    id          TEXT PRIMARY KEY,
    ts          TEXT NOT NULL,
    node        TEXT NOT NULL,
    name        TEXT NOT NULL,
    dedup_key   TEXT NOT NULL UNIQUE,  -- a double submit or a webhook for the same order counts once
    visitor_key TEXT,
    user_key    TEXT,
    value       REAL,
    currency    TEXT,
    order_id    TEXT,
    origin      TEXT NOT NULL,
    rule        TEXT NOT NULL,
    CHECK (visitor_key IS NOT NULL OR user_key IS NOT NULL)
);
CREATE INDEX conversions_user ON conversions (user_key, id);
CREATE INDEX conversions_visitor ON conversions (visitor_key, id);

-- Signed deliveries (kind 'delivery', the webhook-id) and inbound events (kind 'event', the
-- event's own key), each seen once per sender: the UNIQUE constraint is the deduplication.
CREATE TABLE receipts (
    id     TEXT PRIMARY KEY,
    ts     TEXT NOT NULL,
    node   TEXT NOT NULL,
    sender TEXT NOT NULL,
    kind   TEXT NOT NULL,
    key    TEXT NOT NULL,
    UNIQUE (sender, kind, key)
);

-- Authenticated events that failed validation, kept for inspection and `gateway replay-bad`.
CREATE TABLE bad_events (
    id        TEXT PRIMARY KEY,
    ts        TEXT NOT NULL,
    node      TEXT NOT NULL,
    sender    TEXT NOT NULL,
    reason    TEXT NOT NULL,
    body      TEXT NOT NULL,
    truncated INTEGER NOT NULL DEFAULT 0,
    replayed  TEXT                     -- when a replay accepted it (NULL: still bad)
);

-- Erasures (GDPR Art. 17) done on this node: what was erased, by key and counts only, so the
-- central store and sinks can erase the same user everywhere.
CREATE TABLE erasures (
    id       TEXT PRIMARY KEY,
    ts       TEXT NOT NULL,
    node     TEXT NOT NULL,
    user_key TEXT NOT NULL,
    visitors TEXT NOT NULL,       -- JSON list of the visitor keys erased with the user
    counts   TEXT NOT NULL        -- JSON object: rows deleted per table
);
