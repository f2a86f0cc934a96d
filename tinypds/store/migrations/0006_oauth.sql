-- 0006: the OAuth authorization server (atproto OAuth profile).
-- Secrets (codes, tokens, device ids) are stored only as sha256 hex hashes. Times are unix seconds.

-- Pushed authorization requests (PAR). A row lives until it expires; once the user allows,
-- it carries the account and the (hashed) single-use code; once exchanged, the session it
-- became (so a replayed code can revoke that session).
CREATE TABLE oauth_request (
    id              TEXT PRIMARY KEY,        -- the random part of request_uri
    client_id       TEXT NOT NULL,
    client_auth     TEXT NOT NULL,           -- JSON: {"method": "none"} | {"method": "private_key_jwt", "kid": ...}
    params          TEXT NOT NULL,           -- JSON: redirect_uri, scope, state, code_challenge, login_hint, ...
    code_challenge  TEXT NOT NULL UNIQUE,    -- PKCE challenges are single-use
    dpop_jkt        TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    did             TEXT,
    code_hash       TEXT UNIQUE,
    code_expires_at INTEGER,
    session_id      TEXT                     -- set when the code was exchanged
) STRICT;
CREATE INDEX oauth_request_expires ON oauth_request (expires_at);

-- One row per grant (a client signed in on behalf of the account). The access and refresh
-- tokens are opaque and DPoP-bound (dpop_jkt); a refresh rotates both.
CREATE TABLE oauth_session (
    id                 TEXT PRIMARY KEY,
    did                TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    client_auth        TEXT NOT NULL,
    dpop_jkt           TEXT NOT NULL,
    scope              TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,     -- the session's hard lifetime
    refresh_hash       TEXT NOT NULL UNIQUE,
    refresh_expires_at INTEGER NOT NULL,
    access_hash        TEXT NOT NULL UNIQUE,
    access_expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX oauth_session_did ON oauth_session (did, client_id);

-- Refresh tokens already used: presenting one again revokes its session.
CREATE TABLE oauth_used_refresh (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Browsers that signed in on the authorization page ("remember this device").
CREATE TABLE oauth_device (
    id_hash    TEXT PRIMARY KEY,
    did        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Apps the account authorized (the account page lists and revokes them).
CREATE TABLE oauth_authorization (
    did         TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    client_name TEXT,
    scope       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (did, client_id)
) STRICT, WITHOUT ROWID;
