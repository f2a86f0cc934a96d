"""The HTTP front door against the real server: plain request overhead, auth overhead, sign-in.

Run: `python tests/bench/bench_http.py [--n 4000] [--loop uvloop] [--server-python PY]`. Prints
figures (requests/s, p50/p95, the server's CPU time per request from /proc) and the server's
RSS; asserts nothing. Measures `_health` (Litestar + uvicorn's per-request floor),
describeServer, getSession (JWT verify + session lookup), an unknown method (the 501 error
path), createSession (argon2id: deliberately slow) and idle RSS. The load comes from
keep-alive HTTP/1.1 connections on raw asyncio sockets, so the client costs little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_http_repo import CpuClock  # noqa: E402
from tests.bench.benchlib import load, start_tinypds  # noqa: E402


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port

    async def open(self) -> "Conn":
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding" and "chunked" in value:
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            return status, data
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_load(host: str, port: int, n: int, clients: int, method: str, path: str, headers: dict | None = None,
                   body: bytes | None = None, expect: int = 200, pid: int | None = None) -> tuple[float, list[float], float]:
    conns = [await Conn(host, port).open() for _ in range(clients)]
    latencies: list[float] = []
    per_client = n // clients

    async def worker(c: Conn) -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            status, data = await c.request(method, path, body, headers)
            latencies.append(time.perf_counter() - t0)
            if status != expect:
                raise RuntimeError(f"{path}: HTTP {status}: {data[:200]!r}")

    cpu = CpuClock(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    spent = cpu.lap() or 0.0
    for c in conns:
        c.close()
    return per_client * clients / elapsed, latencies, spent * 1000 / (per_client * clients)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(name: str, rate: float, lat: list[float], cpu_ms: float) -> None:
    print(f"{name:<38} {rate:>9.0f} req/s   p50 {pct(lat, .5):6.2f} ms   p95 {pct(lat, .95):6.2f} ms   "
          f"server CPU {cpu_ms:.3f} ms/request", flush=True)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_tinypds(Path(tmp) / "data", python=args.server_python, loop=args.loop)
        try:
            host, port = server.host_port
            pid = server.pid
            await asyncio.sleep(1.0)
            print(f"server pid {pid} (loop {args.loop or 'as shipped'}); RSS {rss_mb(pid):.1f} MB 1 s after start "
                  f"(budget 55 MB idle, issue 13); {load()}")
            c = await Conn(host, port).open()
            body = json.dumps({"identifier": server.account["handle"], "password": server.account["password"]}).encode()
            times = []
            for _ in range(args.logins):
                t0 = time.perf_counter()
                status, data = await c.request("POST", "/xrpc/com.atproto.server.createSession", body)
                times.append(time.perf_counter() - t0)
                assert status == 200, data
            c.close()
            token = json.loads(data)["accessJwt"]
            print(f"{'createSession (argon2id, sequential)':<38} {len(times) / sum(times):>9.1f} req/s   "
                  f"p50 {pct(times, .5):6.2f} ms   (argon2id interactive: slow on purpose)")
            auth = {"Authorization": f"Bearer {token}"}
            for clients in (1, 8):
                for label, path, hdrs, expect in (
                        ("_health", "/xrpc/_health", None, 200),
                        ("describeServer", "/xrpc/com.atproto.server.describeServer", None, 200),
                        ("getSession, authed", "/xrpc/com.atproto.server.getSession", auth, 200),
                        ("unknown method -> 501", "/xrpc/com.example.unknown", None, 501)):
                    rate, lat, cpu_ms = await run_load(host, port, args.n, clients, "GET", path, hdrs, expect=expect, pid=pid)
                    report(f"{label} ({clients} conn)", rate, lat, cpu_ms)
            print(f"RSS after load {rss_mb(pid):.1f} MB; {load()}")
        finally:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4000, help="requests per measurement")
    p.add_argument("--logins", type=int, default=10)
    p.add_argument("--loop", default=None, help="override uvicorn's loop (asyncio, uvloop); default as shipped")
    p.add_argument("--server-python", default=None, help="interpreter for the server (e.g. a production venv)")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
