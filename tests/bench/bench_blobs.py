"""Blob throughput and memory: streamed upload/download MB/s and peak RSS.

Run: `python tests/bench/bench_blobs.py [--sizes 1,20,100] [--http]` (sizes in MB). Without
--http the BlobService runs in this process; with --http a real server is started on
127.0.0.1 and driven over HTTP, and the server's RSS is reported. Prints figures, asserts
nothing. Data is generated chunk by chunk, so only the blob code could make memory grow
with blob size: compare the rows (RSS growth beyond the Python heap is SQLite's page
cache, which is bounded per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import AsyncIterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tinypds.config import Settings  # noqa: E402
from tinypds.services.repo.blobs import BlobService  # noqa: E402
from tinypds.store import records  # noqa: E402
from tinypds.store.db import Database  # noqa: E402

CHUNK = 64 * 1024  # what an ASGI server typically hands over per receive()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


async def generate(size: int, seed: int, sink: "hashlib._Hash") -> AsyncIterator[bytes]:
    block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
    sent = 0
    n = 0
    while sent < size:
        piece = (n.to_bytes(8, "big") + block[8:])[: size - sent]
        sink.update(piece)
        sent += len(piece)
        n += 1
        yield piece


async def round_trip(svc: BlobService, db: Database, size: int, seed: int) -> tuple[float, float]:
    """Upload then download one blob; returns (upload seconds, download seconds)."""
    want = hashlib.sha256()
    t0 = time.perf_counter()
    meta = await svc.upload(generate(size, seed, want), "video/mp4", expected_size=size)
    up = time.perf_counter() - t0
    assert meta.cid.digest == want.digest()
    db.write(lambda c: records.set_record_blobs(c, "app.bsky.feed.post", f"b{seed}", [meta.cid]))
    got = hashlib.sha256()
    t0 = time.perf_counter()
    _mime, _size, chunks = await svc.open_blob(meta.cid)
    async for chunk in chunks:
        got.update(chunk)
    down = time.perf_counter() - t0
    assert got.digest() == want.digest()
    return up, down


async def one(svc: BlobService, db: Database, size_mb: float, seed: int) -> None:
    size = int(size_mb * 1024 * 1024)
    up, down = await round_trip(svc, db, size, seed)
    rss, peak = current_rss_mb(), peak_rss_mb()
    # a second pass under tracemalloc: the Python heap's high-water mark during the transfer
    tracemalloc.start()
    await round_trip(svc, db, size, seed + 1000)
    _cur, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mb = size / 2**20
    print(
        f"{size_mb:>7.1f} MB  upload {mb / up:7.1f} MB/s  download {mb / down:7.1f} MB/s"
        f"  rss {rss:6.1f} MB  peak rss {peak:6.1f} MB  python heap peak {heap_peak / 2**20:5.2f} MB"
    )


async def main(sizes: list[float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(Path(tmp) / "bench.sqlite")
        try:
            svc = BlobService(db, Settings(data_dir=Path(tmp), blob_max_bytes=int(max(sizes) * 2**20) + 1))
            print(f"baseline rss {current_rss_mb():.1f} MB  peak {peak_rss_mb():.1f} MB")
            print("(rss above the Python heap is SQLite's page cache, capped per connection by the Database)")
            for i, size in enumerate(sizes):
                await one(svc, db, size, i)
        finally:
            db.close()


def proc_status_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main_http(sizes: list[float]) -> None:
    import httpx

    from tests.integration.conftest import start_server

    with tempfile.TemporaryDirectory() as tmp:
        env = {"TINYPDS_BLOB_MAX_BYTES": str(int(max(sizes) * 2**20) + 1)}
        server = start_server(Path(tmp) / "data", extra_env=env)
        try:
            pid = server.proc.pid
            session = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                                 json={"identifier": server.handle, "password": server.password}).json()
            auth = {"Authorization": f"Bearer {session['accessJwt']}"}
            rss, hwm = proc_status_mb(pid)
            print(f"server idle rss {rss:.1f} MB  peak {hwm:.1f} MB")
            with httpx.Client(base_url=server.url, timeout=300) as client:
                for i, size_mb in enumerate(sizes):
                    size = int(size_mb * 2**20)
                    want = hashlib.sha256()

                    def body(seed: int = i):
                        block = hashlib.sha256(str(seed).encode()).digest() * (CHUNK // 32)
                        sent, n = 0, 0
                        while sent < size:
                            piece = (n.to_bytes(8, "big") + block[8:])[: size - sent]
                            want.update(piece)
                            sent += len(piece)
                            n += 1
                            yield piece

                    t0 = time.perf_counter()
                    resp = client.post("/xrpc/com.atproto.repo.uploadBlob", content=body(),
                                       headers={**auth, "Content-Type": "video/mp4", "Content-Length": str(size)})
                    up = time.perf_counter() - t0
                    resp.raise_for_status()
                    blob = resp.json()["blob"]
                    rec = client.post("/xrpc/com.atproto.repo.createRecord", headers=auth, json={
                        "repo": server.did, "collection": "com.example.bench", "record": {"$type": "com.example.bench", "f": blob}})
                    rec.raise_for_status()
                    got = hashlib.sha256()
                    t0 = time.perf_counter()
                    with client.stream("GET", "/xrpc/com.atproto.sync.getBlob",
                                       params={"did": server.did, "cid": blob["ref"]["$link"]}) as stream:
                        stream.raise_for_status()
                        for chunk in stream.iter_bytes():
                            got.update(chunk)
                    down = time.perf_counter() - t0
                    assert got.digest() == want.digest()
                    rss, hwm = proc_status_mb(pid)
                    mb = size / 2**20
                    print(f"{size_mb:>7.1f} MB  uploadBlob {mb / up:7.1f} MB/s  getBlob {mb / down:7.1f} MB/s"
                          f"  server rss {rss:6.1f} MB  peak {hwm:6.1f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,20", help="comma-separated blob sizes in MB (default 1,20)")
    ap.add_argument("--http", action="store_true", help="drive a real server over HTTP and report its RSS")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    if args.http:
        main_http(sizes)
    else:
        asyncio.run(main(sizes))
