"""XRPC plumbing shared by the handler modules: body/param parsing and auth lookup.

Owns turning raw HTTP input into checked Python values (JSON bodies with a size cap, an
idle deadline and a content-type check, query params) and fetching the request's
AuthContext from the auth service. Imports Litestar and services only (never store).
Tricky bits: the body is read with a byte cap before decoding, so an oversized JSON body
never reaches memory whole, and a client that stops sending is dropped after
client_stall_seconds (it cannot hold a worker); deeply nested JSON is refused before any
recursive code sees it; every failure is an XrpcError, rendered by the one handler.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING, Any, AsyncIterator

import msgspec
from litestar import Request
from litestar import post as _litestar_post

from ..errors import AuthenticationRequired, Forbidden, InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from ..services.container import AppServices

_json_decoder = msgspec.json.Decoder()
MAX_JSON_DEPTH = 128  # lexicon data is shallow; recursion in validators and encoders stays bounded


class ClientDisconnected(Exception):
    """The client left (or stalled past the deadline) while sending its request body."""


def post(path: str, **options: Any) -> Any:
    """Litestar's @post answering 200, as XRPC procedures do (Litestar's default is 201)."""
    options.setdefault("status_code", 200)
    return _litestar_post(path, **options)


def services(request: Any) -> "AppServices":
    """The app's typed service container (set up by app.py's lifespan)."""
    return request.app.state.services


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; ClientDisconnected if the client stalls for
    `client_stall_seconds` (it would hold a worker) or leaves."""
    idle_seconds = request.app.state.settings.client_stall_seconds
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), idle_seconds)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise ClientDisconnected(f"no request body bytes for {idle_seconds:.0f} s") from None
        if chunk:
            yield chunk


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
    async for chunk in body_chunks(request):
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
    body = decode_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("Request body must be a JSON object")
    return body


def decode_json(raw: bytes) -> Any:
    """JSON from a client: InvalidRequest for bad JSON or nesting deeper than MAX_JSON_DEPTH."""
    try:
        value = _json_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise InvalidRequest("Request body is not valid JSON (or nested too deeply)") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_over(value, MAX_JSON_DEPTH):
        raise InvalidRequest(f"Request body is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit` (iterative: no recursion of ours)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False


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

    `scope`: the services.auth.oauth.scopes action an OAuth token must allow (then `full` and
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
    """The client's IP (uvicorn takes it from X-Forwarded-For only from a trusted proxy);
    anything that is not an IP address counts as "unknown"."""
    client = request.client
    try:
        return str(ipaddress.ip_address(client.host)) if client else "unknown"
    except ValueError:
        return "unknown"
