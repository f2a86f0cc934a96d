"""Footprint of a running server next to the reference PDS's, measured in the same run: startup
time, idle RSS (issue 13: <= 55 MB; the reference idles at 150-200 MB), idle CPU, RSS after a
small workload.

    python tests/bench/bench_footprint.py [--runs 3] [--idle 20] [--posts 200]
        [--ref http://localhost:2611 [--ref-restart]] [--server-python PY] [--loops asyncio,uvloop]

Per run: `tinypds serve` on a fresh data dir (the first start creates the dev account; the
measured one is a normal restart), RSS once settled and after --idle seconds, CPU used while
idle, then --posts createRecord + 20 getRepo and RSS again; then the same readings of the
reference PDS (its node process found by port; --ref-restart restarts it with the lab's
stop.sh/start.sh first, so both start from scratch: use it only on an instance you started
yourself). Runs alternate ours/reference; the summary gives ranges and ratios. No assertions.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.benchlib import (  # noqa: E402
    DEFAULT_REF, ROOT, Row, healthy, load, pid_listening_on, port_of, print_table, rss_mb, start_tinypds,
)

TICKS = os.sysconf("SC_CLK_TCK")
LAB = Path(os.environ.get("TINYPDS_LAB", ROOT.parent / "shared" / "lab"))
SHARED_PORTS = (2583, 2584, 2597)  # lab instances the test suites use (tests/lab.py, migration tests)
SETTLE = 3.0  # seconds after healthy before the first reading (startup tasks, GC, JIT)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def write_posts(url: str, did: str, token: str, n: int) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        for i in range(n):
            http.post("/xrpc/com.atproto.repo.createRecord", json={
                "repo": did, "collection": "app.bsky.feed.post",
                "record": {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": "2024-01-01T00:00:00.000Z"},
            }).raise_for_status()
        for _ in range(20):
            http.get("/xrpc/com.atproto.sync.getRepo", params={"did": did}).raise_for_status()


def readings(pid: int, idle: float) -> dict[str, float]:
    time.sleep(SETTLE)
    out = {"rss_settled": rss_mb(pid)}
    c0 = cpu_seconds(pid)
    time.sleep(idle)
    out["idle_cpu_pct"] = 100 * (cpu_seconds(pid) - c0) / idle
    out["rss_idle"] = rss_mb(pid)
    return out


def run_ours(args: argparse.Namespace, loop: str | None) -> dict[str, float]:
    data = Path(tempfile.mkdtemp(prefix="tinypds-footprint-")) / "data"
    first = start_tinypds(data, python=args.server_python, loop=loop)  # creates the dev account
    account = first.account
    first.stop()
    server = start_tinypds(data, python=args.server_python, loop=loop)
    try:
        out = {"startup": server.startup_s, **readings(server.pid, args.idle)}
        print(f"tinypds (loop {loop or 'as shipped'}) pid {server.pid}: startup {server.startup_s:.2f} s, "
              f"RSS {out['rss_settled']:.1f} MB settled, {out['rss_idle']:.1f} MB after {args.idle:.0f} s idle "
              f"(peak {rss_mb(server.pid, 'VmHWM'):.1f}), idle CPU {out['idle_cpu_pct']:.2f} %; {load()}", flush=True)
        if args.posts:
            r = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                           json={"identifier": account["handle"], "password": account["password"]}, timeout=30)
            r.raise_for_status()
            write_posts(server.url, account["did"], r.json()["accessJwt"], args.posts)
            time.sleep(1.0)
            out["rss_after"] = rss_mb(server.pid)
            print(f"  RSS after {args.posts} posts + 20 getRepo: {out['rss_after']:.1f} MB "
                  f"(peak {rss_mb(server.pid, 'VmHWM'):.1f} MB)", flush=True)
        return out
    finally:
        server.stop()


def restart_ref(url: str) -> float:
    """Stop and start the lab instance on url's port (its start.sh is idempotent); seconds to healthy."""
    port = str(port_of(url))
    subprocess.run(["bash", str(LAB / "ref-pds" / "stop.sh"), port], check=True, capture_output=True, timeout=60)
    t0 = time.perf_counter()
    subprocess.run(["bash", str(LAB / "ref-pds" / "start.sh"), port], check=True, capture_output=True, timeout=300,
                   stdin=subprocess.DEVNULL, env={**os.environ, "REF_PDS_FAST": "1"})  # no install checks
    while not healthy(url):
        time.sleep(0.05)
    return time.perf_counter() - t0


