"""Repo API over HTTP against the real server: createRecord (sequential and 8 concurrent
clients), applyWrites records/s, getRecord and listRecords requests/s, server RSS.

Run: `python tests/bench/bench_http_repo.py [--n 1000] [--ref http://localhost:2611]`. Prints figures next to the targets
of issue 3; asserts nothing. The load comes from a tiny keep-alive HTTP/1.1 client on raw
asyncio sockets (httpx would cost more CPU than the server on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.conftest import start_server  # noqa: E402

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
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)


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


def report(name: str, n: int, seconds: float, lat: list[float] | None, target: str) -> None:
    line = f"{name:<34} {n / seconds:9.0f} /s"
    if lat:
        line += f"   p50 {pct(lat, 0.5) * 1000:6.2f} ms   p95 {pct(lat, 0.95) * 1000:6.2f} ms"
    print(f"{line:<80} target: {target}")


async def phases(host: str, port: int, token: str, did: str, n: int) -> None:
    """The measured workloads against one server (ours or the reference)."""
    warm = await Conn(host, port, token).open()
    await create_loop(warm, did, 50, 0, [])  # warm-up

    lat: list[float] = []
    t0 = time.perf_counter()
    uris = await create_loop(warm, did, n, 100, lat)
    report("createRecord sequential", n, time.perf_counter() - t0, lat, "p50 < 3 ms (reference PDS 9.3 ms)")

    conns = [await Conn(host, port, token).open() for _ in range(8)]
    lat = []
    t0 = time.perf_counter()
    per = n // 8
    more = await asyncio.gather(*(create_loop(c, did, per, 10_000 + k * per, lat) for k, c in enumerate(conns)))
    report("createRecord 8 clients", per * 8, time.perf_counter() - t0, lat, "(figure only; the p50 target is sequential)")
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
    report(f"applyWrites ({size}/batch)", batches * size, time.perf_counter() - t0, None,
           "> 5,000 records/s (reference ~900)")

    async def get_loop(conn: Conn, paths: list[str], lat: list[float]) -> None:
        for path in paths:
            t = time.perf_counter()
            status, body = await conn.request("GET", path)
            lat.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"GET {path} failed: {status} {body[:200]!r}")

    paths = [f"{NS}getRecord?repo={did}&collection=app.bsky.feed.post&rkey={u.rsplit('/', 1)[1]}" for u in uris]
    reads = (paths * (1 + (4 * n) // len(paths)))[: 4 * n]
    lat = []
    t0 = time.perf_counter()
    await asyncio.gather(*(get_loop(c, reads[k::8], lat) for k, c in enumerate(conns)))
    report("getRecord 8 clients", len(reads), time.perf_counter() - t0, lat, "> 3,000 req/s")

    lists = [f"{NS}listRecords?repo={did}&collection=app.bsky.feed.post&limit=50"] * n
    lat = []
    t0 = time.perf_counter()
    await asyncio.gather(*(get_loop(c, lists[k::8], lat) for k, c in enumerate(conns)))
    report("listRecords (50) 8 clients", len(lists), time.perf_counter() - t0, lat, "(figure only)")
    for c in [warm, *conns]:
        await c.close()
    print(f"statistics: {len(uris)} posts and {batches * size} likes written")


async def login(host: str, port: int, path: str, body: dict) -> dict:
    anon = await Conn(host, port).open()
    status, raw = await anon.request("POST", path, body)
    await anon.close()
    if status != 200:
        raise RuntimeError(f"{path} failed: {status} {raw[:200]!r}")
    return json.loads(raw)


async def main(n: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="tinypds-bench-")) / "data"
    server = start_server(data)
    pid = server.proc.pid
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        await asyncio.sleep(0.5)
        idle = rss_kib(pid)
        print(f"tinypds pid {pid} at {server.url}; idle RSS {idle['VmRSS'] / 1024:.1f} MB   target: < 40 MB")
        session = await login(host, int(port), "/xrpc/com.atproto.server.createSession",
                              {"identifier": server.handle, "password": server.password})
        await phases(host, int(port), session["accessJwt"], server.did, n)
        after = rss_kib(pid)
        print(f"server RSS after: {after['VmRSS'] / 1024:.1f} MB (peak {after['VmHWM'] / 1024:.1f} MB)   target: < 80 MB")
    finally:
        rc = server.stop()
        if rc != 0:
            print(f"server exit code {rc}\n{server.stderr()[-2000:]}")


async def main_ref(url: str, n: int) -> None:
    """The same workloads against a running reference PDS (../shared/lab), for a same-machine comparison."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    handle = f"bench{secrets.token_hex(4)}.test"
    acct = await login(host, int(port), "/xrpc/com.atproto.server.createAccount",
                       {"handle": handle, "email": f"{handle}@example.com", "password": "bench-password-1"})
    print(f"reference PDS at {url}, account {handle}")
    await phases(host, int(port), acct["accessJwt"], acct["did"], n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="requests per phase (default 1000)")
    ap.add_argument("--ref", metavar="URL", help="run against a running reference PDS instead (e.g. http://localhost:2611)")
    args = ap.parse_args()
    asyncio.run(main_ref(args.ref, args.n) if args.ref else main(args.n))
