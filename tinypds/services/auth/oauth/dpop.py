"""DPoP (RFC 9449) for the authorization server and the resource server.

Owns proof verification (typ dpop+jwt, ES256/ES256K, public `jwk` header, htm, htu
normalised without query/fragment, iat window, `ath` for resource requests), server nonces
and the jti replay cache. Imports core.jwt and .jwk. Tricky bits: nonces are an HMAC of a
per-process secret and a time step (rotated every NONCE_STEP s, ≤ 5 min); the previous and
next steps are still accepted. Because a restart changes the secret, every proof from before
a restart is refused for its nonce, so the replay cache can live in bounded memory.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from typing import Callable, Iterable
from urllib.parse import urlsplit

from ....core.jwt import JwtError, b64url_encode, decode_jwt_unverified
from .jwk import ALGS, key_from_jwk, thumbprint, verify_jws

NONCE_STEP = 180  # seconds; a nonce stays valid for 2-3 steps (≤ 9 min), a new one every 3 min
MAX_PROOF_AGE = 300
MAX_CLOCK_SKEW = 30
JTI_CACHE_SIZE = 100_000


class DpopError(Exception):
    """A proof is missing/invalid (`invalid_dpop_proof`) or needs a fresh nonce (`use_dpop_nonce`)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


def normalize_htu(url: str) -> str:
    """scheme://host[:port]/path, lower-case scheme and host, default port dropped, no query/fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DpopError("invalid_dpop_proof", "DPoP htu is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise DpopError("invalid_dpop_proof", "DPoP htu must be an http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host += f":{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def access_token_hash(token: str) -> str:
    return b64url_encode(hashlib.sha256(token.encode("ascii", "replace")).digest())


class NonceSource:
    """Server-issued DPoP nonces: HMAC(secret, time step), rotated every NONCE_STEP seconds."""

    def __init__(self, clock: Callable[[], float] = time.time, secret: bytes | None = None, step: int = NONCE_STEP):
        self.clock = clock
        self.step = step
        self._secret = secret or secrets.token_bytes(32)

    def _for(self, counter: int) -> str:
        return b64url_encode(hmac.new(self._secret, counter.to_bytes(8, "big"), hashlib.sha256).digest()[:18])

    def current(self) -> str:
        return self._for(int(self.clock() // self.step))

    def valid(self, nonce: object) -> bool:
        if not isinstance(nonce, str):
            return False
        counter = int(self.clock() // self.step)
        return any(hmac.compare_digest(nonce, self._for(c)) for c in (counter - 1, counter, counter + 1))


class JtiCache:
    """Seen proof ids until they could no longer pass the iat window; bounded (oldest dropped)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_size: int = JTI_CACHE_SIZE):
        self.clock = clock
        self.max_size = max_size
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()

    def add(self, jti: str, keep_until: float) -> bool:
        """Record `jti`; False if it was already seen (a replay)."""
        now = self.clock()
        while self._seen:
            oldest, until = next(iter(self._seen.items()))
            if until > now and len(self._seen) < self.max_size:
                break
            self._seen.popitem(last=False)
        if jti in self._seen:
            return False
        self._seen[jti] = keep_until
        return True


class DpopVerifier:
    """Checks DPoP proofs; `verify` returns the key's thumbprint (jkt) for token binding."""

    def __init__(self, clock: Callable[[], float] = time.time, nonces: NonceSource | None = None, jtis: JtiCache | None = None):
        self.clock = clock
        self.nonces = nonces or NonceSource(clock)
        self.jtis = jtis or JtiCache(clock)

    def verify(self, proof: str | None, method: str, urls: Iterable[str], access_token: str | None = None) -> str:
        """Verify a proof for `method` on one of `urls` (already normalised), bound to `access_token`
        if given. Raises DpopError; the nonce is checked after the signature, the jti last."""
        if not proof:
            raise DpopError("invalid_dpop_proof", "DPoP proof required")
        try:
            header, _, _, _ = decode_jwt_unverified(proof)
        except JwtError:
            raise DpopError("invalid_dpop_proof", "DPoP proof is not a JWT") from None
        if header.get("typ") != "dpop+jwt":
            raise DpopError("invalid_dpop_proof", 'DPoP proof must have typ "dpop+jwt"')
        if header.get("alg") not in ALGS:
            raise DpopError("invalid_dpop_proof", f"DPoP alg must be one of {', '.join(ALGS)}")
        jwk = header.get("jwk")
        try:
            key = key_from_jwk(jwk)
            _, claims = verify_jws(proof, key)
        except JwtError as exc:
            raise DpopError("invalid_dpop_proof", f"DPoP proof rejected: {exc}") from None
        jti, iat = claims.get("jti"), claims.get("iat")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
            raise DpopError("invalid_dpop_proof", "DPoP proof needs a jti")
        if claims.get("htm") != method.upper():
            raise DpopError("invalid_dpop_proof", "DPoP htm does not match the request method")
        htu = claims.get("htu")
        if not isinstance(htu, str) or normalize_htu(htu) not in set(urls):
            raise DpopError("invalid_dpop_proof", "DPoP htu does not match the request URL")
        now = self.clock()
        if not isinstance(iat, (int, float)) or isinstance(iat, bool) or not now - MAX_PROOF_AGE <= iat <= now + MAX_CLOCK_SKEW:
            raise DpopError("invalid_dpop_proof", "DPoP proof iat is too old or in the future")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise DpopError("invalid_dpop_proof", "DPoP ath does not match the access token")
        if not self.nonces.valid(claims.get("nonce")):
            raise DpopError("use_dpop_nonce", "DPoP proof needs the current server nonce (see the DPoP-Nonce header)")
        if not self.jtis.add(jti, iat + MAX_PROOF_AGE + MAX_CLOCK_SKEW):
            raise DpopError("invalid_dpop_proof", "DPoP proof replayed (jti already used)")
        return thumbprint(jwk)
