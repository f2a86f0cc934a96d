"""The blobs tables: metadata and 64 KiB parts (SQL only; schema and triggers in migrations/0003).

Functions take a connection (writes inside `Database.write`). Must not import services or
asyncio. Tricky bits: `cid` is NULL while a blob uploads or dies, so readers joining parts on
the CID never see half a blob; deletions go in bounded batches (`delete_dead_parts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..core.cid import CID

Conn = Any  # an apsw.Connection

PART_SIZE = 64 * 1024


class UploadGone(Exception):
    """The upload's row is no longer 'uploading' (collected as stale while it was running)."""


@dataclass(frozen=True)
class BlobMeta:
    cid: CID
    mime: str
    size: int
    status: str  # 'temp' | 'permanent' | 'orphan'

    def ref(self) -> dict[str, Any]:
        """The lexicon blob object in JSON form."""
        return {"$type": "blob", "ref": {"$link": str(self.cid)}, "mimeType": self.mime, "size": self.size}


def iso_time(ts: float) -> str:
    """Seconds since the epoch -> the schema's ISO 8601 UTC form (sorts as text)."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def part_count(size: int) -> int:
    return -(-size // PART_SIZE)


# ---- writing -------------------------------------------------------------------------
def begin_upload(conn: Conn, now: str, temp_key: str | None = None) -> int:
    """A new 'uploading' row; returns its id (parts are keyed by it)."""
    conn.execute("INSERT INTO blobs (status, created_at, temp_key) VALUES ('uploading', ?, ?)", (now, temp_key))
    return conn.last_insert_rowid()


def upload_id(conn: Conn, temp_key: str) -> int | None:
    """The row id of the upload with this temp key (in any state), or None."""
    row = conn.execute("SELECT id FROM blobs WHERE temp_key = ?", (temp_key,)).fetchone()
    return row[0] if row else None


def kill_upload(conn: Conn, temp_key: str) -> int | None:
    """Mark the upload with this temp key dead; returns its id (None if it never started)."""
    blob_id = upload_id(conn, temp_key)
    if blob_id is not None:
        kill(conn, blob_id)
    return blob_id


def _require_uploading(conn: Conn, blob_id: int) -> None:
    row = conn.execute("SELECT status FROM blobs WHERE id = ?", (blob_id,)).fetchone()
    if row is None or row[0] != "uploading":
        raise UploadGone(f"upload {blob_id} was discarded")


def put_parts(conn: Conn, blob_id: int, first_idx: int, parts: Sequence[bytes]) -> None:
    """Append consecutive parts starting at index `first_idx`."""
    _require_uploading(conn, blob_id)
    conn.executemany(
        "INSERT INTO blob_parts (blob_id, idx, data) VALUES (?, ?, ?)",
        [(blob_id, first_idx + i, p) for i, p in enumerate(parts)],
    )


def finish_upload(conn: Conn, blob_id: int, cid: CID, mime: str, size: int, now: str) -> tuple[BlobMeta, bool]:
    """Give the upload its CID and metadata. Returns (meta, deduplicated).

    If the CID is already stored the upload is marked 'dead' (its parts are then
    deleted by the caller with `delete_dead_parts`) and the stored blob is returned;
    a stored temp/orphan blob is refreshed to a new temp upload. A blob some record
    already references (e.g. listed by listMissingBlobs) is permanent at once.
    """
    _require_uploading(conn, blob_id)
    have = conn.execute("SELECT COUNT(*) FROM blob_parts WHERE blob_id = ?", (blob_id,)).fetchone()[0]
    if have != part_count(size):
        raise ValueError(f"upload {blob_id} has {have} parts, expected {part_count(size)}")
    existing = conn.execute("SELECT mime, size, status FROM blobs WHERE cid = ?", (bytes(cid),)).fetchone()
    if existing is not None:
        kill(conn, blob_id)
        old_mime, old_size, status = existing
        if status in ("temp", "orphan"):
            status = "permanent" if _referenced(conn, cid) else "temp"
            conn.execute("UPDATE blobs SET status = ?, created_at = ? WHERE cid = ?", (status, now, bytes(cid)))
        return BlobMeta(CID(cid), old_mime, old_size, status), True
    status = "permanent" if _referenced(conn, cid) else "temp"
    conn.execute(
        "UPDATE blobs SET cid = ?, mime = ?, size = ?, status = ?, created_at = ?, temp_key = NULL WHERE id = ?",
        (bytes(cid), mime, size, status, now, blob_id),
    )
    return BlobMeta(CID(cid), mime, size, status), False


def _referenced(conn: Conn, cid: bytes) -> bool:
    return conn.execute("SELECT 1 FROM record_blobs WHERE blob_cid = ? LIMIT 1", (bytes(cid),)).fetchone() is not None


def kill(conn: Conn, blob_id: int) -> None:
    """Mark a blob 'dead' (unreadable at once); its parts go with `delete_dead_parts`."""
    conn.execute("UPDATE blobs SET status = 'dead', cid = NULL WHERE id = ?", (blob_id,))


def delete_dead_parts(conn: Conn, blob_id: int, max_parts: int) -> bool:
    """Delete up to `max_parts` parts of a dead blob; True once the blob row is gone too."""
    row = conn.execute("SELECT status FROM blobs WHERE id = ?", (blob_id,)).fetchone()
    if row is None:
        return True
    if row[0] != "dead":
        raise ValueError(f"blob {blob_id} is {row[0]}, not dead")
    before = conn.total_changes()
    conn.execute(
        "DELETE FROM blob_parts WHERE rowid IN (SELECT rowid FROM blob_parts WHERE blob_id = ? LIMIT ?)",
        (blob_id, max_parts),
    )
    if conn.total_changes() - before < max_parts:
        conn.execute("DELETE FROM blobs WHERE id = ?", (blob_id,))
        return True
    return False


# ---- garbage collection ------------------------------------------------------------------
def sweep_references(conn: Conn) -> None:
    """Re-derive temp/permanent/orphan from record_blobs (the triggers' safety net)."""
    conn.execute(
        "UPDATE blobs SET status = 'orphan' WHERE status = 'permanent'"
        " AND NOT EXISTS (SELECT 1 FROM record_blobs r WHERE r.blob_cid = blobs.cid)"
    )
    conn.execute(
        "UPDATE blobs SET status = 'permanent' WHERE status IN ('temp', 'orphan')"
        " AND EXISTS (SELECT 1 FROM record_blobs r WHERE r.blob_cid = blobs.cid)"
    )


def collect(conn: Conn, temp_before: str, uploading_before: str) -> list[int]:
    """Mark orphans, temp blobs created before `temp_before` and uploads started before
    `uploading_before` as dead; return the ids of all dead blobs (to purge)."""
    sweep_references(conn)
    conn.execute(
        "UPDATE blobs SET status = 'dead', cid = NULL WHERE status = 'orphan'"
        " OR (status = 'temp' AND created_at < ?) OR (status = 'uploading' AND created_at < ?)",
        (temp_before, uploading_before),
    )
    return [r[0] for r in conn.execute("SELECT id FROM blobs WHERE status = 'dead' ORDER BY id")]


# ---- reading -------------------------------------------------------------------------
def get_meta(conn: Conn, cid: bytes) -> BlobMeta | None:
    row = conn.execute("SELECT mime, size, status FROM blobs WHERE cid = ?", (bytes(cid),)).fetchone()
    return BlobMeta(CID(cid), row[0], row[1], row[2]) if row else None


def read_parts(conn: Conn, cid: bytes, first_idx: int, count: int) -> list[bytes]:
    """Parts [first_idx, first_idx + count) of the blob with this CID, in order."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT p.data FROM blobs b JOIN blob_parts p ON p.blob_id = b.id"
            " WHERE b.cid = ? AND p.idx >= ? AND p.idx < ? ORDER BY p.idx",
            (bytes(cid), first_idx, first_idx + count),
        )
    ]


def status_counts(conn: Conn) -> dict[str, int]:
    """{status: number of blobs} plus 'parts': number of part rows (admin and tests)."""
    out = {r[0]: r[1] for r in conn.execute("SELECT status, COUNT(*) FROM blobs GROUP BY status")}
    out["parts"] = conn.execute("SELECT COUNT(*) FROM blob_parts").fetchone()[0]
    return out


def list_referenced(conn: Conn, since_rev: str | None, after: bytes | None, limit: int) -> list[CID]:
    """Distinct blob CIDs referenced by records (written after `since_rev`), in CID byte order."""
    after_b = bytes(after) if after is not None else b""
    if since_rev is None:
        sql = "SELECT DISTINCT blob_cid FROM record_blobs WHERE blob_cid > ? ORDER BY blob_cid LIMIT ?"
        args: tuple = (after_b, limit)
    else:
        sql = (
            "SELECT DISTINCT rb.blob_cid FROM record_blobs rb"
            " JOIN records r ON r.collection = rb.collection AND r.rkey = rb.rkey"
            " WHERE r.rev > ? AND rb.blob_cid > ? ORDER BY rb.blob_cid LIMIT ?"
        )
        args = (since_rev, after_b, limit)
    return [CID(r[0]) for r in conn.execute(sql, args)]


def list_missing(conn: Conn, after: bytes | None, limit: int) -> list[tuple[CID, str, str]]:
    """(blob CID, collection, rkey of one referencing record) for referenced blobs not stored."""
    after_b = bytes(after) if after is not None else b""
    rows = conn.execute(
        "SELECT rb.blob_cid, MIN(rb.collection || '/' || rb.rkey) FROM record_blobs rb"
        " WHERE rb.blob_cid > ? AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.cid = rb.blob_cid)"
        " GROUP BY rb.blob_cid ORDER BY rb.blob_cid LIMIT ?",
        (after_b, limit),
    )
    out = []
    for cid, path in rows:
        collection, _, rkey = path.partition("/")
        out.append((CID(cid), collection, rkey))
    return out


def repo_did(conn: Conn) -> str | None:
    row = conn.execute("SELECT did FROM repo_root LIMIT 1").fetchone()
    return row[0] if row else None
