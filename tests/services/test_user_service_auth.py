"""User service auth for uploadBlob (the video service's upload back to us): the token must be
ours (iss), for us (aud), for the method (lxm), unexpired and signed by the key the DID
document names; it may be used again while valid. Real ES256K signatures, real SQLite."""

from __future__ import annotations

import pytest

from tests.services.repo_helpers import DID, fixed_key, open_env
from tinypds.core.crypto import K256PrivateKey
from tinypds.core.jwt import create_service_auth, sign_jwt
from tinypds.errors import ExpiredToken, InvalidToken
from tinypds.services.auth.service import AuthService, is_service_jwt

SERVICE = "did:web:localhost%3A2600"
LXM = "com.atproto.repo.uploadBlob"
NOW = 1_800_000_000


@pytest.fixture
def auth(tmp_path):
    env = open_env(tmp_path)
    yield AuthService(env.db, service_did=SERVICE, jwt_secret=b"s" * 32, clock=lambda: NOW)
    env.db.close()


def _key_for(did):
    assert did == DID
    return fixed_key(DID).public_key()


def _check(auth, token, lxm=LXM):
    return auth.verify_user_service_auth(token, did=DID, lxm=lxm, signing_key=_key_for)


def test_valid_token_reusable(auth):
    token = create_service_auth(DID, SERVICE, LXM, fixed_key(DID), NOW, 3600)
    assert is_service_jwt(token)
    for _ in range(2):  # a retried upload presents the same token
        ctx = _check(auth, token)
        assert (ctx.did, ctx.kind, ctx.scopes) == (DID, "service", frozenset({LXM}))


@pytest.mark.parametrize("case", ["wrong-aud", "no-lxm", "other-lxm", "other-iss", "other-key", "expired"])
def test_refused(auth, case):
    key, iss, aud, lxm, exp = fixed_key(DID), DID, SERVICE, LXM, 60
    if case == "wrong-aud":
        aud = "did:web:video.bsky.app"
    elif case == "no-lxm":
        lxm = None
    elif case == "other-lxm":
        lxm = "com.atproto.repo.createRecord"
    elif case == "other-iss":
        iss = "did:plc:someoneelse0000000000000"
    elif case == "other-key":
        key = K256PrivateKey.generate()
    elif case == "expired":
        exp = -1
    token = create_service_auth(iss, aud, lxm, key, NOW, exp)
    with pytest.raises(ExpiredToken if case == "expired" else InvalidToken):
        _check(auth, token)


def test_the_apps_spelling_of_our_did_web_is_accepted(auth):
    # the Bluesky app builds aud from the PDS URL's host, keeping the port's ':' unencoded
    token = create_service_auth(DID, "did:web:localhost:2600", LXM, fixed_key(DID), NOW, 60)
    assert _check(auth, token).did == DID
    with pytest.raises(InvalidToken):
        _check(auth, create_service_auth(DID, "did:web:localhost:2601", LXM, fixed_key(DID), NOW, 60))


def test_session_tokens_are_not_service_jwts():
    assert not is_service_jwt(sign_jwt({"typ": "at+jwt"}, {"sub": DID}, b"s" * 32))
    assert not is_service_jwt(sign_jwt({"typ": "at+jwt"}, {"sub": DID}, fixed_key(DID)))
    assert not is_service_jwt("not.a.jwt")
