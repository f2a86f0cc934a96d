"""OAuthService on a real SQLite database: PAR, codes, tokens, refresh rotation, revocation,
DPoP checks and the resource-server token check. Time is injected; negative cases assert
the spec's error AND that nothing was granted."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import pytest

from tinypds.services.auth import passwords
from tinypds.services.auth.oauth.server import OAuthError, OAuthService
from tinypds.store import accounts
from tinypds.store import oauth as sql
from tinypds.store.db import Database

from .oauth_helpers import DpopKey, pkce

DID = "did:plc:abcdefghijklmnopqrstuvwx"
ISSUER = "http://localhost:2583"
PAR_URL, TOKEN_URL, RES_URL = ISSUER + "/oauth/par", ISSUER + "/oauth/token", ISSUER + "/xrpc/com.atproto.repo.createRecord"
REDIRECT = "http://127.0.0.1:4567/callback"
CLIENT_ID = "http://localhost?redirect_uri=" + REDIRECT.replace(":", "%3A").replace("/", "%2F") + "&scope=atproto%20repo%3Aapp.bsky.feed.like"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def db(tmp_path):
    database = Database.open(tmp_path / "tinypds.sqlite")
    database.write(lambda c: accounts.create_account(c, DID, "alice.test", "2026-01-01T00:00:00.000Z",
                                                     password_hash=passwords.hash_password("pw")))
    yield database
    database.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def oauth(db, clock):
    return OAuthService(db, issuer=ISSUER, clock=clock)


@pytest.fixture
def dpop(oauth, clock):
    key = DpopKey(clock)
    key.nonce = oauth.dpop.nonces.current()
    return key


def par(oauth, dpop, challenge, **extra):
    form = {"client_id": CLIENT_ID, "response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256",
            "state": "st-1", "redirect_uri": REDIRECT, "scope": "atproto repo:app.bsky.feed.like", **extra}
    return run(oauth.par(form, dpop.proof("POST", PAR_URL), [PAR_URL]))


def authorize(oauth, dpop, challenge, **extra) -> str:
    """PAR + the user allowing -> the authorization code."""
    out = par(oauth, dpop, challenge, **extra)
    row, client = run(oauth.pending_request(CLIENT_ID, out["request_uri"]))
    location = run(oauth.approve(row, DID, client))
    q = parse_qs(urlsplit(location).query)
    assert q["state"] == ["st-1"] and q["iss"] == [ISSUER]
    return q["code"][0]


def exchange(oauth, dpop, code, verifier):
    form = {"client_id": CLIENT_ID, "grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": REDIRECT}
    return run(oauth.token(form, dpop.proof("POST", TOKEN_URL), [TOKEN_URL]))


def refresh(oauth, dpop, token):
    form = {"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": token}
    return run(oauth.token(form, dpop.proof("POST", TOKEN_URL), [TOKEN_URL]))


def use(oauth, dpop, access, **kw):
    return run(oauth.verify_access(access, dpop.proof("POST", RES_URL, access_token=access, **kw), "POST", [RES_URL]))


def sessions(db) -> int:
    return db.read(lambda c: c.execute("SELECT count(*) FROM oauth_session").fetchone()[0])


def error_of(fn) -> OAuthError:
    with pytest.raises(OAuthError) as e:
        fn()
    return e.value


def full_flow(oauth, dpop):
    verifier, challenge = pkce()
    return exchange(oauth, dpop, authorize(oauth, dpop, challenge), verifier)


# ---- the happy path ----------------------------------------------------------------------------


def test_metadata_names_the_issuer_and_requirements(oauth):
    m = oauth.server_metadata()
    assert m["issuer"] == ISSUER and m["require_pushed_authorization_requests"] is True
    assert m["code_challenge_methods_supported"] == ["S256"] and "ES256" in m["dpop_signing_alg_values_supported"]
    assert m["token_endpoint"] == TOKEN_URL and m["authorization_response_iss_parameter_supported"] is True
    assert oauth.resource_metadata()["authorization_servers"] == [ISSUER]


def test_code_exchange_refresh_and_resource_access(oauth, dpop, db):
    tokens = full_flow(oauth, dpop)
    assert tokens["token_type"] == "DPoP" and tokens["sub"] == DID and tokens["expires_in"] <= 900
    assert tokens["scope"] == "atproto repo:app.bsky.feed.like"
    ctx = use(oauth, dpop, tokens["access_token"])
    assert ctx.did == DID and ctx.kind == "oauth" and ctx.scopes == {"atproto", "repo:app.bsky.feed.like"}
    fresh = refresh(oauth, dpop, tokens["refresh_token"])
    assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["access_token"] != tokens["access_token"]
    assert use(oauth, dpop, fresh["access_token"]).did == DID
    with pytest.raises(OAuthError) as e:  # the old access token went with the rotation
        use(oauth, dpop, tokens["access_token"])
    assert e.value.error == "invalid_token" and e.value.status == 401


def test_revocation_ends_the_session(oauth, dpop, db):
    tokens = full_flow(oauth, dpop)
    run(oauth.revoke({"client_id": CLIENT_ID, "token": tokens["refresh_token"]}, [ISSUER + "/oauth/revoke"]))
    assert sessions(db) == 0
    assert error_of(lambda: use(oauth, dpop, tokens["access_token"])).error == "invalid_token"
    assert error_of(lambda: refresh(oauth, dpop, tokens["refresh_token"])).error == "invalid_grant"


def test_access_token_expires_after_15_minutes(oauth, dpop, clock):
    tokens = full_flow(oauth, dpop)
    clock.t += 15 * 60 + 1
    dpop.nonce = oauth.dpop.nonces.current()
    assert error_of(lambda: use(oauth, dpop, tokens["access_token"])).error == "invalid_token"


def test_public_client_session_ends_after_two_weeks(oauth, dpop, clock):
    tokens = full_flow(oauth, dpop)
    for _ in range(13):  # refreshing daily does not extend a public client's session past 14 days
        clock.t += 86400
        dpop.nonce = oauth.dpop.nonces.current()
        tokens = refresh(oauth, dpop, tokens["refresh_token"])
    clock.t += 86400 + 1
    dpop.nonce = oauth.dpop.nonces.current()
    assert error_of(lambda: refresh(oauth, dpop, tokens["refresh_token"])).error == "invalid_grant"


# ---- refused, nothing granted -------------------------------------------------------------------


def test_wrong_pkce_verifier_burns_the_code(oauth, dpop, db):
    verifier, challenge = pkce()
    code = authorize(oauth, dpop, challenge)
    e = error_of(lambda: exchange(oauth, dpop, code, pkce()[0]))
    assert e.error == "invalid_grant" and "code_verifier" in e.description
    assert error_of(lambda: exchange(oauth, dpop, code, verifier)).error == "invalid_grant"
    assert sessions(db) == 0


def test_reused_code_is_refused_and_revokes_the_first_session(oauth, dpop, db):
    verifier, challenge = pkce()
    code = authorize(oauth, dpop, challenge)
    tokens = exchange(oauth, dpop, code, verifier)
    e = error_of(lambda: exchange(oauth, dpop, code, verifier))
    assert e.error == "invalid_grant"
    assert sessions(db) == 0
    assert error_of(lambda: use(oauth, dpop, tokens["access_token"])).error == "invalid_token"


def test_reused_refresh_token_revokes_the_session(oauth, dpop, db):
    tokens = full_flow(oauth, dpop)
    fresh = refresh(oauth, dpop, tokens["refresh_token"])
    e = error_of(lambda: refresh(oauth, dpop, tokens["refresh_token"]))
    assert e.error == "invalid_grant" and "revoked" in e.description
    assert sessions(db) == 0
    assert error_of(lambda: refresh(oauth, dpop, fresh["refresh_token"])).error == "invalid_grant"
    assert error_of(lambda: use(oauth, dpop, fresh["access_token"])).error == "invalid_token"


def test_pkce_challenge_is_single_use(oauth, dpop):
    _, challenge = pkce()
    par(oauth, dpop, challenge)
    assert error_of(lambda: par(oauth, dpop, challenge)).error == "invalid_request"


@pytest.mark.parametrize("extra, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"redirect_uri": "http://127.0.0.1:4567/elsewhere"}, "invalid_request"),
    ({"scope": "atproto repo:app.bsky.feed.post"}, "invalid_scope"),  # not declared by the client
    ({"scope": "repo:app.bsky.feed.like"}, "invalid_scope"),  # no atproto
    ({"response_type": "token"}, "unsupported_response_type"),
])
def test_bad_authorization_requests(oauth, dpop, db, extra, error):
    _, challenge = pkce()
    assert error_of(lambda: par(oauth, dpop, challenge, **extra)).error == error
    assert db.read(lambda c: c.execute("SELECT count(*) FROM oauth_request").fetchone()[0]) == 0


def test_par_without_nonce_asks_for_one(oauth, dpop):
    dpop.nonce = None
    assert error_of(lambda: par(oauth, dpop, pkce()[1])).error == "use_dpop_nonce"


def test_stale_nonce_is_refused_recent_one_accepted(oauth, dpop, clock):
    old = oauth.dpop.nonces.current()
    clock.t += 180  # one rotation later the previous nonce still works
    par(oauth, dpop, pkce()[1])
    clock.t += 2 * 180
    assert error_of(lambda: par(oauth, dpop, pkce()[1])).error == "use_dpop_nonce"
    assert old != oauth.dpop.nonces.current()


def test_dpop_proof_for_another_url_or_method(oauth, dpop, db):
    tokens = full_flow(oauth, dpop)
    access = tokens["access_token"]
    other_url = dpop.proof("POST", ISSUER + "/xrpc/com.atproto.repo.deleteRecord", access_token=access)
    e = error_of(lambda: run(oauth.verify_access(access, other_url, "POST", [RES_URL])))
    assert e.error == "invalid_dpop_proof" and e.status == 401
    other_method = dpop.proof("GET", RES_URL, access_token=access)
    assert error_of(lambda: run(oauth.verify_access(access, other_method, "POST", [RES_URL]))).error == "invalid_dpop_proof"
    # query and fragment are not part of htu
    ok = dpop.proof("POST", RES_URL + "?x=1#frag", access_token=access)
    assert run(oauth.verify_access(access, ok, "POST", [RES_URL])).did == DID


def test_replayed_jti_is_refused(oauth, dpop):
    tokens = full_flow(oauth, dpop)
    proof = dpop.proof("POST", RES_URL, access_token=tokens["access_token"])
    run(oauth.verify_access(tokens["access_token"], proof, "POST", [RES_URL]))
    e = error_of(lambda: run(oauth.verify_access(tokens["access_token"], proof, "POST", [RES_URL])))
    assert e.error == "invalid_dpop_proof" and "replayed" in e.description


def test_token_bound_to_its_dpop_key(oauth, dpop, clock):
    tokens = full_flow(oauth, dpop)
    thief = DpopKey(clock)
    thief.nonce = dpop.nonce
    assert error_of(lambda: use(oauth, thief, tokens["access_token"])).error == "invalid_dpop_proof"
    assert error_of(lambda: refresh(oauth, thief, tokens["refresh_token"])).error == "invalid_dpop_proof"


def test_ath_must_match_the_token(oauth, dpop):
    tokens = full_flow(oauth, dpop)
    proof = dpop.proof("POST", RES_URL, access_token="at-something-else")
    assert error_of(lambda: run(oauth.verify_access(tokens["access_token"], proof, "POST", [RES_URL]))).error == "invalid_dpop_proof"


def test_old_or_future_proofs_are_refused(oauth, dpop, clock):
    assert error_of(lambda: run(oauth.par({}, dpop.proof("POST", PAR_URL, iat=clock.t - 3600), [PAR_URL]))).error == "invalid_dpop_proof"
    assert error_of(lambda: run(oauth.par({}, dpop.proof("POST", PAR_URL, iat=clock.t + 3600), [PAR_URL]))).error == "invalid_dpop_proof"


def test_code_expires_quickly(oauth, dpop, clock, db):
    verifier, challenge = pkce()
    code = authorize(oauth, dpop, challenge)
    clock.t += 121
    dpop.nonce = oauth.dpop.nonces.current()
    assert error_of(lambda: exchange(oauth, dpop, code, verifier)).error == "invalid_grant"
    assert sessions(db) == 0


def test_deny_redirects_with_access_denied_and_no_code(oauth, dpop, db):
    out = par(oauth, dpop, pkce()[1])
    row, _ = run(oauth.pending_request(CLIENT_ID, out["request_uri"]))
    q = parse_qs(urlsplit(run(oauth.deny(row))).query)
    assert q["error"] == ["access_denied"] and "code" not in q and q["state"] == ["st-1"]
    assert error_of(lambda: run(oauth.pending_request(CLIENT_ID, out["request_uri"]))).error == "invalid_request"


def test_apps_list_and_revoke(oauth, dpop, db):
    tokens = full_flow(oauth, dpop)
    apps = oauth.authorized_apps(DID)
    assert [a["client_id"] for a in apps] == [CLIENT_ID]
    assert run(oauth.revoke_app(DID, CLIENT_ID)) == 1
    assert oauth.authorized_apps(DID) == [] and sessions(db) == 0
    assert error_of(lambda: use(oauth, dpop, tokens["access_token"])).error == "invalid_token"
    assert db.read(lambda c: sql.list_authorizations(c, DID)) == []
