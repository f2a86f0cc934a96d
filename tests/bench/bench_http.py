"""The HTTP front door against the real server: plain request overhead, auth overhead, sign-in.

Run: `python tests/bench/bench_http.py [--n 5000]`. Prints figures (requests/s, p50/p95)
and the server's RSS; asserts nothing. Measures `_health` (routing + error-handler-free
path), describeServer, getSession (JWT verify + session lookup), an unknown method (the
501 error path), createSession (argon2id: deliberately slow) and idle RSS. The load comes
from keep-alive HTTP/1.1 connections on raw asyncio sockets, so the client costs little.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.integration.conftest import start_server  # noqa: E402


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
                   body: bytes | None = None, expect: int = 200) -> tuple[float, list[float]]:
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

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return per_client * clients / elapsed, latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(name: str, rate: float, lat: list[float], target: str = "") -> None:
    print(f"{name:<38} {rate:>9.0f} req/s   p50 {pct(lat, .5):6.2f} ms   p95 {pct(lat, .95):6.2f} ms   {target}")


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "data")
        try:
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            port = int(port)
            print(f"server pid {server.proc.pid}; idle RSS {rss_mb(server.proc.pid):.1f} MB (target < 40 MB)")
            c = await Conn(host, port).open()
            body = json.dumps({"identifier": server.handle, "password": server.password}).encode()
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
                rate, lat = await run_load(host, port, args.n, clients, "GET", "/xrpc/_health")
                report(f"_health ({clients} conn)", rate, lat)
                rate, lat = await run_load(host, port, args.n, clients, "GET", "/xrpc/com.atproto.server.describeServer")
                report(f"describeServer ({clients} conn)", rate, lat)
                rate, lat = await run_load(host, port, args.n, clients, "GET", "/xrpc/com.atproto.server.getSession", auth)
                report(f"getSession, authed ({clients} conn)", rate, lat)
                rate, lat = await run_load(host, port, args.n, clients, "GET", "/xrpc/com.example.unknown", expect=501)
                report(f"unknown method -> 501 ({clients} conn)", rate, lat)
            print(f"RSS after load {rss_mb(server.proc.pid):.1f} MB (target < 80 MB)")
        finally:
            server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4000, help="requests per measurement")
    p.add_argument("--logins", type=int, default=10)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
