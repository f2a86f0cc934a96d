"""Client metadata (fetched without redirects, never from private addresses), the loopback
development client, and confidential clients with private_key_jwt (assertions built here
with core.jwt). HTTP is an httpx MockTransport or the real guarded transport with an
injected resolver: no test reaches the network."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tinypds.core.crypto import P256PrivateKey
from tinypds.services.auth import passwords
from tinypds.services.auth.oauth.clients import ClientError, ClientRegistry, loopback_client, safe_http_client
from tinypds.services.net.safe_http import is_public_address
from tinypds.services.auth.oauth.server import OAuthError, OAuthService
from tinypds.store import accounts
from tinypds.store.db import Database

from .oauth_helpers import ASSERTION_TYPE, DpopKey, client_assertion, pkce, public_jwk

DID = "did:plc:abcdefghijklmnopqrstuvwx"
ISSUER = "http://localhost:2583"
PAR_URL, TOKEN_URL = ISSUER + "/oauth/par", ISSUER + "/oauth/token"
CLIENT_ID = "https://app.example/client-metadata.json"
REDIRECT = "https://app.example/callback"


def run(coro):
    return asyncio.run(coro)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def metadata(**over) -> dict:
    return {"client_id": CLIENT_ID, "client_name": "Example App", "redirect_uris": [REDIRECT],
            "scope": "atproto transition:generic", "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "dpop_bound_access_tokens": True, "application_type": "web", **over}


class Web:
    """A mock web: path -> (status, headers, body); records every URL requested."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(str(request.url))
        status, headers, body = self.routes.get(str(request.url), (404, {}, b"{}"))
        return httpx.Response(status, headers=headers, content=body if isinstance(body, bytes) else json.dumps(body).encode())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self), follow_redirects=False)


# ---- fetching is careful --------------------------------------------------------------------------------


@pytest.mark.parametrize("ip, public", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.1.1", False), ("172.16.0.1", False), ("169.254.169.254", False),
    ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
    ("::ffff:127.0.0.1", False), ("224.0.0.1", False), ("8.8.8.8", True), ("2606:4700:4700::1111", True),
])
def test_public_address_check(ip, public):
    assert is_public_address(ip) is public


def test_metadata_url_that_redirects_is_refused():
    web = Web({CLIENT_ID: (302, {"location": "http://169.254.169.254/latest"}, b"")})
    with pytest.raises(ClientError) as e:
        run(ClientRegistry(http=web.client()).get(CLIENT_ID))
    assert e.value.error == "invalid_client_metadata" and "redirect" in e.value.description
    assert web.seen == [CLIENT_ID]  # the redirect target was never requested


@pytest.mark.parametrize("answer", [["10.0.0.7"], ["127.0.0.1"], ["93.184.216.34", "192.168.0.2"]])
def test_metadata_host_resolving_to_a_private_address_is_never_dialled(answer):
    asked = []

    async def resolver(host, port):
        asked.append((host, port))
        return answer

    async def go():
        http = safe_http_client(resolver, timeout=2)
        try:
            return await ClientRegistry(http=http).get(CLIENT_ID)
        finally:
            await http.aclose()

    with pytest.raises(ClientError) as e:
        run(go())
    assert e.value.error == "invalid_client_metadata" and "non-public" in e.value.description
    assert asked == [("app.example", 443)]


def test_oversized_or_mismatched_documents_are_refused():
    for body, why in ((b"{" + b" " * 70_000 + b"}", "larger"), (metadata(client_id="https://other.example/x"), "does not match"),
                      (metadata(dpop_bound_access_tokens=False), "dpop"), (metadata(redirect_uris=["http://app.example/cb"]), "not allowed")):
        web = Web({CLIENT_ID: (200, {"content-type": "application/json"}, body)})
        with pytest.raises(ClientError, match=why):
            run(ClientRegistry(http=web.client()).get(CLIENT_ID))


@pytest.mark.parametrize("client_id", [
    "http://app.example/client.json", "https://10.0.0.1/client.json", "https://localhost/client.json",
    "https://user@app.example/client.json", "http://localhost/path?redirect_uri=http://127.0.0.1/cb",
    "http://localhost?redirect_uri=http://evil.example/cb", "http://localhost?redirect_uri=http://localhost:3000/cb",
])
def test_bad_client_ids(client_id):
    web = Web({})
    with pytest.raises(ClientError):
        run(ClientRegistry(http=web.client()).get(client_id))
    assert web.seen == []


def test_loopback_client_defaults():
    c = loopback_client("http://localhost")
    assert c.redirect_uris == ["http://127.0.0.1/", "http://[::1]/"] and c.scopes == {"atproto"} and not c.confidential


# ---- confidential clients (private_key_jwt) -------------------------------------------------------------------


@pytest.fixture
def env(tmp_path):
    db = Database.open(tmp_path / "tinypds.sqlite")
    db.write(lambda c: accounts.create_account(c, DID, "alice.test", "2026-01-01T00:00:00.000Z", password_hash=passwords.hash_password("pw")))
    clock = Clock()
    key = P256PrivateKey.generate()
    meta = metadata(token_endpoint_auth_method="private_key_jwt", token_endpoint_auth_signing_alg="ES256",
                    jwks_uri="https://app.example/jwks.json")
    web = Web({CLIENT_ID: (200, {}, meta), "https://app.example/jwks.json": (200, {}, {"keys": [public_jwk(key, "k1")]})})
    oauth = OAuthService(db, issuer=ISSUER, clients=ClientRegistry(http=web.client(), clock=clock), clock=clock)
    dpop = DpopKey(clock)
    dpop.nonce = oauth.dpop.nonces.current()
    yield oauth, dpop, key, clock, db
    db.close()