def run_ref(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    if args.ref_restart:
        out["startup"] = restart_ref(args.ref)
    pid = pid_listening_on(port_of(args.ref))
    if pid is None:
        raise SystemExit(f"no process listens at {args.ref}")
    out |= readings(pid, args.idle)
    what = "restarted" if args.ref_restart else "running"
    print(f"reference ({what}) pid {pid}: " + (f"startup {out['startup']:.2f} s, " if "startup" in out else "")
          + f"RSS {out['rss_settled']:.1f} MB settled, {out['rss_idle']:.1f} MB after {args.idle:.0f} s idle "
          f"(peak {rss_mb(pid, 'VmHWM'):.1f}), idle CPU {out['idle_cpu_pct']:.2f} %; {load()}", flush=True)
    if args.posts:
        handle = f"fp{secrets.token_hex(4)}.test"
        r = httpx.post(args.ref + "/xrpc/com.atproto.server.createAccount", timeout=60,
                       json={"handle": handle, "email": f"{handle}@example.com", "password": "bench-password-1"})
        r.raise_for_status()
        write_posts(args.ref, r.json()["did"], r.json()["accessJwt"], args.posts)
        time.sleep(1.0)
        out["rss_after"] = rss_mb(pid)
        print(f"  RSS after {args.posts} posts + 20 getRepo: {out['rss_after']:.1f} MB "
              f"(peak {rss_mb(pid, 'VmHWM'):.1f} MB)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=20.0, help="idle seconds to measure CPU over (default 20)")
    ap.add_argument("--posts", type=int, default=200, help="posts to write before the last RSS reading")
    ap.add_argument("--ref", metavar="URL", default=DEFAULT_REF, help=f"running reference PDS (default {DEFAULT_REF})")
    ap.add_argument("--ref-restart", action="store_true", help="restart the reference before each reading (yours only)")
    ap.add_argument("--no-ref", action="store_true")
    ap.add_argument("--server-python", default=None, help="interpreter for tinypds (e.g. a production venv)")
    ap.add_argument("--loops", default="", help="comma list of uvicorn loops to compare; default as shipped")
    args = ap.parse_args()
    if args.ref_restart and port_of(args.ref) in SHARED_PORTS:
        raise SystemExit(f"--ref-restart would restart {args.ref}, which the test suites use: "
                         "start an instance of your own (../shared/lab/ref-pds/start.sh 2611) and pass --ref")
    variants = [v or None for v in args.loops.split(",")] if args.loops else [None]
    ours: dict[str, list[dict]] = {v or "as shipped": [] for v in variants}
    ref: list[dict] = []
    for run in range(1, args.runs + 1):
        print(f"\n=== run {run}/{args.runs} ({load()})", flush=True)
        for v in variants:
            ours[v or "as shipped"].append(run_ours(args, v))
        if not args.no_ref:
            ref.append(run_ref(args))
    for v, runs in ours.items():
        print(f"\nsummary over {len(runs)} run(s), tinypds loop {v}; ratio = tinypds / reference in the same run")
        rows = [
            Row("idle RSS after settling (MB)", [r["rss_settled"] for r in runs], [r["rss_settled"] for r in ref],
                "{:.1f}", "<= 55 MB", all(r["rss_settled"] <= 55 for r in runs)),
            Row(f"idle RSS after {args.idle:.0f} s idle (MB)", [r["rss_idle"] for r in runs], [r["rss_idle"] for r in ref],
                "{:.1f}", "<= 55 MB", all(r["rss_idle"] <= 55 for r in runs)),
            Row("idle CPU (%)", [r["idle_cpu_pct"] for r in runs], [r["idle_cpu_pct"] for r in ref], "{:.2f}", "~0", None),
            Row("startup to healthy (s)", [r["startup"] for r in runs], [r["startup"] for r in ref if "startup" in r],
                "{:.2f}", "", None),
        ]
        if args.posts:
            rows.append(Row(f"RSS after {args.posts} posts + 20 getRepo (MB)", [r["rss_after"] for r in runs],
                            [r["rss_after"] for r in ref], "{:.1f}", "", None))
        print_table(rows)
    print(f"\nend ({load()})")


if __name__ == "__main__":
    main()
