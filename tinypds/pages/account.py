"""/account: the owner's page — sign-in (password, then TOTP/recovery code or passkey), the page, sign-out.

Litestar handlers over services (auth, twofactor, oauth, identity, account_page); the actions
behind the page's buttons are in pages/actions.py. Sign-in failures (password and second factor)
count in AuthService's sign-in throttle. Tricky bits: a session that passed the password but not
the second factor can do nothing but finish it; finishing it issues a new session id.
"""

from __future__ import annotations

import datetime
import secrets
from typing import Any

from litestar import Request, get, post
from litestar.response import Response, Template

from ..errors import AuthenticationRequired, InvalidToken, RateLimitExceeded
from ..services.account import page as account_page
from ..services.auth.oauth.scopes import describe
from .common import (PRE_COOKIE, PageRefused, check_csrf, current, form, page_sessions, pre_cookie, redirect, refused,
                     render, services, session_cookie, twofactor)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def fmt_date(ts: Any) -> str:
    if not ts:
        return "never"
    return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def oauth_service(request: Request) -> Any:
    from ..services.auth.oauth.permission_sets import oauth_service as build

    return build(services(request))


def _no_account(request: Request) -> Template:
    """No account here yet: the page to move one in (guarded by the server's invite code)."""
    from .move_in import view

    return view(request, status=200 if request.method == "GET" else 409)


def _signin_view(request: Request, error: str | None = None, status: int = 200) -> Template:
    account = services(request).account
    token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    return render(request, "signin.html", {"handle": account.handle, "did": account.did, "csrf": token, "error": error},
                  status=status, cookies=[pre_cookie(request, token)])


def _second_factor_view(request: Request, session: Any, error: str | None = None, status: int = 200) -> Template:
    st = twofactor(request).status(session.did)
    return render(request, "second_factor.html", {
        "csrf": session.csrf, "error": error, "totp": st["totp"], "recovery": st["recovery_codes"] > 0,
        "passkeys": bool(st["passkeys"]), "action": "/account/signin/code",
        "passkey_action": "/account/signin/passkey", "passkey_options": "/account/signin/passkey-options",
    }, status=status)


@get("/account")
async def account_get(request: Request) -> Template:
    svc = services(request)
    if svc.account is None:
        return _no_account(request)
    from .move_in import showing, view

    if showing(request):  # this browser follows a move in: its progress first
        return view(request)
    _, session = current(request)
    if session is None or session.did != svc.account.did:
        return _signin_view(request)
    if not session.signed_in:
        return _second_factor_view(request, session)
    return await _page(request, session)


async def _page(request: Request, session: Any) -> Template:
    svc = services(request)
    account = svc.account
    tf = twofactor(request)
    oauth = oauth_service(request)
    shown = session.shown_once
    session.shown_once = {}
    flash, session.flash = session.flash, []
    sessions = [{"kind": "This page", "id": "", "created_at": session.created, "last_used_at": session.seen, "current": True}]
    sessions += [{"kind": "Account page in another browser", "id": "page:" + key, "created_at": other.created,
                  "last_used_at": other.seen, "current": False}
                 for key, other in page_sessions(request).list(account.did) if other is not session]
    sessions += [{"kind": ("App password “%s”" % s["app_password"]) if s["app_password"] else "Password sign-in",
                  "id": s["id"], "created_at": s["created_at"], "last_used_at": s["last_used_at"], "current": False}
                 for s in svc.auth.list_sessions(account.did)]
    apps = [{**a, "lines": describe(a["scope"].split())} for a in (oauth.authorized_apps(account.did) if oauth else [])]
    context = {
        "csrf": session.csrf, "flash": flash,
        "o": await account_page.overview(svc.db, account, svc.settings.public_url, getattr(svc, "health", None)),
        "tf": tf.status(account.did) if tf else {"totp": False, "recovery_codes": 0, "passkeys": []},
        "enrol": shown.get("enrol"), "codes": shown.get("codes"), "new_app_password": shown.get("app_password"),
        "handle_check": shown.get("handle_check"),
        "sessions": sessions, "apps": apps,
        "app_passwords": await svc.auth.list_app_passwords(_ctx(account.did)),
        "domains": ", ".join(svc.settings.handle_domains) or "(none configured)",
        "email": account_page.email_view(account),
        "move": move_job_view(request),
    }
    return render(request, "account.html", context)


