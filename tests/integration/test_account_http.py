"""The account's first days over real HTTP (a `tinypds serve` subprocess, its dev account):
email confirmation and change through a real SMTP sink (aiosmtpd on 127.0.0.1), password
reset with a token minted by the CLI (no SMTP), bodies the reference refuses, user service
auth on uploadBlob only, deactivate/activate, validDid, and deletion (data and keys gone)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from tests.integration.conftest import REPO_ROOT, server_env, start_server

TOKEN_RE = re.compile(r"\b[A-Z2-7]{5}-[A-Z2-7]{5}\b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """A real SMTP server on loopback that keeps what it receives."""

    def __init__(self):
        controller = pytest.importorskip("aiosmtpd.controller")
        self.messages: list[tuple[list[str], str]] = []
        self.arrived = threading.Event()
        self.port = _free_port()
        self.controller = controller.Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
        self.arrived.set()
        return "250 OK"

    def token(self, to: str) -> str:
        assert self.arrived.wait(10), "no email arrived"
        self.arrived.clear()
        rcpt, content = self.messages[-1]
        assert rcpt == [to]
        return TOKEN_RE.search(content).group(0)

    def stop(self):
        self.controller.stop()


def cli(data, *args):
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), *args], cwd=REPO_ROOT,
                          env=server_env({"TINYPDS_KEY_FILE": str(data / "keys.json")}), capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture
def pds(tmp_path, sink):
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_SMTP_URL": f"smtp://127.0.0.1:{sink.port}",
                                                        "TINYPDS_EMAIL_FROM": "pds@example.com"})
    yield server
    server.stop()


def _session(server, password=None):
    r = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                   json={"identifier": server.handle, "password": password or server.password})
    assert r.status_code == 200, r.text
    return r.json(), {"Authorization": "Bearer " + r.json()["accessJwt"]}


def test_email_flows_over_smtp_and_the_cli(pds, sink):
    s, auth = _session(pds)
    assert "email" not in s and s["active"] is True
    post = lambda nsid, **kw: httpx.post(pds.url + "/xrpc/com.atproto.server." + nsid, **kw)  # noqa: E731
    r = post("requestEmailConfirmation", headers=auth)
    assert r.status_code == 400 and "does not have an email" in r.json()["message"]
    # unconfirmed: no token needed to set it
    r = post("updateEmail", headers=auth, json={"email": "Dev@Example.com"})
    assert r.status_code == 200, r.text
    got = httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).json()
    assert (got["email"], got["emailConfirmed"], got["emailAuthFactor"]) == ("Dev@Example.com", False, False)
    # a body where none is expected, none where one is: refused as the reference does
    r = post("requestEmailConfirmation", headers=auth, json={})
    assert r.status_code == 400 and r.json()["message"] == "A request body was provided when none was expected"
    r = post("confirmEmail", headers=auth)
    assert r.status_code == 400, r.text
    r = post("requestEmailConfirmation", headers=auth)
    assert r.status_code == 200, r.text
    token = sink.token("Dev@Example.com")
    r = post("confirmEmail", headers=auth, json={"email": "other@example.com", "token": token})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidEmail")
    r = post("confirmEmail", headers=auth, json={"email": "dev@example.com", "token": "AAAAA-AAAAA"})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidToken")
    r = post("confirmEmail", headers=auth, json={"email": "dev@example.com", "token": token})
    assert r.status_code == 200, r.text
    assert httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).json()["emailConfirmed"] is True
    # a confirmed address must approve its replacement
    r = post("updateEmail", headers=auth, json={"email": "new@example.com"})
    assert (r.status_code, r.json()["error"]) == (400, "TokenRequired")
    r = post("requestEmailUpdate", headers=auth)
    assert r.status_code == 200 and r.json() == {"tokenRequired": True}
    token = sink.token("Dev@Example.com")
    r = post("updateEmail", headers=auth, json={"email": "new@example.com", "token": token})
    assert r.status_code == 200, r.text
    got = httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).json()
    assert (got["email"], got["emailConfirmed"]) == ("new@example.com", False)

    # password reset: asked over HTTP (mailed), but the owner can also mint one with the CLI
    r = post("requestPasswordReset", json={"email": "nobody@example.com"})
    assert r.status_code == 200  # says nothing about unknown addresses
    out = cli(pds.data_dir, "account", "email-token", "reset-password")
    assert out.returncode == 0, out.stderr
    r = post("resetPassword", json={"token": out.stdout.strip(), "password": "a new password"})
    assert r.status_code == 200, r.text
    assert httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).status_code in (400, 401)
    _session(pds, "a new password")


def test_user_service_auth_only_for_upload_blob(pds):
    s, auth = _session(pds)
    service_did = httpx.get(pds.url + "/xrpc/com.atproto.server.describeServer").json()["did"]
    r = httpx.get(pds.url + "/xrpc/com.atproto.server.getServiceAuth", headers=auth,
                  params={"aud": service_did, "lxm": "com.atproto.repo.uploadBlob"})
    assert r.status_code == 200, r.text
    token = {"Authorization": "Bearer " + r.json()["token"]}
    for _ in range(2):  # reusable while valid
        r = httpx.post(pds.url + "/xrpc/com.atproto.repo.uploadBlob", headers={**token, "Content-Type": "image/png"},
                       content=b"\x89PNG\r\n\x1a\n" + b"x" * 100)
        assert r.status_code == 200, r.text
    r = httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=token)
    assert r.status_code in (400, 401), r.text
    r = httpx.post(pds.url + "/xrpc/com.atproto.repo.createRecord", headers=token,
                   json={"repo": s["did"], "collection": "app.bsky.feed.post",
                         "record": {"text": "no", "createdAt": "2026-01-01T00:00:00.000Z"}})
    assert r.status_code in (400, 401), r.text
    r = httpx.get(pds.url + "/xrpc/com.atproto.server.getServiceAuth", headers=auth,
                  params={"aud": service_did, "lxm": "com.atproto.repo.uploadBlob", "exp": 10 ** 10})
    assert r.status_code == 400 and r.json()["error"] == "BadExpiration"


def test_deactivate_activate_and_delete(pds):
    s, auth = _session(pds)
    did = s["did"]
    post = lambda nsid, **kw: httpx.post(pds.url + "/xrpc/com.atproto.server." + nsid, **kw)  # noqa: E731
    status = httpx.get(pds.url + "/xrpc/com.atproto.server.checkAccountStatus", headers=auth).json()
    assert status["activated"] is True and status["validDid"] is True
    r = post("deactivateAccount", headers=auth, json={"deleteAfter": "next tuesday"})
    assert r.status_code == 400 and "deleteAfter" in r.json()["message"], r.text
    r = post("deactivateAccount", headers={**auth, "Content-Type": "text/plain"}, content=b"x")  # not JSON
    assert r.status_code == 400, r.text
    assert httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).json()["active"] is True
    r = post("deactivateAccount", headers=auth, json={"deleteAfter": "2030-01-01T00:00:00.000Z"})
    assert r.status_code == 200, r.text
    got = httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).json()
    assert got["active"] is False and got["status"] == "deactivated"
    repo = httpx.get(pds.url + "/xrpc/com.atproto.sync.getRepoStatus", params={"did": did}).json()
    assert repo["active"] is False and repo["status"] == "deactivated"
    r = post("activateAccount", headers=auth, json={})
    assert r.status_code == 400 and "none was expected" in r.json()["message"]
    r = post("activateAccount", headers=auth)
    assert r.status_code == 200, r.text
    assert httpx.get(pds.url + "/xrpc/com.atproto.sync.getRepoStatus", params={"did": did}).json()["active"] is True

    r = post("requestAccountDelete", headers=auth)
    assert r.status_code == 200, r.text
    out = cli(pds.data_dir, "account", "email-token", "delete-account")
    token = out.stdout.strip()
    r = post("deleteAccount", json={"did": did, "password": "wrong", "token": token})
    assert r.status_code == 401, r.text
    r = post("deleteAccount", json={"did": did, "password": pds.password, "token": token})
    assert r.status_code == 200, r.text
    r = httpx.get(pds.url + "/xrpc/com.atproto.repo.describeRepo", params={"repo": did})
    assert r.status_code == 400, r.text
    assert httpx.get(pds.url + "/xrpc/com.atproto.server.getSession", headers=auth).status_code in (400, 401)
    keys = json.loads((pds.data_dir / "keys.json").read_text())
    assert did not in json.dumps(keys), "the account's keys must leave the key store"


def test_what_an_app_password_may_do(pds):
    s, auth = _session(pds)
    r = httpx.post(pds.url + "/xrpc/com.atproto.server.createAppPassword", headers=auth, json={"name": "phone"})
    assert r.status_code == 200, r.text
    app = {"Authorization": "Bearer " + httpx.post(pds.url + "/xrpc/com.atproto.server.createSession", json={
        "identifier": pds.handle, "password": r.json()["password"]}).json()["accessJwt"]}
    post = lambda nsid, **kw: httpx.post(pds.url + "/xrpc/com.atproto.server." + nsid, **kw)  # noqa: E731
    assert post("updateEmail", headers=app, json={"email": "x@example.com"}).status_code in (400, 401)
    assert post("updateEmail", headers=auth, json={"email": "x@example.com"}).status_code == 200
    assert post("requestEmailConfirmation", headers=app).status_code == 200  # as on the reference
    assert post("requestAccountDelete", headers=app).status_code in (400, 401)
    assert post("deactivateAccount", headers=app, json={}).status_code in (400, 401)
