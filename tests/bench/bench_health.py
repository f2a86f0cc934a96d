"""What the network-health watcher costs a write: createRecord p50/p95 with the watcher off and on.

Run: `python tests/bench/bench_health.py [--n 1000] [--rounds 2]`. Starts the real server
(subprocess, 127.0.0.1) alternately with TINYPDS_HEALTH_INTERVAL=0 (off, the baseline) and
with the watcher checking a subscribed stand-in relay every --interval seconds (default 1 s,
300x more often than the default 300 s), each run on a fresh data dir, in the order
off/on, on/off, off/on... so drift and order effects on a shared machine hit both; prints each
run and the on/off ratio of the medians. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_http_repo import Conn, create_loop, login, pct, rss_kib  # noqa: E402
from tests.integration.conftest import start_server  # noqa: E402
from tests.relay_standin import RelayStandIn  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_run(watcher: bool, n: int, interval: float, relay: RelayStandIn) -> tuple[float, float, int, float]:
    port = free_port()
    env = {"TINYPDS_HOSTNAME": f"localhost:{port}", "TINYPDS_RELAYS": relay.url,
           "TINYPDS_HEALTH_INTERVAL": str(int(interval)) if watcher else "0", "TINYPDS_HEALTH_LAG_SECONDS": "60"}
    server = start_server(Path(tempfile.mkdtemp(prefix="tinypds-bench-health-")) / "data", extra_env=env,
                          args=["--port", str(port)])
    try:
        host = "127.0.0.1"
        relay.wait_for(lambda: (relay.host(f"localhost:{port}") or {}).get("subscribed"))
        session = await login(host, port, "/xrpc/com.atproto.server.createSession",
                              {"identifier": server.handle, "password": server.password})
        conn = await Conn(host, port, session["accessJwt"]).open()
        await create_loop(conn, server.did, 100, 0, [])  # warm-up
        await asyncio.sleep(max(2.0, interval * 2))  # both: startup settles; on: the first rounds have run
        lat: list[float] = []
        await create_loop(conn, server.did, n, 1000, lat)
        await conn.close()
        rounds = 0
        if watcher:
            import json
            import subprocess
            out = subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(server.data_dir), "status",
                                  "--offline", "--json"], capture_output=True, text=True, env=_env(env), timeout=60)
            doc = json.loads(out.stdout)["network"] or {}
            rounds = 1 if doc.get("checked_at") else 0
        return pct(lat, 0.5) * 1000, pct(lat, 0.95) * 1000, rounds, rss_kib(server.proc.pid)["VmRSS"] / 1024
    finally:
        server.stop()


def _env(extra: dict) -> dict:
    from tests.integration.conftest import server_env
    return server_env(extra)


async def main(n: int, rounds: int, interval: float) -> None:
    relay = RelayStandIn().start()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    try:
        for r in range(rounds):
            for watcher in ((False, True) if r % 2 == 0 else (True, False)):  # ABBA: order bias cancels
                t0 = time.perf_counter()
                p50, p95, checked, rss = await one_run(watcher, n, interval, relay)
                results[watcher].append((p50, p95))
                label = f"watcher on ({interval:g} s)" if watcher else "watcher off"
                print(f"round {r + 1} {label:<22} createRecord x{n}: p50 {p50:6.2f} ms  p95 {p95:6.2f} ms"
                      f"  RSS {rss:.1f} MB{'  (report stored)' if checked else ''}  [{time.perf_counter() - t0:.0f} s]")
    finally:
        relay.close()
    off50 = statistics.median(x[0] for x in results[False])
    on50 = statistics.median(x[0] for x in results[True])
    off95 = statistics.median(x[1] for x in results[False])
    on95 = statistics.median(x[1] for x in results[True])
    print(f"median p50: off {off50:.2f} ms, on {on50:.2f} ms, ratio on/off {on50 / off50:.3f}")
    print(f"median p95: off {off95:.2f} ms, on {on95:.2f} ms, ratio on/off {on95 / off95:.3f}")
    print(f"crawl requests the stand-in relay received in all: {len(relay.crawl_requests)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="createRecord calls per run (default 1000)")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs (default 2)")
    ap.add_argument("--interval", type=float, default=1.0, help="watcher interval in seconds when on (default 1)")
    args = ap.parse_args()
    asyncio.run(main(args.n, args.rounds, args.interval))
