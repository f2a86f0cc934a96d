"""Move the account to another PDS from /account: the same flow as `tinypds migrate out`
(services.migration.client.Migration), run as a background task with its progress shown.

The page signs in to this server for the flow (a session issued to the page's signed-in owner,
so a second factor already passed is not asked again) and to the new PDS with the password
given here (the new account gets it). The PLC token is minted locally (we hold the rotation
key). Resumable like the CLI: the state file in the data directory remembers each step, and
running it again continues. One move at a time; progress lives in memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from litestar import Request, post

from .actions import _run
from .common import services

log = logging.getLogger("tinypds.pages.move")


def job(request: Request) -> dict | None:
    return getattr(request.app.state, "move_job", None)


def job_view(request: Request) -> dict | None:
    j = job(request)
    if j is None:
        return None
    return {k: j[k] for k in ("state", "phase", "done", "total", "message", "to", "lines")}


async def _move(svc: Any, j: dict, new_url: str, handle: str, email: str, invite: str | None, password: str) -> None:
    from ..services.migration.client import Migration, XrpcClient
    from ..services.identity.plc import PlcService

    account = svc.account
    old, new = XrpcClient(svc.settings.public_url), XrpcClient(new_url)
    migration = None
    try:
        tokens = await svc.auth.issue_session(account.did)
        old.session = {"did": account.did, "handle": account.handle, **tokens}

        def progress(phase: str, done: int, total: int | None) -> None:
            j.update(phase=phase, done=done, total=total)

        async def plc_token(did: str) -> str:
            return await PlcService(svc.db).mint_token(did)

        migration = Migration(old, new, plc_url=svc.settings.plc_url, handle=handle, password=password, email=email or None,
                              invite_code=invite, get_plc_token=plc_token, workdir=svc.settings.data_dir, progress=progress)
        report = await migration.run()
        j.update(state="done", phase="finished", message=f"Moved to {new_url}.",
                 lines=[f"records: {report.records}", f"blobs: {report.blobs_total} ({report.blob_bytes:,} bytes)",
                        f"preferences: {report.preferences}", f"PLC: {report.plc_change}", *report.checks])
        svc.attach_account()
    except Exception as exc:  # noqa: BLE001  (shown on the page; running it again continues)
        log.warning("account move to %s stopped: %s", new_url, exc)
        j.update(state="failed", message=f"The move stopped: {getattr(exc, 'message', None) or exc}. "
                                         "Fix the cause and start it again: it continues where it stopped.")
    finally:
        if migration is not None:
            await migration.aclose()
        await old.aclose()
        await new.aclose()


@post("/account/move/out", status_code=303)
async def move_out(request: Request) -> Any:
    async def act(request: Request, session: Any, fields: dict) -> str:
        current = job(request)
        if current is not None and current["state"] == "running":
            raise ValueError("a move is already running")
        svc = services(request)
        account = svc.account
        if (fields.get("confirm") or "").strip().lstrip("@").lower() != (account.handle or account.did).lower():
            raise ValueError("type your handle to confirm")
        new_url = (fields.get("new_url") or "").strip().rstrip("/")
        if not new_url.startswith(("https://", "http://")):
            raise ValueError("the new PDS's address must start with https://")
        password = fields.get("password") or ""
        await svc.auth.check_password(account.did, password, request.client.host if request.client else "unknown")
        handle = (fields.get("handle") or "").strip().lstrip("@") or (account.handle or "")
        j = {"state": "running", "phase": "starting", "done": 0, "total": None, "message": "", "to": new_url,
             "lines": [], "started": time.time()}
        request.app.state.move_job = j
        j["task"] = asyncio.get_running_loop().create_task(
            _move(svc, j, new_url, handle, (fields.get("email") or "").strip() or (account.email or ""),
                  (fields.get("invite_code") or "").strip() or None, password))
        return f"Moving to {new_url}: the progress shows below."
    return await _run(request, act, "move")


ROUTES: list = [move_out]
