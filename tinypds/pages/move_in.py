"""Move an account in from another PDS, on a server with no account yet (as `tinypds migrate in`).

Shown on /account while the database holds no account. Guarded by the server's invite code
(`tinypds invite`), which only the shell owner can print; the browser that started the move
holds a random job cookie, and only it sees the progress and can hand over the PLC token the
old PDS emails. The flow is services.migration.client.Migration (resumable, state file in the
data directory), run in the background; it waits for the token on a future.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Any

from litestar import Request, post
from litestar.datastructures import Cookie
from litestar.response import Template

from ..services.migration.service import invite_ok
from .common import PRE_COOKIE, PageRefused, check_csrf, form, pre_cookie, redirect, refused, render, services

log = logging.getLogger("tinypds.pages.move_in")
JOB_COOKIE = "tinypds-move-in"


def _job(request: Request) -> dict | None:
    j = getattr(request.app.state, "move_in_job", None)
    if j is None:
        return None
    cookie = request.cookies.get(JOB_COOKIE) or ""
    return j if hmac.compare_digest(cookie.encode(), j["secret"].encode()) else None


def showing(request: Request) -> bool:
    """Does this browser follow a move in? (then /account shows its progress, even once the
    account row exists: createAccount makes it early, deactivated, while the data copies)."""
    j = _job(request)
    if j is None:
        return False
    if j["state"] == "done":
        if j.get("done_shown"):
            return False
        j["done_shown"] = True
    return True


def _may_start(svc: Any, request: Request) -> bool:
    """No account yet; or this browser's earlier move in stopped after creating it (then a new
    attempt continues it)."""
    if svc.account is None:
        return True
    j = _job(request)
    return j is not None and j["state"] == "failed" and svc.account.status == "deactivated"


def view(request: Request, error: str | None = None, status: int = 200) -> Template:
    token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
    j = _job(request)
    shown = None
    if j is not None:
        shown = {k: j[k] for k in ("state", "phase", "done", "total", "message", "lines", "identifier", "source")}
        shown["waiting"] = j["future"] is not None and not j["future"].done()
    return render(request, "move_in.html", {"csrf": token, "job": shown, "error": error}, status=status,
                  cookies=[pre_cookie(request, token)])


async def _run(svc: Any, j: dict, old_url: str, identifier: str, password: str, handle: str | None, invite: str) -> None:
    from ..services.migration.client import Migration, XrpcClient

    old, new = XrpcClient(old_url), XrpcClient(svc.settings.public_url)
    migration = None
    try:
        session = await old.login(identifier, password)

        def progress(phase: str, done: int, total: int | None) -> None:
            j.update(phase=phase, done=done, total=total)

        async def plc_token(did: str) -> str:
            j["future"] = asyncio.get_running_loop().create_future()
            j["phase"] = "waiting for the code your old PDS emailed"
            return await asyncio.wait_for(j["future"], 3600)

        migration = Migration(old, new, plc_url=svc.settings.plc_url, handle=handle or session["handle"], password=password,
                              email=session.get("email"), invite_code=invite, get_plc_token=plc_token,
                              workdir=svc.settings.data_dir, progress=progress)
        report = await migration.run()
        j.update(state="done", phase="finished", message="The account lives here now: sign in on /account.",
                 lines=[f"records: {report.records}", f"blobs: {report.blobs_total}", *report.checks])
        svc.attach_account()
    except Exception as exc:  # noqa: BLE001  (shown on the page; a new attempt continues)
        log.warning("moving %s in stopped: %s", identifier, exc)
        j.update(state="failed", message=f"The move stopped: {getattr(exc, 'message', None) or exc}. Start it again to continue.")
    finally:
        if migration is not None:
            await migration.aclose()
        await old.aclose()
        await new.aclose()


@post("/account/move/in", status_code=303)
async def move_in(request: Request) -> Any:
    svc = services(request)
    if not _may_start(svc, request):
        return refused(request, PageRefused("This server already holds its account", 403))
    fields = await form(request)
    try:
        check_csrf(request, fields, request.cookies.get(PRE_COOKIE))
    except PageRefused as exc:
        return view(request, exc.message, 403)
    current = getattr(request.app.state, "move_in_job", None)
    if current is not None and current["state"] == "running":
        return view(request, "A move is already running", 409)
    invite = (fields.get("invite_code") or "").strip()
    if not invite_ok(svc.db, svc.settings.service_did, invite):
        return view(request, "That is not this server's invite code (run `tinypds invite` on the server)", 403)
    old_url = (fields.get("old_url") or "").strip().rstrip("/")
    if not old_url.startswith(("https://", "http://")):
        return view(request, "The current PDS's address must start with https://", 400)
    secret = secrets.token_urlsafe(24)
    j = {"state": "running", "phase": "signing in", "done": 0, "total": None, "message": "", "lines": [],
         "identifier": (fields.get("identifier") or "").strip(), "source": old_url, "secret": secret, "future": None}
    request.app.state.move_in_job = j
    j["task"] = asyncio.get_running_loop().create_task(
        _run(svc, j, old_url, j["identifier"], fields.get("password") or "", (fields.get("handle") or "").strip() or None, invite))
    cookie = Cookie(key=JOB_COOKIE, value=secret, path="/account", httponly=True, samesite="strict",
                    secure=str(svc.settings.public_url).startswith("https:"))
    return redirect("/account", cookies=[cookie])


@post("/account/move/in/token", status_code=303)
async def move_in_token(request: Request) -> Any:
    fields = await form(request)
    try:
        check_csrf(request, fields, request.cookies.get(PRE_COOKIE))
    except PageRefused as exc:
        return view(request, exc.message, 403)
    j = _job(request)
    if j is None or j["future"] is None or j["future"].done():
        return view(request, "No move is waiting for a code", 409)
    j["future"].set_result((fields.get("token") or "").strip())
    j["phase"] = "updating the DID"
    return redirect("/account")


ROUTES: list = [move_in, move_in_token]
