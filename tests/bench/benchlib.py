"""Shared pieces of the same-run benchmarks (issue 13): a tinypds server started the way a user
runs it, the reference PDS found by its port, RSS from /proc, the machine's load, and the
summary table (ranges over runs, ratios against the reference measured in the same run).

`start_tinypds(..., python=, loop=, uvicorn=)` spawns `tinypds serve` with any interpreter (e.g.
a production venv without the test extras) and, for A/B runs only, through serve_variant.py,
which overrides uvicorn settings (loop, ws, ...); cwd is the repository, so this tree's code runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REF = "http://localhost:2597"  # tests/lab.py's REF_PDS_PORT; pass --ref for another instance
_LISTEN = re.compile(r"^tinypds listening on (http://\S+)$")
_FIELD = re.compile(r"^\s+(handle|did|password):\s+(\S+)$")


def load() -> str:
    """The machine's load averages (1, 5, 15 min), as `uptime` prints them."""
    return "load %.2f %.2f %.2f" % os.getloadavg()


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pid_listening_on(port: int) -> int | None:
    """The PID of the process with a listening TCP socket on `port` (reads /proc; same user or root)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    return None


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/xrpc/_health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Tinypds:
    url: str
    proc: subprocess.Popen
    startup_s: float
    account: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

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
    env.update(TINYPDS_DEV="1", TINYPDS_HOSTNAME="localhost:2583", TINYPDS_KEYRING_BACKEND="file",
               TINYPDS_LOG_LEVEL="warning", TINYPDS_WRITE_RATE_LIMIT="0", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def start_tinypds(data: Path, *, python: str | None = None, loop: str | None = None, uvicorn: str | None = None,
                  extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> Tinypds:
    """`tinypds serve --port 0` on 127.0.0.1 with a data dir; returns once /xrpc/_health answers 200.
    With neither loop nor uvicorn the CLI runs as shipped; loop="uvloop"/"asyncio" overrides uvicorn's
    loop setting, uvicorn="key=value,..." others (see serve_variant.py)."""
    data.mkdir(parents=True, exist_ok=True)
    head = [python or sys.executable]
    spec = ",".join(filter(None, [f"loop={loop}" if loop else "", uvicorn or ""]))
    head += [str(ROOT / "tests" / "bench" / "serve_variant.py"), spec] if spec else ["-m", "tinypds.cli"]
    t0 = time.perf_counter()
    err = (data.parent / (data.name + ".stderr.log")).open("wb")
    proc = subprocess.Popen([*head, "--data", str(data), "serve", "--host", "127.0.0.1", "--port", "0", *(args or [])],
                            cwd=ROOT, env=server_env(extra_env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=err, text=True)
    err.close()
    url, account = None, {}
    deadline = time.monotonic() + 60
    while url is None:
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"tinypds exited ({proc.returncode}) before listening; see {err.name}")
        if m := _LISTEN.match(line.rstrip("\n")):
            url = m.group(1)
        elif m := _FIELD.match(line.rstrip("\n")):
            account[m.group(1)] = m.group(2)
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("tinypds did not start within 60 s")
    while not healthy(url):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("tinypds never answered /xrpc/_health")
        time.sleep(0.01)
    return Tinypds(url, proc, time.perf_counter() - t0, account)


# ---- the summary: ranges over runs, ratios per run pair --------------------------------------

def span(values: list[float], fmt: str) -> str:
    """'a–b' over the runs (one value when all agree at this precision)."""
    if not values:
        return "—"
    lo, hi = (fmt.format(min(values)), fmt.format(max(values)))
    return lo if lo == hi else f"{lo}–{hi}"


@dataclass
class Row:
    name: str
    ours: list[float]
    ref: list[float]
    fmt: str
    target: str
    met: bool | None  # None: figure only
    ratio_fmt: str = "{:.2f}"

    def ratios(self) -> list[float]:
        return [o / r for o, r in zip(self.ours, self.ref) if r]


def print_table(rows: list[Row]) -> None:
    """One line per measurement: tinypds range, reference range, ratio range (tinypds / reference
    in the same run), the target and whether every run met it."""
    print(f"\n{'measurement':<36} {'tinypds':>15} {'reference':>15} {'ratio':>13}  {'target':<22} met?")
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "NO")
        ratio = span(r.ratios(), r.ratio_fmt + "x") if r.ref else "—"
        print(f"{r.name:<36} {span(r.ours, r.fmt):>15} {span(r.ref, r.fmt):>15} {ratio:>13}  {r.target:<22} {met}")
