"""Account migration endpoints: server.createAccount (existing DID), activateAccount,
deactivateAccount, requestAccountDelete, deleteAccount; repo.importRepo, listMissingBlobs.

One function per NSID, delegating to services.migration.MigrationService (built on first
use, kept in `services.migration`). Never imports tinypds.store. Tricky bits:
createAccount's credential is the old PDS's service-auth token, not a session; after any
account change the app's cached account row is re-read (`services.attach_account()`).
"""

from __future__ import annotations

from typing import Any

from ..errors import AuthenticationRequired, InvalidRequest, NotEnoughResources
from ..services.migration.service import MigrationService
from ..services.auth.oauth.scopes import AccountAccess
from litestar import Request, get
from .routing import access_auth, body_chunks, body_str, client_ip, json_body, post, query_int, query_str, services
from .server import account_life, no_body
from ..core.syntax import InvalidSyntax, parse_datetime

SERVER = "/xrpc/com.atproto.server."
REPO = "/xrpc/com.atproto.repo."


def _migration(request: Request) -> MigrationService:
    svc = services(request)
    found = svc.migration
    if found is None:
        if svc.auth is None or svc.identity is None:
            raise NotEnoughResources("Account migration needs the identity and auth services")
        found = svc.migration = MigrationService(
            svc.settings, svc.db, svc.keys, svc.identity, svc.auth,
            on_event=svc.notify_event, on_account_change=svc.attach_account)
    return found


def _service_auth(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationRequired("Unexpected authorization type")
    return token.strip()


@post(SERVER + "createAccount", status_code=200)
async def create_account(request: Request) -> dict:
    body = await json_body(request)
    migration = _migration(request)
    account = await migration.create_account(
        did=body_str(body, "did", required=False, max_len=2048),
        handle=body_str(body, "handle", max_len=300),
        password=body_str(body, "password", required=False, max_len=1024),
        email=body_str(body, "email", required=False, max_len=500),
        invite_code=body_str(body, "inviteCode", required=False, max_len=200),
        service_auth=_service_auth(request),
    )
    _, tokens = await migration.auth.create_session(account["did"], body["password"], "createAccount")
    return {**tokens, "handle": account["handle"], "did": account["did"], "didDoc": account["didDoc"]}


# the account's life for its owner (and for a move's end): services.account.life, via xrpc/server.py


@post(SERVER + "activateAccount", status_code=200)
async def activate_account(request: Request) -> None:
    ctx = await access_auth(request, full=True, scope=AccountAccess("status", "manage"))
    no_body(request)
    await account_life(request).activate(ctx.did)


@post(SERVER + "deactivateAccount", status_code=200)
async def deactivate_account(request: Request) -> None:
    ctx = await access_auth(request, full=True, scope=AccountAccess("status", "manage"))
    body = await json_body(request, required=False)
    delete_after = body_str(body, "deleteAfter", required=False, max_len=64)
    if delete_after is not None:
        try:
            parse_datetime(delete_after)
        except InvalidSyntax:
            raise InvalidRequest("Input/deleteAfter must be a valid datetime") from None
    await account_life(request).deactivate(ctx.did, delete_after)


@post(SERVER + "requestAccountDelete", status_code=200)
async def request_account_delete(request: Request) -> None:
    ctx = await access_auth(request, full=True)
    no_body(request)
    await account_life(request).request_delete(ctx.did)


@post(SERVER + "deleteAccount", status_code=200)
async def delete_account(request: Request) -> None:
    body = await json_body(request)
    did = body_str(body, "did", max_len=2048)
    password = body_str(body, "password", max_len=1024)
    token = body_str(body, "token", max_len=100)
    await account_life(request).delete(did, password, token, client_ip(request))


@post(REPO + "importRepo", status_code=200, request_max_body_size=None)
async def import_repo(request: Request) -> None:
    ctx = await access_auth(request, full=True, scope=AccountAccess("repo", "manage"))
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype not in ("application/vnd.ipld.car", "application/octet-stream", ""):
        raise InvalidRequest(f"Wrong request encoding (Content-Type): {ctype}; expected application/vnd.ipld.car")
    await _migration(request).import_repo(ctx.did, body_chunks(request))


@get(REPO + "listMissingBlobs")
async def list_missing_blobs(request: Request) -> dict:
    await access_auth(request)
    blobs = services(request).blobs
    if blobs is None or services(request).account is None:
        raise InvalidRequest("This server has no account yet")
    limit = query_int(request, "limit", 500, 1, 1000)
    missing, cursor = await blobs.list_missing_blobs(query_str(request, "cursor"), limit)
    out: dict[str, Any] = {"blobs": missing}
    if cursor:
        out["cursor"] = cursor
    return out


ROUTES = [create_account, activate_account, deactivate_account, request_account_delete, delete_account,
          import_repo, list_missing_blobs]
