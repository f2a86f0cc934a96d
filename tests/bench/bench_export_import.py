"""Repo import/export at scale (issue 17): time, MB/s, peak RSS, file size, read paths, raw limit.

Makes an N-record CAR with the project's generator (tests/bench/gen_repo.py; default 1M),
then in fresh child processes: the raw limit (CAR split + sha-256 of every block, plain
Python), `tinypds import`, `tinypds export` (CLI, so the figures are the command's own),
the getRepo code path (aiter_export on an event loop: RSS growth while it streams), the
file's size per table/index (dbstat), and the read paths handlers use (getRecord,
listRecords, getBlock, sync.getRecord's MST proof). Figures, not assertions.

    python tests/bench/bench_export_import.py                  # 1M records
    python tests/bench/bench_export_import.py --records 100000 --runs 3 --workdir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BENCH_TREE=/path/to/another/checkout measures that tree's code (e.g. the previous release)
ROOT = Path(os.environ.get("BENCH_TREE") or Path(__file__).resolve().parents[2])
sys.path.insert(0, str(ROOT))

BENCH_DID = "did:plc:benchbenchbenchbenchbenc"


def bench_key():
    from tinypds.core.crypto import K256PrivateKey

    return K256PrivateKey.from_bytes(hashlib.sha256(b"bench-key-0").digest())


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


# ---- child steps (each prints one JSON line) ----------------------------------------------


def child_raw(car: str) -> dict:
    """The raw limit: split the CAR into blocks and sha-256 every block, streaming."""
    sha256 = hashlib.sha256
    t = time.perf_counter()
    blocks = 0
    with open(car, "rb") as fh:
        buf = fh.read(1 << 20)
        n, pos = buf[0], 1
        if n & 0x80:
            n, pos = (n & 0x7F) | (buf[1] << 7), 2
        pos += n
        while True:
            if len(buf) - pos < 4:
                more = fh.read(1 << 20)
                if not more:
                    break
                buf, pos = buf[pos:] + more, 0
            b = buf[pos]
            if b < 0x80:
                size, p = b, pos + 1
            elif buf[pos + 1] < 0x80:
                size, p = (b & 0x7F) | (buf[pos + 1] << 7), pos + 2
            else:
                size, p = (b & 0x7F) | ((buf[pos + 1] & 0x7F) << 7) | (buf[pos + 2] << 14), pos + 3
            end = p + size
            if end > len(buf):
                buf, pos = buf[pos:] + fh.read(max(1 << 20, size)), 0
                continue
            if sha256(buf[p + 36 : end]).digest() != buf[p + 4 : p + 36]:
                raise SystemExit(f"block {blocks} does not match its hash")
            blocks += 1
            pos = end
    return {"seconds": time.perf_counter() - t, "blocks": blocks}


def child_getrepo(data: str) -> dict:
    """The getRepo code path: repo_io.aiter_export consumed on an event loop; RSS sampled."""
    import asyncio

    from tinypds.services.repo.car_io import aiter_export
    from tinypds.store.db import Database

    db = Database.open(Path(data) / "tinypds.sqlite", create=False)
    db.read(lambda c: c.execute("SELECT count(*) FROM repo_root").fetchone())
    before = rss_mb()
    peak = before
    total = 0

    async def run() -> None:
        nonlocal peak, total
        async for chunk in aiter_export(db):
            total += len(chunk)
            peak = max(peak, rss_mb())

    t = time.perf_counter()
    asyncio.run(run())
    dt = time.perf_counter() - t
    db.close()
    return {"seconds": dt, "bytes": total, "rss_before": before, "rss_peak": peak}


def child_reads(data: str, n: int = 3000) -> dict:
    """Microseconds per read on the paths handlers use, over random existing keys."""
    from tinypds.core.mst import MST
    from tinypds.core.mst.proof import proof_blocks
    from tinypds.store import blocks as blocks_db
    from tinypds.store import records as records_db
    from tinypds.store import repo as repo_db
    from tinypds.store.blocks import SqliteBlocks
    from tinypds.store.db import Database

    db = Database.open(Path(data) / "tinypds.sqlite", create=False)

    def run(conn) -> dict:
        rng = random.Random(1)
        root = repo_db.get_root(conn)
        total = records_db.count_records(conn)
        keys = []
        for c in records_db.list_collections(conn):
            rows = conn.execute("SELECT rkey FROM records WHERE collection = ?", (c,)).fetchall() \
                if total <= 200_000 else []
            keys += [(c, r[0]) for r in rows]
        if not keys:  # big repos: sample through listRecords pages instead of a full scan
            for c in records_db.list_collections(conn):
                keys += [(c, rk) for rk, _, _ in records_db.list_records(conn, c, limit=400)]
        sample = [rng.choice(keys) for _ in range(n)]
        out = {}
        t = time.perf_counter()
        cids = [records_db.get_record(conn, c, r)[0] for c, r in sample]
        out["getRecord_us"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for cid in cids:
            blocks_db.get_block(conn, cid)
        out["getBlock_us"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for c, r in sample[:500]:
            records_db.list_records(conn, c, limit=50, cursor=r)
        out["listRecords50_us"] = (time.perf_counter() - t) / 500 * 1e6
        t = time.perf_counter()
        for c, r in sample[:500]:
            tree = MST.load(SqliteBlocks(conn, cache_size=64), root.data_cid)
            proof_blocks(tree, f"{c}/{r}", {})
        out["syncGetRecordProof_us"] = (time.perf_counter() - t) / 500 * 1e6
        return out

    res = db.read(run, snapshot=True)
    db.close()
    return res


def child_dbstat(db_path: str) -> dict:
    import apsw

    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READONLY)
    rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8").fetchall()
    conn.close()
    return {"tables": rows}


CHILDREN = {"raw": child_raw, "getrepo": child_getrepo, "reads": child_reads, "dbstat": child_dbstat}


def run_child(step: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", step, *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{step} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_cli(*args: str) -> dict:
    """`tinypds ARGS` in a child: wall seconds, CPU seconds and that child's own peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tinypds.cli", *args], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tinypds {' '.join(args)} failed:\n{err[-2000:]}")
    return {"seconds": dt, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


# ---- driver -------------------------------------------------------------------------------


def span(values: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = min(values), max(values)
    return fmt.format(lo) if len(values) == 1 or fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(CHILDREN[argv[1]](*argv[2:])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2, help="repeat import/export/raw this many times (report ranges)")
    ap.add_argument("--workdir", default=None, help="keep the generated CAR here between runs")
    args = ap.parse_args(argv)
    from tests.bench.gen_repo import write_repo_car

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tinypds-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n = args.records
    car = workdir / f"repo-{n}.car"
    print(f"tinypds export/import at scale: {n:,} records (workdir {workdir}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f})")
    if not car.exists():
        t = time.perf_counter()
        info = write_repo_car(car, n, bench_key(), BENCH_DID)
        print(f"  generated {car.name}: {info['blocks']:,} blocks in {time.perf_counter() - t:.0f} s")
    size = car.stat().st_size
    did_key = bench_key().public_key().did_key()
    data = workdir / f"data-{n}"
    out = workdir / f"export-{n}.car"
    raws, imps, exps = [], [], []
    for _ in range(args.runs):
        raws.append(run_child("raw", str(car)))
        for f in data.glob("*") if data.exists() else []:
            f.unlink()
        imps.append(run_cli("--data", str(data), "import", str(car), "--did-key", did_key))
        exps.append(run_cli("--data", str(data), "export", str(out), "--force"))
    db_size = (data / "tinypds.sqlite").stat().st_size
    raw_s = [r["seconds"] for r in raws]
    raw_best = min(raw_s)
    mb = size / 1e6
    print(f"\n  CAR {mb:.1f} MB, {raws[0]['blocks']:,} blocks; {args.runs} run(s) each, ranges are min–max; load average now "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  {'raw limit (split + sha-256)':<30} {span(raw_s)} s  ({span([mb / s for s in raw_s], '{:.0f}')} MB/s)")
    imp_s = [r["seconds"] for r in imps]
    print(f"  {'tinypds import':<30} {span(imp_s)} s  (cpu {span([r['cpu'] for r in imps])} s; "
          f"{span([s / raw_best for s in imp_s], '{:.1f}')}x raw)   target <= 25 s, <= 10x raw")
    print(f"  {'  import peak RSS':<30} {span([r['rss_mb'] for r in imps], '{:.0f}')} MB   target <= 100 MB")
    exp_s = [r["seconds"] for r in exps]
    print(f"  {'tinypds export':<30} {span(exp_s)} s  ({span([mb / s for s in exp_s], '{:.0f}')} MB/s, cpu "
          f"{span([r['cpu'] for r in exps])} s; {span([s / raw_best for s in exp_s], '{:.1f}')}x raw)   target >= 100 MB/s, <= 2.5x raw")
    print(f"  {'  export peak RSS':<30} {span([r['rss_mb'] for r in exps], '{:.0f}')} MB   target <= 100 MB")
    same = hashlib.sha256(out.read_bytes()).hexdigest() if out.stat().st_size < 2e9 else "?"
    print(f"  {'  export sha-256':<30} {same[:16]}…  (compare across versions: must not change)")
    print(f"  {'file after import':<30} {db_size / 1e6:.1f} MB = {db_size / size:.2f}x the CAR   target <= 1.4x")
    for name, nbytes in run_child("dbstat", str(data / "tinypds.sqlite"))["tables"]:
        print(f"  {'    ' + name:<30} {nbytes / 1e6:.1f} MB")
    g = run_child("getrepo", str(data))
    print(f"  {'getRepo path (aiter_export)':<30} {g['bytes'] / g['seconds'] / 1e6:.0f} MB/s, RSS {g['rss_before']:.0f} -> "
          f"peak {g['rss_peak']:.0f} MB (growth {g['rss_peak'] - g['rss_before']:.1f} MB)   target growth <= 30 MB")
    r = run_child("reads", str(data))
    print("  read paths (us per call, random keys): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
