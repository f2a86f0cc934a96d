"""The idle server's import footprint (issue #3: idle RSS): opening the services as `tinypds
serve` does must not load the outgoing-HTTP stack, DNS, P-256 crypto or terminal rendering;
each is imported on first use only (an outgoing request, a handle lookup, a P-256 check).
Runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Top-level packages an idle server must not have imported.
NOT_IMPORTED_WHEN_IDLE = ("httpx", "httpcore", "cryptography", "dns", "rich", "pygments", "websockets",
                          "prometheus_client", "jinja2", "pyotp", "webauthn", "qrcode")

_OPEN_AND_LIST = """
import asyncio, json, sys
import tinypds.app, tinypds.http_serve, tinypds.cli.server
from tinypds.config import load_settings

async def main(data_dir):
    settings = load_settings({"data_dir": data_dir, "keyring_backend": "file"}).replace(dev=True)
    services = await tinypds.app.open_services(settings)
    try:
        return sorted(sys.modules)
    finally:
        await tinypds.app.close_services(services)

print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


def idle_server_modules(data_dir: Path) -> list[str]:
    """sys.modules of a fresh interpreter that imported tinypds.app and opened its services
    on `data_dir` (default settings: a loopback hostname, so no relay is asked to crawl)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    out = subprocess.run([sys.executable, "-c", _OPEN_AND_LIST, str(data_dir)], cwd=REPO_ROOT, env=env,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_idle_server_does_not_import_on_demand_libraries(tmp_path: Path) -> None:
    modules = idle_server_modules(tmp_path / "data")
    # the services really opened (the relay wiring is the last step of open_services)
    assert {"tinypds.app", "tinypds.services.sync.relay", "tinypds.services.identity.keys"} <= set(modules)
    loaded = sorted(m for m in modules if m.split(".")[0] in NOT_IMPORTED_WHEN_IDLE)
    assert loaded == [], f"imported by an idle server (defer these to first use): {loaded}"
