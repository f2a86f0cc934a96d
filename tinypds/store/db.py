"""The SQLite database: one file, one writer thread, per-thread readers (sole apsw importer).

Owns connections, pragmas, the `application_id` check, migrations (schema.py) and backups.
Every write is a function run on the writer thread inside BEGIN IMMEDIATE ... COMMIT
(`write` / `awrite`); reads run inline on a per-thread connection (`read`, for short
index-bounded lookups) or on a small pool (`aread`, for scans). Tricky bits: apsw releases
the GIL inside SQLite; a nested `write` from the writer thread runs inline (same
transaction); `close()` checkpoints (TRUNCATE) so the .sqlite file alone is complete.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from contextlib import contextmanager

import apsw

from . import schema

T = TypeVar("T")

APPLICATION_ID = 0x74504453  # "tPDS"
BUSY_TIMEOUT_MS = 10_000
CACHE_KIB = 4 * 1024  # the writer's page cache; MST nodes are cached decoded above it, so a Pi keeps RSS low
BULK_CACHE_KIB = 32 * 1024  # the writer's page cache while bulk work (a repo import) runs: see bulk_cache
SORT_CACHE_KIB = 8 * 1024  # ... and while it sorts (CREATE INDEX): see sort_cache
READER_CACHE_KIB = 4 * 1024  # each read connection's: several live on, so RSS stays bounded on a Pi
STREAM_CACHE_KIB = 2 * 1024  # a long stream (export, getRepo) reads each page about once: a big cache only grows RSS

Connection = apsw.Connection
SQLError = apsw.Error
ConstraintError = apsw.ConstraintError


class DatabaseError(Exception):
    """The database file cannot be used (wrong file, newer schema, corrupt); message says why."""


def _configure(conn: apsw.Connection) -> None:
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute("PRAGMA temp_store=FILE")


def _open(path: Path, readonly: bool = False) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READONLY if readonly else apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    try:
        conn = apsw.Connection(str(path), flags=flags)
    except apsw.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from exc
    try:
        _configure(conn)
    except apsw.NotADBError as exc:
        conn.close()
        raise DatabaseError(f"{path} is not an SQLite database (refusing to touch it)") from exc
    return conn


def _check_identity(conn: apsw.Connection, path: Path) -> None:
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        has_tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    except apsw.NotADBError as exc:
        raise DatabaseError(f"{path} is not an SQLite database (refusing to touch it)") from exc
    if app_id == APPLICATION_ID:
        return
    if app_id == 0 and has_tables == 0:
        return  # a fresh file: migrations will stamp it
    raise DatabaseError(f"{path} is not a tinypds database (application_id {app_id:#x}); point --data at a tinypds data directory")


@contextmanager
def bulk_cache(conn: apsw.Connection, kib: int = BULK_CACHE_KIB) -> Iterator[None]:
    """Inside a write: a bigger page cache for bulk work (repo import), shrunk back after.

    Shrinking frees the extra pages, so the server's RSS returns to its steady size."""
    conn.execute(f"PRAGMA cache_size=-{kib}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")


@contextmanager
def sort_cache(conn: apsw.Connection, kib: int = SORT_CACHE_KIB) -> Iterator[None]:
    """While a big sort runs (CREATE INDEX): SQLite's sorter may take as much memory as the
    page cache, so the cache is shrunk for it (a 1M-row sort under a 32 MiB cache added ~32 MB RSS)."""
    cache = conn.execute("PRAGMA cache_size").fetchone()[0]
    conn.execute(f"PRAGMA cache_size=-{kib}")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA cache_size={cache}")


