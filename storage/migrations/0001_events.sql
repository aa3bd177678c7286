-- Append-only events, and the per-visitor dual slot derived from them.
CREATE TABLE touchpoints (
    id            TEXT PRIMARY KEY,   -- UUIDv7 minted from ts: id order is time order
    ts            TEXT NOT NULL,      -- ISO 8601 UTC with microseconds
    node          TEXT NOT NULL,
    visitor_key   TEXT NOT NULL,      -- keyed hash of the cookie's visitor ID
    source        TEXT,
    medium        TEXT,
    campaign      TEXT,
    term          TEXT,
    content       TEXT,
    creator_id    TEXT,
    sub_id        TEXT,
    click_id_kind TEXT,
    click_id      TEXT,
    referrer_host TEXT,
    landing_path  TEXT NOT NULL,
    raw_params    TEXT NOT NULL DEFAULT '{}'
);
-- A visitor's journey is one index range; its first and last touch are the range's ends.
CREATE INDEX touchpoints_visitor ON touchpoints (visitor_key, id);

-- The dual slot is derived, not stored: the first touch is the earliest touchpoint, so no
-- later landing can overwrite it, and a replayed event (same id) changes nothing. Deriving
-- it costs one index lookup per visitor; keeping a table current cost every insert more
-- than the insert itself.
CREATE VIEW visitors AS
SELECT visitor_key,
       min(id) AS first_touch_id,
       max(id) AS last_touch_id,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       count(*) AS touch_count
FROM touchpoints
GROUP BY visitor_key;
