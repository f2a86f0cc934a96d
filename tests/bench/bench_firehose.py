"""Firehose and sync benchmarks against the real server (figures, not assertions).

  python tests/bench/bench_firehose.py [--events 2000] [--runs 3] [--ref http://localhost:2611]
      [--parts live,idle,backfill,getrepo] [--records 100000] [--backfill 10000] [--server-python PY]

1. live (issue 13): 1 and 20 websocket subscribers while 8 concurrent clients write --events
   createRecords (TINYPDS_WRITE_RATE_LIMIT=0); every subscriber must get every seq (checked:
   each gets all the writer's commits, seqs consecutive, the same list as every other
   subscriber); frames/s delivered; the reference PDS the same way on a fresh account,
   alternating ours/reference over --runs;
2. idle: 50 subscribers that never read while events are written (memory growth);
3. backfill: a subscriber with cursor=0 replaying 10k stored events;
4. getRepo MB/s on a 100k-record repo (imported from a generated CAR), RSS sampled while streaming.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from tests.bench.bench_http_repo import Conn, CpuClock, create_loop, login  # noqa: E402
from tests.bench.benchlib import (  # noqa: E402
    DEFAULT_REF, Row, load, pid_listening_on, port_of, print_table, rss_mb, start_tinypds,
)
from tinypds.core.events import parse_frame  # noqa: E402

NOW = "2026-01-01T00:00:00.000Z"
ENV = {"TINYPDS_WRITE_RATE_LIMIT": "0"}
COMPRESSION = {"compression": "deflate"}  # what the python SDK and node's `ws` client offer; relays usually do not
SERVER = {"python": None, "uvicorn": None}  # --server-python, --uvicorn


def start_server(data: Path, extra_env: dict | None = None, args: list[str] | None = None):
    return start_tinypds(data, python=SERVER["python"], uvicorn=SERVER["uvicorn"], extra_env={**ENV, **(extra_env or {})},
                         args=args)


def session(server) -> dict:
    r = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                   json={"identifier": server.account["handle"], "password": server.account["password"]})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['accessJwt']}"}


async def write_events(server, headers: dict, n: int, writers: int = 8) -> float:
    """n createRecord calls from `writers` concurrent clients; returns seconds."""
    host, port = server.host_port
    token = headers["Authorization"].split()[1]
    return await write_with(host, port, token, server.account["did"], n, writers)


async def write_with(host: str, port: int, token: str, did: str, n: int, writers: int = 8) -> float:
    conns = [await Conn(host, port, token).open() for _ in range(writers)]
    per = [n // writers + (k < n % writers) for k in range(writers)]
    t = time.perf_counter()
    await asyncio.gather(*(create_loop(c, did, m, 100_000 * k, []) for k, (c, m) in enumerate(zip(conns, per))))
    dt = time.perf_counter() - t
    for c in conns:
        await c.close()
    return dt


async def subscriber(url: str, did: str, want: int, ready: asyncio.Event, timeout: float) -> dict:
    """Receive frames until `want` commits of `did` arrived (or timeout): seqs seen, commits, end time."""
    seqs: list[int] = []
    mine = 0
    end = None
    deadline = time.monotonic() + timeout
    async with connect(url, max_size=None, max_queue=None, **COMPRESSION) as ws:
        ready.set()
        try:
            while mine < want:
                data = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
                header, body = parse_frame(data)
                if header.get("op") != 1:
                    continue
                if isinstance(body.get("seq"), int):
                    seqs.append(body["seq"])
                mine += header.get("t") == "#commit" and body.get("repo") == did
            end = time.perf_counter()
        except (asyncio.TimeoutError, Exception) as exc:  # a lost connection is a loss too
            return {"seqs": seqs, "mine": mine, "end": None, "error": type(exc).__name__}
    return {"seqs": seqs, "mine": mine, "end": end, "error": None}


async def live(http_url: str, token: str, did: str, pid: int | None, n: int, subs: int, label: str) -> dict:
    host, port = http_url.removeprefix("http://").rsplit(":", 1)
    ws_url = http_url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
    readies = [asyncio.Event() for _ in range(subs)]
    tasks = [asyncio.create_task(subscriber(ws_url, did, n, r, timeout=60 + n / 10)) for r in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    await asyncio.sleep(0.3)
    cpu = CpuClock(pid)
    t0 = time.perf_counter()
    write_s = await write_with(host, int(port), token, did, n)
    results = await asyncio.gather(*tasks)
    spent = cpu.lap()
    ok = [r for r in results if r["end"] is not None and r["mine"] == n]
    gaps = sum(sum(b - a - 1 for a, b in zip(r["seqs"], r["seqs"][1:]) if b > a) for r in results)
    disorder = sum(sum(b <= a for a, b in zip(r["seqs"], r["seqs"][1:])) for r in results)
    same = len({tuple(r["seqs"]) for r in results}) == 1
    lossless = len(ok) == subs and gaps == 0 and disorder == 0 and same
    total = (max(r["end"] for r in ok) - t0) if ok else float("nan")
    out = {"write_rate": n / write_s, "frames_rate": n * subs / total, "lag": total - write_s,
           "lossless": lossless, "rss": rss_mb(pid) if pid else float("nan"),
           "cpu_per_event": spent * 1000 / n if spent else float("nan")}
    errors = sorted({r["error"] for r in results if r["error"]})
    print(f"  {label}, {subs:2d} subscriber(s): {n} events written in {write_s:.2f}s ({out['write_rate']:,.0f}/s); "
          f"all delivered {total:.2f}s after the first write (last {out['lag']:.2f}s after the last ack) -> "
          f"{out['frames_rate']:,.0f} frames/s in all; every subscriber got every seq: "
          f"{'yes' if lossless else 'NO'} ({len(ok)}/{subs} complete, gaps {gaps}, out of order {disorder}, "
          f"identical lists {same}{', errors ' + ','.join(errors) if errors else ''}); server RSS {out['rss']:.0f} MB, "
          f"server CPU {out['cpu_per_event']:.2f} ms per event written and fanned out; "
          f"{load()}", flush=True)
    return out


async def live_ours(work: Path, n: int, subs: int) -> dict:
    server = start_server(work / f"live-{subs}-{secrets.token_hex(3)}")
    try:
        token = session(server)["Authorization"].split()[1]
        return await live(server.url, token, server.account["did"], server.pid, n, subs, "tinypds")
    finally:
        server.stop()


async def live_ref(url: str, n: int, subs: int) -> dict:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    handle = f"fh{secrets.token_hex(4)}.test"
    acct = await login(host, int(port), "/xrpc/com.atproto.server.createAccount",
                       {"handle": handle, "email": f"{handle}@example.com", "password": "bench-password-1"})
    return await live(url.rstrip("/"), acct["accessJwt"], acct["did"], pid_listening_on(int(port)), n, subs, "reference")


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
        raw.sendall(("GET /xrpc/com.atproto.sync.subscribeRepos HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        socks.append(raw)
    await asyncio.sleep(0.5)
    before = rss_mb(server.pid, "RssAnon")
    await write_events(server, session(server), n)
    after = rss_mb(server.pid, "RssAnon")
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
    from tinypds.services.repo.car_io import import_car
    from tinypds.store.db import Database

    car = ensure_car(workdir, records)
    data = workdir / f"getrepo-{records}"
    if not (data / "tinypds.sqlite").exists():
        data.mkdir(parents=True, exist_ok=True)
        db = Database.open(data / "tinypds.sqlite")
        with open(car, "rb") as fh:
            import_car(db, fh, did_key=bench_key().public_key().did_key())
        db.close()
    server = start_server(data, args=["--no-dev-account"])
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
            samples.append((rss_mb(server.pid), rss_mb(server.pid, "RssAnon")))
            time.sleep(0.05)

    before = (rss_mb(server.pid), rss_mb(server.pid, "RssAnon"))
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
    ap.add_argument("--runs", type=int, default=3, help="alternating tinypds/reference runs of the live part")
    ap.add_argument("--subscribers", default="1,20", help="subscriber counts of the live part (default 1,20)")
    ap.add_argument("--ref", metavar="URL", default=DEFAULT_REF, help=f"running reference PDS (default {DEFAULT_REF})")
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--parts", default="live,idle,backfill,getrepo")
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--backfill", type=int, default=10_000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-compression", action="store_true", help="subscribers do not offer permessage-deflate")
    ap.add_argument("--server-python", default=None, help="interpreter for tinypds (e.g. a production venv)")
    ap.add_argument("--uvicorn", default=None, help="uvicorn overrides for tinypds, e.g. ws_per_message_deflate=false")
    args = ap.parse_args(argv)
    if args.no_compression:
        COMPRESSION["compression"] = None
    SERVER.update(python=args.server_python, uvicorn=args.uvicorn)
    parts = set(args.parts.split(","))
    ref_url = None if args.no_ref else args.ref.rstrip("/")
    if ref_url and "live" in parts and pid_listening_on(port_of(ref_url)) is None:
        raise SystemExit(f"no reference PDS listening at {ref_url}: start it with ../shared/lab/ref-pds/start.sh PORT")
    with tempfile.TemporaryDirectory(prefix="bench-firehose-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        if "live" in parts:
            print(f"firehose live (8 writers, createRecord over HTTP; subscribers offer compression: "
                  f"{COMPRESSION['compression']}; tinypds uvicorn overrides: {args.uvicorn or 'none'})")
            counts = [int(x) for x in args.subscribers.split(",")]
            ours: dict[int, list[dict]] = {c: [] for c in counts}
            ref: dict[int, list[dict]] = {c: [] for c in counts}
            for run in range(1, args.runs + 1):
                print(f"=== run {run}/{args.runs} ({load()})", flush=True)
                for subs in counts:
                    ours[subs].append(asyncio.run(live_ours(work, args.events, subs)))
                    if ref_url:
                        ref[subs].append(asyncio.run(live_ref(ref_url, args.events, subs)))
            rows = []
            for subs in counts:
                o, r = ours[subs], ref[subs]
                rows += [
                    Row(f"{subs} subscriber(s): frames/s delivered", [x["frames_rate"] for x in o],
                        [x["frames_rate"] for x in r], "{:,.0f}", "", None, "{:.1f}"),
                    Row(f"{subs} subscriber(s): writes/s", [x["write_rate"] for x in o], [x["write_rate"] for x in r],
                        "{:,.0f}", "", None, "{:.1f}"),
                    Row(f"{subs} subscriber(s): server CPU ms/event", [x["cpu_per_event"] for x in o],
                        [x["cpu_per_event"] for x in r], "{:.2f}", "", None),
                    Row(f"{subs} subscriber(s): lossless runs", [sum(x["lossless"] for x in o)],
                        [sum(x["lossless"] for x in r)] if r else [], "{:.0f}", f"all {len(o)}",
                        all(x["lossless"] for x in o)),
                ]
            print_table(rows)
        if "idle" in parts:
            for subs in (0, 50):
                server = start_server(work / f"idle-{subs}")
                try:
                    asyncio.run(bench_idle(server, args.events, subs))
                finally:
                    server.stop()
        if "backfill" in parts:
            server = start_server(work / "backfill")
            try:
                asyncio.run(bench_backfill(server, args.backfill))
            finally:
                server.stop()
        if "getrepo" in parts:
            print("sync.getRepo:")
            bench_get_repo(work, args.records)
    print(f"end ({load()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
