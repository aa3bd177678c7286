-- The central sync of the daily counts (storage/sync.py). A row's count grows in place (an
-- upsert adds each landing), so no rowid cursor finds the rows that changed: each row keeps
-- `sent`, the largest count delivered to the central store, and a round delivers the rows
-- whose count is above it (absolute counts, whatever their day: a count written late, a
-- landing of 23:59:59 committed after midnight or a clock stepped back, is found too). The
-- index holds only those rows. Rows from before this migration read 0: the next round
-- delivers them.
ALTER TABLE daily_counts ADD COLUMN sent INTEGER NOT NULL DEFAULT 0;
CREATE INDEX daily_counts_unsent ON daily_counts (day, source, medium, campaign, channel, creator_id)
    WHERE count > sent;
