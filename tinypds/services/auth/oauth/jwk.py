"""JSON Web Keys for OAuth: EC public keys (P-256, secp256k1) from JWKs, RFC 7638 thumbprints,
and JWS signature checks that accept either ECDSA `s` half.

Imports core.crypto/core.jwt only. Tricky bit: repo signatures must be low-S, but JWS
signers (WebCrypto, jose) produce high-S half the time; (r, s) and (r, n-s) verify the same
message, so a high-S JWS signature is normalised before the strict low-S check.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ....core.crypto import K256_ORDER, P256_ORDER, K256PublicKey, P256PublicKey, PublicKey
from ....core.jwt import JwtError, b64url_decode, b64url_encode, decode_jwt_unverified

_CURVES = {"P-256": (P256PublicKey, "ES256", P256_ORDER), "secp256k1": (K256PublicKey, "ES256K", K256_ORDER)}
ALGS = ("ES256", "ES256K")


def key_from_jwk(jwk: Any) -> PublicKey:
    """A public EC key from a JWK dict; JwtError if it is not one we accept."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") not in _CURVES:
        raise JwtError("jwk must be an EC key on P-256 or secp256k1")
    if "d" in jwk:
        raise JwtError("jwk must not contain private key material")
    cls = _CURVES[jwk["crv"]][0]
    try:
        x, y = b64url_decode(jwk.get("x", "")), b64url_decode(jwk.get("y", ""))
        if len(x) != 32 or len(y) != 32:
            raise ValueError("bad coordinate length")
        return cls(b"\x04" + x + y)
    except (ValueError, TypeError) as exc:
        raise JwtError("jwk is not a valid public key") from exc


def alg_for_jwk(jwk: dict) -> str:
    return _CURVES[jwk["crv"]][1]


def thumbprint(jwk: dict) -> str:
    """RFC 7638 SHA-256 thumbprint of an EC JWK (base64url)."""
    canon = json.dumps({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canon.encode("utf-8")).digest())


def verify_jws(token: str, key: PublicKey) -> tuple[dict, dict]:
    """(header, payload) of a compact JWS signed by `key` (alg must match it); JwtError otherwise."""
    header, payload, signing_input, sig = decode_jwt_unverified(token)
    if header.get("alg") != key.jwt_alg:
        raise JwtError("JWS alg does not match the key")
    order = P256_ORDER if key.jwt_alg == "ES256" else K256_ORDER
    if len(sig) == 64:
        s = int.from_bytes(sig[32:], "big")
        if order // 2 < s < order:
            sig = sig[:32] + (order - s).to_bytes(32, "big")
    if not key.verify(signing_input, sig):
        raise JwtError("bad JWS signature")
    return header, payload
