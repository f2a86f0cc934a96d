"""Service proxying (AppView, chat, labelers, ...) and service-auth tokens, as the reference PDS.

Owns: which methods may be proxied or service-authed by which session (PROTECTED_METHODS,
PRIVILEGED_METHODS), resolving the target (`atproto-proxy: DID#service_id` through the DID
document; defaults app.bsky.* -> AppView, chat.bsky.* -> chat), refusing unsafe endpoints (proxy_target.py),
and forwarding one request with httpx, both bodies streamed. No web-framework types: callers
hand in headers and a body iterator and get a `Forwarded` back. Imports core, errors and
services.identity (DID documents); httpx and its clients only on the first forward.
Tricky bits: the service-auth `aud` is the bare service DID (the reference's current
behaviour); upstream XRPC errors keep their status (500 becomes 502) and {error, message};
a dead or slow upstream gives 502/504 within the configured timeouts, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Mapping

from ...core import syntax as sx
from ...core.jwt import create_service_auth
from ..net.safe_http import public_only_transport, system_resolver
from ...errors import InvalidRequest, InvalidToken, MethodNotImplemented, UpstreamFailure, UpstreamTimeout, XrpcError
from ..identity.resolver import DidResolver
from .target import parse_proxy_header, safe_origin, service_endpoint

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("tinypds.proxy")

_CHAT_PRIVILEGED = (
    "chat.bsky.actor.deleteAccount", "chat.bsky.actor.exportAccountData", "chat.bsky.convo.deleteMessageForSelf",
    "chat.bsky.convo.getConvo", "chat.bsky.convo.getConvoForMembers", "chat.bsky.convo.getLog",
    "chat.bsky.convo.getMessages", "chat.bsky.convo.leaveConvo", "chat.bsky.convo.listConvos",
    "chat.bsky.convo.muteConvo", "chat.bsky.convo.sendMessage", "chat.bsky.convo.sendMessageBatch",
    "chat.bsky.convo.unmuteConvo", "chat.bsky.convo.updateRead",
)
# Methods a plain (unprivileged) app password may not proxy nor get a token for.
PRIVILEGED_METHODS = frozenset(m.lower() for m in (*_CHAT_PRIVILEGED, "com.atproto.server.createAccount"))
# Account management: never proxied, never service-authed (used directly only).
PROTECTED_METHODS = frozenset(m.lower() for m in (
    "com.atproto.admin.sendEmail", "com.atproto.identity.requestPlcOperationSignature",
    "com.atproto.identity.signPlcOperation", "com.atproto.identity.updateHandle",
    "com.atproto.server.activateAccount", "com.atproto.server.confirmEmail",
    "com.atproto.server.createAppPassword", "com.atproto.server.deactivateAccount",
    "com.atproto.server.getAccountInviteCodes", "com.atproto.server.getSession",
    "com.atproto.server.listAppPasswords", "com.atproto.server.requestAccountDelete",
    "com.atproto.server.requestEmailConfirmation", "com.atproto.server.requestEmailUpdate",
    "com.atproto.server.revokeAppPassword", "com.atproto.server.updateEmail",
))

_REQUEST_HEADERS = ("accept-language", "atproto-accept-labelers", "x-bsky-topics")
_BODY_HEADERS = ("content-type", "content-encoding", "content-length")
_RESPONSE_CONTENT_HEADERS = ("content-length", "content-encoding", "content-type", "content-language")
_RESPONSE_HEADERS = ("atproto-repo-rev", "atproto-content-labelers", "retry-after")
# a proxied answer is for this caller only, as the reference PDS marks it: no shared cache
# may keep it, and a private one must key it by the credential
PRIVATE_HEADERS = {"cache-control": "private", "vary": "Authorization"}
_ERROR_NAMES = {400: "InvalidRequest", 401: "AuthenticationRequired", 403: "Forbidden", 404: "NotFound",
                413: "PayloadTooLarge", 429: "RateLimitExceeded", 502: "UpstreamFailure",
                503: "NotEnoughResources", 504: "UpstreamTimeout"}
MAX_ERROR_BODY = 64 * 1024
SERVICE_TOKEN_SECONDS = 60


class BadExpiration(InvalidRequest):
    """getServiceAuth: `exp` in the past or too far ahead."""


class UpstreamBroken(Exception):
    """The upstream failed after its response had started; the relayed response must be aborted."""


class UpstreamError(XrpcError):
    """An error response from the upstream service, passed on (status and XRPC name kept)."""

    def __init__(self, status: int, error: str, message: str | None, headers: dict[str, str]):
        super().__init__(message or error, headers=headers)
        self.status = status
        self._error = error

    @property
    def error(self) -> str:
        return self._error


@dataclass(frozen=True)
class Target:
    did: str  # the service's DID: the service-auth audience
    service_id: str  # e.g. "bsky_appview" (without '#')
    url: str  # origin, e.g. "https://api.bsky.app"
    public_only: bool = False  # named by a DID document (untrusted): dial public addresses only


@dataclass
class Forwarded:
    """A successful upstream response: status, the headers to pass on, the raw body stream.

    Iterate `body` to the end, or call `aclose()` (e.g. for HEAD), so the connection is freed.
    """

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    _response: httpx.Response

    async def aclose(self) -> None:
        await self._response.aclose()


def check_proxy_allowed(nsid: str, ctx: Any) -> None:
    """Refuse protected methods to everyone and privileged ones to plain app passwords."""
    lower = nsid.lower()
    if lower in PROTECTED_METHODS:
        raise InvalidToken("Bad token method")
    if ctx is not None and getattr(ctx, "kind", None) == "app_password" and lower in PRIVILEGED_METHODS:
        raise InvalidToken("Bad token method")


ResolveDid = Callable[[str], Awaitable[Mapping[str, Any] | None]]


class ProxyService:
    """Forwards XRPC calls to other services with service auth; mints getServiceAuth tokens.

    `keys`: has get_key(did, "signing"). `resolve_did(did)` -> DID document (the identity
    service's, which knows the local account; a plain DidResolver when None). Timeouts are in
    seconds: connect, waiting for the response headers, and between body chunks. The two
    httpx clients are made on first use.
    """

    def __init__(self, settings: Any, keys: Any, resolve_did: ResolveDid | None = None, *,
                 connect_timeout: float = 5.0, headers_timeout: float = 10.0, body_timeout: float = 30.0,
                 clock: Callable[[], float] = time.time, transport: httpx.AsyncBaseTransport | None = None,
                 public_resolver: Any = None):
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.headers_timeout = headers_timeout
        self._resolver: DidResolver | None = None
        self._timeouts = (connect_timeout, body_timeout)
        self._transport = transport
        self._public_resolver = public_resolver or system_resolver
        self._client: httpx.AsyncClient | None = None
        self._public_client: httpx.AsyncClient | None = None
        if resolve_did is None:
            self._resolver = DidResolver(settings.plc_url)
            resolve_did = self._resolver.resolve
        self._resolve = resolve_did
        self._targets: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._keys: dict[str, tuple[float, Any]] = {}

    def _http(self, public_only: bool) -> httpx.AsyncClient:
        """The client for a target, made on first use. `public_only`: targets named by DID documents
        (not by our settings) are dialled SSRF-safe, the resolved IP is checked."""
        client = self._public_client if public_only else self._client
        if client is None:
            import httpx

            connect, body = self._timeouts
            timeout = httpx.Timeout(connect=connect, read=body, write=body, pool=connect)
            if public_only:
                transport = self._transport or public_only_transport(self._public_resolver, max_connections=50, max_keepalive=10)
                client = self._public_client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport, trust_env=False)
            else:
                client = self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=self._transport, trust_env=False,
                                                          limits=httpx.Limits(max_connections=100, max_keepalive_connections=20))
        return client

    async def aclose(self) -> None:
        for client in (self._client, self._public_client):
            if client is not None:
                await client.aclose()
        if self._resolver is not None:
            await self._resolver.aclose()

    # ---- targets -------------------------------------------------------------------------
    async def target_for(self, nsid: str, proxy_header: str | None) -> Target:
        s = self.settings
        if proxy_header:
            did, service_id = parse_proxy_header(proxy_header)
            if did == s.appview_did and service_id == "bsky_appview":
                return Target(did, service_id, safe_origin(s.appview_url, True))
            if did == s.chat_did and service_id == "bsky_chat":
                return Target(did, service_id, safe_origin(s.chat_url, True))
            return Target(did, service_id, await self._endpoint(did, service_id), public_only=not self.settings.dev)
        lower = nsid.lower()
        if lower.startswith("app.bsky."):
            return Target(s.appview_did, "bsky_appview", safe_origin(s.appview_url, True))
        if lower.startswith("chat.bsky."):
            return Target(s.chat_did, "bsky_chat", safe_origin(s.chat_url, True))
        raise MethodNotImplemented(
            f"Method Not Implemented: {nsid} is not served here and no service is configured for it "
            "(an atproto-proxy: DID#service_id header names one)"
        )

    async def _endpoint(self, did: str, service_id: str) -> str:
        now = self.clock()
        cached = self._targets.get((did, service_id))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            doc = await self._resolve(did)
        except XrpcError:
            raise
        except Exception as exc:  # resolution failures are the caller's bad target, said clearly
            log.info("could not resolve proxy DID %s: %s", did, exc)
            doc = None
        if not doc:
            raise InvalidRequest(f"could not resolve proxy did {did}")
        url = service_endpoint(doc, did, service_id)
        if not url:
            raise InvalidRequest(f"could not resolve proxy did service url: {did} has no service #{service_id}")
        origin = safe_origin(url, bool(self.settings.dev))
        self._targets[(did, service_id)] = (now + 300, origin)
        while len(self._targets) > 512:
            self._targets.popitem(last=False)
        return origin

    # ---- service auth --------------------------------------------------------------------
    async def _signing_key(self, did: str) -> Any:
        now = self.clock()
        cached = self._keys.get(did)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await asyncio.to_thread(self.keys.get_key, did, "signing")
        self._keys[did] = (now + 300, key)
        return key

    def forget_keys(self) -> None:
        """Drop cached signing keys (call after a key rotation)."""
        self._keys.clear()

    async def service_token(self, iss: str, aud: str, lxm: str | None, exp_seconds: int = SERVICE_TOKEN_SECONDS) -> str:
        key = await self._signing_key(iss)
        return create_service_auth(iss, aud, lxm, key, int(self.clock()), exp_seconds=exp_seconds)

    async def get_service_auth(self, ctx: Any, aud: str, lxm: str | None, exp: int | None) -> str:
        """com.atproto.server.getServiceAuth with the reference's restrictions."""
        did_part, _, fragment = aud.partition("#")
        if not sx.is_valid_did(did_part) or ("#" in aud and not fragment) or any(c in fragment for c in " #/?"):
            raise InvalidRequest("aud must be a valid atproto DID or did#serviceId reference")
        if lxm is not None and not sx.is_valid_nsid(lxm):
            raise InvalidRequest("lxm must be a method NSID")
        if lxm is not None and getattr(ctx, "kind", None) == "app_password" and lxm.lower() in PRIVILEGED_METHODS:
            raise InvalidRequest(f"insufficient access to request a service auth token for the following method: {lxm}")
        now = int(self.clock())
        exp_seconds = SERVICE_TOKEN_SECONDS
        if exp is not None:
            exp_seconds = exp - now
            if exp_seconds < 0:
                raise BadExpiration("expiration is in past")
            if exp_seconds > 3600:
                raise BadExpiration("cannot request a token with an expiration more than an hour in the future")
            if lxm is None and exp_seconds > 60:
                raise BadExpiration("cannot request a method-less token with an expiration more than a minute in the future")
        if lxm is not None and lxm.lower() in PROTECTED_METHODS:
            raise InvalidRequest(f"cannot request a service auth token for the following protected method: {lxm}")
        return await self.service_token(ctx.did, aud, lxm, exp_seconds)

    # ---- forwarding ----------------------------------------------------------------------
    async def forward(self, ctx: Any, nsid: str, method: str, query: str, headers: Mapping[str, str],
                      body: AsyncIterator[bytes] | None, target: Target | None = None) -> Forwarded:
        """Send the call to its target; a Forwarded on 1xx-3xx, UpstreamError etc. otherwise."""
        if method not in ("GET", "HEAD", "POST"):
            raise InvalidRequest("XRPC requests only supports GET and POST")
        check_proxy_allowed(nsid, ctx)
        if target is None:
            target = await self.target_for(nsid, headers.get("atproto-proxy"))
        out = {"accept-encoding": headers.get("accept-encoding") or "identity"}
        for name in _REQUEST_HEADERS:
            if headers.get(name) is not None:
                out[name] = headers[name]
        for name, value in headers.items():
            if name.lower().startswith("x-atproto-"):
                out[name.lower()] = value
        content: Any = None
        if method == "POST":
            for name in _BODY_HEADERS:
                if headers.get(name) is not None:
                    out[name] = headers[name]
            content = body if body is not None and headers.get("content-length") != "0" else b""
        out["authorization"] = "Bearer " + await self.service_token(ctx.did, target.did, nsid)
        url = f"{target.url}/xrpc/{nsid}" + (f"?{query}" if query else "")
        client = self._http(target.public_only)
        import httpx  # loaded by now: the client is an httpx one

        request = client.build_request(method, url, headers=out, content=content)
        try:
            async with asyncio.timeout(self.headers_timeout):
                response = await client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException) as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise UpstreamFailure(f"Upstream service unreachable ({target.url}: connection timed out)") from None
            raise UpstreamTimeout(f"Upstream service {target.url} did not answer within {self.headers_timeout:g} s") from None
        except httpx.TransportError as exc:
            log.info("proxy to %s failed: %r", target.url, exc)
            raise UpstreamFailure(f"Upstream service unreachable ({target.url})") from None
        if response.status_code >= 400:
            raise await self._upstream_error(response)
        passed = {n: response.headers[n] for n in (*_RESPONSE_CONTENT_HEADERS, *_RESPONSE_HEADERS) if n in response.headers}
        passed.update(PRIVATE_HEADERS)
        return Forwarded(response.status_code, passed, self._relay(response, target), response)

    async def _relay(self, response: httpx.Response, target: Target) -> AsyncIterator[bytes]:
        """The raw upstream body (still content-encoded), chunk by chunk; closes the upstream.

        Raises UpstreamBroken if the upstream fails mid-body (the caller must then abort its
        own response rather than end it, so the client sees a truncated body, not a short one).
        """
        import httpx  # already loaded: `response` is an httpx one

        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            log.warning("upstream %s failed mid-body: %r", target.url, exc)
            raise UpstreamBroken(str(exc)) from None
        finally:
            await response.aclose()

    async def _upstream_error(self, response: httpx.Response) -> UpstreamError:
        status = 502 if response.status_code == 500 else response.status_code
        kept = {n: response.headers[n] for n in _RESPONSE_HEADERS if n in response.headers}
        kept.update(PRIVATE_HEADERS)
        error, message = None, None
        try:
            ctype = response.headers.get("content-type", "")
            if "json" in ctype.lower():
                data = bytearray()
                async with asyncio.timeout(self.headers_timeout):
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_ERROR_BODY:
                            break
                parsed = json.loads(data) if len(data) <= MAX_ERROR_BODY else None
                if isinstance(parsed, dict):
                    error = parsed.get("error") if isinstance(parsed.get("error"), str) else None
                    message = parsed.get("message") if isinstance(parsed.get("message"), str) else None
        except Exception:  # unreadable error bodies are fine: the status still passes
            pass
        finally:
            await response.aclose()
        return UpstreamError(status, error or _ERROR_NAMES.get(status, "UpstreamFailure"), message, kept)
