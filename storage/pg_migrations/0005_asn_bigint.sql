-- AS numbers are 32-bit unsigned (0..4294967295: bots.datacenter_asns and GeoIP files take them
-- so); a signed integer column refused one above 2147483647 and held its node's sync at that
-- row. touchpoints.asn is the one asn column; the view over touchpoints is made again around
-- the change, as PostgreSQL cannot change the type of a column a view uses.
DROP VIEW effective_touchpoints;
ALTER TABLE touchpoints ALTER COLUMN asn TYPE bigint;
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
