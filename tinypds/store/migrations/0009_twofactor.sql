-- 0009: second factors for password sign-in: TOTP (with recovery codes) and passkeys (WebAuthn).
-- The TOTP secret is stored sealed (SecretBox under a key kept in the key store, never here);
-- recovery codes only as argon2id hashes; passkeys as public keys (nothing secret). Unix seconds.

-- One TOTP authenticator per account. confirmed = 0 while enrolment waits for the first code.
CREATE TABLE totp (
    did           TEXT PRIMARY KEY,
    secret_sealed BLOB NOT NULL,          -- SecretBox(nonce || ciphertext) of the base32 secret
    confirmed     INTEGER NOT NULL DEFAULT 0,
    last_step     INTEGER NOT NULL DEFAULT 0,   -- the last accepted 30 s step: a code works once
    created_at    INTEGER NOT NULL
) STRICT;

-- Single-use recovery codes: `lookup` is the code's first group (not secret on its own),
-- `code_hash` the argon2id hash of the whole code.
CREATE TABLE recovery_code (
    did        TEXT NOT NULL,
    lookup     TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (did, lookup)
) STRICT, WITHOUT ROWID;

-- Passkeys / security keys (WebAuthn credentials).
CREATE TABLE passkey (
    credential_id BLOB PRIMARY KEY,
    did           TEXT NOT NULL,
    name          TEXT NOT NULL,
    public_key    BLOB NOT NULL,          -- COSE public key
    sign_count    INTEGER NOT NULL DEFAULT 0,
    transports    TEXT NOT NULL DEFAULT '[]',  -- JSON list
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
) STRICT;
CREATE INDEX passkey_did ON passkey (did);
