"""The blocks table: put/get/delete repo blocks, and a SQLite-backed BlockSource for the MST.

Only SQL lives here; callers pass a connection (inside `Database.write` for writes).
Tricky bits: bulk inserts are sorted by CID first (≈3× faster into the random-key unique
index, DESIGN.md §5); `SqliteBlocks` keeps a small LRU of recently read blocks (MST nodes
near the root are read on every write) and never caches misses.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable, Iterator

from ..core.cid import CID

Conn = Any  # an apsw.Connection


class DuplicateBlock(ValueError):
    """A block being inserted with `unique=True` is already stored."""

    def __init__(self, cid: bytes):
        super().__init__(f"duplicate block {CID(cid)}")
        self.cid = CID(cid)


def put_blocks(conn: Conn, blocks: Iterable[tuple[bytes, bytes]], rev: str) -> int:
    """Insert (cid, data) blocks, skipping ones already stored. Returns the number inserted."""
    rows = sorted((bytes(c), rev, d) for c, d in blocks)
    before = conn.total_changes()
    conn.executemany("INSERT OR IGNORE INTO blocks (cid, rev, data) VALUES (?, ?, ?)", rows)
    return conn.total_changes() - before


def put_blocks_unique(conn: Conn, blocks: list[tuple[bytes, bytes]], rev: str) -> None:
    """Insert blocks that must all be new; raises DuplicateBlock naming the first repeat."""
    rows = sorted((bytes(c), rev, d) for c, d in blocks)
    for a, b in zip(rows, rows[1:]):
        if a[0] == b[0]:
            raise DuplicateBlock(a[0])
    before = conn.total_changes()
    conn.executemany("INSERT OR IGNORE INTO blocks (cid, rev, data) VALUES (?, ?, ?)", rows)
    inserted = conn.total_changes() - before
    if inserted != len(rows):
        # rows inserted by this statement got consecutive rowids ending at last_insert_rowid
        first_new = conn.last_insert_rowid() - inserted + 1 if inserted else None
        for cid, _, _ in rows:
            rowid = conn.execute("SELECT id FROM blocks WHERE cid = ?", (cid,)).fetchone()[0]
            if first_new is None or rowid < first_new:
                raise DuplicateBlock(cid)
        raise DuplicateBlock(rows[0][0])  # unreachable in practice


def get_block(conn: Conn, cid: bytes) -> bytes | None:
    row = conn.execute("SELECT data FROM blocks WHERE cid = ?", (bytes(cid),)).fetchone()
    return row[0] if row else None


def has_block(conn: Conn, cid: bytes) -> bool:
    return conn.execute("SELECT 1 FROM blocks WHERE cid = ?", (bytes(cid),)).fetchone() is not None


def delete_blocks(conn: Conn, cids: Iterable[bytes]) -> int:
    before = conn.total_changes()
    conn.executemany("DELETE FROM blocks WHERE cid = ?", [(bytes(c),) for c in cids])
    return conn.total_changes() - before


def delete_all_blocks(conn: Conn) -> None:
    conn.execute("DELETE FROM blocks")


def set_missing_rev(conn: Conn, rev: str) -> None:
    """Give blocks inserted with an empty rev (before the commit was seen) their rev."""
    conn.execute("UPDATE blocks SET rev = ? WHERE rev = ''", (rev,))


def count_blocks(conn: Conn) -> tuple[int, int]:
    """(number of blocks, total bytes of block data)."""
    n, size = conn.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM blocks").fetchone()
    return n, size


def iter_blocks(conn: Conn, batch: int = 2000) -> Iterator[tuple[CID, bytes]]:
    """Every stored block in table order (sequential scan, bounded memory)."""
    last = 0
    while True:
        rows = conn.execute("SELECT id, cid, data FROM blocks WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
        if not rows:
            return
        for _, cid, data in rows:
            yield CID(cid), data
        last = rows[-1][0]


def blocks_since(conn: Conn, since: str | None, batch: int = 2000) -> Iterator[tuple[CID, bytes]]:
    """Blocks introduced after rev `since` (all blocks if None), for getRepo?since=."""
    if since is None:
        yield from iter_blocks(conn, batch)
        return
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, cid, data FROM blocks WHERE rev > ? AND id > ? ORDER BY id LIMIT ?", (since, last, batch)
        ).fetchall()
        if not rows:
            return
        for _, cid, data in rows:
            yield CID(cid), data
        last = rows[-1][0]


class SqliteBlocks:
    """BlockSource over the blocks table with a small LRU cache (read-through, no negative caching).

    Bound to one connection; use it only on that connection's thread.
    """

    def __init__(self, conn: Conn, cache_size: int = 1024):
        self.conn = conn
        self.cache_size = cache_size
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._sql = "SELECT data FROM blocks WHERE cid = ?"
        self.reads = 0

    def get_block(self, cid: bytes) -> bytes | None:
        cache = self._cache
        data = cache.get(cid)
        if data is not None:
            cache.move_to_end(cid)
            return data
        self.reads += 1
        row = self.conn.execute(self._sql, (bytes(cid),)).fetchone()
        if row is None:
            return None
        data = row[0]
        if self.cache_size:
            cache[cid] = data
            if len(cache) > self.cache_size:
                cache.popitem(last=False)
        return data

    def has_block(self, cid: bytes) -> bool:
        return cid in self._cache or has_block(self.conn, cid)

    def forget(self, cids: Iterable[bytes]) -> None:
        for c in cids:
            self._cache.pop(c, None)

    def clear_cache(self) -> None:
        self._cache.clear()
