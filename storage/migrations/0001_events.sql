-- Append-only events and the derived per-visitor dual slot.
CREATE TABLE touchpoints (
    id            TEXT PRIMARY KEY,   -- UUIDv7, time-ordered
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
CREATE INDEX touchpoints_visitor ON touchpoints (visitor_key, id);
CREATE INDEX touchpoints_ts ON touchpoints (ts);

CREATE TABLE visitors (
    visitor_key    TEXT PRIMARY KEY,
    first_touch_id TEXT NOT NULL,     -- never overwritten
    last_touch_id  TEXT NOT NULL,
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL,
    touch_count    INTEGER NOT NULL DEFAULT 1
);
