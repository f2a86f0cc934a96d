"""The record index (collection, rkey) -> block, and the record -> blob references.

Only SQL. The index always equals the MST at the current root; store.repo keeps it in
step inside the commit transaction. Tricky bits: listing order follows listRecords
(default newest first, i.e. rkey descending; `reverse=True` ascending) and the MST order
("collection/rkey" bytewise) differs from (collection, rkey) order when one collection name
is a prefix of another, so `iter_index_in_mst_order` orders collections by "collection/".
Rows hold a collection number and the block's id, not names and CIDs (migration 0007).
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Iterable, Iterator

from ..core.cid import CID
from .blocks import BY_CID, block_id, has_block
from .db import ConstraintError, sort_cache

Conn = Any


# record_index: (coll, rkey) -> block id, rev (NULL: came with the last full import);
# collections: id <-> name. The view `records` shows (collection, rkey, cid, rev) for people.
_COLL = "(SELECT id FROM collections WHERE name = ?)"


def collection_id(conn: Conn, collection: str, create: bool = False) -> int | None:
    row = conn.execute("SELECT id FROM collections WHERE name = ?", (collection,)).fetchone()
    if row is not None or not create:
        return row[0] if row else None
    conn.execute("INSERT INTO collections (name) VALUES (?)", (collection,))
    return conn.last_insert_rowid()


def get_record_cid(conn: Conn, collection: str, rkey: str) -> CID | None:
    row = conn.execute(
        f"SELECT (SELECT cid FROM blocks b WHERE b.id = r.block) FROM record_index r WHERE r.coll = {_COLL} AND r.rkey = ?",
        (collection, rkey),
    ).fetchone()
    return CID(row[0]) if row and row[0] is not None else None


def get_record(conn: Conn, collection: str, rkey: str) -> tuple[CID, bytes] | None:
    """(cid, block data) of a current record, or None (also when its block is missing)."""
    # correlated subqueries: measured ~2x faster than the equivalent JOIN for this point read
    row = conn.execute(
        "SELECT (SELECT cid FROM blocks b WHERE b.id = r.block), (SELECT data FROM blocks b WHERE b.id = r.block) "
        f"FROM record_index r WHERE r.coll = {_COLL} AND r.rkey = ?",
        (collection, rkey),
    ).fetchone()
    return (CID(row[0]), row[1]) if row and row[1] is not None else None


def list_records(
    conn: Conn, collection: str, limit: int = 50, cursor: str | None = None, reverse: bool = False
) -> list[tuple[str, CID, bytes]]:
    """Up to `limit` (rkey, cid, data) rows; newest (highest rkey) first unless reverse."""
    if reverse:
        cond, order = ("AND r.rkey > ?", "ASC")
    else:
        cond, order = ("AND r.rkey < ?", "DESC")
    params: list[Any] = [collection]
    if cursor is not None:
        params.append(cursor)
    else:
        cond = ""
    params.append(int(limit))
    rows = conn.execute(
        f"SELECT r.rkey, b.cid, b.data FROM record_index r JOIN blocks b ON b.id = r.block "
        f"WHERE r.coll = {_COLL} {cond} ORDER BY r.rkey {order} LIMIT ?",
        params,
    ).fetchall()
    return [(rkey, CID(cid), data) for rkey, cid, data in rows]


def list_collections(conn: Conn) -> list[str]:
    """Collections holding at least one record, by name (cost grows with collections, not records)."""
    rows = conn.execute(
        "SELECT name FROM collections c WHERE EXISTS (SELECT 1 FROM record_index r WHERE r.coll = c.id) ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def count_records(conn: Conn, collection: str | None = None) -> int:
    if collection is None:
        return conn.execute("SELECT count(*) FROM record_index").fetchone()[0]
    return conn.execute(f"SELECT count(*) FROM record_index WHERE coll = {_COLL}", (collection,)).fetchone()[0]


def count_distinct_record_blocks(conn: Conn) -> int:
    return conn.execute("SELECT count(DISTINCT block) FROM record_index").fetchone()[0]


def cid_in_use(conn: Conn, cid: bytes) -> bool:
    return conn.execute(
        f"SELECT 1 FROM record_index WHERE block = (SELECT id FROM blocks WHERE {BY_CID}) LIMIT 1", (bytes(cid),)
    ).fetchone() is not None


def put_record(conn: Conn, collection: str, rkey: str, cid: bytes, rev: str) -> None:
    """Point (collection, rkey) at the stored block `cid` (store it first)."""
    block = block_id(conn, cid)
    if block is None:
        raise ValueError(f"record {collection}/{rkey}: block {CID(cid)} is not stored")
    conn.execute(
        "INSERT INTO record_index (coll, rkey, block, rev) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (coll, rkey) DO UPDATE SET block = excluded.block, rev = excluded.rev",
        (collection_id(conn, collection, create=True), rkey, block, rev),
    )


def put_records(conn: Conn, rows: Iterable[tuple[str, str, bytes, str | None]]) -> tuple[str, str, CID] | None:
    """Bulk insert (collection, rkey, cid, rev) rows (import: the index is empty). Returns
    (collection, rkey, cid) of a row whose block is not stored (then roll back), else None."""
    ids: dict[str, int] = {}
    out = []
    for collection, rkey, cid, rev in rows:
        coll = ids.get(collection)
        if coll is None:
            coll = ids[collection] = collection_id(conn, collection, create=True)
        out.append((cid, coll, rkey, rev))
    missing = put_index_rows(conn, out)
    if missing is None:
        return None
    names = {v: k for k, v in ids.items()}
    return names[missing[0]], missing[1], missing[2]


def put_index_rows(conn: Conn, rows: list[tuple[bytes, int, str, str | None]]) -> tuple[int, str, CID] | None:
    """put_records for prepared (cid, collection_id(...), rkey, rev) rows (the import's walk
    builds them directly). Returns (collection id, rkey, cid) of a row whose block is missing."""
    try:
        conn.executemany(
            f"INSERT INTO record_index (coll, rkey, block, rev) VALUES (?2, ?3, (SELECT id FROM blocks WHERE {BY_CID}), ?4)",
            rows)
    except ConstraintError:  # block NOT NULL: some record's block is missing
        for cid, coll, rkey, _ in rows:
            if not has_block(conn, cid):
                return coll, rkey, CID(cid)
        raise
    return None


def delete_record(conn: Conn, collection: str, rkey: str) -> None:
    conn.execute(f"DELETE FROM record_index WHERE coll = {_COLL} AND rkey = ?", (collection, rkey))
    conn.execute("DELETE FROM record_blobs WHERE collection = ? AND rkey = ?", (collection, rkey))


def delete_all_records(conn: Conn) -> None:
    conn.execute("DELETE FROM record_index")
    conn.execute("DELETE FROM record_blobs")


def drop_record_index_block(conn: Conn) -> None:
    """Bulk load: drop the block index of an emptied record index (`build_record_index_block` after)."""
    conn.execute("DROP INDEX IF EXISTS record_index_block")


def build_record_index_block(conn: Conn) -> None:
    with sort_cache(conn):
        conn.execute("CREATE INDEX IF NOT EXISTS record_index_block ON record_index (block)")


def set_record_blobs(conn: Conn, collection: str, rkey: str, blob_cids: Iterable[bytes]) -> None:
    conn.execute("DELETE FROM record_blobs WHERE collection = ? AND rkey = ?", (collection, rkey))
    conn.executemany(
        "INSERT OR IGNORE INTO record_blobs (collection, rkey, blob_cid) VALUES (?, ?, ?)",
        [(collection, rkey, bytes(c)) for c in blob_cids],
    )


def put_record_blobs(conn: Conn, rows: Iterable[tuple[str, str, bytes]]) -> None:
    conn.executemany("INSERT OR IGNORE INTO record_blobs (collection, rkey, blob_cid) VALUES (?, ?, ?)", rows)


def record_blobs(conn: Conn, collection: str, rkey: str) -> list[CID]:
    rows = conn.execute(
        "SELECT blob_cid FROM record_blobs WHERE collection = ? AND rkey = ? ORDER BY blob_cid", (collection, rkey)
    ).fetchall()
    return [CID(r[0]) for r in rows]


def blob_in_use(conn: Conn, blob_cid: bytes) -> bool:
    return conn.execute("SELECT 1 FROM record_blobs WHERE blob_cid = ? LIMIT 1", (bytes(blob_cid),)).fetchone() is not None


def _collections_in_mst_order(conn: Conn) -> list[tuple[str, int]]:
    # MST order is bytewise on "collection/rkey": sort collections by "collection/"
    rows = conn.execute("SELECT name, id FROM collections").fetchall()
    return sorted(rows, key=lambda r: (r[0] + "/").encode())


def iter_record_blocks_in_mst_order(conn: Conn) -> Iterator[tuple[bytes | None, bytes | None]]:
    """(cid bytes, block data) of every record in MST key order, (None, None) for a missing
    block: the export's stream (no names per row; `record_at` names a row when it fails)."""
    sql = "SELECT b.cid, b.data FROM record_index r LEFT JOIN blocks b ON b.id = r.block WHERE r.coll = ? ORDER BY r.rkey"
    return chain.from_iterable(conn.execute(sql, (coll,)) for _, coll in _collections_in_mst_order(conn))


