"""The record index (collection, rkey) -> CID, and the record -> blob references.

Only SQL. The index always equals the MST at the current root; store.repo keeps it in
step inside the commit transaction. Tricky bits: listing order follows listRecords
(default newest first, i.e. rkey descending; `reverse=True` ascending) and the MST order
("collection/rkey" bytewise) differs from (collection, rkey) order when one collection name
is a prefix of another, so `iter_index_in_mst_order` orders collections by "collection/".
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from ..core.cid import CID

Conn = Any


def get_record_cid(conn: Conn, collection: str, rkey: str) -> CID | None:
    row = conn.execute("SELECT cid FROM records WHERE collection = ? AND rkey = ?", (collection, rkey)).fetchone()
    return CID(row[0]) if row else None


def get_record(conn: Conn, collection: str, rkey: str) -> tuple[CID, bytes] | None:
    """(cid, block data) of a current record, or None (also when its block is missing)."""
    # a correlated subquery: measured ~2x faster than the equivalent JOIN for this point read
    row = conn.execute(
        "SELECT cid, (SELECT data FROM blocks WHERE blocks.cid = records.cid) FROM records WHERE collection = ? AND rkey = ?",
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
        f"SELECT r.rkey, r.cid, b.data FROM records r JOIN blocks b ON b.cid = r.cid "
        f"WHERE r.collection = ? {cond} ORDER BY r.rkey {order} LIMIT ?",
        params,
    ).fetchall()
    return [(rkey, CID(cid), data) for rkey, cid, data in rows]


def list_collections(conn: Conn) -> list[str]:
    """Distinct collections via an index skip-scan (cost grows with collections, not records)."""
    rows = conn.execute(
        "WITH RECURSIVE c(name) AS ("
        " SELECT min(collection) FROM records"
        " UNION ALL SELECT (SELECT min(collection) FROM records WHERE collection > c.name) FROM c WHERE c.name IS NOT NULL"
        ") SELECT name FROM c WHERE name IS NOT NULL"
    ).fetchall()
    return [r[0] for r in rows]


def count_records(conn: Conn, collection: str | None = None) -> int:
    if collection is None:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    return conn.execute("SELECT count(*) FROM records WHERE collection = ?", (collection,)).fetchone()[0]


def cid_in_use(conn: Conn, cid: bytes) -> bool:
    return conn.execute("SELECT 1 FROM records WHERE cid = ? LIMIT 1", (bytes(cid),)).fetchone() is not None


def put_record(conn: Conn, collection: str, rkey: str, cid: bytes, rev: str) -> None:
    conn.execute(
        "INSERT INTO records (collection, rkey, cid, rev) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (collection, rkey) DO UPDATE SET cid = excluded.cid, rev = excluded.rev",
        (collection, rkey, bytes(cid), rev),
    )


def put_records(conn: Conn, rows: Iterable[tuple[str, str, bytes, str]]) -> None:
    """Bulk insert (collection, rkey, cid, rev) rows (import: the index is empty)."""
    conn.executemany("INSERT INTO records (collection, rkey, cid, rev) VALUES (?, ?, ?, ?)", rows)


def delete_record(conn: Conn, collection: str, rkey: str) -> None:
    conn.execute("DELETE FROM records WHERE collection = ? AND rkey = ?", (collection, rkey))
    conn.execute("DELETE FROM record_blobs WHERE collection = ? AND rkey = ?", (collection, rkey))


def delete_all_records(conn: Conn) -> None:
    conn.execute("DELETE FROM records")
    conn.execute("DELETE FROM record_blobs")


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


def iter_records_with_data_in_mst_order(conn: Conn) -> Iterator[tuple[str, str, bytes, bytes | None]]:
    """(collection, rkey, cid bytes, block data or None) in MST key order (fast path for export)."""
    sql = ("SELECT ?, r.rkey, r.cid, b.data FROM records r LEFT JOIN blocks b ON b.cid = r.cid "
           "WHERE r.collection = ? ORDER BY r.rkey")
    for collection in sorted(list_collections(conn), key=lambda c: (c + "/").encode()):
        yield from conn.execute(sql, (collection, collection))


def iter_index_in_mst_order(conn: Conn) -> Iterator[tuple[str, CID]]:
    """Every ("collection/rkey", cid[, data]) in MST key order, streaming, without a sort.

    MST order is bytewise on "collection/rkey"; each collection's keys are contiguous in it
    (they share the prefix "collection/"), so walking collections sorted by "collection/"
    and each one in primary-key (rkey) order gives exactly the MST order.
    """
    sql = "SELECT rkey, cid FROM records WHERE collection = ? ORDER BY rkey"
    for collection in sorted(list_collections(conn), key=lambda c: (c + "/").encode()):
        prefix = collection + "/"
        for rkey, cid in conn.execute(sql, (collection,)):
            yield prefix + rkey, CID(cid)


def first_record_without_block(conn: Conn) -> tuple[str, str, CID] | None:
    """A record whose block is not stored (import check), or None."""
    row = conn.execute(
        "SELECT collection, rkey, cid FROM records r WHERE NOT EXISTS (SELECT 1 FROM blocks b WHERE b.cid = r.cid) LIMIT 1"
    ).fetchone()
    return (row[0], row[1], CID(row[2])) if row else None


def iter_records_mentioning(conn: Conn, needle: bytes) -> Iterator[tuple[str, str, bytes, bytes | None]]:
    """(collection, rkey, cid, data) of records whose block contains `needle` (e.g. b"mimeType"),
    and (..., None) for records whose block is missing — one pass over the index."""
    yield from conn.execute(
        "SELECT r.collection, r.rkey, r.cid, b.data FROM records r LEFT JOIN blocks b ON b.cid = r.cid "
        "WHERE b.data IS NULL OR instr(b.data, ?) > 0",
        (needle,),
    )


def shared_record_cids(conn: Conn) -> set[bytes]:
    """CIDs used by more than one record (identical record content under two keys); usually few."""
    return {r[0] for r in conn.execute("SELECT cid FROM records GROUP BY cid HAVING count(*) > 1")}


def iter_record_data(conn: Conn) -> Iterator[tuple[str, str, bytes | None]]:
    """(collection, rkey, block data or None) for every record, in primary-key order."""
    yield from conn.execute(
        "SELECT r.collection, r.rkey, b.data FROM records r LEFT JOIN blocks b ON b.cid = r.cid"
    )
