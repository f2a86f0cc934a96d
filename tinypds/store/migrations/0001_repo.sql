-- 0001: the account's repository, its record index, the firehose event log.
-- CIDs are binary (CIDv1 bytes); revs are TIDs; times are ISO 8601 UTC strings.

-- Every repo block (commits, MST nodes, records). A rowid table with a unique CID index
-- measured faster than WITHOUT ROWID for random CID keys (DESIGN.md §5).
CREATE TABLE blocks (
    id   INTEGER PRIMARY KEY,
    cid  BLOB NOT NULL UNIQUE,
    rev  TEXT NOT NULL,          -- rev of the commit that introduced the block (getRepo?since=)
    data BLOB NOT NULL
) STRICT;
CREATE INDEX blocks_rev ON blocks (rev);

-- The record index: (collection, rkey) -> record CID, equal to the MST at the current root.
CREATE TABLE records (
    collection TEXT NOT NULL,
    rkey       TEXT NOT NULL,
    cid        BLOB NOT NULL,
    rev        TEXT NOT NULL,
    PRIMARY KEY (collection, rkey)
) STRICT, WITHOUT ROWID;
CREATE INDEX records_cid ON records (cid);

-- Blobs referenced by records (for blob GC and listMissingBlobs).
CREATE TABLE record_blobs (
    collection TEXT NOT NULL,
    rkey       TEXT NOT NULL,
    blob_cid   BLOB NOT NULL,
    PRIMARY KEY (collection, rkey, blob_cid)
) STRICT, WITHOUT ROWID;
CREATE INDEX record_blobs_blob ON record_blobs (blob_cid);

-- The current commit of the repo.
CREATE TABLE repo_root (
    did        TEXT PRIMARY KEY,
    commit_cid BLOB NOT NULL,
    rev        TEXT NOT NULL,
    data_cid   BLOB NOT NULL     -- MST root
) STRICT;

-- The local account. status: active | deactivated | takendown | suspended | deleted | offline-copy
-- (offline-copy = a verified repo imported without its keys; nothing is signed or broadcast).
CREATE TABLE account (
    did           TEXT PRIMARY KEY,
    handle        TEXT,
    email         TEXT,
    password_hash TEXT,
    status        TEXT NOT NULL DEFAULT 'active',
    created_at    TEXT NOT NULL
) STRICT;

-- Firehose events. seq comes from meta('seq') so it never goes backwards, even after pruning.
CREATE TABLE events (
    seq  INTEGER PRIMARY KEY,
    type TEXT NOT NULL,          -- '#commit' | '#sync' | '#identity' | '#account'
    did  TEXT NOT NULL,
    time TEXT NOT NULL,
    body BLOB NOT NULL           -- DAG-CBOR event body without seq (added when framing)
) STRICT;
CREATE INDEX events_time ON events (time);

-- Small key/value settings and counters (e.g. seq high-water mark).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value ANY
) STRICT;
