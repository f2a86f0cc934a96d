"""com.atproto.repo.*: record writes and reads, describeRepo, uploadBlob.

One function per NSID: check the request's shape and the `repo` identifier, then call
RecordService (identifier parsing, `validate` semantics, lexicon validation, swaps) or
BlobService. Never imports tinypds.store. Tricky bit: `swapRecord: null` on putRecord
means "must not exist yet" (absent means no check).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from ..core import dagcbor
from ..core.syntax import InvalidSyntax, parse_at_identifier
from ..errors import AccountNotFound, AuthenticationRequired, InvalidRequest, RepoDeactivated, RepoNotFound, RepoReadOnly
from ..services.auth.service import is_service_jwt
from ..services.auth.oauth.scopes import BlobUpload, RepoWrite
from ..services.repo.records import MAX_WRITES, MUST_NOT_EXIST, WriteOp
from .routing import access_auth, body_bool, body_chunks, body_str, json_body, post, query_int, query_str, services

NS = "/xrpc/com.atproto.repo."


# ---- edge parsing --------------------------------------------------------------------


def _account(request: Request) -> Any:
    svc = services(request)
    if svc.records is None or svc.account is None:
        raise RepoNotFound("This server has no repository yet")
    return svc


def _writable(request: Request) -> None:
    """Before auth: an offline copy (a repo imported without its keys) takes no writes."""
    account = services(request).account
    if account is not None and account.status == "offline-copy":
        raise RepoReadOnly(f"This server holds a read-only offline copy of {account.did} "
                           "(imported without its signing key): it serves reads but cannot be written to")


def _records(request: Request, ident: Any, ctx: Any = None) -> Any:
    """The RecordService when `ident` (DID or handle) names this server's account.

    With `ctx` (a write), the caller must also be that account."""
    try:
        ident = parse_at_identifier(ident)
    except InvalidSyntax:
        raise InvalidRequest(f"Invalid repo: {str(ident)[:300]}") from None
    svc = _account(request)
    account = svc.account
    mine = ident == account.did or ident.lower() == (account.handle or "").lower()
    if ctx is not None and (not mine or ctx.did != account.did):
        err = AccountNotFound("Account not found")  # the reference PDS's answer: 403 AccountNotFound
        err.status = 403
        raise err
    if not mine:
        raise RepoNotFound(f"Could not find repo: {ident}")
    if ctx is not None and account.status != "active":
        raise RepoDeactivated(f"Account is {account.status}; it cannot be written to")
    if ctx is not None and svc.ratelimit is not None:
        svc.ratelimit.acquire()  # relay-safe commit budget: RateLimitExceeded (429) with ratelimit-* headers
    return svc.records


def _validate_flag(body: dict) -> bool | None:
    return body_bool(body, "validate")


def _record_value(body: dict) -> Any:
    if "record" not in body:
        raise InvalidRequest('Input must have the property "record"')
    return body["record"]


def _write_result(outcome: Any) -> dict:
    r = outcome.results[0]
    out: dict[str, Any] = {"uri": r.uri, "cid": r.cid}
    if outcome.commit_cid is not None:  # an unchanged putRecord makes no commit
        out["commit"] = outcome.commit_meta()
    if r.validation_status:
        out["validationStatus"] = r.validation_status
    return out


# ---- writes ----------------------------------------------------------------------------


@post(NS + "createRecord", status_code=200)
async def create_record(request: Request) -> dict:
    _writable(request)
    ctx = await access_auth(request)
    body = await json_body(request)
    ctx.require(RepoWrite(str(body.get("collection")), "create"))
    records = _records(request, body_str(body, "repo"), ctx)
    outcome = await records.create(
        body_str(body, "collection"),
        _record_value(body),
        rkey=body_str(body, "rkey", required=False, max_len=512),
        validate=_validate_flag(body),
        swap_commit=body_str(body, "swapCommit", required=False),
    )
    return _write_result(outcome)


@post(NS + "putRecord", status_code=200)
async def put_record(request: Request) -> dict:
    _writable(request)
    ctx = await access_auth(request)
    body = await json_body(request)
    for action in ("create", "update"):  # a put may do either
        ctx.require(RepoWrite(str(body.get("collection")), action))
    records = _records(request, body_str(body, "repo"), ctx)
    swap: Any = None
    if "swapRecord" in body:  # present and null: the record must not exist yet
        swap = MUST_NOT_EXIST if body["swapRecord"] is None else body_str(body, "swapRecord")
    outcome = await records.put(
        body_str(body, "collection"),
        body_str(body, "rkey", max_len=512),
        _record_value(body),
        validate=_validate_flag(body),
        swap_record=swap,
        swap_commit=body_str(body, "swapCommit", required=False),
    )
    return _write_result(outcome)


@post(NS + "deleteRecord", status_code=200)
async def delete_record(request: Request) -> dict:
    _writable(request)
    ctx = await access_auth(request)
    body = await json_body(request)
    ctx.require(RepoWrite(str(body.get("collection")), "delete"))
    records = _records(request, body_str(body, "repo"), ctx)
    outcome = await records.delete(
        body_str(body, "collection"),
        body_str(body, "rkey", max_len=512),
        swap_record=body_str(body, "swapRecord", required=False),
        swap_commit=body_str(body, "swapCommit", required=False),
    )
    meta = outcome.commit_meta()
    return {"commit": meta} if meta else {}


_WRITE_TYPES = {
    "com.atproto.repo.applyWrites#create": "create",
    "com.atproto.repo.applyWrites#update": "update",
    "com.atproto.repo.applyWrites#delete": "delete",
}


@post(NS + "applyWrites", status_code=200)
async def apply_writes(request: Request) -> dict:
    _writable(request)
    ctx = await access_auth(request)
    body = await json_body(request)
    records = _records(request, body_str(body, "repo"), ctx)
    raw_writes = body.get("writes")
    if not isinstance(raw_writes, list):
        raise InvalidRequest('Input must have the property "writes"')
    if len(raw_writes) > MAX_WRITES:
        raise InvalidRequest(f"Too many writes. Max: {MAX_WRITES}")
    ops = []
    for i, w in enumerate(raw_writes):
        if not isinstance(w, dict) or w.get("$type") not in _WRITE_TYPES:
            raise InvalidRequest(f"Input/writes/{i} must be a create, update or delete")
        rkey = w.get("rkey")
        if rkey is not None and not isinstance(rkey, str):
            raise InvalidRequest(f"Input/writes/{i}/rkey must be a string")
        ops.append(WriteOp(_WRITE_TYPES[w["$type"]], w.get("collection"), rkey, w.get("value")))
        ctx.require(RepoWrite(str(w.get("collection")), _WRITE_TYPES[w["$type"]]))
    outcome = await records.apply_writes(
        ops, validate=_validate_flag(body), swap_commit=body_str(body, "swapCommit", required=False)
    )
    results = []
    for r in outcome.results:
        if r.action == "delete":
            results.append({"$type": "com.atproto.repo.applyWrites#deleteResult"})
            continue
        item: dict[str, Any] = {"$type": f"com.atproto.repo.applyWrites#{r.action}Result", "uri": r.uri, "cid": r.cid}
        if r.validation_status:
            item["validationStatus"] = r.validation_status
        results.append(item)
    out: dict[str, Any] = {"results": results}
    if outcome.commit_cid is not None:  # an empty batch makes no commit
        out["commit"] = outcome.commit_meta()
    return out


# ---- reads -----------------------------------------------------------------------------


def _view(v: Any) -> dict:
    return {"uri": v.uri, "cid": str(v.cid), "value": dagcbor.to_json(v.value)}


@get(NS + "getRecord")
async def get_record(request: Request) -> dict:
    ident = query_str(request, "repo", required=True)
    collection = query_str(request, "collection", required=True)
    rkey = query_str(request, "rkey", required=True)
    cid = query_str(request, "cid")
    return _view(_records(request, ident).get_record(collection, rkey, cid))


@get(NS + "listRecords")
async def list_records(request: Request) -> dict:
    ident = query_str(request, "repo", required=True)
    collection = query_str(request, "collection", required=True)
    limit = query_int(request, "limit", 50, 1, 100)
    cursor = query_str(request, "cursor")
    reverse_raw = (query_str(request, "reverse") or "false").lower()
    if reverse_raw not in ("true", "false"):
        raise InvalidRequest("Error: reverse must be a boolean")
    records = _records(request, ident)
    views, next_cursor = records.list_records(collection, limit=limit, cursor=cursor, reverse=reverse_raw == "true")
    out: dict[str, Any] = {"records": [_view(v) for v in views]}
    if next_cursor:
        out["cursor"] = next_cursor
    return out


@get(NS + "describeRepo")
async def describe_repo(request: Request) -> dict:
    records = _records(request, query_str(request, "repo", required=True))
    account = services(request).account
    identity = services(request).identity
    did_doc, correct = None, False
    if identity is not None and account.status != "offline-copy":  # an offline copy has no identity or keys here
        try:
            did_doc, correct = identity.own_doc(), await identity.handle_is_correct()
        except InvalidRequest:  # no identity row yet (e.g. a dev account): a minimal doc, handle unverified
            did_doc, correct = None, False
    if did_doc is None:
        did_doc = _minimal_did_doc(request, account)
    return {
        "handle": account.handle or "handle.invalid",
        "did": account.did,
        "didDoc": did_doc,
        "collections": records.collections(),
        "handleIsCorrect": correct,
    }


def _minimal_did_doc(request: Request, account: Any) -> dict:
    doc: dict[str, Any] = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": account.did,
        "alsoKnownAs": [f"at://{account.handle}"] if account.handle else [],
    }
    if account.status != "offline-copy":  # a copy's account is hosted elsewhere: claim no service
        doc["service"] = [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                           "serviceEndpoint": services(request).settings.public_url}]
    return doc


async def _upload_auth(request: Request) -> Any:
    """uploadBlob alone also takes a user service-auth token the account minted for itself
    (getServiceAuth, lxm uploadBlob): how the video service uploads a processed video back."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    svc = services(request)
    if scheme.lower() == "bearer" and is_service_jwt(token.strip()):
        if svc.auth is None or svc.account is None or svc.identity is None:
            raise AuthenticationRequired("This server has no account yet")
        return svc.auth.verify_user_service_auth(token.strip(), did=svc.account.did, lxm=NS[len("/xrpc/"):] + "uploadBlob",
                                                 signing_key=svc.identity.signing_public_key)
    return await access_auth(request)


@post(NS + "uploadBlob", status_code=200, request_max_body_size=None)
async def upload_blob(request: Request) -> dict:
    _writable(request)
    ctx = await _upload_auth(request)
    ctx.require(BlobUpload((request.headers.get("content-type") or "application/octet-stream").split(";", 1)[0].strip().lower()))
    svc = _account(request)
    blobs = svc.blobs
    if blobs is None:
        raise InvalidRequest("Blob storage is not available")
    declared = request.headers.get("content-type")
    length = request.headers.get("content-length")
    expected = None
    if length is not None:
        try:
            expected = int(length)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header") from None
    meta = await blobs.upload(body_chunks(request), declared.split(";", 1)[0].strip() if declared else None, expected)
    return {"blob": meta.ref()}


ROUTES = [create_record, put_record, delete_record, apply_writes, get_record, list_records, describe_repo, upload_blob]
