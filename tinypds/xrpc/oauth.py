"""OAuth routes: metadata, PAR, token, revocation (the sign-in/consent page is tinypds/pages/oauth.py).

Thin over services.auth.oauth.OAuthService. OAuth endpoints answer OAuth-shaped errors
({"error", "error_description"}, with DPoP-Nonce) rendered here, not by the XRPC handler;
`dpop_auth` turns `Authorization: DPoP <token>` into an AuthContext for XRPC handlers (its
failures are XRPC errors carrying WWW-Authenticate). Never imports store.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import msgspec

from ..errors import AuthenticationRequired, InvalidToken
from ..services.auth.oauth.errors import OAuthError
from litestar import Request, Response, get
from .routing import post, read_body_capped, services

MAX_FORM_BYTES = 64 * 1024


def _oauth_or_none(request: Request) -> Any:
    """The OAuthService, built on the first OAuth request (an idle server never loads it)."""
    from ..services.auth.oauth.permission_sets import oauth_service

    return oauth_service(services(request))


def _oauth(request: Request) -> Any:
    oauth = _oauth_or_none(request)
    if oauth is None:
        raise OAuthError("server_error", "OAuth is not available on this server", status=503)
    return oauth


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _json(request: Request, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    svc = services(request).oauth
    hdrs = {"Cache-Control": "no-store", **(headers or {})}
    if svc is not None:
        hdrs["DPoP-Nonce"] = svc.dpop.nonces.current()
    return Response(content=body, status_code=status, headers=hdrs, media_type="application/json")


async def _form(request: Request) -> dict[str, str]:
    raw = await read_body_capped(request, MAX_FORM_BYTES)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "application/json":
        try:
            body = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise OAuthError("invalid_request", "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise OAuthError("invalid_request", "request body must be an object")
        return {k: v for k, v in body.items() if isinstance(v, str)}
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "request body must be application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "request body is not UTF-8") from None
    form: dict[str, str] = {}
    for k, v in pairs:
        if k in form:
            raise OAuthError("invalid_request", f"parameter {k!r} given more than once")
        form[k] = v
    return form


async def _protocol(request: Request, fn: Callable[[Any, dict, list[str]], Awaitable[Any]], path: str, status: int = 200) -> Response:
    """Run an OAuth protocol endpoint, rendering OAuthError the OAuth way."""
    try:
        oauth = _oauth(request)
        form = await _form(request)
        result = await fn(oauth, form, oauth.endpoint_urls(path, _origin(request)))
    except OAuthError as exc:
        return _json(request, {"error": exc.error, "error_description": exc.description}, exc.status, exc.headers)
    return _json(request, result if result is not None else {}, status)


# ---- metadata ---------------------------------------------------------------------------------------------


@get("/.well-known/oauth-protected-resource")
async def protected_resource(request: Request) -> Response:
    return _json(request, _oauth(request).resource_metadata())


@get("/.well-known/oauth-authorization-server")
async def authorization_server(request: Request) -> Response:
    return _json(request, _oauth(request).server_metadata())


# ---- protocol endpoints ---------------------------------------------------------------------------------


@post("/oauth/par")
async def par(request: Request) -> Response:
    return await _protocol(request, lambda o, f, u: o.par(f, request.headers.get("dpop"), u), "/oauth/par", 201)


@post("/oauth/token")
async def token(request: Request) -> Response:
    return await _protocol(request, lambda o, f, u: o.token(f, request.headers.get("dpop"), u), "/oauth/token")


@post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    return await _protocol(request, lambda o, f, u: o.revoke(f, u), "/oauth/revoke")


# ---- the resource server: Authorization: DPoP <token> -------------------------------------------------------


class OAuthResourceError(AuthenticationRequired):
    """A DPoP-bound token was refused: 401, the OAuth error name, WWW-Authenticate, DPoP-Nonce."""

    error = None  # type: ignore[assignment]  # set per instance (shadows XrpcError.error)

    def __init__(self, exc: OAuthError, nonce: str):
        challenge = f'DPoP error="{exc.error}", error_description="{exc.description}"'
        super().__init__(exc.description, headers={"WWW-Authenticate": challenge, "DPoP-Nonce": nonce})
        self.error = exc.error
        self.status = 401


_NONCE_KEY = "tinypds.dpop_nonce"


async def dpop_nonce_header(message: Any, scope: Any) -> None:
    """App-level before_send hook: answers to DPoP-authenticated requests carry the current
    nonce, so clients stay current without a use_dpop_nonce round trip (which a streamed
    upload could not retry)."""
    nonce = scope.get(_NONCE_KEY)
    if nonce and message.get("type") == "http.response.start":
        headers = list(message.get("headers") or [])
        if not any(k.lower() == b"dpop-nonce" for k, _ in headers):
            headers.append((b"dpop-nonce", nonce.encode("ascii")))
            message["headers"] = headers


async def dpop_auth(request: Request, token: str) -> Any:
    """AuthContext for an OAuth access token presented with a DPoP proof."""
    oauth = _oauth_or_none(request)
    if oauth is None:
        raise InvalidToken("OAuth tokens are not accepted by this server")
    request.scope[_NONCE_KEY] = oauth.dpop.nonces.current()  # type: ignore[literal-required]
    path = request.url.path
    try:
        return await oauth.verify_access(token, request.headers.get("dpop"), request.method,
                                         oauth.endpoint_urls(path, _origin(request)))
    except OAuthError as exc:
        raise OAuthResourceError(exc, oauth.dpop.nonces.current()) from None


ROUTES: list = [protected_resource, authorization_server, par, token, revoke]  # the pages: tinypds/pages/
