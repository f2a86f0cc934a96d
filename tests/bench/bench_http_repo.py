"""Repo API over HTTP, tinypds next to the reference PDS in the same run (issue 13's budgets):
createRecord (sequential p50, 8 clients), applyWrites records/s, getRecord and listRecords
req/s with 8 clients, server RSS.

    python tests/bench/bench_http_repo.py [--n 1000] [--runs 3] [--ref http://localhost:2611]
        [--loops asyncio,uvloop] [--server-python /path/to/production/venv/bin/python] [--no-ref]

Each run starts a fresh `tinypds serve` (one per --loops variant), then drives the reference
PDS (a fresh account on the running lab instance), alternating ours/reference/ours/...; the
summary gives ranges over the runs and tinypds/reference ratios per run. Figures, no
assertions. The load comes from a tiny keep-alive HTTP/1.1 client on raw asyncio sockets
(httpx would cost more CPU than the server on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.benchlib import (  # noqa: E402
    DEFAULT_REF, Row, load, pid_listening_on, port_of, print_table, rss_mb, start_tinypds,
)

NS = "/xrpc/com.atproto.repo."


class Conn:
    """One keep-alive HTTP/1.1 connection; request() returns (status, body bytes)."""

    def __init__(self, host: str, port: int, token: str | None = None):
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        data = b""
        if self.token:
            head.append(f"Authorization: Bearer {self.token}")
        if body is not None:
            data = json.dumps(body).encode()
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self.reader.readexactly(length)
        out = b""
        while size := int((await self.reader.readline()).split(b";")[0].strip(), 16):
            out += (await self.reader.readexactly(size + 2))[:-2]
        await self.reader.readline()
        return status, out


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def post(i: int) -> dict:
    return {"$type": "app.bsky.feed.post", "text": f"benchmark post number {i}", "createdAt": "2026-01-01T00:00:00.000Z"}


async def create_loop(conn: Conn, did: str, n: int, start: int, lat: list[float]) -> list[str]:
    uris = []
    for i in range(n):
        t0 = time.perf_counter()
        status, body = await conn.request("POST", NS + "createRecord",
                                          {"repo": did, "collection": "app.bsky.feed.post", "record": post(start + i)})
        lat.append(time.perf_counter() - t0)
        if status != 200:
            raise RuntimeError(f"createRecord failed: {status} {body[:200]!r}")
        uris.append(json.loads(body)["uri"])
    return uris


def report(name: str, n: int, seconds: float, lat: list[float] | None, cpu: float | None = None) -> None:
    line = f"  {name:<32} {n / seconds:9.0f} /s"
    if lat:
        line += f"   p50 {pct(lat, 0.5) * 1000:6.2f} ms   p95 {pct(lat, 0.95) * 1000:6.2f} ms"
    if cpu:
        line += f"   server CPU {cpu * 1000 / n:6.3f} ms each ({n / cpu:,.0f} per CPU-second)"
    print(line, flush=True)


class CpuClock:
    """CPU seconds (user + system, all threads) a server process used since the last lap()."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.last = self.read()

    def read(self) -> float:
        if not self.pid:
            return 0.0
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def lap(self) -> float | None:
        now = self.read()
        spent, self.last = now - self.last, now
        return spent if self.pid else None


async def get_loop(conn: Conn, paths: list[str], lat: list[float]) -> None:
    for path in paths:
        t = time.perf_counter()
        status, body = await conn.request("GET", path)
        lat.append(time.perf_counter() - t)
        if status != 200:
            raise RuntimeError(f"GET {path} failed: {status} {body[:200]!r}")


