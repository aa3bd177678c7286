-- An analyst's override can be withdrawn (local migration 0016): a verdict_changes row of
-- origin 'analyst_cleared', which the nodes sync here as any other. As locally, the changes that
-- count are the re-scores and the overrides no later 'analyst_cleared' row of their touchpoint
-- withdrew, and the effective verdict is read from those alone.
CREATE VIEW live_verdict_changes AS
SELECT v.* FROM verdict_changes v
WHERE v.origin = 'rescore'
   OR (v.origin = 'analyst' AND NOT EXISTS (
       SELECT 1 FROM verdict_changes w
       WHERE w.touchpoint_id = v.touchpoint_id AND w.id > v.id AND w.origin = 'analyst_cleared'
   ));

-- Replaced in place, so the rights granted on it (a read-only role of admin.source = "central")
-- stay: its columns as 0005 made them, touchpoints' of then (not ingested, added by 0007).
CREATE OR REPLACE VIEW effective_touchpoints AS
SELECT t.id, t.ts, t.node, t.visitor_key, t.source, t.medium, t.campaign, t.term, t.content,
       t.creator_id, t.sub_id, t.click_id_kind, t.click_id, t.referrer_host, t.landing_path,
       t.raw_params, t.channel, t.bot_score, t.verdict, t.reasons, t.country, t.region, t.asn,
       t.ip_hash, t.consent,
       coalesce(c.verdict, t.verdict)     AS effective_verdict,
       coalesce(c.bot_score, t.bot_score) AS effective_score,
       coalesce(c.reasons, t.reasons)     AS effective_reasons,
       c.origin                           AS verdict_origin,
       c.analyst                          AS verdict_analyst,
       c.note                             AS verdict_note
FROM touchpoints t
LEFT JOIN LATERAL (
    SELECT v.verdict, v.bot_score, v.reasons, v.origin, v.analyst, v.note
    FROM live_verdict_changes v
    WHERE v.touchpoint_id = t.id
    ORDER BY v.origin = 'analyst' DESC, v.id DESC
    LIMIT 1
) c ON true;
