"""Account care on /account: password (current one, or an emailed/CLI token), email (confirm,
change), and the account's life (deactivate, reactivate, delete), each behind a confirmation.

Thin over services.account.life.AccountLife (issue 14) and services.account.page. Same rules
as pages/actions.py: a signed-in page session, its CSRF token, a message, a 303 back. Deleting
ends every page session and shows a closing page instead of the account.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from ..errors import AuthenticationRequired, RateLimitExceeded
from ..services.account import page as account_page
from .account import client_ip
from .actions import _run
from .common import PageRefused, page_sessions, refused, render, services, session_cookie, signed_in


def account_life(request: Request) -> Any:
    """The app's AccountLife (shared with the XRPC methods), made on first use."""
    svc = services(request)
    life = getattr(svc, "account_life", None)  # a test harness may hand one in
    return life if life is not None else account_page.account_life_for(svc, request.app.state)


def _confirmed(fields: dict[str, str], request: Request) -> None:
    account = services(request).account
    typed = (fields.get("confirm") or "").strip().lstrip("@").lower()
    if typed != (account.handle or account.did).lower():
        raise ValueError("type your handle to confirm")


# ---- password -----------------------------------------------------------------------------------


@post("/account/password", status_code=303)
async def password_change(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        new = fields.get("new_password") or ""
        if new != (fields.get("new_password2") or ""):
            raise ValueError("the two new passwords differ")
        svc = services(request)
        if fields.get("token"):
            await account_life(request).reset_password(fields["token"].strip(), new)
        else:
            try:
                await account_page.change_password(svc.db, svc.auth, session.did, fields.get("current_password") or "", new,
                                                   client_ip(request))
            except AuthenticationRequired:
                raise ValueError("the current password is not right") from None
            except RateLimitExceeded as exc:
                raise ValueError(exc.message) from None
        pages = page_sessions(request)
        for key, other in pages.list(session.did):
            if other is not session:
                pages.end_handle(session.did, key)  # other browsers sign in again too
        return "Password changed; apps signed in with the old one must sign in again (app passwords still work)."
    return await _run(request, act, "password")


@post("/account/password/token", status_code=303)
async def password_token(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        account = services(request).account
        if not account.email:
            raise ValueError("the account has no email address; on the server, "
                             "`tinypds account email-token reset-password` prints a code")
        await account_life(request).request_password_reset(account.email)
        return "A code is on its way to your email (or: `tinypds account email-token reset-password` on the server)."
    return await _run(request, act, "password")


# ---- email ----------------------------------------------------------------------------------------------


@post("/account/email/send", status_code=303)
async def email_send(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        life = account_life(request)
        if fields.get("purpose") == "update":
            needed = await life.request_email_update(session.did)
            return ("A code to approve the change was sent to your current address."
                    if needed else "Your address is not confirmed yet: change it without a code.")
        await life.request_email_confirmation(session.did)
        return "A confirmation code was sent to your address (or: `tinypds account email-token confirm-email`)."
    return await _run(request, act, "email")


@post("/account/email/confirm", status_code=303)
async def email_confirm(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        account = services(request).account
        await account_life(request).confirm_email(session.did, account.email or "", (fields.get("token") or "").strip())
        return "Email confirmed."
    return await _run(request, act, "email")


@post("/account/email/change", status_code=303)
async def email_change(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        await account_life(request).update_email(session.did, fields.get("email") or "",
                                                  (fields.get("token") or "").strip() or None)
        return "Email changed; confirm the new address."
    return await _run(request, act, "email")


# ---- the account's life -----------------------------------------------------------------------------------


@post("/account/deactivate", status_code=303)
async def deactivate(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        _confirmed(fields, request)
        await account_life(request).deactivate(session.did)
        return "The account is deactivated: apps cannot write to it and the network sees it as inactive."
    return await _run(request, act, "life")


@post("/account/activate", status_code=303)
async def activate(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        await account_life(request).activate(session.did)
        return "The account is active again."
    return await _run(request, act, "life")


@post("/account/delete/token", status_code=303)
async def delete_token(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        await account_life(request).request_delete(session.did)
        return "A deletion code was sent (or: `tinypds account email-token delete-account` on the server)."
    return await _run(request, act, "life")


@post("/account/delete", status_code=200)
async def delete(request: Request) -> Any:
    try:
        sid, session, fields = await signed_in(request)
    except PageRefused as exc:
        return refused(request, exc)
    try:
        _confirmed(fields, request)
        await account_life(request).delete(session.did, fields.get("password") or "", (fields.get("token") or "").strip(),
                                           client_ip(request))
    except Exception as exc:  # noqa: BLE001  (XrpcError / ValueError: shown on the page, never a 500)
        session.flash.append(("error", getattr(exc, "message", None) or str(exc)))
        from .common import redirect

        return redirect("/account#life")
    page_sessions(request).end_all(session.did)
    return render(request, "error.html", {"title": "Account deleted",
                                          "message": "The account and its data were deleted from this server."},
                  cookies=[session_cookie(request, "", clear=True)])


ROUTES: list = [password_change, password_token, email_send, email_confirm, email_change, deactivate, activate,
                delete_token, delete]
