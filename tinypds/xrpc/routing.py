"""XRPC plumbing shared by the handler modules: body/param parsing and auth lookup.

Owns turning raw HTTP input into checked Python values (JSON bodies with a size cap
and content-type check, query params) and fetching the request's AuthContext from the
auth service. Imports tinypds.web and services only (never store). Tricky bits: the body is
read with a byte cap before decoding, so an oversized JSON body never reaches memory
whole; every failure is an XrpcError subclass, so the one app-level handler renders it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..errors import AuthenticationRequired, Forbidden, InvalidRequest, PayloadTooLarge
from ..web import Request

_json_decoder = msgspec.json.Decoder()


def services(request: Request) -> Any:
    """The app's service container (set up by app.py's lifespan)."""
    return request.app.state.services


async def read_body_capped(request: Request, max_bytes: int) -> bytes:
    """The whole request body, refusing (413) anything over `max_bytes`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_bytes:
                raise PayloadTooLarge(f"Request body exceeds {max_bytes} bytes")
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header") from None
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"Request body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body; 400 InvalidRequest on wrong type or bad JSON."""
    ctype = request.headers.get("content-type", "")
    settings = request.app.state.settings
    raw = await read_body_capped(request, settings.max_request_bytes)
    if not raw:
        if required:
            raise InvalidRequest("Request body is required (application/json)")
        return {}
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise InvalidRequest(f"Wrong request encoding (Content-Type): {ctype or 'none'}; expected application/json")
    try:
        body = _json_decoder.decode(raw)
    except msgspec.DecodeError:
        raise InvalidRequest("Request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return body


def body_str(body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 10_000) -> str | None:
    """A string property of a JSON body (InvalidRequest naming the property otherwise)."""
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f'Input must have the property "{name}"')
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"Input/{name} must be a string")
    if len(value) > max_len:
        raise InvalidRequest(f"Input/{name} must not be longer than {max_len} characters")
    return value


def body_bool(body: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"Input/{name} must be a boolean")
    return value


def query_str(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f'Error: Params must have the property "{name}"')
        return None
    return value


def query_int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"Error: {name} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"Error: {name} must be between {lo} and {hi}")
    return value


def bearer_token(request: Request) -> str:
    """The Bearer token from Authorization, or AuthenticationRequired."""
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationRequired("Authentication Required")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationRequired("Unexpected authorization type")
    return token.strip()


async def access_auth(request: Request, *, privileged: bool = False, full: bool = False, scope: Any = None) -> Any:
    """AuthContext for an access token (account session, app password or OAuth DPoP token).

    `scope`: the services.oauth.scopes action an OAuth token must allow (then `full` and
    `privileged` do not refuse OAuth tokens); without it OAuth tokens may not call
    `full`/`privileged` methods.

    `privileged`: app passwords need the privileged flag. `full`: only a full
    account session (no app password) may call (password change, app passwords).
    """
    auth = services(request).auth
    if auth is None:
        raise AuthenticationRequired("Authentication is not available")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "dpop" and token.strip():  # an OAuth access token (xrpc/oauth.py)
        from .oauth import dpop_auth

        ctx = await dpop_auth(request, token.strip())
        if scope is not None:
            ctx.require(scope)
        elif full or privileged:
            raise Forbidden("This method is not available to OAuth apps")
        return ctx
    return await auth.verify_access(bearer_token(request), privileged=privileged, full=full)


async def refresh_auth(request: Request) -> Any:
    auth = services(request).auth
    if auth is None:
        raise AuthenticationRequired("Authentication is not available")
    return await auth.verify_refresh(bearer_token(request))


def client_ip(request: Request) -> str:
    client = request.client
    return client.host if client else "unknown"
