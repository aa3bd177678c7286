-- The listings' commit-order feed (`order=stored` on /api/touchpoints and /api/conversions)
-- pages by rowid: a row committed later has a larger one, whatever its id. SQLite (without
-- AUTOINCREMENT, which these tables lack) gives a new row the largest rowid + 1, so deleting
-- the newest rows (an erasure, a purge, an import undone, the mirror starting again) lets the
-- next inserts take rowids a follower's cursor already passed. Each such delete is noted here
-- (the table, and its largest rowid left: every row above it was deleted, so every row above
-- it since is new); a cursor carries the largest `seq` it saw, and the next page starts no
-- later than the lowest `below` noted after it. Rows deleted below the newest free no rowid.
CREATE TABLE feed_drops (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl   TEXT NOT NULL,
    below INTEGER NOT NULL
);
CREATE TRIGGER touchpoints_top_dropped AFTER DELETE ON touchpoints
WHEN old.rowid > (SELECT coalesce(max(rowid), 0) FROM touchpoints) BEGIN
    INSERT INTO feed_drops (tbl, below)
    VALUES ('touchpoints', (SELECT coalesce(max(rowid), 0) FROM touchpoints));
END;
CREATE TRIGGER conversions_top_dropped AFTER DELETE ON conversions
WHEN old.rowid > (SELECT coalesce(max(rowid), 0) FROM conversions) BEGIN
    INSERT INTO feed_drops (tbl, below)
    VALUES ('conversions', (SELECT coalesce(max(rowid), 0) FROM conversions));
END;
