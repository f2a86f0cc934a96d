"""The lab on loopback: a real PLC directory and reference PDS instances (../shared/lab).

`ensure_lab(ports)` starts what is missing with `ref-pds/start.sh` (idempotent; the first
run on a fresh machine installs node 22 and @atproto/pds, ~2 min) and skips the calling test
with the reason when the lab cannot start. Processes are left running for the rest of the
session (other suites share them; the PLC keeps its state in memory only).
`TINYPDS_REF_PDS_URL` points the reference-PDS tests at an already running instance instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("TINYPDS_LAB", REPO_ROOT.parent / "shared" / "lab"))
PLC_URL = "http://localhost:2582"  # the lab README: use localhost, not 127.0.0.1, for PLC
REF_PDS_PORT = 2597
START_TIMEOUT = 420


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_lab(*pds_ports: int) -> tuple[str, list[str]]:
    """(plc_url, [pds_url, ...]) with the PLC and each reference PDS port healthy, else skip."""
    urls = [f"http://localhost:{p}" for p in pds_ports]
    if healthy("http://127.0.0.1:2582/_health") and all(healthy(u + "/xrpc/_health") for u in urls):
        return PLC_URL, urls
    script = LAB / "ref-pds" / "start.sh"
    if not script.exists():
        pytest.skip(f"no lab: {script} not found (set TINYPDS_LAB)")
    args = [str(p) for p in pds_ports] or ["plc"]
    try:
        proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the lab did not start within {START_TIMEOUT} s")
    if proc.returncode != 0 or not healthy("http://127.0.0.1:2582/_health"):
        pytest.skip(f"the lab did not start: {(proc.stderr or proc.stdout)[-500:]}")
    return PLC_URL, urls


def ref_pds_url() -> str:
    """A running reference PDS: $TINYPDS_REF_PDS_URL, or the lab's instance on REF_PDS_PORT."""
    env = os.environ.get("TINYPDS_REF_PDS_URL")
    if env:
        return env.rstrip("/")
    return ensure_lab(REF_PDS_PORT)[1][0]


# ---- the real AppView (../shared/lab/appview) ----------------------------------------------
APPVIEW_PORT = 2593  # the lab's default instance; another port starts a separate instance
APPVIEW_START_TIMEOUT = 600


def appview_env(port: int = APPVIEW_PORT, extra: dict[str, str] | None = None) -> dict[str, str]:
    """start.sh's environment for the instance on `port`: a port other than the default gets its own
    ports (+1 dataplane, +2 bsync, +3 Postgres socket name), state dir and Postgres cluster, so
    suites that index different firehoses never restart each other's AppView."""
    env = dict(os.environ)
    if port != APPVIEW_PORT:
        scratch = env.get("PEERS_SCRATCH") or str(Path.home() / ".cache" / "tinypds-lab")
        pg_dir = (f"/var/lib/postgresql/tinypds-appview-{port}" if os.geteuid() == 0
                  else f"{scratch}/appview-pg-{port}")
        env.update(AV_PORT=str(port), AV_DATAPLANE_PORT=str(port + 1), AV_BSYNC_PORT=str(port + 2),
                   AV_PG_PORT=str(port + 3), AV_STATE_DIR=f"{scratch}/appview-state-{port}", AV_PG_DIR=pg_dir)
    env.update(extra or {})
    return env


def ensure_appview(*firehoses: str, port: int = APPVIEW_PORT, fresh: bool = False,
                   extra_env: dict[str, str] | None = None) -> tuple[str, str]:
    """(appview_url, appview_did): the real AppView on `port` indexing `firehoses` (ws://host:port),
    started with appview/start.sh (idempotent; the first run installs it, ~1 min), else skip.
    Needs the PLC (started here) and Postgres (`apt-get install -y postgresql`, done by start.sh as root)."""
    ensure_lab()
    script = LAB / "appview" / "start.sh"
    if not script.exists():
        pytest.skip(f"no AppView lab: {script} not found (set TINYPDS_LAB)")
    env = appview_env(port, {**(extra_env or {}), **({"AV_FRESH": "1"} if fresh else {})})
    try:
        proc = subprocess.run(["bash", str(script), *firehoses], capture_output=True, text=True, env=env,
                              timeout=APPVIEW_START_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the AppView did not start within {APPVIEW_START_TIMEOUT} s")
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if line.startswith("APPVIEW_"))
    if proc.returncode != 0 or "APPVIEW_URL" not in found:
        pytest.skip(f"the AppView did not start: {(proc.stderr or proc.stdout)[-600:]}")
    return found["APPVIEW_URL"], found["APPVIEW_DID"]


def stop_appview(port: int = APPVIEW_PORT) -> None:
    """Stop the AppView instance on `port` (and its Postgres), by the PIDs start.sh recorded."""
    script = LAB / "appview" / "stop.sh"
    if script.exists():
        subprocess.run(["bash", str(script)], capture_output=True, text=True, env=appview_env(port), timeout=120,
                       stdin=subprocess.DEVNULL)
