"""SQL for operations: consistent file copies, file checks, sealed keys inside a backup, status figures.

Only SQL and apsw (store layer); no key handling (the sealed blob is opaque bytes here).
Tricky bits: `copy_file` holds ONE read transaction on the source for the whole copy, so
writers in other connections or processes (WAL) never make the backup restart and the copy
is the snapshot taken at its start; the copy is written beside its destination and renamed
into place only when complete, in rollback-journal mode so the one file stands alone. The
sealed-keys table exists only in backup copies (`backup_keys`), never in a live database.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import apsw

from . import schema
from .db import APPLICATION_ID, DatabaseError

Conn = Any
KEYS_TABLE = "backup_keys"


@dataclass(frozen=True)
class FileCheck:
    """What `check_file` found; `problems` empty means the file is a usable tinypds database."""

    application_id: int
    schema_version: int
    latest_version: int
    integrity: list[str]
    has_repo: bool
    did: str | None
    last_seq: int
    seq_reserved: int
    has_sealed_keys: bool

    @property
    def problems(self) -> list[str]:
        out = []
        if self.application_id != APPLICATION_ID:
            out.append(f"not a tinypds database (application_id {self.application_id:#x})")
        if self.schema_version > self.latest_version:
            out.append(
                f"schema version {self.schema_version} is newer than this tinypds knows "
                f"({self.latest_version}); upgrade tinypds first"
            )
        if self.integrity != ["ok"]:
            out.append("integrity_check failed: " + "; ".join(self.integrity[:5]))
        return out


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_source(path: Path) -> Conn:
    """A connection that only reads (read-write flags so a WAL file opens without its -shm)."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.execute("PRAGMA query_only=ON")
    except apsw.Error:
        try:
            conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        except apsw.Error as exc:
            raise DatabaseError(f"cannot open {path}: {exc}") from exc
    conn.set_busy_timeout(10_000)
    return conn


def copy_file(
    src: Path | str,
    dest: Path | str,
    progress: Callable[[int, int], None] | None = None,
    pages_per_step: int = 256,
    prepare: Callable[[Conn], None] | None = None,
) -> int:
    """Copy the database at `src` to the new file `dest` (consistent snapshot); returns pages copied.

    `prepare(conn)` may change the copy (e.g. add sealed keys) before it is renamed into place.
    progress(done_pages, total_pages) after each step. Raises DatabaseError.
    """
    src, dest = Path(src), Path(dest)
    if dest.exists():
        raise DatabaseError(f"{dest} already exists; choose a new file name")
    if not src.is_file():
        raise DatabaseError(f"no database at {src}")
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    source = _open_source(src)
    out = None
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the snapshot starts here
        out = apsw.Connection(str(partial))
        with out.backup("main", source, "main") as b:
            while not b.done:
                b.step(pages_per_step)
                if progress is not None:
                    progress(b.page_count - b.remaining, b.page_count)
            pages = b.page_count
        source.execute("COMMIT")
        out.execute("PRAGMA journal_mode=DELETE")
        if prepare is not None:
            with out:  # one transaction
                prepare(out)
        out.close()
        out = None
        _fsync_path(partial)
        os.replace(partial, dest)
        _fsync_path(dest.parent)
    except apsw.Error as exc:
        raise DatabaseError(f"cannot copy {src}: {exc}") from exc
    finally:
        if out is not None:
            out.close()
        source.close()
        partial.unlink(missing_ok=True)
    return pages


def put_sealed_keys(conn: Conn, sealed: bytes, created_at: str) -> None:
    """Store a sealed key blob in a backup copy (inside the caller's transaction)."""
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, created_at TEXT NOT NULL) STRICT"
    )
    conn.execute(f"INSERT INTO {KEYS_TABLE} (sealed, created_at) VALUES (?, ?)", (sealed, created_at))


