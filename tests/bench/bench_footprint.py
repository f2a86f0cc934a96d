"""Footprint of a running server on a Pi-class budget: startup time, idle RSS, idle CPU.

Starts the real `tinypds serve` (fresh data dir, dev account, 127.0.0.1, port 0) and prints:
startup-to-healthy time (spawn -> first 200 from /xrpc/_health), RSS once idle (and the
peak), CPU seconds used over N idle seconds, then RSS again after a small workload. Targets
(issues 3 and 8): idle RSS < 40 MB, startup < 2 s, idle CPU ~0. Figures only, no assertions.

    python tests/bench/bench_footprint.py [--idle 20] [--posts 200] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb, _ = line.split()
            values[key] = int(kb) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def start(data: Path, env: dict) -> tuple[subprocess.Popen, str, float, dict]:
    """Spawn the server; return (process, url, seconds to first healthy answer, printed account)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinypds.cli", "--data", str(data), "serve", "--port", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    url, account = None, {}
    while url is None:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("server exited before listening")
        if line.startswith("tinypds listening on "):
            url = line.split()[-1]
        elif line.strip().split(":")[0] in ("handle", "password"):
            key, value = line.strip().split(":", 1)
            account[key] = value.strip()
    while True:
        try:
            if httpx.get(url + "/xrpc/_health", timeout=2).status_code == 200:
                return proc, url, time.perf_counter() - t0, account
        except httpx.TransportError:
            time.sleep(0.01)


def write_posts(url: str, account: dict, n: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/xrpc/com.atproto.server.createSession",
                      json={"identifier": account["handle"], "password": account["password"]})
        r.raise_for_status()
        did, token = r.json()["did"], r.json()["accessJwt"]
        http.headers["Authorization"] = f"Bearer {token}"
        for i in range(n):
            http.post("/xrpc/com.atproto.repo.createRecord", json={
                "repo": did, "collection": "app.bsky.feed.post",
                "record": {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": "2024-01-01T00:00:00.000Z"},
            }).raise_for_status()
        for _ in range(20):
            http.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}).raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description="Footprint of a running server: startup time, idle RSS, idle CPU.")
    ap.add_argument("--idle", type=float, default=20.0, help="idle seconds to measure CPU over (default 20)")
    ap.add_argument("--posts", type=int, default=200, help="posts to write before the second RSS reading")
    ap.add_argument("--data", type=Path, default=None, help="data directory (default: a fresh temp dir)")
    args = ap.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="tinypds-footprint-")) / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    env.update(TINYPDS_DEV="1", TINYPDS_HOSTNAME="localhost:2583", TINYPDS_KEYRING_BACKEND="file",
               TINYPDS_LOG_LEVEL="warning", TINYPDS_WRITE_RATE_LIMIT="0", PYTHONUNBUFFERED="1")

    # the first start creates the dev account (argon2id, keys); measure a normal restart
    first, _, first_startup, account = start(data, env)
    first.terminate()
    first.wait(30)

    proc, url, startup, _ = start(data, env)
    try:
        time.sleep(2.0)  # let startup tasks (blob GC, crawl requests) settle
        rss, peak = rss_mb(proc.pid)
        c0 = cpu_seconds(proc.pid)
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(proc.pid) - c0
        rss_idle, _ = rss_mb(proc.pid)
        print(f"startup to healthy : {startup:6.2f} s    (target < 2 s; first start with account creation {first_startup:.2f} s)")
        print(f"idle RSS           : {rss:6.1f} MB   (target < 40 MB, issue 3); peak so far {peak:.1f} MB")
        print(f"idle CPU           : {idle_cpu:6.3f} s over {args.idle:.0f} s ({100 * idle_cpu / args.idle:.2f} %)  (target ~0)")
        print(f"RSS after idling   : {rss_idle:6.1f} MB")
        if args.posts and account.get("password"):
            write_posts(url, account, args.posts)
            time.sleep(1.0)
            rss_after, peak = rss_mb(proc.pid)
            print(f"RSS after {args.posts} posts + 20 getRepo: {rss_after:.1f} MB (peak {peak:.1f} MB; includes one sign-in's argon2id)")
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