def record_at(conn: Conn, n: int) -> tuple[str, str] | None:
    """(collection, rkey) of the n-th record (0-based) in MST key order (error messages)."""
    for name, coll in _collections_in_mst_order(conn):
        count = conn.execute("SELECT count(*) FROM record_index WHERE coll = ?", (coll,)).fetchone()[0]
        if n < count:
            row = conn.execute("SELECT rkey FROM record_index WHERE coll = ? ORDER BY rkey LIMIT 1 OFFSET ?",
                               (coll, n)).fetchone()
            return name, row[0]
        n -= count
    return None


def iter_index_in_mst_order(conn: Conn) -> Iterator[tuple[str, CID | None]]:
    """Every ("collection/rkey", cid) in MST key order, streaming, without a sort (cid None:
    the record's block is missing).

    MST order is bytewise on "collection/rkey"; each collection's keys are contiguous in it
    (they share the prefix "collection/"), so walking collections sorted by "collection/"
    and each one in primary-key (rkey) order gives exactly the MST order.
    """
    sql = "SELECT r.rkey, b.cid FROM record_index r LEFT JOIN blocks b ON b.id = r.block WHERE r.coll = ? ORDER BY r.rkey"
    for collection, coll in _collections_in_mst_order(conn):
        prefix = collection + "/"
        for rkey, cid in conn.execute(sql, (coll,)):
            yield prefix + rkey, (CID(cid) if cid is not None else None)


