"""BlobService: streamed upload/download round trips, CIDs, limits, dedupe, lifecycle, failures."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterator

import pytest

from tinypds.config import Settings
from tinypds.core.cid import cid_for_raw
from tinypds.errors import BlobNotFound, BlobTooLarge, InvalidRequest, RepoNotFound
from tinypds.services.repo.blobs import BlobService
from tinypds.store import records
from tinypds.store.blobs import PART_SIZE
from tinypds.store.db import Database

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def env(tmp_path: Path):
    db = Database.open(tmp_path / "t.sqlite")
    clock = Clock()
    svc = BlobService(db, Settings(data_dir=tmp_path, blob_max_bytes=8 * 1024 * 1024, blob_temp_ttl_seconds=3600), clock)
    yield svc, db, clock
    db.close()


async def chunked(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(coro):
    return asyncio.run(coro)


def reference(db: Database, cid, path: str = "app.bsky.feed.post/1") -> None:
    collection, rkey = path.split("/")
    db.write(lambda c: records.set_record_blobs(c, collection, rkey, [cid]))


@pytest.mark.parametrize("size", [0, 1, PART_SIZE - 1, PART_SIZE, PART_SIZE + 1, 5 * 1000 * 1000])
def test_round_trip(env, size: int) -> None:
    svc, db, _ = env
    data = os.urandom(size)

    async def go():
        meta = await svc.upload(chunked(data, 7_777), "image/png", expected_size=size)
        assert meta.cid == cid_for_raw(data) and meta.size == size and meta.status == "temp"
        with pytest.raises(BlobNotFound):  # temp uploads are not served
            await svc.open_blob(meta.cid)
        reference(db, meta.cid)
        mime, got_size, chunks = await svc.open_blob(str(meta.cid))
        pieces = [c async for c in chunks]
        assert (mime, got_size) == ("image/png", size)
        assert b"".join(pieces) == data
        assert all(len(p) == PART_SIZE for p in pieces[:-1])
        return meta

    meta = run(go())
    assert svc.counts() == {"permanent": 1, "parts": -(-size // PART_SIZE)}
    assert meta.ref()["ref"] == {"$link": str(cid_for_raw(data))}


def test_one_huge_chunk_and_mime_sniffing(env) -> None:
    svc, _, _ = env
    data = PNG + os.urandom(3 * PART_SIZE)
    meta = run(svc.upload(chunked(data, len(data)), "image/svg+xml"))
    assert meta.mime == "image/png"  # sniffed type wins over the declared one
    assert run(svc.read_all(meta.cid, include_temp=True)) == data
    svg = run(svc.upload(chunked(b"<svg onload='alert(1)'/>"), "image/svg+xml"))
    assert svg.mime == "application/octet-stream"


def test_size_limit(env) -> None:
    svc, _, _ = env
    limit = 8 * 1024 * 1024
    with pytest.raises(BlobTooLarge):
        run(svc.upload(chunked(b"x" * 10), expected_size=limit + 1))  # refused up front
    with pytest.raises(BlobTooLarge):
        run(svc.upload(chunked(b"x" * (limit + 1), 1 << 20)))  # refused while streaming
    assert svc.counts() == {"parts": 0}
    meta = run(svc.upload(chunked(b"x" * limit, 1 << 20)))
    assert meta.size == limit


def test_content_length_mismatch(env) -> None:
    svc, _, _ = env
    with pytest.raises(InvalidRequest):
        run(svc.upload(chunked(b"y" * 3 * PART_SIZE), expected_size=100))
    with pytest.raises(InvalidRequest):
        run(svc.upload(chunked(b"y" * 3 * PART_SIZE), expected_size=4 * PART_SIZE))
    assert svc.counts() == {"parts": 0}


def test_dedupe(env) -> None:
    svc, db, _ = env
    data = os.urandom(2 * 1024 * 1024 + 5)
    first = run(svc.upload(chunked(data, 65_000), "video/mp4"))
    second = run(svc.upload(chunked(data, 100_000), "image/png"))
    assert first.cid == second.cid and second.mime == first.mime
    assert svc.counts() == {"temp": 1, "parts": -(-len(data) // PART_SIZE)}


def test_interrupted_upload_leaves_nothing(env) -> None:
    svc, _, _ = env

    async def broken() -> AsyncIterator[bytes]:
        for _ in range(40):  # 2.5 MiB: several write transactions happen first
            yield b"q" * PART_SIZE
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        run(svc.upload(broken()))
    assert svc.counts() == {"parts": 0}


def test_cancelled_upload_leaves_nothing(env) -> None:
    svc, _, _ = env

    async def go():
        ready = asyncio.Event()

        async def slow() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"w" * PART_SIZE
            ready.set()
            await asyncio.sleep(3600)
            yield b"never"

        task = asyncio.create_task(svc.upload(slow()))
        await ready.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    assert svc.counts() == {"parts": 0}


def test_temp_expiry(env) -> None:
    svc, _, clock = env
    meta = run(svc.upload(chunked(b"temporary" * 20_000)))
    clock.t += 3000
    assert run(svc.gc_blobs()) == 0
    assert svc.blob_meta(meta.cid) is not None
    clock.t += 700  # past the one hour TTL
    assert run(svc.gc_blobs()) == 1
    assert svc.blob_meta(meta.cid) is None and svc.counts() == {"parts": 0}


def test_promotion_and_deletion_when_unreferenced(env) -> None:
    svc, db, clock = env
    meta = run(svc.upload(chunked(b"kept" * 50_000)))
    reference(db, meta.cid, "app.bsky.feed.post/a")
    clock.t += 10 * 3600  # long past the TTL: permanent blobs do not expire
    assert run(svc.gc_blobs()) == 0
    assert run(svc.read_all(meta.cid)) == b"kept" * 50_000
    db.write(lambda c: records.delete_record(c, "app.bsky.feed.post", "a"))
    with pytest.raises(BlobNotFound):
        run(svc.open_blob(meta.cid))  # no longer served once unreferenced
    assert run(svc.gc_blobs()) == 1
    assert svc.counts() == {"parts": 0}


def test_startup_gc_removes_leftover_uploads(env, tmp_path: Path) -> None:
    svc, db, clock = env
    from tinypds.store import blobs as store

    bid = db.write(lambda c: store.begin_upload(c, store.iso_time(svc.clock())))
    db.write(lambda c: store.put_parts(c, bid, 0, [b"p" * PART_SIZE] * 3))
    assert run(svc.gc_blobs()) == 0  # a recent upload may still be running
    assert run(svc.gc_blobs(startup=True)) == 0  # ... and it began in this process
    clock.t += 1  # "restart": a new service over the same database

    async def restart():
        again = BlobService(db, Settings(data_dir=tmp_path), clock)
        await again.start(gc_interval_seconds=3600)
        assert again._gc_task is not None and not again._gc_task.done()
        await again.aclose()
        assert again._gc_task is None

    run(restart())
    assert svc.counts() == {"parts": 0}


def test_open_unknown_and_invalid(env) -> None:
    svc, _, _ = env
    with pytest.raises(BlobNotFound):
        run(svc.open_blob(cid_for_raw(b"never uploaded")))
    with pytest.raises(InvalidRequest):
        run(svc.open_blob("not-a-cid"))


def test_list_blobs_and_missing(env) -> None:
    svc, db, _ = env
    stored = run(svc.upload(chunked(b"stored")))
    absent = cid_for_raw(b"absent")
    db.write(lambda c: c.execute(
        "INSERT INTO repo_root (did, commit_cid, rev, data_cid) VALUES ('did:plc:abc', x'00', '3kaaaaaaaaaa2', x'00')"
    ))
    reference(db, stored.cid, "app.bsky.feed.post/1")
    reference(db, absent, "app.bsky.feed.post/2")
    cids, cursor = run(svc.list_blobs(limit=1))
    assert len(cids) == 1 and cursor == cids[0]
    rest, cursor2 = run(svc.list_blobs(cursor=cursor, limit=1))
    assert sorted(cids + rest) == sorted([str(stored.cid), str(absent)])
    assert run(svc.list_blobs(cursor=cursor2, limit=1)) == ([], None)
    assert run(svc.read_all(stored.cid)) == b"stored"
    _mime, size, _chunks = run(svc.open_blob(stored.cid, did="did:plc:abc"))
    assert size == 6
    with pytest.raises(RepoNotFound):
        run(svc.open_blob(stored.cid, did="did:plc:someoneelse"))
    missing, cur = run(svc.list_missing_blobs())
    assert missing == [{"cid": str(absent), "recordUri": "at://did:plc:abc/app.bsky.feed.post/2"}] and cur is None