def move_job_view(request: Request) -> Any:
    from .move import job_view

    return job_view(request)


def _ctx(did: str) -> Any:
    """The AuthContext a signed-in page acts with: a full session of the account."""
    from ..services.auth.context import AuthContext

    return AuthContext(did=did, kind="access", scopes=frozenset())


@post("/account/signin", status_code=303)
async def signin(request: Request) -> Response | Template:
    svc = services(request)
    if svc.account is None:
        return _no_account(request)
    fields = await form(request)
    try:
        check_csrf(request, fields, request.cookies.get(PRE_COOKIE))
    except PageRefused as exc:
        return _signin_view(request, exc.message, 403)
    try:
        await svc.auth.check_password(svc.account.did, fields.get("password") or "", client_ip(request))
    except (AuthenticationRequired, RateLimitExceeded) as exc:
        limited = isinstance(exc, RateLimitExceeded)
        return _signin_view(request, exc.message if limited else "Wrong password", 429 if limited else 401)
    needs = svc.auth.second_factor_required(svc.account.did)
    sid, _ = page_sessions(request).create(svc.account.did, second_factor=needs,
                                           user_agent=request.headers.get("user-agent", ""))
    return redirect("/account", cookies=[session_cookie(request, sid)])


async def _pending(request: Request) -> tuple[str, Any, dict[str, str]]:
    sid, session = current(request)
    if session is None or session.signed_in:
        raise PageRefused("Sign in with your password first", 401)
    fields = await form(request)
    check_csrf(request, fields, session.csrf)
    return sid or "", session, fields


def _complete(request: Request, sid: str) -> Response:
    new_sid = page_sessions(request).complete(sid)
    if new_sid is None:
        raise PageRefused("Sign in with your password first", 401)
    return redirect("/account", cookies=[session_cookie(request, new_sid)])


@post("/account/signin/code", status_code=303)
async def signin_code(request: Request) -> Response | Template:
    try:
        sid, session, fields = await _pending(request)
    except PageRefused as exc:
        return refused(request, exc)
    try:
        await services(request).auth.check_second_factor(session.did, fields.get("code") or "", client_ip(request))
    except (InvalidToken, RateLimitExceeded) as exc:
        limited = isinstance(exc, RateLimitExceeded)
        return _second_factor_view(request, session, exc.message if limited else "That code is not right", 429 if limited else 401)
    return _complete(request, sid)


@post("/account/signin/passkey-options", status_code=200)
async def signin_passkey_options(request: Request) -> Response:
    try:
        _, session, _ = await _pending(request)
        ceremony, options = twofactor(request).passkey_auth_options(session.did)
    except PageRefused as exc:
        return Response({"error": exc.message}, status_code=exc.status)
    except ValueError as exc:
        return Response({"error": str(exc)}, status_code=400)
    return Response({"ceremony": ceremony, "options": _json(options)}, headers={"Cache-Control": "no-store"})


def _json(text: str) -> Any:
    import json

    return json.loads(text)


@post("/account/signin/passkey", status_code=303)
async def signin_passkey(request: Request) -> Response | Template:
    try:
        sid, session, fields = await _pending(request)
    except PageRefused as exc:
        return refused(request, exc)
    try:
        await services(request).auth.check_passkey(session.did, fields.get("ceremony") or "", fields.get("credential") or "",
                                                   client_ip(request))
    except (InvalidToken, RateLimitExceeded) as exc:
        limited = isinstance(exc, RateLimitExceeded)
        return _second_factor_view(request, session, exc.message if limited else "The passkey was not accepted; try again",
                                   429 if limited else 401)
    return _complete(request, sid)


@post("/account/signout", status_code=303)
async def signout(request: Request) -> Response | Template:
    sid, session = current(request)
    if session is not None:
        fields = await form(request)
        try:
            check_csrf(request, fields, session.csrf)
        except PageRefused as exc:
            return refused(request, exc)
        page_sessions(request).end(sid)
    return redirect("/account", cookies=[session_cookie(request, "", clear=True)])


ROUTES: list = [account_get, signin, signin_code, signin_passkey_options, signin_passkey, signout]
