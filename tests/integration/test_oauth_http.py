"""The OAuth flow over real HTTP against the real server (subprocess): metadata, PAR with the
nonce dance, the sign-in/consent page (headers, CSRF, wrong password, deny), code exchange,
DPoP-bound XRPC calls limited by scope, refresh, the account page and revocation."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.services.oauth_helpers import DpopKey, pkce

from .conftest import REPO_ROOT, server_env, start_server

REDIRECT = "http://127.0.0.1:9/callback"
SCOPE = "atproto repo:com.example.note"


def loopback_client_id(scope: str) -> str:
    return f"http://localhost?redirect_uri={quote(REDIRECT, safe='')}&scope={quote(scope, safe='')}"


CLIENT_ID = loopback_client_id(SCOPE)
NOTE = {"$type": "com.example.note", "text": "hello"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A minimal DPoP client over httpx that keeps the server's nonce (like real clients do)."""

    def __init__(self, pds, scope: str = SCOPE):
        self.pds = pds
        self.scope, self.client_id = scope, loopback_client_id(scope)
        self.http = httpx.Client(base_url=pds.url, timeout=30, follow_redirects=False)
        self.dpop = DpopKey()
        self.access: str | None = None

    def post_form(self, path: str, data: dict, *, retry: bool = True) -> httpx.Response:
        r = self.http.post(path, data=data, headers={"DPoP": self.dpop.proof("POST", self.pds.url + path)})
        self.dpop.nonce = r.headers.get("dpop-nonce", self.dpop.nonce)
        if retry and r.status_code == 400 and r.json().get("error") == "use_dpop_nonce":
            return self.post_form(path, data, retry=False)
        return r

    def xrpc(self, method: str, nsid: str, *, retry: bool = True, **kw) -> httpx.Response:
        path = "/xrpc/" + nsid
        proof = self.dpop.proof(method, self.pds.url + path, access_token=self.access)
        r = self.http.request(method, path, headers={"Authorization": f"DPoP {self.access}", "DPoP": proof, **kw.pop("headers", {})}, **kw)
        if r.status_code == 401 and "use_dpop_nonce" in r.headers.get("www-authenticate", "") and retry:
            self.dpop.nonce = r.headers["dpop-nonce"]
            return self.xrpc(method, nsid, retry=False, **kw)
        return r

    def par(self, challenge: str) -> str:
        r = self.post_form("/oauth/par", {"client_id": self.client_id, "response_type": "code", "code_challenge": challenge,
                                          "code_challenge_method": "S256", "state": "xyz", "redirect_uri": REDIRECT,
                                          "scope": self.scope, "login_hint": self.pds.handle})
        assert r.status_code == 201, r.text
        return r.json()["request_uri"]

    def page(self, request_uri: str) -> tuple[httpx.Response, str]:
        r = self.http.get("/oauth/authorize", params={"client_id": self.client_id, "request_uri": request_uri})
        m = re.search(r'name="csrf" value="([^"]+)"', r.text)
        return r, m.group(1) if m else ""

    def submit(self, request_uri: str, csrf: str, **fields) -> httpx.Response:
        return self.http.post("/oauth/authorize", data={"csrf": csrf, "request_uri": request_uri, "client_id": self.client_id, **fields})

    def sign_in(self, **fields) -> dict:
        verifier, challenge = pkce()
        request_uri = self.par(challenge)
        _, csrf = self.page(request_uri)
        r = self.submit(request_uri, csrf, **{"password": self.pds.password, "action": "allow", **fields})
        assert r.status_code == 303, r.text
        q = parse_qs(urlsplit(r.headers["location"]).query)
        r = self.post_form("/oauth/token", {"client_id": self.client_id, "grant_type": "authorization_code", "code": q["code"][0],
                                            "code_verifier": verifier, "redirect_uri": REDIRECT})
        assert r.status_code == 200, r.text
        tokens = r.json()
        self.access = tokens["access_token"]
        return tokens


@pytest.fixture
def client(pds):
    c = Client(pds)
    yield c
    c.http.close()


def test_metadata(pds, http):
    asm = http.get("/.well-known/oauth-authorization-server").json()
    assert asm["issuer"] == "http://localhost:2583" and asm["pushed_authorization_request_endpoint"].endswith("/oauth/par")
    prm = http.get("/.well-known/oauth-protected-resource").json()
    assert prm["authorization_servers"] == [asm["issuer"]] and prm["resource"] == asm["issuer"]


