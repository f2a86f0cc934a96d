"""The OAuth sign-in and consent page (/oauth/authorize), rendered from templates/authorize.html.

Who asks, for what (permission sets by their own title and detail, in the browser's language),
as whom; the account password unless this device is remembered; then, when the account has
a second factor, a TOTP/recovery code or a passkey before the code is issued. Throttled with
the same sign-in throttle as createSession. CSRF: a SameSite=Strict cookie matched against a
hidden field. Tricky bits: the password is never carried into the second step — a short-lived
pending token (held in memory) stands for "password checked"; the consent form's redirect to
the app must not be blocked, so this page's CSP has no form-action.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, Response, Template

from ..errors import AuthenticationRequired, InvalidToken, RateLimitExceeded
from ..services.auth.oauth.errors import OAuthError
from ..services.auth.oauth.scopes import describe, include_tokens
from ..services.auth.page_sessions import PageSessions
from .account import client_ip, oauth_service
from .common import form, headers, render, services, twofactor

CSRF_COOKIE = "tinypds-csrf"
DEVICE_COOKIE = "tinypds-device"
PENDING_SECONDS = 300


def _pending(request: Request) -> PageSessions:
    state = request.app.state
    store = getattr(state, "oauth_pending", None)
    if store is None:
        store = PageSessions(idle=PENDING_SECONDS, max_age=PENDING_SECONDS)
        state.oauth_pending = store
    return store


def _secure(request: Request) -> bool:
    return str(services(request).settings.public_url).startswith("https:") or request.url.scheme == "https"


def _csrf_cookie(request: Request, value: str) -> Cookie:
    return Cookie(key=CSRF_COOKIE, value=value, httponly=True, samesite="strict", path="/", secure=_secure(request))


def _device_cookie(request: Request, value: str, max_age: int | None) -> Cookie:
    return Cookie(key=DEVICE_COOKIE, value=value, httponly=True, samesite="lax", path="/", max_age=max_age,
                  secure=_secure(request))


def _error_page(request: Request, message: str, status: int = 400) -> Template:
    return render(request, "error.html", {"title": "Sign-in problem", "message": message,
                                          "hint": "Return to the app and start again."}, status=status, form_action=False)


async def _permission_words(request: Request, oauth: Any, scope: str) -> list[str]:
    tokens = scope.split()
    sets = {}
    resolver = getattr(oauth, "permission_sets", None)
    if resolver is not None:
        lang = request.headers.get("accept-language")
        for _token, nsid, _aud in include_tokens(tokens):
            try:
                sets[nsid] = (await resolver.resolve(nsid)).text(lang)
            except Exception:  # noqa: BLE001  (shown by its NSID; PAR already checked it resolves)
                pass
    return describe(tokens, sets)


async def _view(request: Request, request_uri: str | None, client_id: str | None, *, error: str | None = None,
                status: int = 200, stage: str | None = None, pending: str | None = None) -> Template:
    oauth = oauth_service(request)
    if oauth is None:
        raise OAuthError("server_error", "OAuth is not available on this server", status=503)
    row, client = await oauth.pending_request(client_id, request_uri)
    account = services(request).account
    if account is None:
        raise OAuthError("invalid_request", "this server has no account yet")
    if stage is None:
        stage = "remembered" if oauth.device_account(request.cookies.get(DEVICE_COOKIE)) == account.did else "password"
    csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
    logo = client.metadata.get("logo_uri")
    tf = twofactor(request)
    context = {
        "client_name": client.name, "client_id": client.client_id, "client_host": urlsplit(client.client_id).hostname or client.client_id,
        "logo_uri": logo if isinstance(logo, str) and urlsplit(logo).scheme == "https" else None,
        "permissions": await _permission_words(request, oauth, row.params["scope"]),
        "who": f"@{account.handle}" if account.handle else account.did, "did": account.did,
        "csrf": csrf, "request_uri": request_uri or "", "error": error, "stage": stage, "pending": pending,
        "passkeys": bool(tf and stage == "second-factor" and tf.status(account.did)["passkeys"]),
    }
    return render(request, "authorize.html", context, status=status, cookies=[_csrf_cookie(request, csrf)], form_action=False)


@get("/oauth/authorize")
async def authorize_page(request: Request) -> Template:
    try:
        return await _view(request, request.query_params.get("request_uri"), request.query_params.get("client_id"))
    except OAuthError as exc:
        return _error_page(request, exc.description)


def _csrf_ok(request: Request, fields: dict[str, str]) -> bool:
    cookie, field = request.cookies.get(CSRF_COOKIE), fields.get("csrf")
    if not cookie or not field or not hmac.compare_digest(cookie.encode(), field.encode()):
        return False
    return request.headers.get("sec-fetch-site") != "cross-site"


def _redirect(location: str, cookies: list[Cookie] | None = None) -> Redirect:
    return Redirect(path=location, status_code=303, headers=headers(secrets.token_urlsafe(8), form_action=False),
                    cookies=cookies or [])


@post("/oauth/authorize", status_code=303)
async def authorize_submit(request: Request) -> Response | Template:
    try:
        fields = await form(request)
        request_uri, client_id = fields.get("request_uri"), fields.get("client_id")
        if not _csrf_ok(request, fields):
            return await _view(request, request_uri, client_id,
                               error="The form expired or came from another site; reload the page and try again", status=403)
        oauth = oauth_service(request)
        row, client = await oauth.pending_request(client_id, request_uri)
        if fields.get("action") == "deny":
            return _redirect(await oauth.deny(row))
        if fields.get("action") != "allow":
            return await _view(request, request_uri, client_id, error="Choose Allow or Deny", status=400)
        account = services(request).account
        auth = services(request).auth
        ip = client_ip(request)
        cookies: list[Cookie] = []
        if oauth.device_account(request.cookies.get(DEVICE_COOKIE)) != account.did:
            pending_id = fields.get("pending")
            if pending_id:  # the password was checked; now the second factor
                held = _pending(request).get(pending_id)
                if held is None or held.did != account.did or held.shown_once.get("request_uri") != request_uri:
                    return await _view(request, request_uri, client_id, error="The sign-in expired; enter the password again", status=401)
                failure = await _second_factor(request, held, fields, ip)
                if failure is not None:
                    return await _view(request, request_uri, client_id, error=failure[0], status=failure[1],
                                       stage="second-factor", pending=pending_id)
                _pending(request).end(pending_id)
                remember = held.shown_once.get("remember", False)
            else:
                try:
                    await auth.check_password(account.did, fields.get("password") or "", ip)
                except (AuthenticationRequired, RateLimitExceeded) as exc:
                    limited = isinstance(exc, RateLimitExceeded)
                    return await _view(request, request_uri, client_id, error=exc.message if limited else "Wrong password",
                                       status=429 if limited else 401)
                remember = fields.get("remember") == "1"
                if auth.second_factor_required(account.did):
                    pending_id, held = _pending(request).create(account.did, second_factor=True)
                    held.shown_once.update(remember=remember, request_uri=request_uri)
                    return await _view(request, request_uri, client_id, stage="second-factor", pending=pending_id)
            if remember:
                cookies.append(_device_cookie(request, await oauth.remember_device(account.did), 30 * 86400))
        return _redirect(await oauth.approve(row, account.did, client), cookies)
    except OAuthError as exc:
        return _error_page(request, exc.description)


async def _second_factor(request: Request, held: Any, fields: dict[str, str], ip: str) -> tuple[str, int] | None:
    """None when a code or passkey completes the sign-in; else (message, status)."""
    auth = services(request).auth
    passkey = bool(fields.get("credential"))
    try:
        if passkey:
            await auth.check_passkey(held.did, fields.get("ceremony") or "", fields["credential"], ip)
        else:
            await auth.check_second_factor(held.did, fields.get("code") or "", ip)
    except (InvalidToken, RateLimitExceeded) as exc:
        if isinstance(exc, RateLimitExceeded):
            return exc.message, 429
        return ("The passkey was not accepted; try again" if passkey else "That code is not right"), 401
    return None


@post("/oauth/authorize/passkey-options", status_code=200)
async def authorize_passkey_options(request: Request) -> Response:
    fields = await form(request)
    if not _csrf_ok(request, fields):
        return Response({"error": "The form expired; reload the page"}, status_code=403)
    held = _pending(request).get(fields.get("pending"))
    if held is None:
        return Response({"error": "The sign-in expired"}, status_code=401)
    try:
        ceremony, options = twofactor(request).passkey_auth_options(held.did)
    except ValueError as exc:
        return Response({"error": str(exc)}, status_code=400)
    import json

    return Response({"ceremony": ceremony, "options": json.loads(options)}, headers={"Cache-Control": "no-store"})


ROUTES: list = [authorize_page, authorize_submit, authorize_passkey_options]
