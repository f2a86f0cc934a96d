"""Issue 15, the AppView's view: a REAL tinypds (did:plc at the lab PLC) indexed by the REAL AppView
(../shared/lab/appview, its own instance on port 2603, stopped at the end; other suites' are left alone).

`tinypds status` shows our handle as valid and our latest post as seen there; then the account
moves to a dev handle that stops resolving for the AppView (a handle host answering another
DID, as a misconfigured DNS or CDN would) and status shows "handle invalid at the AppView" and
exits 1. Skips with the reason when the PLC or the AppView cannot start.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.lab import ensure_appview, stop_appview
from tests.relay_standin import RelayStandIn

from .conftest import REPO_ROOT, server_env
from .migration_lab import Account, ensure_plc, free_port, init_tinypds, now_iso, start_tinypds, unique_handle

AV_PORT = 2603
HANDLE_HOST_PORT = 2607  # fixed: the AppView is started with it in AV_HANDLE_RESOLVE_URLS
ELSEWHERE = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


def status(data, env: dict) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), "status", "--offline", "--json"],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=server_env(env), timeout=60)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, json.loads(out.stdout)


def wait_appview(data, env: dict, pred, timeout: float = 90.0) -> tuple[int, dict, dict]:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        rc, doc = status(data, env)
        last = (doc.get("network") or {}).get("appview") or {}
        if last and pred(last):
            line = next(x for x in doc["lines"] if x["label"].startswith("appview "))
            return rc, doc, line
        time.sleep(1)
    raise AssertionError(f"status never showed the expected AppView view; last: {last}")


def test_appview_shows_our_handle_valid_then_invalid_when_it_stops_resolving(tmp_path):
    plc_url = ensure_plc()
    handle_host = RelayStandIn(port=HANDLE_HOST_PORT)
    try:
        handle_host.start()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"port {HANDLE_HOST_PORT} is busy: {exc}")
    port = free_port()
    data = tmp_path / "data"
    handle = unique_handle("hv")
    did = init_tinypds(data, port, handle)
    env = {"TINYPDS_HOSTNAME": f"localhost:{port}", "TINYPDS_PLC_URL": plc_url, "TINYPDS_RELAYS": "",
           "TINYPDS_APPVIEW_URL": f"http://localhost:{AV_PORT}", "TINYPDS_APPVIEW_DID": f"did:web:localhost%3A{AV_PORT}",
           "TINYPDS_HEALTH_INTERVAL": "1", "TINYPDS_HEALTH_LAG_SECONDS": "5"}
    server = start_tinypds(data, port, env=env)
    acct = None
    try:
        ensure_appview(f"ws://localhost:{port}", port=AV_PORT,
                       extra_env={"AV_HANDLE_RESOLVE_URLS": f"http://127.0.0.1:{HANDLE_HOST_PORT}"})
        acct = Account(server.url, handle)
        r = acct.http.post("/xrpc/com.atproto.repo.createRecord", json={
            "repo": did, "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": "seen by the AppView?", "createdAt": now_iso()}})
        assert r.status_code == 200, r.text
        uri = r.json()["uri"]

        rc, doc, line = wait_appview(data, env, lambda a: a["handle_valid"] and a["latest_post_indexed"])
        assert doc["network"]["appview"]["latest_post"] == uri and doc["network"]["appview"]["handle_shown"] == handle
        assert line["ok"] and f"handle valid ({handle})" in line["value"] and "latest post seen" in line["value"]
        assert rc == 0, [x for x in doc["lines"] if not x["ok"]]

        moved = unique_handle("gone")
        handle_host.well_known[moved] = ELSEWHERE  # the new handle's host answers someone else's DID
        r = acct.http.post("/xrpc/com.atproto.identity.updateHandle", json={"handle": moved})
        assert r.status_code == 200, r.text
        rc, doc, line = wait_appview(data, env, lambda a: a["handle_valid"] is False)
        assert "handle invalid at the AppView" in line["value"] and not line["ok"]
        assert rc == 1 and not doc["ok"] and doc["network"]["appview"]["handle_shown"] == "handle.invalid"
    finally:
        if acct is not None:
            acct.close()
        rc = server.stop()
        handle_host.close()
        stop_appview(AV_PORT)  # its own instance (and Postgres): nothing left running on a shared machine
    assert rc == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