async def phases(host: str, port: int, token: str, did: str, n: int, pid: int | None = None) -> dict[str, float]:
    """The measured workloads against one server (ours or the reference); returns the figures.
    With the server's pid, each phase also reports the server's CPU time per request."""
    out: dict[str, float] = {}
    warm = await Conn(host, port, token).open()
    await create_loop(warm, did, 50, 0, [])  # warm-up

    cpu = CpuClock(pid)
    lat: list[float] = []
    t0 = time.perf_counter()
    uris = await create_loop(warm, did, n, 100, lat)
    report("createRecord sequential", n, time.perf_counter() - t0, lat, cpu.lap())
    out["create_p50"], out["create_p95"] = pct(lat, 0.5) * 1000, pct(lat, 0.95) * 1000

    conns = [await Conn(host, port, token).open() for _ in range(8)]
    lat = []
    t0 = time.perf_counter()
    per = n // 8
    more = await asyncio.gather(*(create_loop(c, did, per, 10_000 + k * per, lat) for k, c in enumerate(conns)))
    dt = time.perf_counter() - t0
    report("createRecord 8 clients", per * 8, dt, lat, cpu.lap())
    out["create8_rate"], out["create8_p50"] = per * 8 / dt, pct(lat, 0.5) * 1000
    uris += [u for batch in more for u in batch]

    batches, size = max(5, n // 100), 200
    t0 = time.perf_counter()
    for _ in range(batches):
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.like",
                   "value": {"$type": "app.bsky.feed.like", "createdAt": "2026-01-01T00:00:00.000Z",
                             "subject": {"uri": uris[0], "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}}
                  for _ in range(size)]
        status, body = await warm.request("POST", NS + "applyWrites", {"repo": did, "writes": writes})
        if status != 200:
            raise RuntimeError(f"applyWrites failed: {status} {body[:200]!r}")
    dt = time.perf_counter() - t0
    spent = cpu.lap()
    report(f"applyWrites ({size}/batch)", batches * size, dt, None, spent)
    out["apply_rate"] = batches * size / dt
    if spent:
        out["apply_per_cpu"] = batches * size / spent

    paths = [f"{NS}getRecord?repo={did}&collection=app.bsky.feed.post&rkey={u.rsplit('/', 1)[1]}" for u in uris]
    reads = (paths * (1 + (4 * n) // len(paths)))[: 4 * n]
    lat = []
    cpu.lap()
    t0 = time.perf_counter()
    await asyncio.gather(*(get_loop(c, reads[k::8], lat) for k, c in enumerate(conns)))
    dt = time.perf_counter() - t0
    spent = cpu.lap()
    report("getRecord 8 clients", len(reads), dt, lat, spent)
    out["get_rate"], out["get_p50"] = len(reads) / dt, pct(lat, 0.5) * 1000
    if spent:
        out["get_per_cpu"] = len(reads) / spent

    lists = [f"{NS}listRecords?repo={did}&collection=app.bsky.feed.post&limit=50"] * n
    lat = []
    t0 = time.perf_counter()
    await asyncio.gather(*(get_loop(c, lists[k::8], lat) for k, c in enumerate(conns)))
    dt = time.perf_counter() - t0
    report("listRecords (50) 8 clients", len(lists), dt, lat, cpu.lap())
    out["list_rate"] = len(lists) / dt
    for c in [warm, *conns]:
        await c.close()
    return out


async def login(host: str, port: int, path: str, body: dict) -> dict:
    anon = await Conn(host, port).open()
    status, raw = await anon.request("POST", path, body)
    await anon.close()
    if status != 200:
        raise RuntimeError(f"{path} failed: {status} {raw[:200]!r}")
    return json.loads(raw)


async def run_ours(n: int, loop: str | None, python: str | None) -> dict[str, float]:
    server = start_tinypds(Path(tempfile.mkdtemp(prefix="tinypds-bench-")) / "data", python=python, loop=loop)
    try:
        host, port = server.host_port
        await asyncio.sleep(1.0)
        out = {"rss_before": rss_mb(server.pid)}
        print(f"tinypds (loop {loop or 'as shipped'}) pid {server.pid}; RSS {out['rss_before']:.1f} MB; {load()}", flush=True)
        session = await login(host, port, "/xrpc/com.atproto.server.createSession",
                              {"identifier": server.account["handle"], "password": server.account["password"]})
        out |= await phases(host, port, session["accessJwt"], server.account["did"], n, server.pid)
        out["rss_after"] = rss_mb(server.pid)
        print(f"  RSS after: {out['rss_after']:.1f} MB (peak {rss_mb(server.pid, 'VmHWM'):.1f} MB)", flush=True)
        return out
    finally:
        rc = server.stop()
        if rc != 0:
            print(f"  tinypds exit code {rc}")


async def run_ref(url: str, n: int) -> dict[str, float]:
    """The same workloads against a running reference PDS (../shared/lab), on a fresh account."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    pid = pid_listening_on(int(port))
    out = {"rss_before": rss_mb(pid) if pid else float("nan")}
    handle = f"bench{secrets.token_hex(4)}.test"
    print(f"reference PDS {url} pid {pid}; RSS {out['rss_before']:.1f} MB; account {handle}; {load()}", flush=True)
    acct = await login(host, int(port), "/xrpc/com.atproto.server.createAccount",
                       {"handle": handle, "email": f"{handle}@example.com", "password": "bench-password-1"})
    out |= await phases(host, int(port), acct["accessJwt"], acct["did"], n, pid)
    out["rss_after"] = rss_mb(pid) if pid else float("nan")
    print(f"  RSS after: {out['rss_after']:.1f} MB", flush=True)
    return out


def summary(ours: dict[str, list[dict]], ref: list[dict]) -> None:
    def col(runs: list[dict], key: str) -> list[float]:
        return [r[key] for r in runs if key in r]

    for variant, runs in ours.items():
        print(f"\nsummary over {len(runs)} run(s), tinypds loop {variant}; ratio = tinypds / reference in the same run")
        ratios = [o["create_p50"] / r["create_p50"] for o, r in zip(runs, ref)]
        apply_x = [o["apply_rate"] / r["apply_rate"] for o, r in zip(runs, ref)]
        rows = [
            Row("createRecord sequential p50 (ms)", col(runs, "create_p50"), col(ref, "create_p50"), "{:.2f}",
                "ratio <= 0.33", all(x <= 1 / 3 for x in ratios) if ref else None),
            Row("createRecord sequential p95 (ms)", col(runs, "create_p95"), col(ref, "create_p95"), "{:.2f}", "", None),
            Row("createRecord 8 clients (/s)", col(runs, "create8_rate"), col(ref, "create8_rate"), "{:,.0f}", "", None),
            Row("applyWrites (records/s)", col(runs, "apply_rate"), col(ref, "apply_rate"), "{:,.0f}",
                "ratio >= 5", all(x >= 5 for x in apply_x) if ref else None, "{:.1f}"),
            Row("getRecord 8 clients (req/s)", col(runs, "get_rate"), col(ref, "get_rate"), "{:,.0f}",
                ">= 4,000 req/s", all(x >= 4000 for x in col(runs, "get_rate")), "{:.1f}"),
            Row("getRecord per server CPU-second", col(runs, "get_per_cpu"), col(ref, "get_per_cpu"), "{:,.0f}",
                "", None, "{:.1f}"),
            Row("applyWrites per server CPU-second", col(runs, "apply_per_cpu"), col(ref, "apply_per_cpu"), "{:,.0f}",
                "", None, "{:.1f}"),
            Row("listRecords(50) 8 clients (req/s)", col(runs, "list_rate"), col(ref, "list_rate"), "{:,.0f}", "", None,
                "{:.1f}"),
            Row("RSS 1 s after start / before (MB)", col(runs, "rss_before"), col(ref, "rss_before"), "{:.1f}", "", None),
            Row("RSS after the workloads (MB)", col(runs, "rss_after"), col(ref, "rss_after"), "{:.1f}", "", None),
        ]
        print_table(rows)


async def main(args: argparse.Namespace) -> None:
    variants = [v or None for v in args.loops.split(",")] if args.loops else [None]
    ours: dict[str, list[dict]] = {v or "as shipped": [] for v in variants}
    ref: list[dict] = []
    ref_url = None if args.no_ref else args.ref
    if ref_url and pid_listening_on(port_of(ref_url)) is None:
        raise SystemExit(f"no reference PDS listening at {ref_url}: start it with ../shared/lab/ref-pds/start.sh PORT")
    for run in range(1, args.runs + 1):
        print(f"\n=== run {run}/{args.runs} ({load()})", flush=True)
        for v in variants:
            ours[v or "as shipped"].append(await run_ours(args.n, v, args.server_python))
            if ref_url:  # alternate: ours, reference, ours, reference ...
                ref.append(await run_ref(ref_url, args.n))
    if ref_url and len(variants) > 1:  # pair each variant's run k with the reference run right after it
        ref_by = {v or "as shipped": ref[i::len(variants)] for i, v in enumerate(variants)}
        for v, runs in ours.items():
            summary({v: runs}, ref_by[v])
    else:
        summary(ours, ref)
    print(f"\nend ({load()})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="requests per phase (default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="alternating runs (default 3)")
    ap.add_argument("--ref", metavar="URL", default=DEFAULT_REF, help=f"running reference PDS (default {DEFAULT_REF})")
    ap.add_argument("--no-ref", action="store_true", help="tinypds only")
    ap.add_argument("--loops", default="", help="comma list of uvicorn loops to compare (asyncio,uvloop); default as shipped")
    ap.add_argument("--server-python", default=None, help="interpreter for the server (e.g. a production venv)")
    asyncio.run(main(ap.parse_args()))
