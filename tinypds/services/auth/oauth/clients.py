"""OAuth clients: client-metadata documents (fetched SSRF-safe), validation, client authentication.

Owns `client_id` handling for the atproto profile: an https URL whose document is fetched
(no redirects, timeouts, size cap, JSON only, every resolved address public), or the
loopback development client `http://localhost?redirect_uri=...&scope=...` built without any
fetch. Confidential clients authenticate with private_key_jwt (ES256) against `jwks` or
`jwks_uri`. Imports httpx (on first fetch only), core.jwt, .jwk/.dpop and ..safe_http (the
public-only connection backend: the IP that is checked is the IP that is dialled, TLS still
verifies the hostname).
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

from ....core.jwt import JwtError, decode_jwt_unverified
from ...net.safe_http import Resolver, system_resolver
from ...net.safe_http import safe_http_client as _safe_http_client
from .dpop import JtiCache
from .jwk import key_from_jwk, thumbprint, verify_jws

if TYPE_CHECKING:
    import httpx

FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 64 * 1024
CACHE_SECONDS = 600
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LOOPBACK_CLIENT = "http://localhost"


class ClientError(Exception):
    """A client is unusable or failed to authenticate; `error` is the OAuth error code."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Client:
    client_id: str
    metadata: dict
    loopback: bool = False
    jwks: dict | None = field(default=None, compare=False)

    @property
    def confidential(self) -> bool:
        return self.metadata.get("token_endpoint_auth_method") == "private_key_jwt"

    @property
    def name(self) -> str:
        name = self.metadata.get("client_name")
        return name if isinstance(name, str) and name.strip() else (urlsplit(self.client_id).hostname or self.client_id)

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.metadata.get("redirect_uris") or [])

    @property
    def scopes(self) -> set[str]:
        return set(str(self.metadata.get("scope") or "").split())


# ---- SSRF-safe fetching ----------------------------------------------------------------------------


def safe_http_client(resolver: Resolver = system_resolver, timeout: float = FETCH_TIMEOUT) -> httpx.AsyncClient:
    """An httpx client that only reaches public addresses and never follows redirects."""
    return _safe_http_client(resolver, timeout)


