"""Firehose and sync benchmarks against the real server (figures, not assertions).

  python tests/bench/bench_firehose.py [--events 2000] [--records 100000] [--backfill 10000]

1. events/s delivered to 1 and to 20 websocket subscribers while writing (createRecord over
   HTTP, 8 concurrent writers, TINYPDS_WRITE_RATE_LIMIT=0);
2. getRepo MB/s on a 100k-record repo (imported from a generated CAR) and the server's RSS
   sampled while it streams (it should stay flat);
3. backfill: a subscriber with cursor=0 replaying 10k stored events.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.integration.conftest import start_server  # noqa: E402
from tinypds.core.events import parse_frame  # noqa: E402

NOW = "2026-01-01T00:00:00.000Z"
ENV = {"TINYPDS_WRITE_RATE_LIMIT": "0"}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MB (VmRSS, or RssAnon: memory not backed by files)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def session(server) -> dict:
    r = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                   json={"identifier": server.handle, "password": server.password})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['accessJwt']}"}


async def write_events(server, headers: dict, n: int, writers: int = 8) -> float:
    """n createRecord calls from `writers` concurrent clients; returns seconds."""
    counter = iter(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            r = await client.post("/xrpc/com.atproto.repo.createRecord", json={
                "repo": server.did, "collection": "app.bsky.feed.post",
                "record": {"$type": "app.bsky.feed.post", "text": f"bench post {i}", "createdAt": NOW}})
            r.raise_for_status()

    t = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(writers)))
    return time.perf_counter() - t


COMPRESSION = {"compression": "deflate"}  # what the python SDK's client negotiates; relays usually do not


async def subscriber(url: str, want: int, ready: asyncio.Event | None = None, decode: bool = False) -> float:
    """Receive `want` frames; returns the time the last one arrived."""
    async with connect(url, max_size=None, max_queue=None, **COMPRESSION) as ws:
        if ready is not None:
            ready.set()
        got = 0
        while got < want:
            data = await ws.recv()
            if decode:
                parse_frame(data)
            got += 1
        return time.perf_counter()


async def bench_live(server, n: int, subs: int) -> None:
    headers = session(server)
    url = server.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
    readies = [asyncio.Event() for _ in range(subs)]
    tasks = [asyncio.create_task(subscriber(url, n, r)) for r in readies]
    await asyncio.gather(*(r.wait() for r in readies))
    await asyncio.sleep(0.3)
    t0 = time.perf_counter()
    write_s = await write_events(server, headers, n)
    ends = await asyncio.gather(*tasks)
    total = max(ends) - t0
    print(f"  live, {subs:2d} subscriber(s): {n} events written in {write_s:.2f}s ({n / write_s:,.0f}/s); "
          f"all delivered after {total:.2f}s -> {n / total:,.0f} events/s per subscriber, "
          f"{n * subs / total:,.0f} frames/s total; server RSS {rss_mb(server.proc.pid):.0f} MB")


async def bench_idle(server, n: int, subs: int) -> float:
    """`subs` websocket subscribers that never read while `n` events are written; returns the
    server's anonymous memory growth in MB (compare with subs=0: SQLite's page caches fill too)."""
    import socket

    port = int(server.url.rsplit(":", 1)[1])
    socks = []
    for _ in range(subs):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", port))
        raw.sendall((f"GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        socks.append(raw)
    await asyncio.sleep(0.5)
    before = rss_mb(server.proc.pid, "RssAnon")
    await write_events(server, session(server), n)
    after = rss_mb(server.proc.pid, "RssAnon")
    for raw in socks:
        raw.close()
    print(f"  {subs:2d} subscribers that never read, {n} events written: server anonymous memory {before:.0f} -> {after:.0f} MB")
    return after - before


async def bench_backfill(server, n: int) -> None:
    headers = session(server)
    await write_events(server, headers, n)
    url = server.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
    t = time.perf_counter()
    async with connect(url, max_size=None, max_queue=None) as ws:
        last = 0
        got = 0
        while got < n:
            header, body = parse_frame(await ws.recv())
            last = body["seq"]
            got += header.get("t") == "#commit"
    dt = time.perf_counter() - t
    print(f"  backfill: {got:,} commits (up to seq {last:,}) replayed in {dt:.2f}s -> {got / dt:,.0f} events/s "
          f"(decoded by the client)")


def bench_get_repo(workdir: Path, records: int) -> None:
    from tests.bench.bench_repo import BENCH_DID, bench_key, ensure_car
    from tinypds.services.repo_io import import_car
    from tinypds.store.db import Database

    car = ensure_car(workdir, records)
    data = workdir / f"getrepo-{records}"
    if not (data / "tinypds.sqlite").exists():
        data.mkdir(parents=True, exist_ok=True)
        db = Database.open(data / "tinypds.sqlite")
        with open(car, "rb") as fh:
            import_car(db, fh, did_key=bench_key().public_key().did_key())
        db.close()
    server = start_server(data, extra_env=ENV, args=["--no-dev-account"])
    try:
        # whole repo: key order (commit, depth-first walk); since=<oldest TID>: every block in table order
        for label, params in (("key order", {"did": BENCH_DID}), ("since=, table order", {"did": BENCH_DID, "since": "2222222222222"})):
            stream_and_sample(server, records, label, params)
    finally:
        server.stop()


def stream_and_sample(server, records: int, label: str, params: dict) -> None:
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((rss_mb(server.proc.pid), rss_mb(server.proc.pid, "RssAnon")))
            time.sleep(0.05)

    before = (rss_mb(server.proc.pid), rss_mb(server.proc.pid, "RssAnon"))
    sampler = threading.Thread(target=sample)
    sampler.start()
    size = 0
    t = time.perf_counter()
    with httpx.stream("GET", server.url + "/xrpc/com.atproto.sync.getRepo", params=params, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            size += len(chunk)
    dt = time.perf_counter() - t
    stop.set()
    sampler.join()
    print(f"  getRepo {records:,} records ({label}): {size / 1e6:.1f} MB in {dt:.2f}s -> {size / 1e6 / dt:.1f} MB/s; "
          f"server RSS {before[0]:.0f} MB before, up to {max(s[0] for s in samples):.0f} MB while streaming "
          f"(anonymous memory {before[1]:.0f} -> up to {max(s[1] for s in samples):.0f} MB; the rest is the mmapped file)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--backfill", type=int, default=10_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-compression", action="store_true", help="subscribers do not offer permessage-deflate")
    args = ap.parse_args(argv)
    if args.no_compression:
        COMPRESSION["compression"] = None
    with tempfile.TemporaryDirectory(prefix="bench-firehose-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        print(f"firehose (createRecord over HTTP while subscribers listen; compression: {COMPRESSION['compression']}):")
        for subs in (1, 20):
            server = start_server(work / f"live-{subs}", extra_env=ENV)
            try:
                asyncio.run(bench_live(server, args.events, subs))
            finally:
                server.stop()
        for subs in (0, 50):
            server = start_server(work / f"idle-{subs}", extra_env=ENV)
            try:
                asyncio.run(bench_idle(server, args.events, subs))
            finally:
                server.stop()
        server = start_server(work / "backfill", extra_env=ENV)
        try:
            asyncio.run(bench_backfill(server, args.backfill))
        finally:
            server.stop()
        print("sync.getRepo:")
        bench_get_repo(work, args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
