"""The buttons of /account: second factors, sessions, connected apps, app passwords, handle, backups.

Each action is a POST with the page session's CSRF token; it does one thing through a service,
leaves a message for the next page view, and redirects back (303) to its section. Secrets made
here (app passwords, recovery codes, a TOTP secret being enrolled) are shown once. Backups stream.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from litestar import Request, get, post
from litestar.response import Response, Stream, Template

from ..errors import XrpcError
from ..services.account import page as account_page
from ..services.auth.twofactor import TwoFactorError
from .account import _ctx, oauth_service
from .common import PageRefused, current, page_sessions, redirect, refused, services, signed_in, twofactor

Action = Callable[[Request, Any, dict[str, str]], Awaitable[str | None]]


async def _run(request: Request, fn: Action, anchor: str) -> Response | Template:
    """Check session + CSRF, run `fn`, flash its message (or the error), redirect to #anchor."""
    try:
        _, session, fields = await signed_in(request)
    except PageRefused as exc:
        return refused(request, exc)
    try:
        message = await fn(request, session, fields)
        if message:
            session.flash.append(("ok", message))
    except (XrpcError, TwoFactorError, ValueError) as exc:
        session.flash.append(("error", getattr(exc, "message", None) or str(exc)))
    return redirect(f"/account#{anchor}")


# ---- second factors ----------------------------------------------------------------------------


