-- Each touchpoint's population (local migration 0006): cookie, cookieless or no_consent.
-- The local daily_counts table (Sec-GPC visitors) stays on its node: it is not synced.
ALTER TABLE touchpoints ADD COLUMN consent text NOT NULL DEFAULT 'cookie';

-- PostgreSQL expands t.* when a view is created: recreate the view so it carries the column.
DROP VIEW effective_touchpoints;
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
