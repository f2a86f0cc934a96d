"""Compact JWS (JWT) helpers and atproto inter-service auth tokens.

Owns JWT encode/decode/verify for ES256K/ES256 (keys from core.crypto) and HS256 (stdlib
hmac, for tokens only this server reads). Pure: `now` is a parameter; the only randomness
is the default `jti`. Imports core.crypto and the stdlib only.
Tricky bits: signatures are the same compact low-S r||s as repo commits (high-S refused);
the header `alg` must match the key, never trusted to choose it; service auth refuses the
token types of sessions/OAuth (`at+jwt`, `refresh+jwt`, `dpop+jwt`) so they can't be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from typing import Any, Callable, Collection

from .crypto import PrivateKey, PublicKey


class JwtError(ValueError):
    """A token is malformed, badly signed, or its claims do not fit."""


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_CONFUSABLE_TYPES = frozenset({"at+jwt", "refresh+jwt", "dpop+jwt"})


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(s: str) -> bytes:
    """Strict unpadded base64url; raises JwtError."""
    if not _B64URL_RE.fullmatch(s) or len(s) % 4 == 1:
        raise JwtError("invalid base64url segment")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _json_segment(obj: dict) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def sign_jwt(header: dict, payload: dict, key: PrivateKey | bytes) -> str:
    """Compact JWS. `key` is a PrivateKey (alg from the key) or an HMAC secret (HS256)."""
    alg = "HS256" if isinstance(key, (bytes, bytearray)) else key.jwt_alg
    if header.get("alg", alg) != alg:
        raise JwtError(f"header alg {header.get('alg')!r} does not match the key ({alg})")
    header = {**header, "alg": alg}
    signing_input = (_json_segment(header) + "." + _json_segment(payload)).encode("ascii")
    if isinstance(key, (bytes, bytearray)):
        sig = hmac.new(bytes(key), signing_input, hashlib.sha256).digest()
    else:
        sig = key.sign(signing_input)
    return signing_input.decode("ascii") + "." + b64url_encode(sig)


def decode_jwt_unverified(token: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, payload, signing_input, signature) without checking anything but shape."""
    if not isinstance(token, str):
        raise JwtError("token must be a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("token must have three segments")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JwtError("token header or payload is not JSON") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise JwtError("token header and payload must be JSON objects")
    sig = b64url_decode(parts[2])
    return header, payload, (parts[0] + "." + parts[1]).encode("ascii"), sig


def verify_jwt(token: str, key: PublicKey | bytes) -> dict:
    """Check the signature (and that header alg matches `key`); return the payload.

    Claims are not checked here. Raises JwtError.
    """
    header, payload, signing_input, sig = decode_jwt_unverified(token)
    if isinstance(key, (bytes, bytearray)):
        if header.get("alg") != "HS256":
            raise JwtError("unexpected token algorithm")
        expected = hmac.new(bytes(key), signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, sig):
            raise JwtError("bad token signature")
        return payload
    if header.get("alg") != key.jwt_alg:
        raise JwtError(f"token alg {header.get('alg')!r} does not match the key ({key.jwt_alg})")
    if not key.verify(signing_input, sig):
        raise JwtError("bad token signature")
    return payload


# ---- atproto inter-service auth ------------------------------------------------


def create_service_auth(
    iss: str,
    aud: str,
    lxm: str | None,
    key: PrivateKey,
    now: int,
    exp_seconds: int = 60,
    jti: str | None = None,
) -> str:
    """A service-auth JWT: header {typ: JWT, alg}, claims iss, aud, exp, iat, lxm, jti."""
    payload: dict[str, Any] = {"iss": iss, "aud": aud, "exp": int(now) + int(exp_seconds), "iat": int(now)}
    if lxm is not None:
        payload["lxm"] = lxm
    payload["jti"] = jti if jti is not None else secrets.token_hex(16)
    return sign_jwt({"typ": "JWT", "alg": key.jwt_alg}, payload, key)


def verify_service_auth(
    token: str,
    resolve_key: Callable[[str], PublicKey],
    aud: str | Collection[str],
    lxm: str | None,
    now: int,
) -> dict:
    """Verify a service-auth JWT; returns its payload. Raises JwtError.

    `resolve_key(iss)` gives the issuer's current atproto signing key (iss may carry a
    `#fragment` naming a service key; the resolver decides). `aud`: the accepted audience
    (or several). `lxm`: the method being called; None skips the method check.
    """
    header, payload, _, _ = decode_jwt_unverified(token)
    if header.get("typ") in _CONFUSABLE_TYPES:
        raise JwtError("token type not allowed for service auth")
    iss = payload.get("iss")
    if not isinstance(iss, str) or not iss.startswith("did:"):
        raise JwtError("service auth token needs an iss DID")
    accepted = {aud} if isinstance(aud, str) else set(aud)
    if payload.get("aud") not in accepted:
        raise JwtError("service auth token has the wrong audience")
    exp = payload.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise JwtError("service auth token needs an integer exp")
    if exp <= now:
        raise JwtError("service auth token has expired")
    if lxm is not None and payload.get("lxm") != lxm:
        raise JwtError("service auth token is not valid for this method (lxm)")
    try:
        key = resolve_key(iss)
    except JwtError:
        raise
    except (KeyError, ValueError) as exc:  # unknown DID / unusable key; I/O errors propagate
        raise JwtError(f"no usable signing key for {iss}") from exc
    return verify_jwt(token, key)
