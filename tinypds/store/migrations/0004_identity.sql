-- 0004: the account's identity: how its DID is kept, the local PLC log, single-use tokens.
-- Keys never live here: only public did:keys (the private halves are in the keyring).

-- One row per local DID: its method, where its PLC ops go, and the public keys in use.
CREATE TABLE identity (
    did          TEXT PRIMARY KEY,
    method       TEXT NOT NULL CHECK (method IN ('plc', 'web')),
    plc_url      TEXT,               -- directory the ops are submitted to; NULL = local log only (dev)
    signing_key  TEXT NOT NULL,      -- did:key of the repo signing key
    rotation_key TEXT,               -- did:key of this server's PLC rotation key (did:plc only)
    created_at   TEXT NOT NULL
) STRICT;

-- Every did:plc operation of the local DID, in order (seq 0 = genesis). Verifiable offline:
-- each op is signed by a rotation key valid at its prev (tinypds plc verify).
CREATE TABLE plc_log (
    did        TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    cid        TEXT NOT NULL UNIQUE,  -- CID string of the signed op (the next op's prev)
    operation  TEXT NOT NULL,         -- the signed op, JSON
    created_at TEXT NOT NULL,
    PRIMARY KEY (did, seq)
) STRICT;

-- Single-use, short-lived tokens (e.g. purpose 'plc_operation'); only a hash is stored.
CREATE TABLE action_tokens (
    did        TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    expires_at INTEGER NOT NULL,      -- unix seconds
    PRIMARY KEY (did, purpose)
) STRICT;
