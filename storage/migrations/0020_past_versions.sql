-- Counters of the writes that rewrite the past of the touchpoints and conversions, whoever
-- makes them (an erasure or an import undone from the command line, retention, `gateway
-- reclassify`, the reporting mirror applying another node's erasure): the report engine keeps
-- data_driven's weights between reports (storage/report_kept.py) and learns them anew when one
-- of these, or `identities`' `changed` (0009), moved since. New rows (landings, conversions)
-- are not counted: no trigger on the landing's insert, and the kept weights are meant to
-- leave out the minutes since they were learnt.
INSERT INTO table_versions (name) VALUES ('touchpoints'), ('conversions');
CREATE TRIGGER touchpoints_deleted AFTER DELETE ON touchpoints BEGIN
    UPDATE table_versions SET changed = changed + 1 WHERE name = 'touchpoints';
END;
CREATE TRIGGER touchpoints_reclassified AFTER UPDATE OF channel ON touchpoints BEGIN
    UPDATE table_versions SET changed = changed + 1 WHERE name = 'touchpoints';
END;
CREATE TRIGGER conversions_deleted AFTER DELETE ON conversions BEGIN
    UPDATE table_versions SET changed = changed + 1 WHERE name = 'conversions';
END;
