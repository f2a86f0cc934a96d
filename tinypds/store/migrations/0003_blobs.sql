-- 0003: blobs, stored in the database as 64 KiB parts (DESIGN.md "blobs").
-- Lifecycle (status):
--   uploading  parts being written by a streaming upload; cid is NULL until finalised
--   temp       complete, not referenced by any record yet; expires after blob_temp_ttl_seconds
--   permanent  referenced by at least one record (record_blobs); served by getBlob
--   orphan     was permanent, the last referencing record is gone; deleted by the next GC
--   dead       being deleted (failed upload, expired, orphan); cid is NULL, parts go in batches
-- The triggers below keep temp/permanent/orphan in step with record_blobs inside the very
-- transaction that commits the record, so no service has to remember to call a hook.

CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    cid        BLOB UNIQUE,              -- binary CIDv1 (raw, sha2-256); NULL while uploading/dead
    mime       TEXT NOT NULL DEFAULT 'application/octet-stream',
    size       INTEGER NOT NULL DEFAULT 0,
    status     TEXT NOT NULL CHECK (status IN ('uploading', 'temp', 'permanent', 'orphan', 'dead')),
    created_at TEXT NOT NULL,            -- ISO 8601 UTC; for temp blobs: when (last) uploaded
    temp_key   TEXT UNIQUE               -- random key of a running upload (NULL once finalised), so an
                                         -- interrupted upload can be found even if its row id never came back
) STRICT;
CREATE INDEX blobs_status ON blobs (status, created_at);

-- The bytes: part idx covers [idx * 65536, (idx + 1) * 65536). A rowid table, because
-- WITHOUT ROWID suits small rows only; the primary key becomes a separate unique index.
CREATE TABLE blob_parts (
    blob_id INTEGER NOT NULL REFERENCES blobs (id),
    idx     INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (blob_id, idx)
) STRICT;

-- A record referencing a stored blob makes it permanent (also revives an orphan).
CREATE TRIGGER record_blobs_promote AFTER INSERT ON record_blobs
BEGIN
    UPDATE blobs SET status = 'permanent'
     WHERE cid = NEW.blob_cid AND status IN ('temp', 'orphan');
END;

-- The last reference gone: the blob becomes an orphan (the GC deletes it off the commit path).
CREATE TRIGGER record_blobs_release AFTER DELETE ON record_blobs
WHEN NOT EXISTS (SELECT 1 FROM record_blobs WHERE blob_cid = OLD.blob_cid)
BEGIN
    UPDATE blobs SET status = 'orphan'
     WHERE cid = OLD.blob_cid AND status = 'permanent';
END;
