"""com.atproto.sync.*: getBlob, listBlobs, getLatestCommit, getRepoStatus, getRepo, getRecord,
getBlocks, listRepos and the subscribeRepos websocket (the firehose).

Public (no auth): relays and AppViews read these. Blobs and repo CARs are streamed, never
held whole in memory. getBlob sends the stored content type with headers that stop a
browser from running it. Never imports tinypds.store.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, WebSocket, get, websocket
from litestar.exceptions import WebSocketDisconnect

from ..core.cid import CID
from ..core.events import error_frame
from ..core.syntax import InvalidSyntax, parse_did, parse_nsid, parse_rkey, parse_tid
from ..errors import InvalidRequest, RepoNotFound
from ..services.repo import car_io as repo_io
from .streams import Stream
from .routing import query_int, query_str, services

NS = "/xrpc/com.atproto.sync."

BLOB_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=31536000, immutable",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def _did(request: Request) -> str:
    raw = query_str(request, "did", required=True)
    try:
        return parse_did(raw)
    except InvalidSyntax:
        raise InvalidRequest(f"Invalid did: {raw[:300]}") from None


def _account_for(request: Request, did: str) -> Any:
    svc = services(request)
    account = svc.account
    if account is None or account.did != did or svc.repo is None:
        raise RepoNotFound(f"Could not find repo for DID: {did}")
    return svc


def _status_fields(account: Any) -> dict:
    out: dict[str, Any] = {"active": account.status == "active"}
    if account.status != "active":
        out["status"] = {"offline-copy": "deactivated"}.get(account.status, account.status)
    return out


@get(NS + "getBlob")
async def get_blob(request: Request) -> Stream:
    did = _did(request)
    cid = query_str(request, "cid", required=True)
    blobs = services(request).blobs
    if blobs is None:
        raise RepoNotFound(f"Could not find repo for DID: {did}")
    mime, size, chunks = await blobs.open_blob(cid, did=did)
    headers = {**BLOB_HEADERS, "Content-Length": str(size)}
    return Stream(chunks, media_type=mime, headers=headers)


@get(NS + "listBlobs")
async def list_blobs(request: Request) -> dict:
    did = _did(request)
    _account_for(request, did)
    await _available(request, did)
    limit = query_int(request, "limit", 500, 1, 1000)
    cids, cursor = await services(request).blobs.list_blobs(
        query_str(request, "since"), query_str(request, "cursor"), limit
    )
    out: dict[str, Any] = {"cids": cids}
    if cursor:
        out["cursor"] = cursor
    return out


async def _available(request: Request, did: str) -> Any:
    """The repo root when `did` is hosted here and servable (RepoDeactivated/RepoTakendown/... otherwise)."""
    sync = services(request).sync
    if sync is None:
        _account_for(request, did)
        return services(request).repo.get_root()
    return await sync.check_available(did)


@get(NS + "getLatestCommit")
async def get_latest_commit(request: Request) -> dict:
    svc = _account_for(request, _did(request))
    root = await _available(request, svc.account.did)
    if root is None:
        raise RepoNotFound("Could not find root for DID")
    return {"cid": str(root.commit_cid), "rev": root.rev}


@get(NS + "getRepoStatus")
async def get_repo_status(request: Request) -> dict:
    svc = _account_for(request, _did(request))
    out = {"did": svc.account.did, **_status_fields(svc.account)}
    root = svc.repo.get_root()
    if root is not None and out["active"]:
        out["rev"] = root.rev
    return out


@get(NS + "getRepo")
async def get_repo(request: Request) -> Stream:
    did = _did(request)
    since = query_str(request, "since")
    if since is not None:
        try:
            since = parse_tid(since)
        except InvalidSyntax:
            raise InvalidRequest(f"Invalid since: {since[:100]}") from None
    sync = services(request).sync
    if sync is None:
        svc = _account_for(request, did)
        return Stream(repo_io.aiter_export(svc.db), media_type=CAR)
    if since is None:  # the whole repo in key order (commit, then a depth-first walk of the tree)
        await sync.check_available(did)  # errors (RepoDeactivated, ...) before the first byte
        return Stream(repo_io.aiter_export(services(request).db), media_type=CAR)
    return Stream(await sync.repo_car(did, since), media_type=CAR)


CAR = "application/vnd.ipld.car"


def _sync(request: Request) -> Any:
    sync = services(request).sync
    if sync is None:
        raise RepoNotFound("This server has no repository yet")
    return sync


@get(NS + "getRecord")
async def get_record(request: Request) -> Response:
    """A CAR proof (commit, MST path and neighbours, record): also proves absence."""
    did = _did(request)
    try:
        collection = parse_nsid(query_str(request, "collection", required=True))
        rkey = parse_rkey(query_str(request, "rkey", required=True))
    except InvalidSyntax as exc:
        raise InvalidRequest(str(exc)) from None
    car, _cid = await _sync(request).record_proof(did, collection, rkey)
    return Response(car, media_type=CAR)


@get(NS + "getBlocks")
async def get_blocks(request: Request) -> Response:
    did = _did(request)
    raw = request.query_params.getall("cids", [])
    if not raw:
        raise InvalidRequest('Error: Params must have the property "cids"')
    try:
        cids = [CID.parse(c) for c in raw]
    except ValueError:
        raise InvalidRequest("Invalid cid in cids") from None
    return Response(await _sync(request).blocks_car(did, cids), media_type=CAR)


@get(NS + "listRepos")
async def list_repos(request: Request) -> dict:
    limit = query_int(request, "limit", 500, 1, 1000)
    sync = services(request).sync
    if sync is None:
        return {"repos": []}
    repos, cursor = await sync.list_repos(limit, query_str(request, "cursor"))
    out: dict[str, Any] = {"repos": repos}
    if cursor:
        out["cursor"] = cursor
    return out


async def _until_disconnect(socket: WebSocket) -> None:
    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, OSError):
        return


# how a subscription that the server ended is closed: 1001 (Going Away) at shutdown, so that
# consumers reconnect (Bluesky's firehose client treats 1000 as "stream finished" and never
# re-dials); 1008 (Policy Violation) after an error frame; 1013 (Try Again Later) when full
_CLOSE_CODES = {"GoingAway": 1001, "Shutdown": 1001, None: 1001}


@websocket(NS + "subscribeRepos")
async def subscribe_repos(socket: WebSocket) -> None:
    """The firehose: frames from the outbox until the consumer leaves or is cut off."""
    svc = services(socket)
    firehose = svc.firehose
    raw = socket.query_params.get("cursor")
    try:
        cursor = int(raw) if raw not in (None, "") else None
    except ValueError:
        cursor = -1
    await socket.accept()
    if firehose is not None and firehose.subscriber_count >= svc.settings.firehose_max_subscribers:
        await socket.send_bytes(error_frame("NotEnoughResources", "Too many firehose subscribers; try again later"))
        await _close(socket, 1013)
        return
    if firehose is None or cursor is not None and cursor < 0:
        error = ("InvalidRequest", "cursor must be a non-negative integer") if firehose else ("NotEnoughResources", "no firehose")
        await socket.send_bytes(error_frame(*error))
        await _close(socket, 1008)
        return
    serving = asyncio.create_task(firehose.serve(socket.send_bytes, cursor))
    leaving = asyncio.create_task(_until_disconnect(socket))
    try:
        await asyncio.wait({serving, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (serving, leaving):
            task.cancel()
        await asyncio.gather(serving, leaving, return_exceptions=True)
    if serving.done() and not serving.cancelled() and serving.exception() is None:
        reason = serving.result()
        await _close(socket, _CLOSE_CODES.get(reason, 1008))


async def _close(socket: WebSocket, code: int) -> None:
    try:
        await asyncio.wait_for(socket.close(code=code), 5)
    except Exception:
        pass


ROUTES = [get_blob, list_blobs, get_latest_commit, get_repo_status, get_repo, get_record, get_blocks, list_repos,
          subscribe_repos]
