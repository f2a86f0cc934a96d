"""A tiny OAuth client for tests: DPoP proofs, PKCE pairs and private_key_jwt assertions,
built with core.crypto/core.jwt (our own code, independent of the server's verifier)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

from tinypds.core.crypto import P256PrivateKey
from tinypds.core.jwt import b64url_encode, sign_jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def public_jwk(key: P256PrivateKey, kid: str | None = None) -> dict:
    point = key.public_key().uncompressed()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url_encode(point[1:33]), "y": b64url_encode(point[33:])}
    if kid:
        jwk["kid"] = kid
    return jwk


class DpopKey:
    def __init__(self, clock=time.time):
        self.key = P256PrivateKey.generate()
        self.clock = clock
        self.nonce: str | None = None

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = "current",
              jti: str | None = None, iat: float | None = None) -> str:
        claims = {"jti": jti or secrets.token_urlsafe(16), "htm": method, "htu": url,
                  "iat": int(self.clock() if iat is None else iat)}
        n = self.nonce if nonce == "current" else nonce
        if n:
            claims["nonce"] = n
        if access_token is not None:
            claims["ath"] = b64url_encode(hashlib.sha256(access_token.encode()).digest())
        return sign_jwt({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(self.key)}, claims, self.key)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def client_assertion(key: P256PrivateKey, client_id: str, aud: str, kid: str, now: float, jti: str | None = None) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "jti": jti or secrets.token_urlsafe(16),
              "iat": int(now), "exp": int(now) + 60}
    return sign_jwt({"alg": "ES256", "kid": kid}, claims, key)
