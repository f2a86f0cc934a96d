"""JWT helpers and service auth: round trips, each failure, and interop with the atproto SDK."""

from __future__ import annotations

import json
import time

import pytest

from tinypds.core.crypto import K256_ORDER, K256PrivateKey, P256PrivateKey
from tinypds.core.jwt import (
    JwtError,
    b64url_decode,
    b64url_encode,
    create_service_auth,
    decode_jwt_unverified,
    sign_jwt,
    verify_jwt,
    verify_service_auth,
)

ISS = "did:plc:abcdefghijklmnopqrstuvwx"
AUD = "did:web:api.example.com"
LXM = "app.bsky.feed.getFeedSkeleton"
NOW = 1_700_000_000


@pytest.fixture(scope="module")
def key():
    return K256PrivateKey.generate()


def _resolver(key):
    keys = {ISS: key.public_key()}
    return lambda iss: keys[iss]


def _high_s(token: str) -> str:
    head, body, sig = token.split(".")
    raw = b64url_decode(sig)
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{body}.{b64url_encode(raw[:32] + (K256_ORDER - s).to_bytes(32, 'big'))}"


@pytest.mark.parametrize("cls", [K256PrivateKey, P256PrivateKey])
def test_sign_verify_round_trip(cls):
    k = cls.generate()
    token = sign_jwt({"typ": "JWT"}, {"sub": "x", "n": 1}, k)
    header, payload, signing_input, sig = decode_jwt_unverified(token)
    assert header == {"typ": "JWT", "alg": k.jwt_alg}
    assert payload == {"sub": "x", "n": 1}
    assert len(sig) == 64 and signing_input.count(b".") == 1
    assert verify_jwt(token, k.public_key()) == payload
    with pytest.raises(JwtError):
        verify_jwt(token, cls.generate().public_key())


def test_alg_must_match_key(key):
    with pytest.raises(JwtError):
        sign_jwt({"alg": "ES256"}, {}, key)
    token = sign_jwt({}, {"a": 1}, key)
    head, body, sig = token.split(".")
    forged_head = b64url_encode(json.dumps({"alg": "ES256"}).encode())
    with pytest.raises(JwtError):
        verify_jwt(f"{forged_head}.{body}.{sig}", key.public_key())
    with pytest.raises(JwtError):  # a P-256 key won't accept an ES256K token
        verify_jwt(token, P256PrivateKey.generate().public_key())


def test_hs256_round_trip_and_tamper():
    token = sign_jwt({"typ": "at+jwt"}, {"sub": ISS}, b"secret")
    assert verify_jwt(token, b"secret") == {"sub": ISS}
    with pytest.raises(JwtError):
        verify_jwt(token, b"other")
    with pytest.raises(JwtError):  # an HS256 token is never accepted by a public key
        verify_jwt(token, K256PrivateKey.generate().public_key())


def test_tampered_payload_fails(key):
    token = sign_jwt({}, {"sub": "alice"}, key)
    head, _, sig = token.split(".")
    body = b64url_encode(json.dumps({"sub": "mallory"}).encode())
    with pytest.raises(JwtError):
        verify_jwt(f"{head}.{body}.{sig}", key.public_key())


@pytest.mark.parametrize(
    "bad",
    ["", "a.b", "a.b.c.d", "e30.e30.=", "e30=.e30.", "bm90anNvbg.e30.", "W10.e30.", "e30.W10.", "e30.e30.a", "e30\n.e30.", "e30.e30\n."],
)
def test_malformed_tokens(bad):
    with pytest.raises(JwtError):
        decode_jwt_unverified(bad)


def test_service_auth_round_trip(key):
    token = create_service_auth(ISS, AUD, LXM, key, now=NOW)
    header, payload, _, _ = decode_jwt_unverified(token)
    assert header == {"typ": "JWT", "alg": "ES256K"}
    assert payload["iss"] == ISS and payload["aud"] == AUD and payload["lxm"] == LXM
    assert payload["iat"] == NOW and payload["exp"] == NOW + 60
    assert isinstance(payload["jti"], str) and len(payload["jti"]) >= 16
    out = verify_service_auth(token, _resolver(key), AUD, LXM, now=NOW + 59)
    assert out == payload
    # several accepted audiences; lxm check skipped when None
    assert verify_service_auth(token, _resolver(key), {AUD, "did:web:x"}, None, now=NOW)["iss"] == ISS
    other = create_service_auth(ISS, AUD, LXM, key, now=NOW)
    assert decode_jwt_unverified(other)[1]["jti"] != payload["jti"]


def test_service_auth_failures(key):
    good = create_service_auth(ISS, AUD, LXM, key, now=NOW, exp_seconds=30)
    resolve = _resolver(key)
    cases = {
        "wrong aud": lambda: verify_service_auth(good, resolve, "did:web:other.example", LXM, NOW),
        "wrong lxm": lambda: verify_service_auth(good, resolve, AUD, "com.atproto.repo.createRecord", NOW),
        "expired": lambda: verify_service_auth(good, resolve, AUD, LXM, NOW + 30),
        "wrong key": lambda: verify_service_auth(
            good, lambda iss: K256PrivateKey.generate().public_key(), AUD, LXM, NOW
        ),
        "high-S": lambda: verify_service_auth(_high_s(good), resolve, AUD, LXM, NOW),
        "unknown iss": lambda: verify_service_auth(
            create_service_auth("did:plc:zzzzzzzzzzzzzzzzzzzzzzzz", AUD, LXM, key, NOW), resolve, AUD, LXM, NOW
        ),
        "no lxm in token": lambda: verify_service_auth(
            create_service_auth(ISS, AUD, None, key, NOW), resolve, AUD, LXM, NOW
        ),
        "access token type": lambda: verify_service_auth(
            sign_jwt({"typ": "at+jwt"}, {"iss": ISS, "aud": AUD, "exp": NOW + 60, "lxm": LXM}, key),
            resolve, AUD, LXM, NOW,
        ),
        "no exp": lambda: verify_service_auth(
            sign_jwt({"typ": "JWT"}, {"iss": ISS, "aud": AUD, "lxm": LXM}, key), resolve, AUD, LXM, NOW
        ),
    }
    # sanity: the good token passes, so each failure below is due to its one defect
    assert verify_service_auth(good, resolve, AUD, LXM, NOW)["iss"] == ISS
    for name, call in cases.items():
        with pytest.raises(JwtError):
            call()
            pytest.fail(f"{name} was accepted")


def test_sdk_verifies_our_service_auth(key):
    jwt_mod = pytest.importorskip("atproto_server.auth.jwt")
    exc_mod = pytest.importorskip("atproto_server.exceptions")
    now = int(time.time())
    token = create_service_auth(ISS, AUD, LXM, key, now=now, exp_seconds=300)

    def get_key(iss: str, force_refresh: bool) -> str:
        assert iss == ISS
        return key.public_key().did_key()

    payload = jwt_mod.verify_jwt(token, get_key, own_did=AUD)
    assert payload.iss == ISS and payload.aud == AUD
    with pytest.raises(exc_mod.TokenInvalidSignatureError):
        jwt_mod.verify_jwt(_high_s(token), get_key, own_did=AUD)
    # and our parser agrees with the SDK's on the pieces
    sdk_payload, sdk_signing_input, sdk_header, sdk_sig = jwt_mod.parse_jwt(token)
    header, _, signing_input, sig = decode_jwt_unverified(token)
    assert (sdk_header, sdk_signing_input, sdk_sig) == (header, signing_input, sig)