def test_par_asks_for_a_nonce_first(client):
    _, challenge = pkce()
    r = client.post_form("/oauth/par", {"client_id": CLIENT_ID}, retry=False)
    assert r.status_code == 400 and r.json()["error"] == "use_dpop_nonce" and r.headers["dpop-nonce"]
    assert client.par(challenge).startswith("urn:ietf:params:oauth:request_uri:")


def test_page_headers_csrf_wrong_password_and_deny(client, pds):
    request_uri = client.par(pkce()[1])
    r, csrf = client.page(request_uri)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["x-frame-options"] == "DENY"
    assert "Loopback development client" in r.text and "com.example.note" in r.text and pds.handle in r.text
    assert "<script" not in r.text and 'type="password"' in r.text and 'name="remember"' in r.text
    # a forged form (no CSRF cookie match) is refused, nothing issued
    forged = httpx.post(pds.url + "/oauth/authorize", data={"csrf": csrf, "request_uri": request_uri, "client_id": CLIENT_ID,
                                                            "password": pds.password, "action": "allow"}, follow_redirects=False)
    assert forged.status_code == 403 and "location" not in forged.headers
    wrong = client.submit(request_uri, csrf, password="not-the-password", action="allow")
    assert wrong.status_code == 401 and "Wrong password" in wrong.text and "location" not in wrong.headers
    denied = client.submit(request_uri, csrf, action="deny")
    assert denied.status_code == 303
    q = parse_qs(urlsplit(denied.headers["location"]).query)
    assert q["error"] == ["access_denied"] and q["state"] == ["xyz"] and "code" not in q
    again = client.submit(request_uri, csrf, password=pds.password, action="allow")
    assert again.status_code == 400 and "location" not in again.headers


