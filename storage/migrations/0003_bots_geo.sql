-- Bot scoring and GeoIP on touchpoints; verdict changes (re-scores, analyst overrides) and
-- creator standings kept apart, append-only.
ALTER TABLE touchpoints ADD COLUMN bot_score INTEGER;           -- 0..100; NULL: not scored
ALTER TABLE touchpoints ADD COLUMN verdict TEXT;                -- allow, review, block, bot; NULL: not scored
ALTER TABLE touchpoints ADD COLUMN reasons TEXT NOT NULL DEFAULT '[]';  -- JSON list of signal names
ALTER TABLE touchpoints ADD COLUMN country TEXT;                -- ISO 3166-1 alpha-2
ALTER TABLE touchpoints ADD COLUMN region TEXT;                 -- ISO 3166-2 subdivision code
ALTER TABLE touchpoints ADD COLUMN asn INTEGER;
ALTER TABLE touchpoints ADD COLUMN ip_hash TEXT;                -- keyed hash, key rotated daily; never the IP

-- Append-only: a late signal re-scored a touchpoint, or an analyst decided.
CREATE TABLE verdict_changes (
    id            TEXT PRIMARY KEY,   -- UUIDv7
    ts            TEXT NOT NULL,
    node          TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    verdict       TEXT NOT NULL CHECK (verdict IN ('allow', 'review', 'block', 'bot')),
    bot_score     INTEGER,
    reasons       TEXT NOT NULL DEFAULT '[]',
    origin        TEXT NOT NULL CHECK (origin IN ('rescore', 'analyst')),
    note          TEXT NOT NULL DEFAULT '',  -- rescore: the signal that arrived; analyst: why
    analyst       TEXT,                      -- who decided (analyst changes only)
    CHECK (origin = 'rescore' OR analyst IS NOT NULL)
);
CREATE INDEX verdict_changes_touchpoint ON verdict_changes (touchpoint_id, id);

-- Append-only: an admin set a creator's standing (PUT /api/creators/{id}); the latest wins.
CREATE TABLE creator_standings (
    id         TEXT PRIMARY KEY,
    ts         TEXT NOT NULL,
    node       TEXT NOT NULL,
    creator_id TEXT NOT NULL,
    verified   INTEGER NOT NULL,
    name       TEXT NOT NULL DEFAULT '',
    analyst    TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX creator_standings_creator ON creator_standings (creator_id, id);

-- Every touchpoint with its effective verdict: the latest analyst change wins, else the latest
-- re-score, else the verdict it was stored with. Attribution and the admin API read this.
CREATE VIEW effective_touchpoints AS
SELECT t.*,
       coalesce(c.verdict, t.verdict)     AS effective_verdict,
       coalesce(c.bot_score, t.bot_score) AS effective_score,
       coalesce(c.reasons, t.reasons)     AS effective_reasons,
       c.origin                           AS verdict_origin,
       c.analyst                          AS verdict_analyst,
       c.note                             AS verdict_note
FROM touchpoints t
LEFT JOIN verdict_changes c ON c.id = (
    SELECT v.id FROM verdict_changes v
    WHERE v.touchpoint_id = t.id
    ORDER BY v.origin = 'analyst' DESC, v.id DESC
    LIMIT 1
);
