-- Daily counts keyed by their store instance alone, where 0008 left another key.
--
-- 0008 as main shipped it from 02:06 to 02:25 on 2026-12-05 keyed a count by (node, instance,
-- day, …); from 02:25 by (instance, day, …), the key the sync's upsert names in its ON CONFLICT.
-- A central store migrated in those minutes kept the first key, and every sync round with a
-- daily count to send failed on it ("no unique or exclusion constraint matching the ON
-- CONFLICT specification"): no node synced anything more. Such a store is keyed again here; a
-- store with the right key is left as it is. Of one store instance's rows of a key under two
-- node names (a node renamed meanwhile) the larger count stays: each is that store's whole
-- count of the key, as sent last (the sync sends a grown count again, never a part).
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index
        WHERE indrelid = 'daily_counts'::regclass AND indisprimary AND indnkeyatts = 8
    ) THEN
        DELETE FROM daily_counts d USING daily_counts e
        WHERE (d.instance, d.day, d.source, d.medium, d.campaign, d.channel, d.creator_id)
            = (e.instance, e.day, e.source, e.medium, e.campaign, e.channel, e.creator_id)
          AND (d.count, d.node) < (e.count, e.node);
        ALTER TABLE daily_counts DROP CONSTRAINT daily_counts_pkey;
        ALTER TABLE daily_counts
            ADD PRIMARY KEY (instance, day, source, medium, campaign, channel, creator_id);
        DROP INDEX daily_counts_ingested;
        CREATE INDEX daily_counts_ingested
            ON daily_counts (ingested, instance, day, source, medium, campaign, channel, creator_id);
    END IF;
END
$$;
