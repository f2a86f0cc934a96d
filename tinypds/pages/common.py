"""What every page handler shares: rendering with the security headers, cookies, forms, CSRF.

Owns the page CSP (a fresh nonce per response; scripts only with that nonce, styles only from
/account/static), the page-session cookie (HttpOnly, SameSite=Strict, Secure when the public
URL is https) and the CSRF check (the session's synchronizer token in a hidden field, plus a
refusal of cross-site Fetch Metadata). Imports services only; never the store.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template

from ..services.auth.page_sessions import PageSession, PageSessions

SESSION_COOKIE = "tinypds-page"
PRE_COOKIE = "tinypds-page-pre"  # double-submit CSRF token of the sign-in form (no session yet)
MAX_FIELD = 16 * 1024


class PageRefused(Exception):
    """A page request without a valid session or CSRF token: 401/403 with an HTML page."""

    def __init__(self, message: str, status: int = 403):
        super().__init__(message)
        self.message = message
        self.status = status


def services(request: Request) -> Any:
    return request.app.state.services


def page_sessions(request: Request) -> PageSessions:
    state = request.app.state
    store = getattr(state, "page_sessions", None)
    if store is None:
        store = PageSessions()
        state.page_sessions = store
    return store


def twofactor(request: Request) -> Any:
    auth = services(request).auth
    return getattr(auth, "twofactor", None) if auth is not None else None


def is_https(request: Request) -> bool:
    return str(services(request).settings.public_url).startswith("https:") or request.url.scheme == "https"


def headers(nonce: str, *, form_action: bool = True) -> dict[str, str]:
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' https: data:; "
           "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'")
    if form_action:  # the OAuth consent form redirects to the app afterwards, which form-action would block
        csp += "; form-action 'self'"
    return {
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(request: Request, template: str, context: dict, *, status: int = 200, cookies: list[Cookie] | None = None,
           form_action: bool = True) -> Template:
    nonce = secrets.token_urlsafe(16)
    return Template(template_name=template, context={**context, "nonce": nonce}, status_code=status,
                    headers=headers(nonce, form_action=form_action), cookies=cookies or [])


def refused(request: Request, exc: PageRefused) -> Template:
    hint = "Sign in again at /account." if exc.status == 401 else "Reload the page and try again."
    return render(request, "error.html", {"title": "Not allowed", "message": exc.message, "hint": hint}, status=exc.status)


def redirect(path: str = "/account", cookies: list[Cookie] | None = None) -> Redirect:
    return Redirect(path=path, status_code=303, headers=headers(secrets.token_urlsafe(8)), cookies=cookies or [])


def session_cookie(request: Request, value: str, *, clear: bool = False) -> Cookie:
    return Cookie(key=SESSION_COOKIE, value=value, path="/account", httponly=True, samesite="strict",
                  secure=is_https(request), max_age=0 if clear else None)


def pre_cookie(request: Request, value: str) -> Cookie:
    return Cookie(key=PRE_COOKIE, value=value, path="/account", httponly=True, samesite="strict",
                  secure=is_https(request))


async def form(request: Request) -> dict[str, str]:
    """The urlencoded/multipart form as single values (the first of repeated names); bounded fields."""
    data = await request.form()
    out: dict[str, str] = {}
    for key, value in data.multi_items():
        if key not in out and isinstance(value, str):
            out[key] = value[:MAX_FIELD]
    return out


def _same_site(request: Request) -> None:
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise PageRefused("Cross-site form submission refused")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        public = str(services(request).settings.public_url).rstrip("/")
        # the browser's origin is the request's host, or the public URL when a proxy rewrote Host
        if origin.split("://", 1)[-1] != request.headers.get("host", "") and origin != public:
            raise PageRefused("Form came from another site")


def current(request: Request) -> tuple[str | None, PageSession | None]:
    sid = request.cookies.get(SESSION_COOKIE)
    return sid, page_sessions(request).get(sid)


def check_csrf(request: Request, fields: dict[str, str], expected: str | None) -> None:
    _same_site(request)
    token = fields.get("csrf") or ""
    if not expected or not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise PageRefused("The form expired or came from another site; reload the page and try again")


async def signed_in(request: Request) -> tuple[str, PageSession, dict[str, str]]:
    """(session id, session, form) for a POST by a signed-in page session with its CSRF token."""
    sid, session = current(request)
    if session is None or not session.signed_in:
        raise PageRefused("Sign in first (the session ended or timed out)", 401)
    account = services(request).account
    if account is None or account.did != session.did:
        raise PageRefused("Sign in first", 401)
    fields = await form(request)
    check_csrf(request, fields, session.csrf)
    return sid or "", session, fields
