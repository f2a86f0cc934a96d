-- 0002: legacy sessions (access/refresh JWT pairs) and app passwords.
-- Times are unix seconds (INTEGER) where they are compared, ISO 8601 UTC where they are shown.

-- One row per signed-in session. Access and refresh tokens both carry `sid` = id, so deleting
-- the row revokes the refresh token AND makes the session's access tokens unusable.
-- Refresh tokens are single-use: `refresh_jti` is the only one currently valid; a refresh
-- replaces it (rotation), so presenting an older one is refused.
CREATE TABLE session (
    id                TEXT PRIMARY KEY,
    did               TEXT NOT NULL,
    app_password_name TEXT,                 -- NULL = signed in with the account password
    privileged        INTEGER NOT NULL DEFAULT 0,
    refresh_jti       TEXT NOT NULL UNIQUE,
    created_at        INTEGER NOT NULL,
    refreshed_at      INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL      -- of the current refresh token
) STRICT;
CREATE INDEX session_did ON session (did, app_password_name);
CREATE INDEX session_expires ON session (expires_at);

-- App passwords, argon2id-hashed like the account password; shown once at creation.
CREATE TABLE app_password (
    did           TEXT NOT NULL,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    privileged    INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (did, name)
) STRICT, WITHOUT ROWID;
