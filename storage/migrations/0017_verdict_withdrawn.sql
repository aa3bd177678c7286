-- An analyst's override can be withdrawn (DELETE /api/touchpoints/{id}/verdict): a
-- verdict_changes row of origin 'analyst_cleared', with who and why, after which the verdict is
-- the scoring's again (the latest re-score, else as stored) until another override. SQLite
-- cannot change a CHECK constraint in place: the table is made again with its rows and their
-- rowids (the sync's and the sinks' cursors count in rowids), its index, and the view over it.
DROP VIEW effective_touchpoints;
CREATE TABLE verdict_changes_new (
    id            TEXT PRIMARY KEY,   -- UUIDv7
    ts            TEXT NOT NULL,
    node          TEXT NOT NULL,
    touchpoint_id TEXT NOT NULL,
    verdict       TEXT NOT NULL CHECK (verdict IN ('allow', 'review', 'block', 'bot')),
    bot_score     INTEGER,
    reasons       TEXT NOT NULL DEFAULT '[]',
    origin        TEXT NOT NULL CHECK (origin IN ('rescore', 'analyst', 'analyst_cleared')),
    note          TEXT NOT NULL DEFAULT '',  -- rescore: the signal that arrived; analyst, analyst_cleared: why
    analyst       TEXT,                      -- who decided (analyst changes only)
    CHECK (origin = 'rescore' OR analyst IS NOT NULL)
);
INSERT INTO verdict_changes_new (rowid, id, ts, node, touchpoint_id, verdict, bot_score, reasons, origin, note, analyst)
    SELECT rowid, id, ts, node, touchpoint_id, verdict, bot_score, reasons, origin, note, analyst
    FROM verdict_changes ORDER BY rowid;
DROP TABLE verdict_changes;
ALTER TABLE verdict_changes_new RENAME TO verdict_changes;
CREATE INDEX verdict_changes_touchpoint ON verdict_changes (touchpoint_id, id);

-- The verdict changes that count: the re-scores, and each analyst's override no later
-- 'analyst_cleared' row of its touchpoint withdrew (a clear itself sets nothing). Every reader
-- applies its rule to these — the latest analyst change wins, else the latest re-score, else
-- the touchpoint's own verdict — so a withdrawn override is as if it had never been made.
CREATE VIEW live_verdict_changes AS
SELECT v.* FROM verdict_changes v
WHERE v.origin = 'rescore'
   OR (v.origin = 'analyst' AND NOT EXISTS (
       SELECT 1 FROM verdict_changes w
       WHERE w.touchpoint_id = v.touchpoint_id AND w.id > v.id AND w.origin = 'analyst_cleared'
   ));

-- Every touchpoint with its effective verdict (as in 0003, over the changes that count).
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
    SELECT v.id FROM live_verdict_changes v
    WHERE v.touchpoint_id = t.id
    ORDER BY v.origin = 'analyst' DESC, v.id DESC
    LIMIT 1
);