def _has_table(conn: Conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def get_sealed_keys(conn: Conn) -> bytes | None:
    if not _has_table(conn, KEYS_TABLE):
        return None
    row = conn.execute(f"SELECT sealed FROM {KEYS_TABLE} ORDER BY id DESC LIMIT 1").fetchone()
    return bytes(row[0]) if row else None


def drop_sealed_keys(conn: Conn) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {KEYS_TABLE}")


def _meta_int(conn: Conn, key: str) -> int:
    if not _has_table(conn, "meta"):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def check_file(path: Path | str) -> FileCheck:
    """Read-only checks of a database file that is not in use (a backup or a copy of one)."""
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"no such file {path}")
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        raise DatabaseError(f"cannot open {path}: {exc}") from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = schema.current_version(conn)
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        has_root = _has_table(conn, "repo_root")
        root = conn.execute("SELECT did FROM repo_root LIMIT 1").fetchone() if has_root else None
        return FileCheck(
            application_id=app_id,
            schema_version=version,
            latest_version=schema.latest_version(),
            integrity=integrity,
            has_repo=root is not None,
            did=root[0] if root else None,
            last_seq=_meta_int(conn, "seq"),
            seq_reserved=_meta_int(conn, "seq_reserved"),
            has_sealed_keys=_has_table(conn, KEYS_TABLE),
        )
    except apsw.NotADBError as exc:
        raise DatabaseError(f"{path} is not an SQLite database") from exc
    except apsw.Error as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


@dataclass(frozen=True)
class Figures:
    """Counts and sizes for `tinypds status` (one read snapshot)."""

    records: int
    collections: int
    blocks: int
    block_bytes: int
    blobs: int
    blob_bytes: int
    temp_blobs: int
    last_seq: int
    last_event_time: str | None
    sessions: int
    page_size: int
    page_count: int
    freelist_count: int


def figures(conn: Conn) -> Figures:
    """Counts and sizes of the stored repo, blobs, events and sessions."""
    records, collections = conn.execute("SELECT count(*), count(DISTINCT coll) FROM record_index").fetchone()
    blocks, block_bytes = conn.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM blocks").fetchone()
    blobs, blob_bytes = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE status = 'permanent'"
    ).fetchone()
    temp = conn.execute("SELECT count(*) FROM blobs WHERE status IN ('temp', 'uploading')").fetchone()[0]
    last_time = conn.execute("SELECT time FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    sessions = conn.execute("SELECT count(*) FROM session").fetchone()[0] if _has_table(conn, "session") else 0
    return Figures(
        records=records,
        collections=collections,
        blocks=blocks,
        block_bytes=block_bytes,
        blobs=blobs,
        blob_bytes=blob_bytes,
        temp_blobs=temp,
        last_seq=_meta_int(conn, "seq"),
        last_event_time=last_time[0] if last_time else None,
        sessions=sessions,
        page_size=conn.execute("PRAGMA page_size").fetchone()[0],
        page_count=conn.execute("PRAGMA page_count").fetchone()[0],
        freelist_count=conn.execute("PRAGMA freelist_count").fetchone()[0],
    )


def signing_key(conn: Conn, did: str | None) -> str | None:
    """The did:key of the repo signing key recorded for `did` (None if unknown)."""
    if did is None or not _has_table(conn, "identity"):
        return None
    row = conn.execute("SELECT signing_key FROM identity WHERE did = ?", (did,)).fetchone()
    return row[0] if row else None


def read_only(path: Path | str, fn: Callable[[Conn], Any]) -> Any:
    """fn(conn) in one read snapshot on a private connection that never checkpoints.

    For commands that look at a database a server may be using (status, config check):
    unlike Database.close(), closing this connection never forces a WAL checkpoint, which
    would hold up the server's writes. Refuses files that are not tinypds databases.
    """
    path = Path(path)
    if not path.is_file():
        raise DatabaseError(f"no database at {path}")
    conn = _open_source(path)
    try:
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = schema.current_version(conn)
        except apsw.NotADBError as exc:
            raise DatabaseError(f"{path} is not an SQLite database") from exc
        if app_id != APPLICATION_ID:
            raise DatabaseError(f"{path} is not a tinypds database (application_id {app_id:#x})")
        if version > schema.latest_version():
            raise DatabaseError(f"database schema version {version} is newer than this tinypds knows "
                                f"({schema.latest_version()}); upgrade tinypds")
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")
    except apsw.Error as exc:
        raise DatabaseError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()
