"""Start the REAL server as a subprocess on 127.0.0.1 (port 0) with a fresh data dir.

`pds` (module scope) yields a RunningServer with .url, .data_dir and, when the server
made a first-start dev account, .handle/.password/.did. `start_pds(tmp_path)` starts
extra servers. Stopping sends SIGTERM and expects a clean exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTEN_RE = re.compile(r"^tinypds listening on (http://\S+)$")
_FIELD_RE = re.compile(r"^\s+(handle|did|password):\s+(\S+)$")


@dataclass
class RunningServer:
    url: str
    data_dir: Path
    proc: subprocess.Popen
    stderr_path: Path
    account: dict = field(default_factory=dict)

    @property
    def handle(self) -> str | None:
        return self.account.get("handle")

    @property
    def password(self) -> str | None:
        return self.account.get("password")

    @property
    def did(self) -> str | None:
        return self.account.get("did")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    env.update(
        {
            "TINYPDS_DEV": "1",
            "TINYPDS_HOSTNAME": "localhost:2583",
            "TINYPDS_KEYRING_BACKEND": "file",
            "TINYPDS_LOG_LEVEL": "warning",
            "TINYPDS_WRITE_RATE_LIMIT": "0",  # the relay-safe budget is tested on its own
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> RunningServer:
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = data_dir.parent / (data_dir.name + ".stderr.log")
    err = stderr_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinypds.cli", "--data", str(data_dir), "serve", "--host", "127.0.0.1", "--port", "0", *(args or [])],
        cwd=REPO_ROOT,
        env=server_env(extra_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    err.close()
    account: dict[str, str] = {}
    url = None
    deadline = time.monotonic() + 60
    while url is None:
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"server exited ({proc.returncode}) before listening:\n{stderr_path.read_text()}")
        line = line.rstrip("\n")
        if m := _LISTEN_RE.match(line):
            url = m.group(1)
        elif m := _FIELD_RE.match(line):
            account[m.group(1)] = m.group(2)
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start within 60 s")
    server = RunningServer(url=url, data_dir=data_dir, proc=proc, stderr_path=stderr_path, account=account)
    while True:  # the listening line comes after the lifespan; health confirms routing
        try:
            if httpx.get(url + "/xrpc/_health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("server never answered /xrpc/_health")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pds(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("pds") / "data")
    yield server
    rc = server.stop()
    assert rc == 0, f"server did not shut down cleanly (exit {rc}):\n{server.stderr()}"
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.fixture
def start_pds(tmp_path):
    started: list[RunningServer] = []

    def start(name: str = "data", **kw) -> RunningServer:
        s = start_server(tmp_path / name, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def http(pds):
    with httpx.Client(base_url=pds.url, timeout=30) as client:
        yield client
