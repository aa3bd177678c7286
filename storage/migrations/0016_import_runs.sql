-- Runs of `gateway import`, and the rows each one added, so that a run can be listed
-- (`gateway import --list`) and undone (`gateway import --undo RUN`): event IDs come from the
-- logged line, so importing a file again adds nothing, and a file imported wrongly (another
-- site, a wrong --field, a wrong time zone) stayed for good. The import's own write connection
-- records each row it inserts (temporary triggers: a row already stored, skipped, is not its
-- run's; live rows written by the gateway meanwhile are never recorded). Runs made before
-- this migration are not recorded, and their rows cannot be undone.
CREATE TABLE import_runs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,  -- the run's number, never reused
    started  TEXT NOT NULL,                      -- ISO 8601 UTC
    finished TEXT,                               -- NULL: running, or ended without finishing (kill -9)
    format   TEXT NOT NULL,                      -- --format
    files    TEXT NOT NULL,                      -- JSON list of the files as named
    added    TEXT NOT NULL DEFAULT '{}',         -- JSON: rows it added per table, when it finished
    undone   TEXT                                -- when `gateway import --undo` removed its rows
);
CREATE TABLE import_rows (
    run INTEGER NOT NULL,   -- import_runs.id
    tbl TEXT NOT NULL,      -- touchpoints, identities or conversions
    id  TEXT NOT NULL,      -- the row's id (a UUIDv7, no personal data)
    PRIMARY KEY (run, tbl, id)
) WITHOUT ROWID;
