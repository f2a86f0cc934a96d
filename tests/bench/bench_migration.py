"""Account migration end to end between two tinypds servers: time per phase and peak RSS.

Run: `python tests/bench/bench_migration.py [--records 100000] [--blobs 200] [--blob-kb 200]`.
Needs the lab's PLC directory (../shared/lab/ref-pds/start.sh plc, started if missing).
The old account is made with `tinypds init`, filled by importing a generated repo whose
image posts reference the real uploaded blobs, then `tinypds migrate in` moves it to a
fresh server. Prints figures, asserts nothing (except that the move completed).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

import gen_repo  # noqa: E402
from tests.integration.migration_lab import (  # noqa: E402
    PASSWORD, PLC_URL, LAB, cli, free_port, init_tinypds, png, server_env, start_tinypds,
)
from tinypds.core.cid import cid_for_raw  # noqa: E402
from tinypds.core.crypto import K256PrivateKey  # noqa: E402


def ensure_plc() -> None:
    try:
        if httpx.get("http://127.0.0.1:2582/_health", timeout=2).status_code == 200:
            return
    except httpx.HTTPError:
        pass
    subprocess.run(["bash", str(LAB / "ref-pds" / "start.sh"), "plc"], check=True, stdin=subprocess.DEVNULL)


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--blobs", type=int, default=200)
    ap.add_argument("--blob-kb", type=int, default=200)
    args = ap.parse_args()
    ensure_plc()
    side = max(8, int((args.blob_kb * 1024 / 3) ** 0.5))
    blobs = [png(10_000 + i, side) for i in range(args.blobs)]
    refs = [{"$type": "blob", "ref": cid_for_raw(b), "mimeType": "image/png", "size": len(b)} for b in blobs]
    gen_repo._blob = lambda rng, mime="image/jpeg": dict(rng.choice(refs))  # image posts point at real blobs

    with tempfile.TemporaryDirectory(prefix="bench-migration-") as tmp:
        tmp = Path(tmp)
        old_port, new_port = free_port(), free_port()
        handle = f"bench{random.randrange(1 << 30):x}.test"
        t0 = time.perf_counter()
        did = init_tinypds(tmp / "old", old_port, handle)
        gen_key = K256PrivateKey.generate()
        info = gen_repo.write_repo_car(tmp / "repo.car", args.records, gen_key, did)
        out = cli(tmp / "old", "import", str(tmp / "repo.car"), "--did-key", gen_key.public_key().did_key(), port=old_port)
        assert out.returncode == 0, out.stderr
        old = start_tinypds(tmp / "old", old_port)
        new = start_tinypds(tmp / "new", new_port)
        try:
            with httpx.Client(base_url=f"http://localhost:{old_port}", timeout=120) as http:
                tok = http.post("/xrpc/com.atproto.server.createSession",
                                json={"identifier": handle, "password": PASSWORD}).json()["accessJwt"]
                for b in blobs:
                    r = http.post("/xrpc/com.atproto.repo.uploadBlob", content=b,
                                  headers={"Authorization": f"Bearer {tok}", "Content-Type": "image/png"})
                    assert r.status_code == 200, r.text
                status = http.get("/xrpc/com.atproto.server.checkAccountStatus",
                                  headers={"Authorization": f"Bearer {tok}"}).json()
            setup = time.perf_counter() - t0
            env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
            env.update(server_env(new_port))
            t1 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tinypds.cli", "--data", str(tmp / "new"), "migrate", "in", "--from",
                 f"http://localhost:{old_port}", "--identifier", handle, "--password-stdin", "--plc-token-cmd",
                 f"TINYPDS_HOSTNAME=localhost:{old_port} TINYPDS_KEYRING_BACKEND=file TINYPDS_DEV=1 "
                 f"{sys.executable} -m tinypds.cli --data {tmp / 'old'} plc token"],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            proc.stdin.write((PASSWORD + "\n").encode())
            proc.stdin.close()
            hwm = [0.0]  # the CLI's own peak (VmHWM), read until it exits; wait4 adds its child processes

            def watch() -> None:
                while proc.poll() is None:
                    try:
                        hwm[0] = max(hwm[0], vm_hwm_mb(proc.pid))
                    except (OSError, IndexError):
                        return
                    time.sleep(0.05)

            threading.Thread(target=watch, daemon=True).start()
            _, wait_status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - t1
            stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
            if os.waitstatus_to_exitcode(wait_status) != 0:
                print(stdout, stderr, sep="\n")
                return 1
            blob_bytes = sum(len(b) for b in blobs)
            print(f"account: {status['indexedRecords']:,} records ({info['bytes'] / 1e6:.1f} MB CAR), "
                  f"{status['expectedBlobs']} blobs referenced ({blob_bytes / 1e6:.1f} MB uploaded); setup {setup:.1f} s")
            print(f"migrate in (CLI, end to end incl. PLC + checks): {elapsed:.1f} s")
            print(f"peak RSS: CLI {hwm[0]:.0f} MB (with its child processes {usage.ru_maxrss / 1024:.0f} MB), old server {vm_hwm_mb(old.proc.pid):.0f} MB, "
                  f"new server {vm_hwm_mb(new.proc.pid):.0f} MB")
            print(stdout.strip())
        finally:
            old.stop()
            new.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
