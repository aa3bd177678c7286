-- Each binding's population (README "Privacy: what is stored"), as each touchpoint has it: a
-- sink never sends a binding made in a session that did not consent (storage/sinks.py). A
-- binding from before this migration is given the population of its visitor's touchpoints
-- where the store holds one (a visitor key is of one population only: a cookie's, or a
-- one-day key); the others, and a signed event's, are 'cookie'.
ALTER TABLE identities ADD COLUMN consent TEXT NOT NULL DEFAULT 'cookie';  -- cookie, cookieless, no_consent
UPDATE identities SET consent = (
    SELECT t.consent FROM touchpoints t WHERE t.visitor_key = identities.visitor_key LIMIT 1
) WHERE visitor_key IN (SELECT visitor_key FROM touchpoints WHERE consent != 'cookie');
