-- The visitors view's first and last touch in time order, as the journeys take them (by `ts`,
-- to the microsecond, an id breaking a tie): id order is time order to the millisecond only
-- (gateway/ids.py: two worker processes, or nodes, count the ids of one millisecond up from
-- random starts), so min(id) and max(id) could name a landing a few hundred microseconds later
-- (earlier) than the first (last) touch. The same columns; first_touch_id's ts is first_seen
-- and last_touch_id's last_seen. Each is one more walk of the visitor's range of
-- touchpoints_visitor (which holds ts), so a visitor's row is still read from that index alone.
-- A store made between 14:34 and 15:16 on 2026-11-25 has an unused visitors table here
-- instead (0001 edited): storage/migrate.py drops it before this runs (REPLACED_TABLES).
DROP VIEW IF EXISTS visitors;
CREATE VIEW visitors AS
SELECT visitor_key,
       (SELECT f.id FROM touchpoints f WHERE f.visitor_key = t.visitor_key
        ORDER BY f.ts, f.id LIMIT 1) AS first_touch_id,
       (SELECT l.id FROM touchpoints l WHERE l.visitor_key = t.visitor_key
        ORDER BY l.ts DESC, l.id DESC LIMIT 1) AS last_touch_id,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       count(*) AS touch_count
FROM touchpoints t
GROUP BY visitor_key;