@post("/account/2fa/totp/begin", status_code=303)
async def totp_begin(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> None:
        account = services(request).account
        session.shown_once["enrol"] = await twofactor(request).totp_begin(account.did, account.handle or account.did)
    return await _run(request, act, "security")


@post("/account/2fa/totp/confirm", status_code=303)
async def totp_confirm(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        try:
            codes = await twofactor(request).totp_confirm(session.did, fields.get("code") or "")
        except TwoFactorError:
            session.shown_once["enrol"] = None  # start again for a new secret
            raise
        if codes:
            session.shown_once["codes"] = codes
        return "The authenticator app is on: sign-ins with the password now ask for its code."
    return await _run(request, act, "security")


@post("/account/2fa/totp/remove", status_code=303)
async def totp_remove(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        await twofactor(request).totp_remove(session.did)
        return "The authenticator app was removed."
    return await _run(request, act, "security")


@post("/account/2fa/recovery", status_code=303)
async def recovery_new(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        if not twofactor(request).required(session.did):
            raise ValueError("turn on a second factor first")
        session.shown_once["codes"] = await twofactor(request).new_recovery_codes(session.did)
        return "New recovery codes made; the old ones no longer work."
    return await _run(request, act, "security")


@post("/account/2fa/passkey/options", status_code=200)
async def passkey_options(request: Request) -> Response:
    try:
        _, session, _ = await signed_in(request)
    except PageRefused as exc:
        return Response({"error": exc.message}, status_code=exc.status)
    account = services(request).account
    ceremony, options = twofactor(request).passkey_register_options(session.did, account.handle or account.did)
    return Response({"ceremony": ceremony, "options": json.loads(options)}, headers={"Cache-Control": "no-store"})


@post("/account/2fa/passkey/add", status_code=303)
async def passkey_add(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        codes = await twofactor(request).passkey_register(session.did, fields.get("ceremony") or "",
                                                          fields.get("credential") or "", fields.get("name") or "")
        if codes:
            session.shown_once["codes"] = codes
        return "Passkey added: sign-ins with the password now ask for it (or a code)."
    return await _run(request, act, "security")


@post("/account/2fa/passkey/remove", status_code=303)
async def passkey_remove(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        if not await twofactor(request).passkey_remove(session.did, fields.get("id") or ""):
            raise ValueError("no such passkey")
        return "Passkey removed."
    return await _run(request, act, "security")


# ---- sessions, apps, app passwords ---------------------------------------------------------------


@post("/account/sessions/revoke", status_code=303)
async def session_revoke(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        target = fields.get("id") or ""
        if target.startswith("page:"):
            if not page_sessions(request).end_handle(session.did, target[5:]):
                raise ValueError("that session had already ended")
            return "Signed out that browser."
        if not await services(request).auth.revoke_session(session.did, target):
            raise ValueError("that session had already ended")
        return "Signed out that session."
    return await _run(request, act, "sessions")


@post("/account/apps/revoke", status_code=303)
async def app_revoke(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        client_id = fields.get("client_id") or ""
        if not client_id or not await oauth_service(request).revoke_app(session.did, client_id):
            raise ValueError("that app was not connected")
        return "The app's access was revoked."
    return await _run(request, act, "sessions")


@post("/account/app-passwords/create", status_code=303)
async def app_password_create(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> None:
        created = await services(request).auth.create_app_password(_ctx(session.did), fields.get("name") or "",
                                                                   fields.get("privileged") == "1")
        session.shown_once["app_password"] = created
    return await _run(request, act, "app-passwords")


@post("/account/app-passwords/revoke", status_code=303)
async def app_password_revoke(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        await services(request).auth.revoke_app_password(_ctx(session.did), fields.get("name") or "")
        return "App password revoked; apps signed in with it are signed out."
    return await _run(request, act, "app-passwords")


# ---- handle --------------------------------------------------------------------------------------------


@post("/account/handle", status_code=303)
async def handle_change(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str | None:
        svc = services(request)
        handle = (fields.get("handle") or "").strip().lower().lstrip("@")
        ok, message = await account_page.check_handle(svc.identity, session.did, handle)
        if fields.get("step") != "change" or not ok:
            session.shown_once["handle_check"] = {"handle": handle, "ok": ok, "message": message}
            return None
        await svc.identity.update_handle(session.did, handle)
        svc.attach_account()
        account_page.forget_figures()
        return f"Your handle is now @{handle}."
    return await _run(request, act, "handle")


# ---- backups ---------------------------------------------------------------------------------------------


def _session_or_none(request: Request) -> Any:
    _, session = current(request)
    account = services(request).account
    if session is None or not session.signed_in or account is None or session.did != account.did:
        return None
    return session


@get("/account/backup/repo.car", media_type="application/vnd.ipld.car")
async def backup_car(request: Request) -> Any:
    """The repo as CAR, streamed (a GET link: reading needs the session cookie, which is SameSite=Strict)."""
    if _session_or_none(request) is None:
        return refused(request, PageRefused("Sign in first", 401))
    from ..services.repo.export import aiter_export

    svc = services(request)
    name = (svc.account.handle or "repo").replace("/", "_") + ".car"
    return Stream(aiter_export(svc.db), media_type="application/vnd.ipld.car",
                  headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
                           "X-Content-Type-Options": "nosniff"})


@post("/account/backup/sealed", status_code=200, media_type="application/vnd.sqlite3")
async def backup_sealed(request: Request) -> Any:
    """The whole database in one file with the keys sealed under the passphrase (tinypds backup --with-keys)."""
    try:
        _, session, fields = await signed_in(request)
    except PageRefused as exc:
        return refused(request, exc)
    passphrase = fields.get("passphrase") or ""
    if len(passphrase) < 8:
        session.flash.append(("error", "The passphrase needs at least 8 characters"))
        return redirect("/account#backups")
    svc = services(request)
    from ..services.ops import data_dir as ops

    tmpdir = Path(tempfile.mkdtemp(prefix=".backup-", dir=svc.settings.data_dir))
    dest = tmpdir / "tinypds-backup.sqlite"
    try:
        await asyncio.to_thread(ops.backup, svc.settings, dest, keys=svc.keys, passphrase=passphrase)
    except Exception as exc:  # noqa: BLE001  (OpsError, KeyStoreError: shown, not a 500)
        _cleanup(dest)
        session.flash.append(("error", f"The backup failed: {exc}"))
        return redirect("/account#backups")
    size = dest.stat().st_size
    return Stream(_stream_and_delete(dest), media_type="application/vnd.sqlite3",
                  headers={"Content-Disposition": 'attachment; filename="tinypds-backup.sqlite"',
                           "Content-Length": str(size), "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _cleanup(path: Path) -> None:
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm")):
        p.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


async def _stream_and_delete(path: Path, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            data = await asyncio.to_thread(f.read, chunk)
            if not data:
                break
            yield data
    finally:
        f.close()
        _cleanup(path)


ROUTES: list = [totp_begin, totp_confirm, totp_remove, recovery_new, passkey_options, passkey_add, passkey_remove,
                session_revoke, app_revoke, app_password_create, app_password_revoke, handle_change,
                backup_car, backup_sealed]
