-- Privacy (README "Privacy: what is stored"): each touchpoint's population, and the daily
-- counts that are all that is kept of visitors who sent Sec-GPC (or DNT, when honoured).
ALTER TABLE touchpoints ADD COLUMN consent TEXT NOT NULL DEFAULT 'cookie';  -- cookie, cookieless, no_consent

-- No visitor key, no id, no time of day: one row per UTC day and campaign values.
CREATE TABLE daily_counts (
    day        TEXT NOT NULL,              -- YYYY-MM-DD (UTC)
    source     TEXT NOT NULL DEFAULT '',
    medium     TEXT NOT NULL DEFAULT '',
    campaign   TEXT NOT NULL DEFAULT '',
    channel    TEXT NOT NULL DEFAULT '',
    creator_id TEXT NOT NULL DEFAULT '',
    count      INTEGER NOT NULL,
    PRIMARY KEY (day, source, medium, campaign, channel, creator_id)
);