def _auth(key, clock, kid="k1", **kw):
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion(key, CLIENT_ID, ISSUER, kid, clock(), **kw)}


def _par(oauth, dpop, key, clock, challenge, auth=None):
    form = {"client_id": CLIENT_ID, "response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256",
            "state": "s", "redirect_uri": REDIRECT, "scope": "atproto transition:generic",
            **(auth if auth is not None else _auth(key, clock))}
    return run(oauth.par(form, dpop.proof("POST", PAR_URL), [PAR_URL]))


def _token(oauth, dpop, form):
    return run(oauth.token({"client_id": CLIENT_ID, **form}, dpop.proof("POST", TOKEN_URL), [TOKEN_URL]))


def test_private_key_jwt_full_flow_and_long_sessions(env):
    oauth, dpop, key, clock, db = env
    verifier, challenge = pkce()
    out = _par(oauth, dpop, key, clock, challenge)
    row, client = run(oauth.pending_request(CLIENT_ID, out["request_uri"]))
    assert client.confidential and client.name == "Example App"
    code = parse_qs(urlsplit(run(oauth.approve(row, DID, client))).query)["code"][0]
    tokens = _token(oauth, dpop, {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
                                  "redirect_uri": REDIRECT, **_auth(key, clock)})
    assert tokens["sub"] == DID and tokens["scope"] == "atproto transition:generic"
    clock.t += 20 * 86400  # beyond a public client's two weeks
    dpop.nonce = oauth.dpop.nonces.current()
    again = _token(oauth, dpop, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **_auth(key, clock)})
    assert again["refresh_token"] != tokens["refresh_token"]


def test_confidential_client_must_authenticate(env):
    oauth, dpop, key, clock, db = env
    with pytest.raises(OAuthError) as e:
        _par(oauth, dpop, key, clock, pkce()[1], auth={})
    assert e.value.error == "invalid_client" and e.value.status == 401
    other = P256PrivateKey.generate()
    with pytest.raises(OAuthError) as e:
        _par(oauth, dpop, key, clock, pkce()[1], auth=_auth(other, clock))
    assert e.value.error == "invalid_client"
    with pytest.raises(OAuthError):
        _par(oauth, dpop, key, clock, pkce()[1], auth=_auth(key, clock, kid="unknown"))
    stale = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": client_assertion(key, CLIENT_ID, ISSUER, "k1", clock() - 3600)}
    with pytest.raises(OAuthError):
        _par(oauth, dpop, key, clock, pkce()[1], auth=stale)
    assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_request").fetchone()[0]) == 0


def test_replayed_client_assertion_is_refused(env):
    oauth, dpop, key, clock, db = env
    auth = _auth(key, clock, jti="same-jti-1234")
    _par(oauth, dpop, key, clock, pkce()[1], auth=auth)
    with pytest.raises(OAuthError) as e:
        _par(oauth, dpop, key, clock, pkce()[1], auth=auth)
    assert e.value.error == "invalid_client" and "replayed" in e.value.description


def test_code_of_a_confidential_client_needs_its_authentication(env):
    oauth, dpop, key, clock, db = env
    verifier, challenge = pkce()
    row, client = run(oauth.pending_request(CLIENT_ID, _par(oauth, dpop, key, clock, challenge)["request_uri"]))
    code = parse_qs(urlsplit(run(oauth.approve(row, DID, client))).query)["code"][0]
    with pytest.raises(OAuthError) as e:
        _token(oauth, dpop, {"grant_type": "authorization_code", "code": code, "code_verifier": verifier})
    assert e.value.error == "invalid_client"
    assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_session").fetchone()[0]) == 0


def test_dpop_key_must_differ_from_the_client_key(env):
    oauth, dpop, key, clock, db = env
    dpop.key = key  # the client signs its DPoP proofs with its client-authentication key
    with pytest.raises(OAuthError) as e:
        _par(oauth, dpop, key, clock, pkce()[1])
    assert e.value.error == "invalid_request" and "different keys" in e.value.description


def test_refresh_must_use_the_same_client_key(tmp_path):
    db = Database.open(tmp_path / "tinypds.sqlite")
    db.write(lambda c: accounts.create_account(c, DID, "alice.test", "2026-01-01T00:00:00.000Z", password_hash=passwords.hash_password("pw")))
    clock = Clock()
    k1, k2 = P256PrivateKey.generate(), P256PrivateKey.generate()
    meta = metadata(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(k1, "k1"), public_jwk(k2, "k2")]})
    oauth = OAuthService(db, issuer=ISSUER, clients=ClientRegistry(http=Web({CLIENT_ID: (200, {}, meta)}).client(), clock=clock), clock=clock)
    dpop = DpopKey(clock)
    dpop.nonce = oauth.dpop.nonces.current()
    try:
        verifier, challenge = pkce()
        row, client = run(oauth.pending_request(CLIENT_ID, _par(oauth, dpop, k1, clock, challenge)["request_uri"]))
        code = parse_qs(urlsplit(run(oauth.approve(row, DID, client))).query)["code"][0]
        tokens = _token(oauth, dpop, {"grant_type": "authorization_code", "code": code, "code_verifier": verifier, **_auth(k1, clock)})
        with pytest.raises(OAuthError) as e:
            _token(oauth, dpop, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **_auth(k2, clock, kid="k2")})
        assert e.value.error == "invalid_grant"
        fresh = _token(oauth, dpop, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], **_auth(k1, clock)})
        assert fresh["sub"] == DID
    finally:
        db.close()
