-- 0007: a leaner repo store (issue 17). Same facts, fewer bytes: a 1M-record repo took
-- 1.98x its CAR's size, mostly in indexes on 36-byte random CIDs and repeated text.
--  * blocks: the CID index keys on the CID's last 8 bytes (a slice of its sha-256; lookups
--    also compare the whole CID, and store.blocks keeps CIDs unique) instead of all 36;
--    AUTOINCREMENT, so a deleted block's id is never handed to another block (record_index
--    points at blocks by id); rev is NULL for blocks that came with the last full import
--    (their rev is meta 'repo_base_rev'), so the rev index holds only later commits' blocks.
--  * the record index stores a collection number, the rkey and the block id (not the CID);
--    rev is NULL for records that came with the last full import (as above).
--  * the view `records` shows the index as before: collection, rkey, cid, rev.
-- Every row is copied, in this one transaction (all-or-nothing, like every migration).
-- marker: collections

CREATE TABLE blocks_0007 (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    cid  BLOB NOT NULL,
    rev  TEXT,
    data BLOB NOT NULL
) STRICT;
INSERT INTO blocks_0007 (id, cid, rev, data) SELECT id, cid, rev, data FROM blocks ORDER BY id;

CREATE TABLE collections (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO collections (name) SELECT DISTINCT collection FROM records ORDER BY collection;

CREATE TABLE record_index (
    coll  INTEGER NOT NULL,          -- collections.id
    rkey  TEXT NOT NULL,
    block INTEGER NOT NULL,          -- blocks.id of the record's block
    rev   TEXT,                      -- NULL: came with the last full import (meta 'repo_base_rev')
    PRIMARY KEY (coll, rkey)
) STRICT, WITHOUT ROWID;
INSERT INTO record_index (coll, rkey, block, rev)
    SELECT c.id, r.rkey, b.id, r.rev
      FROM records r JOIN collections c ON c.name = r.collection JOIN blocks b ON b.cid = r.cid;  -- same ids as blocks_0007; the old table has its CID index

DROP TABLE records;
DROP TABLE blocks;
ALTER TABLE blocks_0007 RENAME TO blocks;
CREATE INDEX blocks_cid ON blocks (substr(cid, -8));
CREATE INDEX blocks_rev ON blocks (rev) WHERE rev IS NOT NULL;
CREATE INDEX record_index_block ON record_index (block);

CREATE VIEW records (collection, rkey, cid, rev) AS
    SELECT c.name, r.rkey, b.cid, coalesce(r.rev, (SELECT value FROM meta WHERE key = 'repo_base_rev'))
      FROM record_index r JOIN collections c ON c.id = r.coll JOIN blocks b ON b.id = r.block;
