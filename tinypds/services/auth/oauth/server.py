"""OAuthService: the authorization server's state machine and the resource server's token check.

Owns PAR, authorization codes (single-use, 2 min), the token endpoint (authorization_code with
PKCE S256; refresh_token with single-use rotation: a reused refresh token or code revokes its
session), revocation, devices ("remember me"), the authorized-apps list, and turning a DPoP-bound
access token into an AuthContext. Imports store.oauth, services.auth.context (AuthContext), .clients,
.dpop, .scopes; no HTTP types: callers pass form dicts, the DPoP header and acceptable URLs.
Tokens are opaque random strings stored as sha256 hashes, so revocation is immediate.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any, Callable
from urllib.parse import urlencode, urlsplit

from ....core.jwt import b64url_encode
from ....store import oauth as sql
from ..context import AuthContext
from .errors import OAuthError  # noqa: F401  (re-exported: callers catch it from here too)
from .clients import Client, ClientError, ClientRegistry
from .dpop import DpopError, DpopVerifier, normalize_htu
from .scopes import ScopeError, parse_scope

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:req-"
REQUEST_TTL = 300
CODE_TTL = 120
ACCESS_TTL = 15 * 60
PUBLIC_SESSION_TTL = 14 * 86400  # the spec's limit for public clients
CONFIDENTIAL_REFRESH_TTL = 90 * 86400
CONFIDENTIAL_SESSION_TTL = 365 * 86400
DEVICE_TTL = 30 * 86400
_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_BURNED = "-"  # request.session_id of a code refused for a wrong verifier: it can never be used


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def _s256(verifier: str) -> str:
    return b64url_encode(hashlib.sha256(verifier.encode("ascii")).digest())


def _redirect_matches(requested: str, registered: str) -> bool:
    if requested == registered:
        return True
    a, b = urlsplit(requested), urlsplit(registered)  # RFC 8252 §7.3: loopback ports may vary
    return (a.scheme == b.scheme == "http" and a.hostname == b.hostname and a.hostname in ("127.0.0.1", "::1")
            and a.path == b.path and a.query == b.query)


def _same_client_auth(a: dict, b: dict) -> bool:
    """Later token requests must authenticate the same way, with the same key, as at PAR."""
    return a.get("method") == b.get("method") and a.get("jkt") == b.get("jkt")


class OAuthService:
    def __init__(self, db: Any, *, issuer: str, clients: ClientRegistry | None = None, dpop: DpopVerifier | None = None,
                 clock: Callable[[], float] = time.time, permission_sets: Any = None):
        self.db = db
        self.permission_sets = permission_sets  # .permission_sets.PermissionSetResolver; None: include: refused
        self.issuer = issuer.rstrip("/")
        self.clock = clock
        self.clients = clients or ClientRegistry(clock=clock)
        self.dpop = dpop or DpopVerifier(clock)

    async def aclose(self) -> None:
        await self.clients.aclose()

    # ---- metadata ---------------------------------------------------------------------------------
    def server_metadata(self) -> dict:
        i = self.issuer
        return {
            "issuer": i,
            "authorization_endpoint": i + "/oauth/authorize",
            "token_endpoint": i + "/oauth/token",
            "pushed_authorization_request_endpoint": i + "/oauth/par",
            "revocation_endpoint": i + "/oauth/revoke",
            "require_pushed_authorization_requests": True,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "dpop_signing_alg_values_supported": ["ES256", "ES256K"],
            "scopes_supported": ["atproto", "transition:generic", "transition:chat.bsky", "transition:email"],
            "subject_types_supported": ["public"],
            "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": True,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": True,
            "require_request_uri_registration": True,
            "protected_resources": [i],
        }

    def resource_metadata(self) -> dict:
        return {
            "resource": self.issuer,
            "authorization_servers": [self.issuer],
            "scopes_supported": [],
            "bearer_methods_supported": ["header"],
            "resource_documentation": "https://atproto.com",
        }

    def endpoint_urls(self, path: str, request_origin: str | None = None) -> list[str]:
        """The htu values a proof for `path` may carry: the issuer's origin and the one the request used."""
        urls = [normalize_htu(self.issuer + path)]
        if request_origin:
            try:
                urls.append(normalize_htu(request_origin.rstrip("/") + path))
            except DpopError:
                pass
        return urls

    def _dpop(self, proof: str | None, method: str, urls: list[str], access_token: str | None = None) -> str:
        try:
            return self.dpop.verify(proof, method, urls, access_token)
        except DpopError as exc:
            raise OAuthError(exc.error, exc.description) from None

    async def _client(self, form: dict) -> Client:
        try:
            return await self.clients.get(form.get("client_id"))
        except ClientError as exc:
            raise OAuthError(exc.error, exc.description) from None

    def _authenticate(self, client: Client, form: dict, urls: list[str], dpop_jkt: str | None = None) -> dict:
        try:
            auth = self.clients.authenticate(client, form, {self.issuer, *urls})
        except ClientError as exc:
            raise OAuthError(exc.error, exc.description, status=401 if exc.error == "invalid_client" else 400) from None
        if dpop_jkt is not None and auth.get("jkt") == dpop_jkt:
            raise OAuthError("invalid_request", "the DPoP proof and the client assertion must use different keys")
        return auth

    # ---- PAR --------------------------------------------------------------------------------------
    async def par(self, form: dict, dpop_proof: str | None, urls: list[str]) -> dict:
        jkt = self._dpop(dpop_proof, "POST", urls)
        client = await self._client(form)
        client_auth = self._authenticate(client, form, urls, jkt)
        get = lambda k: form.get(k) if isinstance(form.get(k), str) else None  # noqa: E731
        if "request" in form:
            raise OAuthError("request_not_supported", "request objects are not supported")
        if get("response_type") != "code":
            raise OAuthError("unsupported_response_type", 'response_type must be "code"')
        if get("code_challenge_method") != "S256" or not get("code_challenge") or len(get("code_challenge")) != 43:
            raise OAuthError("invalid_request", "PKCE with code_challenge_method S256 is required")
        if not get("state"):
            raise OAuthError("invalid_request", "state is required")
        if get("dpop_jkt") and get("dpop_jkt") != jkt:
            raise OAuthError("invalid_request", "dpop_jkt does not match the DPoP proof key")
        redirect = get("redirect_uri")
        registered = client.redirect_uris
        if redirect is None:
            if len(registered) != 1:
                raise OAuthError("invalid_request", "redirect_uri is required")
            redirect = registered[0]
        elif not any(_redirect_matches(redirect, r) for r in registered):
            raise OAuthError("invalid_request", "redirect_uri is not one of the client's redirect_uris")
        mode = get("response_mode") or "query"
        if mode not in ("query", "fragment"):
            raise OAuthError("invalid_request", "response_mode must be query or fragment")
        try:
            tokens = parse_scope(get("scope") or " ".join(sorted(client.scopes)),
                                 allow_include=self.permission_sets is not None)
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        extra = [t for t in tokens if t not in client.scopes]
        if extra:
            raise OAuthError("invalid_scope", f"scope {extra[0]!r} is not declared in the client metadata")
        await self.expand_scope(tokens, fresh=True, strict=True)  # an unresolvable set: invalid_scope naming it
        now = int(self.clock())
        params = {"redirect_uri": redirect, "scope": " ".join(tokens), "state": get("state"), "response_mode": mode,
                  "login_hint": get("login_hint"), "client_name": client.name}
        row = sql.RequestRow(secrets.token_urlsafe(24), client.client_id, client_auth, params, get("code_challenge"),
                             jkt, now, now + REQUEST_TTL, None, None, None, None)

        def write(conn: Any) -> bool:
            sql.delete_expired(conn, now, keep_requests=86400)
            return sql.insert_request(conn, row)

        if not await self.db.awrite(write):
            raise OAuthError("invalid_request", "code_challenge was already used; PKCE challenges are single-use")
        return {"request_uri": REQUEST_URI_PREFIX + row.id, "expires_in": REQUEST_TTL}

    # ---- the authorization page ---------------------------------------------------------------------
    async def pending_request(self, client_id: str | None, request_uri: str | None) -> tuple[sql.RequestRow, Client]:
        """The still-pending request a page refers to (client_id must match), with its client."""
        if not request_uri or not request_uri.startswith(REQUEST_URI_PREFIX):
            raise OAuthError("invalid_request", "request_uri (from PAR) is required")
        rid = request_uri[len(REQUEST_URI_PREFIX):]
        row = self.db.read(lambda c: sql.get_request(c, rid))
        if row is None or row.expires_at <= self.clock() or row.code_hash is not None:
            raise OAuthError("invalid_request", "this sign-in request has expired or was already used; start again from the app")
        if client_id is not None and client_id != row.client_id:
            raise OAuthError("invalid_request", "client_id does not match the request")
        return row, await self._client({"client_id": row.client_id})

    def _response_url(self, row: sql.RequestRow, params: dict) -> str:
        params = {**params, "state": row.params["state"], "iss": self.issuer}
        uri = row.params["redirect_uri"]
        if row.params.get("response_mode") == "fragment":
            return uri + "#" + urlencode(params)
        return uri + ("&" if urlsplit(uri).query else "?") + urlencode(params)

    async def approve(self, row: sql.RequestRow, did: str, client: Client) -> str:
        """The user allowed: issue the single-use code -> the redirect URL back to the client."""
        code = "cod-" + secrets.token_urlsafe(32)
        now = int(self.clock())

        def write(conn: Any) -> bool:
            if not sql.set_request_code(conn, row.id, did, _hash(code), now + CODE_TTL, now):
                return False
            sql.upsert_authorization(conn, did, client.client_id, client.name, row.params["scope"], now)
            return True

        if not await self.db.awrite(write):
            raise OAuthError("invalid_request", "this sign-in request has expired or was already used")
        return self._response_url(row, {"code": code})

    async def deny(self, row: sql.RequestRow) -> str:
        await self.db.awrite(lambda c: sql.set_request_code(c, row.id, "", _hash(secrets.token_hex(16)), 0, int(self.clock())))
        return self._response_url(row, {"error": "access_denied", "error_description": "The user denied access"})

    # ---- the token endpoint -------------------------------------------------------------------------
    async def token(self, form: dict, dpop_proof: str | None, urls: list[str]) -> dict:
        jkt = self._dpop(dpop_proof, "POST", urls)
        client = await self._client(form)
        client_auth = self._authenticate(client, form, urls, jkt)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return await self._exchange_code(form, client, client_auth, jkt)
        if grant == "refresh_token":
            return await self._refresh(form, client, client_auth, jkt)
        raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")

    def _lifetimes(self, client: Client, created_at: int, now: int) -> tuple[int, int]:
        """(session expires_at, refresh expires_at) per the spec's public/confidential limits."""
        if client.confidential:
            session_end = created_at + CONFIDENTIAL_SESSION_TTL
            return session_end, min(session_end, now + CONFIDENTIAL_REFRESH_TTL)
        session_end = created_at + PUBLIC_SESSION_TTL
        return session_end, session_end

    def _token_response(self, session: sql.SessionRow, access: str, refresh: str, now: int) -> dict:
        return {"access_token": access, "token_type": "DPoP", "expires_in": session.access_expires_at - now,
                "refresh_token": refresh, "scope": session.scope, "sub": session.did}

    async def _exchange_code(self, form: dict, client: Client, client_auth: dict, jkt: str) -> dict:
        code, verifier = form.get("code"), form.get("code_verifier")
        if not isinstance(code, str) or not isinstance(verifier, str):
            raise OAuthError("invalid_request", "code and code_verifier are required")
        row = self.db.read(lambda c: sql.request_by_code(c, _hash(code)))
        now = int(self.clock())
        if row is None or not row.did:
            raise OAuthError("invalid_grant", "invalid authorization code")
        if row.session_id is not None:  # replayed: revoke whatever the first use obtained (RFC 6749 §4.1.2)
            if row.session_id != _BURNED:
                await self.db.awrite(lambda c: sql.delete_session(c, row.session_id))
            raise OAuthError("invalid_grant", "authorization code was already used")
        if row.client_id != client.client_id or not _same_client_auth(row.client_auth, client_auth):
            raise OAuthError("invalid_grant", "authorization code was issued to another client")
        if (row.code_expires_at or 0) <= now:
            raise OAuthError("invalid_grant", "authorization code expired")
        if form.get("redirect_uri") is not None and form.get("redirect_uri") != row.params["redirect_uri"]:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        if row.dpop_jkt is not None and row.dpop_jkt != jkt:
            raise OAuthError("invalid_dpop_proof", "DPoP key differs from the one used at PAR")
        if not _VERIFIER_RE.match(verifier) or _s256(verifier) != row.code_challenge:
            await self.db.awrite(lambda c: sql.redeem_code(c, row.id, _BURNED))
            raise OAuthError("invalid_grant", "PKCE code_verifier does not match the code_challenge")
        session_end, refresh_end = self._lifetimes(client, now, now)
        access, refresh = "at-" + secrets.token_urlsafe(32), "rt-" + secrets.token_urlsafe(32)
        session = sql.SessionRow("ses-" + secrets.token_urlsafe(18), row.did, client.client_id, client_auth, jkt,
                                 row.params["scope"], now, now, session_end, _hash(refresh), refresh_end,
                                 _hash(access), now + ACCESS_TTL)

        def write(conn: Any) -> bool:
            if not sql.redeem_code(conn, row.id, session.id):
                return False
            sql.insert_session(conn, session)
            return True

        if not await self.db.awrite(write):
            raise OAuthError("invalid_grant", "authorization code was already used")
        return self._token_response(session, access, refresh, now)

    async def _refresh(self, form: dict, client: Client, client_auth: dict, jkt: str) -> dict:
        token = form.get("refresh_token")
        if not isinstance(token, str):
            raise OAuthError("invalid_request", "refresh_token is required")
        h = _hash(token)
        session = self.db.read(lambda c: sql.session_by_refresh(c, h))
        now = int(self.clock())
        if session is None:
            reused = self.db.read(lambda c: sql.used_refresh_session(c, h))
            if reused is not None:  # a rotated-out token came back: someone has a copy; end the session
                await self.db.awrite(lambda c: sql.delete_session(c, reused))
                raise OAuthError("invalid_grant", "refresh token was already used; the session has been revoked")
            raise OAuthError("invalid_grant", "invalid refresh token")
        if session.client_id != client.client_id or not _same_client_auth(session.client_auth, client_auth):
            raise OAuthError("invalid_grant", "refresh token was issued to another client (or another client key)")
        if session.dpop_jkt != jkt:
            raise OAuthError("invalid_dpop_proof", "DPoP key does not match the one the tokens are bound to")
        if session.expires_at <= now or session.refresh_expires_at <= now:
            await self.db.awrite(lambda c: sql.delete_session(c, session.id))
            raise OAuthError("invalid_grant", "session expired; sign in again")
        _, refresh_end = self._lifetimes(client, session.created_at, now)
        await self.expand_scope(session.scope.split(), fresh=True)  # permission sets are looked up again
        access, refresh = "at-" + secrets.token_urlsafe(32), "rt-" + secrets.token_urlsafe(32)
        ok = await self.db.awrite(lambda c: sql.rotate_tokens(c, session.id, h, _hash(refresh), refresh_end,
                                                               _hash(access), now + ACCESS_TTL, now))
        if not ok:
            raise OAuthError("invalid_grant", "refresh token was already used")
        fresh = session._replace(refresh_expires_at=refresh_end, access_expires_at=now + ACCESS_TTL)
        return self._token_response(fresh, access, refresh, now)

    # ---- revocation -----------------------------------------------------------------------------------
    async def revoke(self, form: dict, urls: list[str]) -> None:
        """RFC 7009: end the session an access or refresh token belongs to (no error if unknown)."""
        client = await self._client(form)
        self._authenticate(client, form, urls)
        token = form.get("token")
        if not isinstance(token, str):
            raise OAuthError("invalid_request", "token is required")
        h = _hash(token)

        def write(conn: Any) -> None:
            s = sql.session_by_access(conn, h) or sql.session_by_refresh(conn, h)
            if s is not None and s.client_id == client.client_id:
                sql.delete_session(conn, s.id)

        await self.db.awrite(write)

    # ---- the resource server ------------------------------------------------------------------------------
    async def verify_access(self, token: str, dpop_proof: str | None, method: str, urls: list[str]) -> AuthContext:
        """AuthContext for `Authorization: DPoP <token>`; OAuthError (status 401) otherwise."""
        session = self.db.read(lambda c: sql.session_by_access(c, _hash(token)))
        if session is None or session.access_expires_at <= self.clock() or session.expires_at <= self.clock():
            raise OAuthError("invalid_token", "access token is invalid, expired or revoked", status=401)
        try:
            jkt = self.dpop.verify(dpop_proof, method, urls, access_token=token)
        except DpopError as exc:
            raise OAuthError(exc.error, exc.description, status=401) from None
        if jkt != session.dpop_jkt:
            raise OAuthError("invalid_dpop_proof", "DPoP key does not match the access token", status=401)
        scopes = await self.expand_scope(session.scope.split(), stale_ok=True)
        return AuthContext(did=session.did, kind="oauth", scopes=frozenset(scopes),
                           session_id=session.id, token_id=session.client_id)

    async def expand_scope(self, tokens: Any, *, fresh: bool = False, strict: bool = False,
                           stale_ok: bool = False) -> tuple[str, ...]:
        """Scope tokens plus the grants of their include: permission sets (cached; the last good
        copy when a lookup fails). `strict`: an unresolvable set is invalid_scope (PAR); else
        it grants nothing."""
        tokens = tuple(tokens)
        if self.permission_sets is None or not any(t.startswith("include") for t in tokens):
            return tokens
        from .permission_sets import PermissionSetError

        try:
            return await self.permission_sets.expand(tokens, fresh=fresh, stale_ok=stale_ok)
        except PermissionSetError as exc:
            if strict:
                raise OAuthError("invalid_scope", str(exc)) from None
            return tokens

    # ---- devices and apps (the pages) ------------------------------------------------------------------------
    async def remember_device(self, did: str, ttl: int = DEVICE_TTL) -> str:
        device = secrets.token_urlsafe(32)
        now = int(self.clock())
        await self.db.awrite(lambda c: sql.insert_device(c, _hash(device), did, now, now + ttl))
        return device

    def device_account(self, device: str | None) -> str | None:
        if not device:
            return None
        return self.db.read(lambda c: sql.device_did(c, _hash(device), int(self.clock())))

    async def forget_device(self, device: str) -> None:
        await self.db.awrite(lambda c: sql.delete_device(c, _hash(device)))

    def authorized_apps(self, did: str) -> list[dict]:
        rows = self.db.read(lambda c: sql.list_authorizations(c, did))
        return [{"client_id": r[0], "name": r[1] or r[0], "scope": r[2], "created_at": r[3], "updated_at": r[4]} for r in rows]

    async def revoke_app(self, did: str, client_id: str) -> int:
        return await self.db.awrite(lambda c: sql.delete_authorization(c, did, client_id))
