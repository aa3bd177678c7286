-- Dashboard logins (gateway/sessions.py), so that one outlives a restart of the gateway (a
-- deploy, a crash of worker 0) and a logout stays one. Never the session ID itself: a keyed
-- digest of it, under a key derived from identity.secret and admin.token, so a session made
-- under another token (or secret) matches no row. Bounded (sessions.MAX_SESSIONS); rows of
-- ended, expired or other-key sessions are deleted at each login and at start-up.
CREATE TABLE dashboard_sessions (
    digest  BLOB PRIMARY KEY, -- HMAC-SHA256 of the session ID
    key_id  BLOB NOT NULL,    -- which key: a digest of the key, 16 bytes
    started REAL NOT NULL     -- when the login was (Unix seconds); it ends admin.session_hours later
) WITHOUT ROWID;