async def fetch_json(http: httpx.AsyncClient, url: str, what: str) -> Any:
    """GET a small JSON document; ClientError(invalid_client_metadata) for anything off."""
    import httpx  # already loaded: `http` is an httpx client

    try:
        async with http.stream("GET", url, headers={"accept": "application/json"}) as resp:
            if resp.is_redirect:
                raise ClientError("invalid_client_metadata", f"{what} must not redirect ({url} answered {resp.status_code})")
            if resp.status_code != 200:
                raise ClientError("invalid_client_metadata", f"{what} could not be fetched ({url} answered {resp.status_code})")
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise ClientError("invalid_client_metadata", f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise ClientError("invalid_client_metadata", f"{what} could not be fetched from {url}: {exc}") from None
    try:
        return json.loads(bytes(body))
    except ValueError:
        raise ClientError("invalid_client_metadata", f"{what} is not JSON") from None


# ---- validation --------------------------------------------------------------------------------------


def _loopback_redirect(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1") and not parts.fragment


def loopback_client(client_id: str) -> Client:
    """The spec's development client: http://localhost[?redirect_uri=...][&scope=...], no fetch."""
    parts = urlsplit(client_id)
    if parts.scheme != "http" or parts.netloc != "localhost" or parts.path not in ("",) or parts.fragment:
        raise ClientError("invalid_client", "a loopback client_id must be http://localhost with only query parameters")
    redirects, scope = [], None
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "redirect_uri":
            if not _loopback_redirect(v):
                raise ClientError("invalid_client", "loopback client redirect_uri must be http://127.0.0.1 or http://[::1]")
            redirects.append(v)
        elif k == "scope" and scope is None:
            scope = v
        else:
            raise ClientError("invalid_client", f"unexpected loopback client_id parameter {k!r}")
    meta = {
        "client_id": client_id,
        "client_name": "Loopback development client",
        "redirect_uris": redirects or ["http://127.0.0.1/", "http://[::1]/"],
        "scope": scope or "atproto",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "dpop_bound_access_tokens": True,
    }
    return Client(client_id, meta, loopback=True)


def check_https_client_id(client_id: str) -> None:
    parts = urlsplit(client_id)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password or parts.fragment:
        raise ClientError("invalid_client", "client_id must be an https URL of a client metadata document")
    try:
        ipaddress.ip_address(parts.hostname)
        raise ClientError("invalid_client", "client_id must name a host, not an IP address")
    except ValueError:
        pass
    if parts.hostname == "localhost" or parts.hostname.endswith(".localhost"):
        raise ClientError("invalid_client", "client_id must not be a localhost URL")


def validate_metadata(client_id: str, meta: Any) -> dict:
    if not isinstance(meta, dict):
        raise ClientError("invalid_client_metadata", "client metadata must be a JSON object")
    bad = lambda why: ClientError("invalid_client_metadata", why)  # noqa: E731
    if meta.get("client_id") != client_id:
        raise bad("client metadata client_id does not match the URL it was fetched from")
    uris = meta.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise bad("client metadata needs redirect_uris")
    for u in uris:
        p = urlsplit(u)
        if p.fragment or not (p.scheme == "https" or _loopback_redirect(u) or (p.scheme and "." in p.scheme)):
            raise bad(f"redirect_uri {u!r} is not allowed")
    if "authorization_code" not in (meta.get("grant_types") or []) or "code" not in (meta.get("response_types") or []):
        raise bad("client metadata must allow grant authorization_code and response type code")
    if meta.get("dpop_bound_access_tokens") is not True:
        raise bad("client metadata must set dpop_bound_access_tokens: true")
    if "atproto" not in str(meta.get("scope") or "").split():
        raise bad('client metadata scope must include "atproto"')
    method = meta.get("token_endpoint_auth_method", "none")
    if method not in ("none", "private_key_jwt"):
        raise bad("token_endpoint_auth_method must be none or private_key_jwt")
    if method == "private_key_jwt":
        if meta.get("token_endpoint_auth_signing_alg", "ES256") != "ES256":
            raise bad("token_endpoint_auth_signing_alg must be ES256")
        if bool(meta.get("jwks")) == bool(meta.get("jwks_uri")):
            raise bad("a confidential client needs exactly one of jwks or jwks_uri")
    return meta


# ---- the registry ----------------------------------------------------------------------------------------


class ClientRegistry:
    """Looks clients up (cached) and authenticates them at PAR and the token endpoint."""

    def __init__(self, http: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time):
        self._http = http
        self.clock = clock
        self._cache: dict[str, tuple[float, Client]] = {}
        self._assertions = JtiCache(clock)

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = safe_http_client()
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def get(self, client_id: Any) -> Client:
        if not isinstance(client_id, str) or not client_id or len(client_id) > 2048:
            raise ClientError("invalid_request", "client_id is required")
        if client_id.startswith(LOOPBACK_CLIENT + "?") or client_id == LOOPBACK_CLIENT:
            return loopback_client(client_id)
        cached = self._cache.get(client_id)
        if cached and cached[0] > self.clock():
            return cached[1]
        check_https_client_id(client_id)
        meta = validate_metadata(client_id, await fetch_json(self.http(), client_id, "client metadata"))
        jwks = meta.get("jwks")
        if meta.get("jwks_uri"):
            check_https_client_id(meta["jwks_uri"])
            jwks = await fetch_json(self.http(), meta["jwks_uri"], "client jwks")
        client = Client(client_id, meta, jwks=jwks)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[client_id] = (self.clock() + CACHE_SECONDS, client)
        return client

    def authenticate(self, client: Client, form: dict, audiences: set[str]) -> dict:
        """Check the request's client authentication -> the client_auth record for the session."""
        assertion_type, assertion = form.get("client_assertion_type"), form.get("client_assertion")
        if not client.confidential:
            if assertion is not None or assertion_type is not None:
                raise ClientError("invalid_client", "this client is public; it must not send a client assertion")
            return {"method": "none"}
        if assertion_type != ASSERTION_TYPE or not isinstance(assertion, str):
            raise ClientError("invalid_client", "client authentication (private_key_jwt) is required")
        try:
            header, _, _, _ = decode_jwt_unverified(assertion)
        except JwtError:
            raise ClientError("invalid_client", "client assertion is not a JWT") from None
        if header.get("alg") != "ES256":
            raise ClientError("invalid_client", "client assertion must be ES256")
        keys = [k for k in (client.jwks or {}).get("keys", []) if isinstance(k, dict)]
        kid = header.get("kid")
        candidates = [k for k in keys if k.get("kid") == kid] if kid is not None else keys[:1] if len(keys) == 1 else []
        if len(candidates) != 1 or candidates[0].get("crv") != "P-256":
            raise ClientError("invalid_client", "client assertion key (kid) not found in the client's jwks")
        public = {k: v for k, v in candidates[0].items() if k != "d"}
        try:
            _, claims = verify_jws(assertion, key_from_jwk(public))
        except JwtError as exc:
            raise ClientError("invalid_client", f"client assertion rejected: {exc}") from None
        now = self.clock()
        aud = claims.get("aud")
        auds = set(aud) if isinstance(aud, list) else {aud}
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id or not auds & audiences:
            raise ClientError("invalid_client", "client assertion iss/sub/aud do not match")
        exp, iat, jti = claims.get("exp"), claims.get("iat"), claims.get("jti")
        if not isinstance(iat, (int, float)) or not now - 300 <= iat <= now + 30 or (isinstance(exp, (int, float)) and exp <= now):
            raise ClientError("invalid_client", "client assertion expired or issued too long ago")
        if not isinstance(jti, str) or not jti or not self._assertions.add(client.client_id + " " + jti, iat + 330):
            raise ClientError("invalid_client", "client assertion replayed (jti already used)")
        return {"method": "private_key_jwt", "kid": kid, "jkt": thumbprint(public)}
