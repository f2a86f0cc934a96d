"""store.blobs: parts, finalisation and dedupe, the record_blobs triggers, GC marking, listings."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinypds.core.cid import cid_for_raw
from tinypds.store import blobs, records
from tinypds.store import blocks as block_store
from tinypds.store.db import Database

NOW = "2026-01-01T00:00:00.000Z"
LATER = "2026-01-02T00:00:00.000Z"


@pytest.fixture
def db(tmp_path: Path):
    database = Database.open(tmp_path / "t.sqlite")
    yield database
    database.close()


def _store(db: Database, data: bytes, mime: str = "image/png", now: str = NOW):
    """Write `data` as one upload in a single transaction; returns (meta, deduplicated, blob_id)."""
    parts = [data[i : i + blobs.PART_SIZE] for i in range(0, len(data), blobs.PART_SIZE)]

    def run(conn):
        bid = blobs.begin_upload(conn, now)
        blobs.put_parts(conn, bid, 0, parts)
        meta, dedup = blobs.finish_upload(conn, bid, cid_for_raw(data), mime, len(data), now)
        return meta, dedup, bid

    return db.write(run)


def _purge_all(db: Database, ids: list[int]) -> None:
    for bid in ids:
        while not db.write(lambda c: blobs.delete_dead_parts(c, bid, 2)):
            pass


def test_parts_round_trip_and_meta(db: Database) -> None:
    data = bytes(range(256)) * 1000  # 256000 bytes: 4 parts, last one short
    meta, dedup, _ = _store(db, data)
    assert not dedup and meta.status == "temp" and meta.size == len(data) and meta.cid == cid_for_raw(data)
    got = db.read(lambda c: blobs.read_parts(c, meta.cid, 0, 100))
    assert [len(p) for p in got] == [65536, 65536, 65536, 256000 - 3 * 65536]
    assert b"".join(got) == data
    assert db.read(lambda c: blobs.read_parts(c, meta.cid, 2, 1)) == [data[2 * 65536 : 3 * 65536]]
    assert db.read(lambda c: blobs.get_meta(c, meta.cid)) == meta
    assert meta.ref() == {"$type": "blob", "ref": {"$link": str(meta.cid)}, "mimeType": "image/png", "size": len(data)}


def test_finish_checks_part_count(db: Database) -> None:
    def run(conn):
        bid = blobs.begin_upload(conn, NOW)
        blobs.put_parts(conn, bid, 0, [b"x" * 10])
        blobs.finish_upload(conn, bid, cid_for_raw(b"x" * 70000), "image/png", 70000, NOW)

    with pytest.raises(ValueError, match="parts"):
        db.write(run)
    assert db.read(blobs.status_counts) == {"parts": 0}  # the transaction rolled back


def test_dedupe_marks_second_upload_dead(db: Database) -> None:
    data = b"same bytes" * 10000
    first, dedup1, _ = _store(db, data, "image/png", NOW)
    second, dedup2, bid2 = _store(db, data, "image/jpeg", LATER)
    assert not dedup1 and dedup2
    assert second.cid == first.cid and second.mime == "image/png"  # the stored blob wins
    counts = db.read(blobs.status_counts)
    assert counts["temp"] == 1 and counts["dead"] == 1
    _purge_all(db, [bid2])
    assert db.read(blobs.status_counts) == {"temp": 1, "parts": 2}
    # a re-upload refreshed the temp blob's timestamp (so it does not expire right away)
    assert db.read(lambda c: c.execute("SELECT created_at FROM blobs").fetchone()[0]) == LATER


def test_triggers_follow_record_references(db: Database) -> None:
    meta, _, _ = _store(db, b"picture")
    cid = bytes(meta.cid)
    status = lambda: db.read(lambda c: blobs.get_meta(c, cid)).status  # noqa: E731
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "a", [cid]))
    assert status() == "permanent"
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "b", [cid]))
    db.write(lambda c: records.delete_record(c, "app.bsky.feed.post", "a"))
    assert status() == "permanent"  # still referenced by b
    # putRecord rewriting b's references with the same blob keeps it permanent
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "b", [cid]))
    assert status() == "permanent"
    db.write(lambda c: records.delete_record(c, "app.bsky.feed.post", "b"))
    assert status() == "orphan"
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.profile", "self", [cid]))
    assert status() == "permanent"  # an orphan comes back when referenced again before GC


def test_upload_of_already_referenced_blob_is_permanent(db: Database) -> None:
    data = b"imported repo's missing blob"
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "x", [cid_for_raw(data)]))
    meta, _, _ = _store(db, data)
    assert meta.status == "permanent"


def test_collect_marks_orphans_expired_and_stale_uploads(db: Database) -> None:
    old, _, _ = _store(db, b"old temp", now="2026-01-01T00:00:00.000Z")
    fresh, _, _ = _store(db, b"fresh temp", now="2026-01-01T02:00:00.000Z")
    kept, _, _ = _store(db, b"referenced", now="2026-01-01T00:00:00.000Z")
    gone, _, _ = _store(db, b"unreferenced later", now="2026-01-01T00:00:00.000Z")
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "k", [kept.cid]))
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "g", [gone.cid]))
    db.write(lambda c: records.delete_record(c, "app.bsky.feed.post", "g"))
    stale = db.write(lambda c: blobs.begin_upload(c, "2026-01-01T00:00:00.000Z"))
    running = db.write(lambda c: blobs.begin_upload(c, "2026-01-01T02:00:00.000Z"))
    db.write(lambda c: blobs.put_parts(c, stale, 0, [b"a" * 65536, b"b" * 65536, b"c"]))

    dead = db.write(lambda c: blobs.collect(c, "2026-01-01T01:00:00.000Z", "2026-01-01T01:00:00.000Z"))
    assert len(dead) == 3 and stale in dead and running not in dead
    _purge_all(db, dead)
    left = db.read(lambda c: {bytes(r[0]) if r[0] else None for r in c.execute("SELECT cid FROM blobs")})
    assert left == {bytes(fresh.cid), bytes(kept.cid), None}  # None: the running upload
    assert old.cid and db.read(lambda c: blobs.get_meta(c, old.cid)) is None
    with pytest.raises(blobs.UploadGone):
        db.write(lambda c: blobs.put_parts(c, stale, 3, [b"late"]))
    # startup: every upload begun before the process started goes, whatever its age
    dead = db.write(lambda c: blobs.collect(c, "2026-01-01T01:00:00.000Z", "2026-01-01T03:00:00.000Z"))
    assert dead == [running]


def test_sweep_repairs_missed_trigger(db: Database) -> None:
    meta, _, _ = _store(db, b"x")
    db.write(lambda c: c.execute("UPDATE blobs SET status = 'permanent'"))  # as if a trigger was missed
    db.write(blobs.sweep_references)
    assert db.read(lambda c: blobs.get_meta(c, meta.cid)).status == "orphan"


def test_delete_dead_parts_in_batches(db: Database) -> None:
    meta, _, bid = _store(db, b"z" * (5 * 65536))
    with pytest.raises(ValueError):
        db.write(lambda c: blobs.delete_dead_parts(c, bid, 2))  # refuses a live blob
    db.write(lambda c: blobs.kill(c, bid))
    assert db.read(lambda c: blobs.read_parts(c, meta.cid, 0, 10)) == []  # unreadable at once
    steps = 0
    while not db.write(lambda c: blobs.delete_dead_parts(c, bid, 2)):
        steps += 1
    assert steps == 2 and db.read(blobs.status_counts) == {"parts": 0}


def test_listings(db: Database) -> None:
    a, b, c_ = (cid_for_raw(x) for x in (b"a", b"b", b"c"))
    db.write(lambda c: block_store.put_blocks(c, [(cid_for_raw(d), d) for d in (b"r1", b"r2")], "3kaaaaaaaaaa2"))
    db.write(lambda c: records.put_record(c, "app.bsky.feed.post", "1", cid_for_raw(b"r1"), "3kaaaaaaaaaa2"))
    db.write(lambda c: records.put_record(c, "app.bsky.feed.post", "2", cid_for_raw(b"r2"), "3kaaaaaaaaab2"))
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "1", [a, b]))
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", "2", [b, c_]))
    _store(db, b"b")
    ordered = sorted([a, b, c_], key=bytes)
    assert db.read(lambda c: blobs.list_referenced(c, None, None, 10)) == ordered
    assert db.read(lambda c: blobs.list_referenced(c, None, ordered[0], 1)) == [ordered[1]]
    assert db.read(lambda c: blobs.list_referenced(c, "3kaaaaaaaaaa2", None, 10)) == sorted([b, c_], key=bytes)
    missing = db.read(lambda c: blobs.list_missing(c, None, 10))
    assert [m[0] for m in missing] == sorted([a, c_], key=bytes)
    assert dict((m[0], (m[1], m[2])) for m in missing)[c_] == ("app.bsky.feed.post", "2")


def test_iso_time() -> None:
    assert blobs.iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert blobs.iso_time(1767225600.5) == "2026-01-01T00:00:00.500Z"


def test_temp_key_finds_and_kills_an_upload(db: Database) -> None:
    assert db.write(lambda c: blobs.kill_upload(c, "never-started")) is None
    bid = db.write(lambda c: blobs.begin_upload(c, NOW, "k1"))
    assert db.read(lambda c: blobs.upload_id(c, "k1")) == bid
    db.write(lambda c: blobs.put_parts(c, bid, 0, [b"a"]))
    assert db.write(lambda c: blobs.kill_upload(c, "k1")) == bid
    with pytest.raises(blobs.UploadGone):  # a write still queued after the kill is refused
        db.write(lambda c: blobs.put_parts(c, bid, 1, [b"b"]))
    _purge_all(db, [bid])
    assert db.read(blobs.status_counts) == {"parts": 0}
    # a finalised upload gives its key back (NULL), so the key cannot reach it any more
    done = db.write(lambda c: blobs.begin_upload(c, NOW, "k2"))
    db.write(lambda c: blobs.put_parts(c, done, 0, [b"xyz"]))
    db.write(lambda c: blobs.finish_upload(c, done, cid_for_raw(b"xyz"), "image/png", 3, NOW))
    assert db.read(lambda c: blobs.upload_id(c, "k2")) is None
