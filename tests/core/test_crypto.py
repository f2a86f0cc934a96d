"""crypto: interop signature fixtures, did:key fixtures, round trips, low-S, garbage."""

from __future__ import annotations

import base64
import json

import pytest

from tests.fixtures import fixture_path
from tinypds.core.crypto import (
    K256_ORDER,
    P256_ORDER,
    K256PrivateKey,
    K256PublicKey,
    P256PrivateKey,
    P256PublicKey,
    b58decode,
    b58encode,
    format_did_key,
    parse_did_key,
    parse_multibase_key,
    private_key_from_bytes,
)


def _b64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def _sig_rows():
    return json.loads(fixture_path("crypto", "signature-fixtures.json").read_text())


def test_signature_fixtures():
    rows = _sig_rows()
    assert len(rows) >= 6
    for row in rows:
        key = parse_did_key(row["publicKeyDid"])
        assert key.jwt_alg == row["algorithm"], row["comment"]
        legacy = parse_multibase_key(row["publicKeyMultibase"], row["didDocSuite"])
        assert legacy == key, row["comment"]
        msg = _b64(row["messageBase64"])
        sig = _b64(row["signatureBase64"])
        assert key.verify(msg, sig) is row["validSignature"], row["comment"]


def test_signature_fixture_high_s_is_valid_once_normalized():
    # proves the high-S rows fail *because* of high-S, not because the bytes are junk
    for row in _sig_rows():
        if "high-s" not in row["tags"]:
            continue
        key = parse_did_key(row["publicKeyDid"])
        sig = _b64(row["signatureBase64"])
        order = K256_ORDER if row["algorithm"] == "ES256K" else P256_ORDER
        s = int.from_bytes(sig[32:], "big")
        low = sig[:32] + (order - s).to_bytes(32, "big")
        assert key.verify(_b64(row["messageBase64"]), low)


def test_w3c_didkey_k256():
    rows = json.loads(fixture_path("crypto", "w3c_didkey_K256.json").read_text())
    assert rows
    for row in rows:
        priv = K256PrivateKey.from_bytes(bytes.fromhex(row["privateKeyBytesHex"]))
        assert priv.public_key().did_key() == row["publicDidKey"]
        parsed = parse_did_key(row["publicDidKey"])
        assert isinstance(parsed, K256PublicKey)
        assert parsed == priv.public_key()
        assert parsed.did_key() == row["publicDidKey"]


def test_w3c_didkey_p256():
    rows = json.loads(fixture_path("crypto", "w3c_didkey_P256.json").read_text())
    assert rows
    for row in rows:
        priv = P256PrivateKey.from_bytes(b58decode(row["privateKeyBytesBase58"]))
        assert priv.public_key().did_key() == row["publicDidKey"]
        parsed = parse_did_key(row["publicDidKey"])
        assert isinstance(parsed, P256PublicKey)
        assert parsed.did_key() == row["publicDidKey"]


@pytest.mark.parametrize("cls", [K256PrivateKey, P256PrivateKey])
def test_sign_verify_round_trip_low_s(cls):
    key = cls.generate()
    pub = key.public_key()
    order = K256_ORDER if cls is K256PrivateKey else P256_ORDER
    for i in range(40):
        msg = b"message %d" % i
        sig = key.sign(msg)
        assert len(sig) == 64
        assert int.from_bytes(sig[32:], "big") <= order // 2
        assert pub.verify(msg, sig)
        assert not pub.verify(msg + b"x", sig)
        # the high-S twin of a valid signature is refused
        high = sig[:32] + (order - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
        assert not pub.verify(msg, high)


@pytest.mark.parametrize("cls", [K256PrivateKey, P256PrivateKey])
def test_private_key_bytes_round_trip(cls):
    key = cls.generate()
    again = cls.from_bytes(key.to_bytes())
    assert again.public_key() == key.public_key()
    assert len(key.to_bytes()) == 32
    assert private_key_from_bytes(key.to_bytes(), key.jwt_alg).public_key() == key.public_key()
    assert key.to_bytes().hex() not in repr(key)


def test_wrong_key_fails():
    a, b = K256PrivateKey.generate(), K256PrivateKey.generate()
    sig = a.sign(b"hello")
    assert not b.public_key().verify(b"hello", sig)
    # a k256 signature never verifies under a p256 key
    assert not P256PrivateKey.generate().public_key().verify(b"hello", sig)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 64, b"\xff" * 64, b"\x01" * 63, b"\x01" * 65, "not bytes", None, 12],
)
def test_verify_garbage_returns_false(garbage):
    for cls in (K256PrivateKey, P256PrivateKey):
        assert cls.generate().public_key().verify(b"msg", garbage) is False


def test_did_key_and_multibase_forms():
    pub = K256PrivateKey.generate().public_key()
    assert pub.did_key().startswith("did:key:zQ3s")
    assert pub.did_key() == "did:key:" + pub.multibase()
    assert parse_multibase_key(pub.multibase()) == pub
    assert parse_multibase_key(pub.multibase(), "Multikey") == pub
    assert len(pub.compressed()) == 33
    p = P256PrivateKey.generate()
    assert format_did_key(p).startswith("did:key:zDn")
    assert format_did_key(p) == p.public_key().did_key()


@pytest.mark.parametrize(
    "cls,suite",
    [(K256PrivateKey, "EcdsaSecp256k1VerificationKey2019"), (P256PrivateKey, "EcdsaSecp256r1VerificationKey2019")],
)
def test_legacy_uncompressed_multibase(cls, suite):
    pub = cls.generate().public_key()
    raw = pub.uncompressed()
    assert len(raw) == 65 and raw[0] == 4 and raw[1:33] == pub.compressed()[1:]
    assert parse_multibase_key("z" + b58encode(raw), suite) == pub
    assert parse_multibase_key("z" + b58encode(pub.compressed()), suite) == pub


@pytest.mark.parametrize(
    "bad",
    [
        "did:web:example.com",
        "did:key:",
        "did:key:Q3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
        "did:key:z0OIl",
        "did:key:z" + b58encode(b"\xed\x01" + b"\x02" * 32),  # ed25519 multicodec
        "did:key:z" + b58encode(b"\xe7\x01" + b"\x02" * 10),  # truncated point
    ],
)
def test_parse_did_key_rejects(bad):
    with pytest.raises(ValueError):
        parse_did_key(bad)


def test_parse_multibase_unknown_suite():
    pub = K256PrivateKey.generate().public_key()
    with pytest.raises(ValueError):
        parse_multibase_key(pub.multibase(), "Ed25519VerificationKey2020")


def test_base58_round_trip_and_leading_zeros():
    for data in [b"", b"\x00", b"\x00\x00\x01", b"hello world", bytes(range(256))]:
        assert b58decode(b58encode(data)) == data
    assert b58encode(b"\x00\x00\x01") == "112"
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
