"""Sessions over HTTP against the real server: the `atproto` SDK and raw HTTP.

The server's first start made a local dev account and printed its password (conftest).
"""

from __future__ import annotations

import warnings

import httpx
import pytest

atproto = pytest.importorskip("atproto")
from atproto import Client  # noqa: E402
from atproto_client.exceptions import BadRequestError, UnauthorizedError  # noqa: E402

from .test_http_basics import assert_xrpc_error  # noqa: E402


@pytest.fixture
def account(pds):
    assert pds.handle and pds.password and pds.did, "the server did not print a dev account on first start"
    return pds


def login(http, ident, password):
    resp = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": ident, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_sdk_login_refresh_and_logout(pds, account):
    client = Client(base_url=pds.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        client.login(account.handle, account.password, fetch_bsky_profile=False)
    assert client.me is None or client.me.did == account.did
    session = client.com.atproto.server.get_session()
    assert session.did == account.did and session.handle == account.handle and session.active is True
    old_refresh = client._session.refresh_jwt
    client._refresh_and_set_session()
    assert client._session.refresh_jwt != old_refresh
    assert client.com.atproto.server.get_session().did == account.did
    access = client._session.access_jwt
    client.com.atproto.server.delete_session(headers={"Authorization": f"Bearer {client._session.refresh_jwt}"})
    with httpx.Client(base_url=pds.url) as http:
        resp = http.get("/xrpc/com.atproto.server.getSession", headers=bearer(access))
        assert_xrpc_error(resp, 400, "ExpiredToken")


def test_sdk_app_password_login(pds, account):
    owner = Client(base_url=pds.url)
    owner.login(account.handle, account.password, fetch_bsky_profile=False)
    created = owner.com.atproto.server.create_app_password({"name": "sdk-test"})
    assert created.name == "sdk-test" and len(created.password) == 19
    names = [p.name for p in owner.com.atproto.server.list_app_passwords().passwords]
    assert "sdk-test" in names

    app = Client(base_url=pds.url)
    app.login(account.did, created.password, fetch_bsky_profile=False)
    assert app.com.atproto.server.get_session().did == account.did
    # an app-password session cannot mint more app passwords
    with pytest.raises(BadRequestError) as e:
        app.com.atproto.server.create_app_password({"name": "escalate"})
    assert e.value.response.content.error == "InvalidToken"

    owner.com.atproto.server.revoke_app_password({"name": "sdk-test"})
    with pytest.raises(BadRequestError) as e:
        app.com.atproto.server.get_session()
    assert e.value.response.content.error == "ExpiredToken"
    with pytest.raises(UnauthorizedError):
        Client(base_url=pds.url).login(account.handle, created.password, fetch_bsky_profile=False)


def test_raw_session_lifecycle(http, account):
    s = login(http, account.handle, account.password)
    assert set(s) >= {"accessJwt", "refreshJwt", "handle", "did", "active"}
    assert s["did"] == account.did and s["handle"] == account.handle
    got = http.get("/xrpc/com.atproto.server.getSession", headers=bearer(s["accessJwt"]))
    assert got.status_code == 200 and got.json()["did"] == account.did
    assert "accessJwt" not in got.json()

    r1 = http.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(s["refreshJwt"]))
    assert r1.status_code == 200, r1.text
    assert set(r1.json()) >= {"accessJwt", "refreshJwt", "handle", "did"}
    # the used refresh token is refused from now on
    again = http.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(s["refreshJwt"]))
    assert_xrpc_error(again, 400, "ExpiredToken")
    # an access token is not a refresh token
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(s["accessJwt"])), 400, "InvalidToken")

    out = http.post("/xrpc/com.atproto.server.deleteSession", headers=bearer(r1.json()["refreshJwt"]))
    assert out.status_code == 200
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(r1.json()["refreshJwt"])), 400, "ExpiredToken")
    assert_xrpc_error(http.get("/xrpc/com.atproto.server.getSession", headers=bearer(r1.json()["accessJwt"])), 400, "ExpiredToken")


def test_logout_with_access_token(http, account):
    s = login(http, account.handle, account.password)
    assert http.post("/xrpc/com.atproto.server.deleteSession", headers=bearer(s["accessJwt"])).status_code == 200
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.refreshSession", headers=bearer(s["refreshJwt"])), 400, "ExpiredToken")
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.deleteSession", headers=bearer("x.y.z")), 400, "InvalidToken")


def test_login_by_did_and_case_insensitive_handle(http, account):
    assert login(http, account.did, account.password)["did"] == account.did
    assert login(http, account.handle.upper(), account.password)["did"] == account.did


def test_auth_errors(http, account):
    resp = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": account.handle, "password": "wrong"})
    body = assert_xrpc_error(resp, 401, "AuthenticationRequired")
    assert "password" in body["message"].lower()
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.createSession", json={"identifier": account.handle}), 400, "InvalidRequest")
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.createSession", json={"identifier": 5, "password": "x"}), 400, "InvalidRequest")
    assert_xrpc_error(http.get("/xrpc/com.atproto.server.getSession"), 401, "AuthenticationRequired")
    assert_xrpc_error(http.get("/xrpc/com.atproto.server.getSession", headers={"Authorization": "Basic abc"}), 401, "AuthenticationRequired")
    assert_xrpc_error(http.get("/xrpc/com.atproto.server.getSession", headers=bearer("garbage")), 400, "InvalidToken")
    assert_xrpc_error(http.get("/xrpc/com.atproto.server.listAppPasswords"), 401, "AuthenticationRequired")


def test_check_account_status(http, account):
    s = login(http, account.handle, account.password)
    resp = http.get("/xrpc/com.atproto.server.checkAccountStatus", headers=bearer(s["accessJwt"]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    for name in ("activated", "validDid", "repoCommit", "repoRev", "repoBlocks", "indexedRecords",
                 "privateStateValues", "expectedBlobs", "importedBlobs"):
        assert name in body
    assert body["activated"] is True and body["validDid"] is True
    latest = http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": account.did}).json()
    assert body["repoCommit"] == latest["cid"] and body["repoRev"] == latest["rev"]
    assert body["repoBlocks"] >= 2 and isinstance(body["indexedRecords"], int)
    assert body["importedBlobs"] == body["expectedBlobs"]


def test_failure_throttle_over_http(start_pds):
    server = start_pds("throttled")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        statuses = []
        for _ in range(25):
            r = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": server.handle, "password": "nope"})
            statuses.append(r.status_code)
        assert statuses[0] == 401
        assert statuses[-1] == 429
        assert_xrpc_error(
            http.post("/xrpc/com.atproto.server.createSession", json={"identifier": server.handle, "password": server.password}),
            429,
            "RateLimitExceeded",
        )