class Database:
    """One SQLite file. Create with `Database.open(path)`; always `close()` (or use `with`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._writer_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tinypds-writer")
        self._read_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="tinypds-reader")
        self._writer_conn: apsw.Connection | None = None
        self._writer_ident: int | None = None
        self._local = threading.local()
        self._readers: list[apsw.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    # ---- lifecycle ---------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, *, create: bool = True, migrate: bool = True) -> "Database":
        """Open (and by default create + migrate) the database. Raises DatabaseError."""
        path = Path(path)
        if not create and not path.exists():
            raise DatabaseError(f"no database at {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = cls(path)
        try:
            db._writer_pool.submit(db._init_writer, migrate).result()
        except BaseException:
            db._shutdown_pools()
            raise
        return db

    def _init_writer(self, migrate: bool) -> None:
        conn = _open(self.path)
        try:
            _check_identity(conn, self.path)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DatabaseError(f"cannot switch {self.path} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            if migrate:
                schema.migrate(conn, APPLICATION_ID)
            else:
                schema.check_version(conn)
        except BaseException:
            conn.close()
            raise
        self._writer_conn = conn
        self._writer_ident = threading.get_ident()

    def close(self) -> None:
        """Checkpoint (TRUNCATE) and close every connection; the .sqlite file is then complete."""
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            try:
                conn.close()
            except apsw.Error:
                pass
        if self._writer_conn is not None:
            def _close() -> None:
                assert self._writer_conn is not None
                try:
                    # never wait here: if another process (a live server) is using the file,
                    # the checkpoint reports busy at once and that process's own close completes it
                    self._writer_conn.set_busy_timeout(0)
                    self._writer_conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchall()
                except apsw.BusyError:
                    pass
                finally:
                    self._writer_conn.close()
            self._writer_pool.submit(_close).result()
            self._writer_conn = None
        self._shutdown_pools()

    def _shutdown_pools(self) -> None:
        self._writer_pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- writes --------------------------------------------------------------------
    def _run_write(self, fn: Callable[[apsw.Connection], T]) -> T:
        conn = self._writer_conn
        if conn is None:
            raise DatabaseError("database is closed")
        if conn.in_transaction:  # nested call from inside a write: same transaction
            return fn(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def write(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run fn(conn) in one write transaction on the writer thread; block for the result."""
        if threading.get_ident() == self._writer_ident:
            return self._run_write(fn)
        if self._closed:
            raise DatabaseError("database is closed")
        return self._writer_pool.submit(self._run_write, fn).result()

    async def awrite(self, fn: Callable[[apsw.Connection], T]) -> T:
        """`write` without blocking the event loop."""
        if self._closed:
            raise DatabaseError("database is closed")
        return await asyncio.wrap_future(self._writer_pool.submit(self._run_write, fn))

    @contextmanager
    def rollback_journal(self) -> Iterator[bool]:
        """Around one big write (a full repo import) into a file no other connection has
        open, e.g. `tinypds import`: a rollback journal instead of the WAL while it runs, so
        the data is written once (not into the WAL and again by the checkpoint: 1M records,
        27.5 -> 24.9 s). Just as crash-safe: a hot journal rolls the file back on the next
        open. Yields whether it switched; anything else open (a server, a reader) keeps WAL."""
        if threading.get_ident() == self._writer_ident or self._closed:
            yield False
            return
        own = getattr(self._local, "conn", None)  # this thread's reader is idle (we are here): close it
        if own is not None:
            with self._readers_lock:
                self._readers.remove(own)
            self._local.conn = None
            own.close()
        switched = self._writer_pool.submit(self._journal_mode, "delete", 0).result()
        try:
            yield switched
        finally:
            if switched:
                self._writer_pool.submit(self._journal_mode, "wal", BUSY_TIMEOUT_MS).result()

    def _journal_mode(self, mode: str, busy_ms: int) -> bool:
        conn = self._writer_conn
        if conn is None or conn.in_transaction:
            return False
        conn.set_busy_timeout(busy_ms)
        cursor = conn.cursor()
        try:
            got = cursor.execute(f"PRAGMA main.journal_mode={mode}").fetchall()[0][0]  # main only (not TEMP)
        except apsw.BusyError:
            return False  # another connection has the file open: stay as we are
        finally:
            cursor.close()
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
        return str(got).lower() == mode

    def checkpoint(self) -> tuple[int, int]:
        """WAL checkpoint (TRUNCATE) on the writer thread; returns (wal pages, checkpointed pages)."""
        def _ckpt() -> tuple[int, int]:
            assert self._writer_conn is not None
            _busy, log, done = self._writer_conn.execute("PRAGMA main.wal_checkpoint(TRUNCATE)").fetchone()
            return log, done
        return self._writer_pool.submit(_ckpt).result()

    # ---- reads ---------------------------------------------------------------------
    def _reader(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise DatabaseError("database is closed")
            conn = _open(self.path)
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read(self, fn: Callable[[apsw.Connection], T], *, snapshot: bool = False) -> T:
        """Run fn(conn) on this thread's read connection (inline; keep it short on the event loop).

        snapshot=True wraps it in one read transaction so several queries see one state.
        """
        conn = self._reader()
        if not snapshot or conn.in_transaction:
            return fn(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def aread(self, fn: Callable[[apsw.Connection], T], *, snapshot: bool = True) -> T:
        """Run fn(conn) on the read pool (for scans and anything that may wait)."""
        if self._closed:
            raise DatabaseError("database is closed")
        return await asyncio.wrap_future(self._read_pool.submit(self.read, fn, snapshot=snapshot))

    @contextmanager
    def reader(self) -> Iterator[apsw.Connection]:
        """A private read connection holding one snapshot until the block ends (long streams)."""
        conn = _open(self.path)
        conn.execute("PRAGMA query_only=ON")
        # no mmap: every mapped page a long stream touches counts as this process's RSS
        # (a 1M-record export peaked at 299 MB with a 256 MiB map, 35 MB without; no slower)
        conn.execute(f"PRAGMA cache_size=-{STREAM_CACHE_KIB}")
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()  # start the snapshot now
            yield conn
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("COMMIT")
            finally:
                conn.close()

    # ---- backup --------------------------------------------------------------------
    def backup_to(self, dest: Path | str, progress: Callable[[int, int], None] | None = None, pages_per_step: int = 1024) -> None:
        """Consistent single-file copy (apsw backup API) while the database stays in use.

        The copy is left in rollback-journal mode so the one file is complete on its own.
        progress(done_pages, total_pages) is called after each step.
        """
        dest = Path(dest)
        if dest.exists():
            raise DatabaseError(f"{dest} already exists; choose a new file name")
        src = _open(self.path)
        out = apsw.Connection(str(dest))
        try:
            with out.backup("main", src, "main") as b:
                while not b.done:
                    b.step(pages_per_step)
                    if progress is not None:
                        progress(b.page_count - b.remaining, b.page_count)
            out.execute("PRAGMA journal_mode=DELETE")
        except BaseException:
            out.close()
            src.close()
            dest.unlink(missing_ok=True)
            raise
        out.close()
        src.close()
