"""`tinypds init --dev` then `tinypds serve`: sessions for the init'ed handle and the
com.atproto.identity endpoints over real HTTP (offline: the genesis stays in the local log)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import REPO_ROOT, start_server

PASSWORD = "correct horse battery"
HOSTNAME = "localhost:2600"
XRPC = "/xrpc/com.atproto."


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)


def init(data: Path, *extra: str) -> str:
    out = cli(data, "init", "--dev", "--handle", "alice.test", "--hostname", HOSTNAME, "--password-stdin", *extra,
              stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    return re.search(r"did:\s+(did:\S+)", out.stdout).group(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("ident") / "data"
    did = init(data)
    server = start_server(data, extra_env={"TINYPDS_HOSTNAME": HOSTNAME})
    yield server, did
    rc = server.stop()
    assert rc == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


def session(url: str, identifier: str = "alice.test") -> dict:
    r = httpx.post(url + XRPC + "server.createSession", json={"identifier": identifier, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


def test_create_session_for_the_init_handle(served):
    server, did = served
    s = session(server.url)
    assert s["did"] == did and s["handle"] == "alice.test"
    bad = httpx.post(server.url + XRPC + "server.createSession", json={"identifier": "alice.test", "password": "nope"})
    assert bad.status_code == 401


def test_resolve_endpoints(served):
    server, did = served
    r = httpx.get(server.url + XRPC + "identity.resolveHandle", params={"handle": "alice.test"})
    assert r.status_code == 200 and r.json() == {"did": did}
    r = httpx.get(server.url + XRPC + "identity.resolveDid", params={"did": did})
    assert r.status_code == 200 and r.json()["didDoc"]["id"] == did
    r = httpx.get(server.url + XRPC + "identity.resolveIdentity", params={"identifier": did})
    assert r.status_code == 200 and r.json()["handle"] == "alice.test"
    r = httpx.get(server.url + XRPC + "identity.resolveHandle", params={"handle": "not a handle"})
    assert r.status_code == 400 and r.json()["error"] == "InvalidRequest"


def test_update_handle_then_session_and_describe_repo_follow(served):
    server, did = served
    token = session(server.url)["accessJwt"]
    auth = {"authorization": f"Bearer {token}"}
    r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "bob.test"}, headers=auth)
    assert r.status_code == 200, r.text
    # (a handle that does not point at us is covered offline in tests/services/test_identity.py)
    r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "bob.invalid"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "UnsupportedDomain"
    r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "-bad-.test"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"] == "InvalidHandle"
    assert httpx.get(server.url + XRPC + "server.getSession", headers=auth).json()["handle"] == "bob.test"
    desc = httpx.get(server.url + XRPC + "repo.describeRepo", params={"repo": did}).json()
    assert desc["handle"] == "bob.test" and desc["didDoc"]["alsoKnownAs"] == ["at://bob.test"]
    assert session(server.url, "bob.test")["did"] == did
    r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "alice.test"}, headers=auth)
    assert r.status_code == 200
    r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "x.test"})
    assert r.status_code == 401


def test_plc_operation_flow_with_the_logged_token(served):
    server, did = served
    auth = {"authorization": f"Bearer {session(server.url)['accessJwt']}"}
    creds = httpx.get(server.url + XRPC + "identity.getRecommendedDidCredentials", headers=auth).json()
    assert creds["alsoKnownAs"] == ["at://alice.test"]
    assert creds["services"]["atproto_pds"]["endpoint"] == f"http://{HOSTNAME}"
    r = httpx.post(server.url + XRPC + "identity.requestPlcOperationSignature", headers=auth)
    assert r.status_code == 200, r.text
    token = None
    for _ in range(50):
        m = re.findall(r"PLC operation token for \S+: ([A-Z0-9]{5}-[A-Z0-9]{5})", server.stderr())
        if m:
            token = m[-1]
            break
        time.sleep(0.1)
    assert token, server.stderr()
    body = {"token": token, "alsoKnownAs": ["at://alice.test", "https://alice.example"]}
    wrong = httpx.post(server.url + XRPC + "identity.signPlcOperation", json={**body, "token": "AAAAA-BBBBB"}, headers=auth)
    assert wrong.status_code == 400 and wrong.json()["error"] == "InvalidToken"
    signed = httpx.post(server.url + XRPC + "identity.signPlcOperation", json=body, headers=auth)
    assert signed.status_code == 200, signed.text
    op = signed.json()["operation"]
    again = httpx.post(server.url + XRPC + "identity.signPlcOperation", json=body, headers=auth)
    assert again.json()["error"] == "InvalidToken"  # single use
    r = httpx.post(server.url + XRPC + "identity.submitPlcOperation", json={"operation": op}, headers=auth)
    assert r.status_code == 200, r.text
    doc = httpx.get(server.url + XRPC + "identity.resolveDid", params={"did": did}).json()["didDoc"]
    assert doc["alsoKnownAs"] == ["at://alice.test", "https://alice.example"]
    log = cli(server.data_dir, "plc", "log")
    assert log.returncode == 0 and op["sig"] in log.stdout
    assert cli(server.data_dir, "plc", "verify").returncode == 0


def test_did_web_document_is_served(tmp_path):
    data = tmp_path / "web"
    did = init(data, "--did-method", "web")
    assert did == "did:web:localhost%3A2600"
    server = start_server(data, extra_env={"TINYPDS_HOSTNAME": HOSTNAME})
    try:
        doc = httpx.get(server.url + "/.well-known/did.json").json()
        assert doc["id"] == did and doc["alsoKnownAs"] == ["at://alice.test"]
        assert doc["service"][0]["serviceEndpoint"] == f"http://{HOSTNAME}"
        assert session(server.url)["did"] == did
    finally:
        assert server.stop() == 0


def test_key_export_then_import_restores_a_lost_key_store(tmp_path):
    data = tmp_path / "k"
    did = init(data)
    backup = tmp_path / "keys.backup"
    out = cli(data, "key", "export", "--sealed", str(backup), "--passphrase-stdin", stdin="pass phrase\n")
    assert out.returncode == 0, out.stderr
    assert backup.stat().st_mode & 0o777 == 0o600
    assert did.encode() not in backup.read_bytes()  # sealed, not plain JSON
    (data / "keys.json").unlink()  # the key store is lost
    lost = cli(data, "plc", "handle", "bob.test")
    assert lost.returncode == 1 and "key import" in lost.stderr
    wrong = cli(data, "key", "import", str(backup), "--passphrase-stdin", stdin="nope\n")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr
    ok = cli(data, "key", "import", str(backup), "--passphrase-stdin", stdin="pass phrase\n")
    assert ok.returncode == 0, ok.stderr
    assert "rotation key of " + did in ok.stdout
    moved = cli(data, "plc", "handle", "bob.test")
    assert moved.returncode == 0, moved.stderr
    assert cli(data, "plc", "verify").returncode == 0


def test_handle_change_reaches_the_firehose_as_an_identity_event(tmp_path):
    ws_client = pytest.importorskip("websockets.sync.client")
    from tinypds.core.events import parse_frame

    data = tmp_path / "fh"
    did = init(data)
    server = start_server(data, extra_env={"TINYPDS_HOSTNAME": HOSTNAME})
    try:
        auth = {"authorization": f"Bearer {session(server.url)['accessJwt']}"}
        url = server.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos"
        with ws_client.connect(url, max_size=None) as ws:  # live, from now on
            r = httpx.post(server.url + XRPC + "identity.updateHandle", json={"handle": "erin.test"}, headers=auth)
            assert r.status_code == 200, r.text
            header, body = parse_frame(ws.recv(timeout=30))
        assert header == {"op": 1, "t": "#identity"}
        assert body["did"] == did and body["handle"] == "erin.test" and body["seq"] > 0
    finally:
        assert server.stop() == 0


def test_serve_refuses_clearly_when_the_keys_are_missing(tmp_path):
    data = tmp_path / "nokeys"
    init(data)
    (data / "keys.json").unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    out = subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), "serve", "--port", "0"],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "key import" in out.stderr and "Traceback" not in out.stderr
    assert not (data / "keys.json").exists()  # no new key was made silently
