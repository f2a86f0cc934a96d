"""com.atproto.sync.*: getBlob, listBlobs, getLatestCommit, getRepoStatus, getRepo.

Public (no auth): relays and AppViews read these. Blobs and repo CARs are streamed, never
held whole in memory. getBlob sends the stored content type with headers that stop a
browser from running it. Never imports tinypds.store.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Stream

from ..core.syntax import InvalidSyntax, parse_did
from ..errors import InvalidRequest, RepoNotFound
from ..services import repo_io
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
    blobs = services(request).extra.get("blobs")
    if blobs is None:
        raise RepoNotFound(f"Could not find repo for DID: {did}")
    mime, size, chunks = await blobs.open_blob(cid, did=did)
    headers = {**BLOB_HEADERS, "Content-Length": str(size)}
    return Stream(chunks, media_type=mime, headers=headers)


@get(NS + "listBlobs")
async def list_blobs(request: Request) -> dict:
    did = _did(request)
    _account_for(request, did)
    limit = query_int(request, "limit", 500, 1, 1000)
    cids, cursor = await services(request).extra["blobs"].list_blobs(
        query_str(request, "since"), query_str(request, "cursor"), limit
    )
    out: dict[str, Any] = {"cids": cids}
    if cursor:
        out["cursor"] = cursor
    return out


@get(NS + "getLatestCommit")
async def get_latest_commit(request: Request) -> dict:
    svc = _account_for(request, _did(request))
    root = svc.repo.get_root()
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
    svc = _account_for(request, _did(request))
    if query_str(request, "since"):
        raise InvalidRequest("getRepo with `since` is not supported yet; fetch the whole repo")
    return Stream(repo_io.aiter_export(svc.db), media_type="application/vnd.ipld.car")


ROUTES = [get_blob, list_blobs, get_latest_commit, get_repo_status, get_repo]
