"""OAuth routes: metadata, PAR, the authorization page, token, revocation, the account page.

Thin over services.oauth.OAuthService. OAuth endpoints answer OAuth-shaped errors
({"error", "error_description"}, with DPoP-Nonce) rendered here, not by the XRPC handler;
`dpop_auth` turns `Authorization: DPoP <token>` into an AuthContext for XRPC handlers (its
failures are XRPC errors carrying WWW-Authenticate). Never imports store. Tricky bits: the
pages are CSRF-protected by a SameSite=Strict cookie matched against a hidden field, and the
sign-in is throttled by AuthService.check_password like createSession.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import msgspec

from ..errors import AuthenticationRequired, Forbidden, InvalidToken, RateLimitExceeded
from ..services.oauth.errors import OAuthError
from litestar import Request, Response, get
from litestar.datastructures import Cookie
from .routing import client_ip, post, read_body_capped, services

CSRF_COOKIE = "tinypds-csrf"
DEVICE_COOKIE = "tinypds-device"
MAX_FORM_BYTES = 64 * 1024


def _oauth_or_none(request: Request) -> Any:
    """The OAuthService, built on the first OAuth request (an idle server never loads it)."""
    svc = services(request)
    oauth = svc.oauth
    if oauth is None and svc.db is not None:
        from ..services.oauth.server import OAuthService

        oauth = svc.oauth = OAuthService(svc.db, issuer=svc.settings.public_url)
    return oauth


def _oauth(request: Request) -> Any:
    oauth = _oauth_or_none(request)
    if oauth is None:
        raise OAuthError("server_error", "OAuth is not available on this server", status=503)
    return oauth


def _pages() -> Any:
    from ..services.oauth import pages  # HTML (and the html module) only when a page is shown

    return pages


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


# ---- pages -----------------------------------------------------------------------------------------------------


def _html(request: Request, html: str, status: int = 200, csrf: str | None = None, cookies: list[Cookie] | None = None) -> Response:
    cookies = list(cookies or [])
    if csrf is not None:
        cookies.append(Cookie(key=CSRF_COOKIE, value=csrf, httponly=True, samesite="strict", path="/",
                              secure=request.url.scheme == "https"))
    return Response(content=html, status_code=status, media_type="text/html; charset=utf-8",
                    headers=_pages().PAGE_HEADERS, cookies=cookies)


def _csrf_for(request: Request) -> str:
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)


def _check_csrf(request: Request, form: dict) -> None:
    cookie, field = request.cookies.get(CSRF_COOKIE), form.get("csrf")
    if not cookie or not field or not hmac.compare_digest(cookie, field):
        raise Forbidden("The form expired or came from another site; reload the page and try again")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("Cross-site form submission refused")


def _account(request: Request) -> Any:
    account = services(request).account
    if account is None:
        raise OAuthError("invalid_request", "this server has no account yet")
    return account


def _device_cookie(request: Request, value: str, max_age: int | None) -> Cookie:
    return Cookie(key=DEVICE_COOKIE, value=value, httponly=True, samesite="lax", path="/", max_age=max_age,
                  secure=request.url.scheme == "https")


async def _authorize_view(request: Request, request_uri: str | None, client_id: str | None, error: str | None = None, status: int = 200) -> Response:
    oauth = _oauth(request)
    row, client = await oauth.pending_request(client_id, request_uri)
    account = _account(request)
    remembered = oauth.device_account(request.cookies.get(DEVICE_COOKIE)) == account.did
    csrf = _csrf_for(request)
    html = _pages().authorize_page(
        client_name=client.name, client_id=client.client_id, logo_uri=client.metadata.get("logo_uri"),
        scope=row.params["scope"], handle=account.handle, did=account.did, remembered=remembered,
        csrf=csrf, request_uri=request_uri or "", error=error,
    )
    return _html(request, html, status, csrf=csrf)


@get("/oauth/authorize")
async def authorize_page(request: Request) -> Response:
    try:
        return await _authorize_view(request, request.query_params.get("request_uri"), request.query_params.get("client_id"))
    except OAuthError as exc:
        return _html(request, _pages().error_page(exc.description), 400)


@post("/oauth/authorize")
async def authorize_submit(request: Request) -> Response:
    try:
        form = await _form(request)
        oauth = _oauth(request)
        request_uri, client_id = form.get("request_uri"), form.get("client_id")
        try:
            _check_csrf(request, form)
        except Forbidden as exc:
            return await _authorize_view(request, request_uri, client_id, exc.message, 403)
        row, client = await oauth.pending_request(client_id, request_uri)
        if form.get("action") == "deny":
            return Response(content=b"", status_code=303, headers={"Location": await oauth.deny(row), **_pages().PAGE_HEADERS})
        if form.get("action") != "allow":
            return await _authorize_view(request, request_uri, client_id, "Choose Allow or Deny", 400)
        account = _account(request)
        cookies: list[Cookie] = []
        if oauth.device_account(request.cookies.get(DEVICE_COOKIE)) != account.did:
            try:
                await services(request).auth.check_password(account.did, form.get("password") or "", client_ip(request))
            except (AuthenticationRequired, RateLimitExceeded) as exc:
                message = "Wrong password" if isinstance(exc, AuthenticationRequired) else exc.message
                return await _authorize_view(request, request_uri, client_id, message, 401 if isinstance(exc, AuthenticationRequired) else 429)
            if form.get("remember") == "1":
                device = await oauth.remember_device(account.did)
                cookies.append(_device_cookie(request, device, 30 * 86400))
        location = await oauth.approve(row, account.did, client)
        return Response(content=b"", status_code=303, headers={"Location": location, **_pages().PAGE_HEADERS}, cookies=cookies)
    except OAuthError as exc:
        return _html(request, _pages().error_page(exc.description), 400)


@get("/account")
async def account_page(request: Request) -> Response:
    return await _account_view(request)


async def _account_view(request: Request, error: str | None = None, status: int = 200, cookies: list[Cookie] | None = None, device: str | None = None) -> Response:
    oauth, account = _oauth(request), services(request).account
    if account is None:
        return _html(request, _pages().error_page("This server has no account yet."), 404)
    csrf = _csrf_for(request)
    did = oauth.device_account(device or request.cookies.get(DEVICE_COOKIE))
    apps = oauth.authorized_apps(did) if did == account.did else None
    html = _pages().account_page(handle=account.handle, did=account.did, apps=apps, csrf=csrf, error=error)
    return _html(request, html, status, csrf=csrf, cookies=cookies)


@post("/account")
async def account_submit(request: Request) -> Response:
    oauth, account = _oauth(request), _account(request)
    try:
        form = await _form(request)
        _check_csrf(request, form)
    except (OAuthError, Forbidden) as exc:
        return await _account_view(request, getattr(exc, "message", None) or str(exc), 403)
    device = request.cookies.get(DEVICE_COOKIE)
    action = form.get("action")
    if action == "signin":
        try:
            await services(request).auth.check_password(account.did, form.get("password") or "", client_ip(request))
        except (AuthenticationRequired, RateLimitExceeded) as exc:
            return await _account_view(request, "Wrong password" if isinstance(exc, AuthenticationRequired) else exc.message, 401)
        device = await oauth.remember_device(account.did, ttl=3600)
        return await _account_view(request, cookies=[_device_cookie(request, device, None)], device=device)
    if oauth.device_account(device) != account.did:
        return await _account_view(request, "Sign in first", 401)
    if action == "revoke" and form.get("client_id"):
        await oauth.revoke_app(account.did, form["client_id"])
    elif action == "signout":
        await oauth.forget_device(device)
        return await _account_view(request, cookies=[_device_cookie(request, "", 0)], device="-")
    return Response(content=b"", status_code=303, headers={"Location": "/account", **_pages().PAGE_HEADERS})


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


ROUTES: list = [protected_resource, authorization_server, par, token, revoke, authorize_page, authorize_submit,
                account_page, account_submit]
