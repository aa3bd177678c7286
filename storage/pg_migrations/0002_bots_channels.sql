-- Bot scoring, GeoIP and channels on touchpoints (local migrations 0003 and 0004), verdict
-- changes and creator standings (append-only), and the effective verdict of each touchpoint.
ALTER TABLE touchpoints
    ADD COLUMN channel   text,
    ADD COLUMN bot_score integer,
    ADD COLUMN verdict   text,
    ADD COLUMN reasons   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN country   text,
    ADD COLUMN region    text,
    ADD COLUMN asn       integer,
    ADD COLUMN ip_hash   text;

CREATE TABLE verdict_changes (
    id            uuid PRIMARY KEY,
    ts            timestamptz NOT NULL,
    node          text NOT NULL,
    touchpoint_id uuid NOT NULL,
    verdict       text NOT NULL,
    bot_score     integer,
    reasons       jsonb NOT NULL DEFAULT '[]',
    origin        text NOT NULL,
    note          text NOT NULL DEFAULT '',
    analyst       text
);
CREATE INDEX verdict_changes_touchpoint ON verdict_changes (touchpoint_id, id);

CREATE TABLE creator_standings (
    id         uuid PRIMARY KEY,
    ts         timestamptz NOT NULL,
    node       text NOT NULL,
    creator_id text NOT NULL,
    verified   boolean NOT NULL,
    name       text NOT NULL DEFAULT '',
    analyst    text NOT NULL,
    note       text NOT NULL DEFAULT ''
);
CREATE INDEX creator_standings_creator ON creator_standings (creator_id, id);

-- As locally: the latest analyst change wins, else the latest re-score, else as scored.
CREATE VIEW effective_touchpoints AS
SELECT t.*,
       coalesce(c.verdict, t.verdict)     AS effective_verdict,
       coalesce(c.bot_score, t.bot_score) AS effective_score,
       coalesce(c.reasons, t.reasons)     AS effective_reasons,
       c.origin                           AS verdict_origin,
       c.analyst                          AS verdict_analyst,
       c.note                             AS verdict_note
FROM touchpoints t
LEFT JOIN LATERAL (
    SELECT v.verdict, v.bot_score, v.reasons, v.origin, v.analyst, v.note
    FROM verdict_changes v
    WHERE v.touchpoint_id = t.id
    ORDER BY v.origin = 'analyst' DESC, v.id DESC
    LIMIT 1
) c ON true;
