"""Migration 0007 (the lean repo store) converts a file written by the previous release.

The old file is built the way that release did (migrations 0001-0006 applied, rows written
with its SQL); after opening it with this code every record, block, rev and blob reference
reads back the same, the `records` view shows the old columns, and a failing 0007 leaves the
old file exactly as it was.
"""

from __future__ import annotations

import apsw
import pytest

from tinypds.core.cid import cid_for_dagcbor, cid_for_raw
from tinypds.store import blocks as blocks_db
from tinypds.store import records as records_db
from tinypds.store import schema
from tinypds.store.db import APPLICATION_ID, Database, DatabaseError

OLD = 6
BLOB = bytes(cid_for_raw(b"a blob"))


def _old_file(path, skipped_to: int | None = None) -> list[tuple[str, str, bytes, bytes]]:
    """The previous release's file; skipped_to=N: a development tree's file that got
    migrations 0008..N (numbered after 0007 but committed first) and never 0007."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    for version, _name, sql in schema.migrations():
        if version <= OLD or (skipped_to is not None and 7 < version <= skipped_to):
            conn.execute(sql)
    conn.execute(f"PRAGMA user_version={skipped_to or OLD}")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    rows = []
    for i in range(30):
        data = b"\xa1ai" + bytes([i])  # {"i": i}-ish bytes; content is opaque to the store
        cid = bytes(cid_for_dagcbor(data))
        collection = ("app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.feed.post.x")[i % 3]
        rows.append((collection, f"3k{i:011d}", cid, data))
        conn.execute("INSERT INTO blocks (cid, rev, data) VALUES (?, ?, ?)", (cid, f"rev{i:03d}", data))
        conn.execute("INSERT INTO records (collection, rkey, cid, rev) VALUES (?, ?, ?, ?)",
                     (collection, f"3k{i:011d}", cid, f"rev{i:03d}"))
    conn.execute("INSERT INTO blocks (cid, rev, data) VALUES (?, 'rev999', x'a0')", (bytes(cid_for_dagcbor(b"\xa0")),))
    conn.execute("INSERT INTO record_blobs (collection, rkey, blob_cid) VALUES (?, ?, ?)", (*rows[0][:2], BLOB))
    conn.close()
    return rows


@pytest.mark.parametrize("history", ["previous release", "0008+ applied first"])
def test_old_file_converts_and_reads_back_the_same(tmp_path, history):
    path = tmp_path / "tinypds.sqlite"
    rows = _old_file(path, None if history == "previous release" else schema.latest_version())
    with Database.open(path) as db:
        assert db.read(schema.current_version) == schema.latest_version()
        for collection, rkey, cid, data in rows:
            got = db.read(lambda c: records_db.get_record(c, collection, rkey))
            assert got is not None and bytes(got[0]) == cid and got[1] == data
        assert db.read(lambda c: records_db.list_collections(c)) == sorted({r[0] for r in rows})
        assert db.read(lambda c: records_db.count_records(c)) == 30
        assert db.read(lambda c: blocks_db.count_blocks(c))[0] == 31
        view = db.read(lambda c: c.execute("SELECT collection, rkey, cid, rev FROM records ORDER BY rkey").fetchall())
        assert view == [(r[0], r[1], r[2], f"rev{i:03d}") for i, r in enumerate(rows)]
        since = db.read(lambda c: [bytes(cid) for cid, _ in blocks_db.blocks_since(c, "rev027")])
        assert since == [rows[28][2], rows[29][2], bytes(cid_for_dagcbor(b"\xa0"))]
        assert db.read(lambda c: records_db.record_blobs(c, rows[0][0], rows[0][1])) == [BLOB]
        # the CID index still finds blocks, and still refuses a second copy of one
        assert db.read(lambda c: blocks_db.get_block(c, rows[5][2])) == rows[5][3]
        assert db.write(lambda c: blocks_db.put_blocks(c, [(rows[5][2], rows[5][3])], "rev1000")) == 0


def test_a_failing_0007_leaves_the_old_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "tinypds.sqlite"
    _old_file(path)
    real = [m for m in schema.migrations() if m[0] <= 7]
    broken = real[:-1] + [(7, real[-1][1], real[-1][2] + "\nTHIS IS NOT SQL;")]
    monkeypatch.setattr(schema, "migrations", lambda: broken)
    with pytest.raises(DatabaseError, match="0007"):
        Database.open(path)
    conn = apsw.Connection(str(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == OLD
        assert conn.execute("SELECT type FROM sqlite_schema WHERE name = 'records'").fetchone()[0] == "table"
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 30
        assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name IN ('record_index', 'collections')").fetchone()[0] == 0
    finally:
        conn.close()