def test_tokens_work_within_their_scope_only(client, pds):
    tokens = client.sign_in()
    assert tokens["sub"] == pds.did and tokens["token_type"] == "DPoP"
    ok = client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert ok.status_code == 200, ok.text
    assert ok.headers["dpop-nonce"] == client.dpop.nonce  # answers keep the client's nonce current
    assert "dpop-nonce" not in client.http.get("/xrpc/_health").headers
    post = {"$type": "app.bsky.feed.post", "text": "nope", "createdAt": "2026-01-01T00:00:00.000Z"}
    denied = client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "app.bsky.feed.post", "record": post})
    assert denied.status_code == 403 and denied.json()["error"] == "ScopeMissingError"
    listed = client.http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": pds.did, "collection": "app.bsky.feed.post"}).json()
    assert listed["records"] == []
    blob = client.xrpc("POST", "com.atproto.repo.uploadBlob", content=b"\x89PNG....", headers={"content-type": "image/png"})
    assert blob.status_code == 403 and blob.json()["error"] == "ScopeMissingError"
    as_bearer = client.http.post("/xrpc/com.atproto.repo.createRecord", headers={"Authorization": f"Bearer {client.access}"},
                                 json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert as_bearer.status_code in (400, 401) and "uri" not in as_bearer.json()
    no_proof = client.http.post("/xrpc/com.atproto.repo.createRecord", headers={"Authorization": f"DPoP {client.access}"},
                                json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert no_proof.status_code == 401 and 'error="invalid_dpop_proof"' in no_proof.headers["www-authenticate"]
    full_only = client.xrpc("POST", "com.atproto.server.createAppPassword", json={"name": "x"})
    assert full_only.status_code in (400, 403) and "password" not in full_only.json()
    listing = client.xrpc("GET", "com.atproto.server.listAppPasswords")
    assert listing.status_code == 403 and "passwords" not in listing.json()
    deactivate = client.xrpc("POST", "com.atproto.server.deactivateAccount", json={})
    assert deactivate.status_code == 403 and "account:status?action=manage" in deactivate.json()["message"]
    handle = client.xrpc("POST", "com.atproto.identity.updateHandle", json={"handle": "other.test"})
    assert handle.status_code == 403 and "identity:handle" in handle.json()["message"]
    assert client.http.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": pds.did}).json()["handle"] == pds.handle


def test_resource_server_nonce_and_refresh(client, pds):
    tokens = client.sign_in()
    client.dpop.nonce = None
    r = client.xrpc("POST", "com.atproto.repo.createRecord", retry=False, json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert r.status_code == 401 and 'error="use_dpop_nonce"' in r.headers["www-authenticate"] and r.headers["dpop-nonce"]
    client.dpop.nonce = r.headers["dpop-nonce"]
    r = client.post_form("/oauth/token", {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200 and r.json()["refresh_token"] != tokens["refresh_token"]
    client.access = r.json()["access_token"]
    assert client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.note", "record": NOTE}).status_code == 200
    reuse = client.post_form("/oauth/token", {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    gone = client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert gone.status_code == 401 and 'error="invalid_token"' in gone.headers["www-authenticate"]


def test_get_session_shows_email_only_with_the_scope(tmp_path):
    port, password = _free_port(), "email-test-password"
    data, keys = tmp_path / "data", tmp_path / "keys.json"
    env = {"TINYPDS_HOSTNAME": f"localhost:{port}", "TINYPDS_KEY_FILE": str(keys)}
    init = subprocess.run(
        [sys.executable, "-m", "tinypds.cli", "--data", str(data), "init", "--handle", "mail.test", "--hostname", f"localhost:{port}",
         "--did-method", "web", "--dev", "--email", "mail@example.com", "--password-stdin", "--keyring-backend", "file", "--key-file", str(keys)],
        input=password + "\n", text=True, env=server_env(env), cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert init.returncode == 0, init.stderr
    server = start_server(data, extra_env=env, args=["--port", str(port), "--no-dev-account"])
    try:
        account = SimpleNamespace(url=server.url, handle="mail.test", password=password, did=f"did:web:localhost%3A{port}")
        seen = {}
        for scope in ("atproto transition:generic", "atproto transition:email"):
            c = Client(account, scope)
            c.sign_in()
            r = c.xrpc("GET", "com.atproto.server.getSession")
            assert r.status_code == 200 and r.json()["did"] == account.did
            seen[scope] = r.json().get("email")
            c.http.close()
        assert seen == {"atproto transition:generic": None, "atproto transition:email": "mail@example.com"}
    finally:
        server.stop()


def test_revoke_endpoint(client, pds):
    tokens = client.sign_in()
    r = client.post_form("/oauth/revoke", {"client_id": CLIENT_ID, "token": tokens["access_token"]})
    assert r.status_code == 200
    assert client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.note", "record": NOTE}).status_code == 401


def test_account_page_lists_and_revokes_apps(client, pds):
    client.sign_in()
    page = client.http.get("/account")
    assert page.status_code == 200 and 'type="password"' in page.text and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    signed = client.http.post("/account/signin", data={"csrf": csrf, "password": pds.password})
    assert signed.status_code == 303
    page = client.http.get("/account")
    assert "Loopback development client" in page.text and "Revoke" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    revoked = client.http.post("/account/apps/revoke", data={"csrf": csrf, "client_id": CLIENT_ID})
    assert revoked.status_code == 303
    after = client.http.get("/account")
    assert "No apps are connected." in after.text
    r = client.xrpc("POST", "com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.note", "record": NOTE})
    assert r.status_code == 401


def test_remember_this_device(client, pds):
    client.sign_in(remember="1")
    assert client.http.cookies.get("tinypds-device")
    request_uri = client.par(pkce()[1])
    page, csrf = client.page(request_uri)
    assert "Signed in on this device" in page.text and 'type="password"' not in page.text
    r = client.submit(request_uri, csrf, action="allow")  # no password needed now
    assert r.status_code == 303 and "code=" in r.headers["location"]
    other = Client(pds)  # another browser still has to sign in
    page, _ = other.page(other.par(pkce()[1]))
    assert 'type="password"' in page.text
    other.http.close()


def test_sign_in_page_is_throttled(start_pds):
    server = start_pds()
    c = Client(server)
    request_uri = c.par(pkce()[1])
    _, csrf = c.page(request_uri)
    statuses = [c.submit(request_uri, csrf, password=f"wrong-{i}", action="allow").status_code for i in range(25)]
    assert statuses[0] == 401 and statuses[-1] == 429
    r = c.submit(request_uri, csrf, password=server.password, action="allow")  # even the right password waits now
    assert r.status_code == 429 and "location" not in r.headers
    c.http.close()