def first_record_without_block(conn: Conn) -> tuple[str, str] | None:
    """(collection, rkey) of a record whose block is not stored (import check), or None."""
    row = conn.execute(
        "SELECT c.name, r.rkey FROM record_index r JOIN collections c ON c.id = r.coll "
        "WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.id = r.block) LIMIT 1"
    ).fetchone()
    return (row[0], row[1]) if row else None


# ---- bulk load (a full import): blob refs are found while blocks stream in, keyed by block
# id in a TEMP table (on disk, temp_store=FILE), and joined to the record index at the end
def begin_blob_staging(conn: Conn) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.staged_blob_refs")
    conn.execute("CREATE TEMP TABLE staged_blob_refs (block INTEGER NOT NULL, blob_cid BLOB NOT NULL)")


def stage_blob_refs(conn: Conn, rows: list[tuple[int, bytes]]) -> None:
    conn.executemany("INSERT INTO temp.staged_blob_refs (block, blob_cid) VALUES (?, ?)", rows)


def end_blob_staging(conn: Conn) -> None:
    """record_blobs for every record whose block had blob refs (needs record_index_block)."""
    conn.execute(
        "INSERT OR IGNORE INTO record_blobs (collection, rkey, blob_cid) "
        "SELECT c.name, r.rkey, s.blob_cid FROM temp.staged_blob_refs s "
        "JOIN record_index r ON r.block = s.block JOIN collections c ON c.id = r.coll")
    conn.execute("DROP TABLE temp.staged_blob_refs")


def iter_records_mentioning(conn: Conn, needle: bytes) -> Iterator[tuple[str, str, bytes | None, bytes | None]]:
    """(collection, rkey, cid, data) of records whose block contains `needle` (e.g. b"mimeType"),
    and (..., None, None) for records whose block is missing — one pass over the index."""
    yield from conn.execute(
        "SELECT c.name, r.rkey, b.cid, b.data FROM record_index r JOIN collections c ON c.id = r.coll "
        "LEFT JOIN blocks b ON b.id = r.block WHERE b.data IS NULL OR instr(b.data, ?) > 0",
        (needle,),
    )


def shared_record_cids(conn: Conn) -> set[bytes]:
    """CIDs used by more than one record (identical record content under two keys); usually few.
    A distinct count over the block index first (~3x cheaper than the GROUP BY at 1M
    records): when every record has its own block, the answer is empty."""
    (distinct,), = conn.execute("SELECT count(DISTINCT block) FROM record_index")
    (total,), = conn.execute("SELECT count(*) FROM record_index")
    if distinct == total:
        return set()
    return {r[0] for r in conn.execute(
        "SELECT cid FROM blocks WHERE id IN (SELECT block FROM record_index GROUP BY block HAVING count(*) > 1)")}


def iter_record_data(conn: Conn) -> Iterator[tuple[str, str, bytes | None]]:
    """(collection, rkey, block data or None) for every record, in primary-key order."""
    yield from conn.execute(
        "SELECT c.name, r.rkey, b.data FROM record_index r JOIN collections c ON c.id = r.coll "
        "LEFT JOIN blocks b ON b.id = r.block"
    )
