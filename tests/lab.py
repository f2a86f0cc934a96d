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
