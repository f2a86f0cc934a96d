"""Blob throughput and memory: streamed upload/download MB/s and the process's peak RSS.

Run: `python tests/bench/bench_blobs.py [--sizes 1,20,100]` (sizes in MB). Prints figures,
asserts nothing. The data is generated chunk by chunk, so the only thing that could make
peak RSS grow with blob size is the blob code itself: compare the 1 MB and 20 MB rows.
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
from tinypds.services.blobs import BlobService  # noqa: E402
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,20", help="comma-separated blob sizes in MB (default 1,20)")
    args = ap.parse_args()
    asyncio.run(main([float(s) for s in args.sizes.split(",")]))
