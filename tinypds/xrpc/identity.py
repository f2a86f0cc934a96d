"""com.atproto.identity.*: resolve handles/DIDs/identities, updateHandle, PLC operations.

One function per NSID; each parses its input at the edge and calls the LocalIdentity
service (services.local_identity), kept in `services.identity`. Never imports
tinypds.store. Tricky bit: after a handle or DID change the app's cached account row
(`services.account`) is refreshed, so later requests see the new handle.
"""

from __future__ import annotations

from typing import Any

from ..core.syntax import InvalidSyntax, parse_at_identifier, parse_did, parse_handle
from ..errors import InvalidRequest, NotEnoughResources
from ..services.auth.oauth.scopes import IdentityChange
from litestar import Request, get
from .routing import access_auth, body_str, json_body, post, query_str, services

NS = "/xrpc/com.atproto.identity."


def identity_service(request: Request) -> Any:
    """The LocalIdentity service (built by the app at startup)."""
    svc = services(request)
    ident = svc.identity
    if ident is None:
        raise NotEnoughResources("The identity service is not available")
    return ident


def _refresh_account(request: Request, ident: Any) -> None:
    svc = services(request)
    if svc.account is not None:
        svc.account = ident.account()


def _parse(parse: Any, value: Any, name: str) -> str:
    try:
        return parse(value)
    except InvalidSyntax as exc:
        raise InvalidRequest(f"Invalid {name}: {exc}") from None


@get(NS + "resolveHandle")
async def resolve_handle(request: Request) -> dict:
    handle = _parse(parse_handle, query_str(request, "handle", required=True), "handle")
    return {"did": await identity_service(request).resolve_handle(handle)}


@get(NS + "resolveDid")
async def resolve_did(request: Request) -> dict:
    did = _parse(parse_did, query_str(request, "did", required=True), "did")
    return {"didDoc": await identity_service(request).resolve_did(did)}


@get(NS + "resolveIdentity")
async def resolve_identity(request: Request) -> dict:
    ident = _parse(parse_at_identifier, query_str(request, "identifier", required=True), "identifier")
    return await identity_service(request).resolve_identity(ident)


@post(NS + "refreshIdentity", status_code=200)
async def refresh_identity(request: Request) -> dict:
    body = await json_body(request)
    ident = _parse(parse_at_identifier, body_str(body, "identifier", max_len=2048), "identifier")
    return await identity_service(request).resolve_identity(ident, fresh=True)


@post(NS + "updateHandle", status_code=200)
async def update_handle(request: Request) -> None:
    ctx = await access_auth(request, scope=IdentityChange("handle"))
    body = await json_body(request)
    handle = body_str(body, "handle", max_len=300)
    ident = identity_service(request)
    await ident.update_handle(ctx.did, handle)
    _refresh_account(request, ident)


@get(NS + "getRecommendedDidCredentials")
async def get_recommended_did_credentials(request: Request) -> dict:
    ctx = await access_auth(request)
    return identity_service(request).recommended_credentials(ctx.did)


@post(NS + "requestPlcOperationSignature", status_code=200)
async def request_plc_operation_signature(request: Request) -> None:
    ctx = await access_auth(request, full=True, scope=IdentityChange("*"))
    await identity_service(request).request_plc_signature(ctx.did)


@post(NS + "signPlcOperation", status_code=200)
async def sign_plc_operation(request: Request) -> dict:
    ctx = await access_auth(request, full=True, scope=IdentityChange("*"))
    body = await json_body(request)
    token = body_str(body, "token", required=False, max_len=100)
    changes = {k: body.get(k) for k in ("rotationKeys", "alsoKnownAs", "verificationMethods", "services")}
    for name in ("rotationKeys", "alsoKnownAs"):
        if changes[name] is not None and not (isinstance(changes[name], list)
                                              and all(isinstance(x, str) for x in changes[name])):
            raise InvalidRequest(f"Input/{name} must be an array of strings")
    for name in ("verificationMethods", "services"):
        if changes[name] is not None and not isinstance(changes[name], dict):
            raise InvalidRequest(f"Input/{name} must be an object")
    op = await identity_service(request).sign_plc_operation(ctx.did, token, changes)
    return {"operation": op}


@post(NS + "submitPlcOperation", status_code=200)
async def submit_plc_operation(request: Request) -> None:
    ctx = await access_auth(request, full=True, scope=IdentityChange("*"))
    body = await json_body(request)
    if "operation" not in body:
        raise InvalidRequest('Input must have the property "operation"')
    ident = identity_service(request)
    await ident.submit_plc_operation(ctx.did, body["operation"])
    _refresh_account(request, ident)


ROUTES = [
    resolve_handle,
    resolve_did,
    resolve_identity,
    refresh_identity,
    update_handle,
    get_recommended_did_credentials,
    request_plc_operation_signature,
    sign_plc_operation,
    submit_plc_operation,
]
