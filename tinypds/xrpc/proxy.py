"""The /xrpc/<nsid> catch-all: every method this PDS does not serve is proxied (services.proxy).

Checks the name, refuses protected methods and methods with no target before auth, signs
the caller in (access token or app password), resolves an `atproto-proxy` target, then streams the upstream response back
unchanged (status, content headers, raw possibly-compressed body). Imports Litestar,
errors, services and the routing helpers only; never store. `proxy_service(request)` and
`forward_request(...)` are shared with the handlers that proxy conditionally (preferences).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, route

from ..core.syntax import is_valid_nsid
from ..errors import InvalidRequest, MethodNotImplemented
from ..services.proxy.service import ProxyService, Target, UpstreamBroken, check_proxy_allowed
from ..services.auth.oauth.scopes import RpcCall
from .streams import HEAD_KEY, Stream
from .routing import access_auth, body_chunks, services


def proxy_service(request: Request) -> ProxyService:
    """The app's ProxyService (built on first use from the settings, key store and identity)."""
    svc = services(request)
    proxy = svc.proxy
    if proxy is None:
        if svc.keys is None:
            raise MethodNotImplemented("Proxying needs the account's signing key, which is not available")
        resolver = getattr(svc.identity, "resolve_did", None)
        proxy = svc.proxy = ProxyService(svc.settings, svc.keys, resolver)
    return proxy


def rpc_audience(request: Request, nsid: str) -> str:
    """`did#service` the call goes to (the atproto-proxy header, else the default AppView/chat): an OAuth rpc: aud."""
    header = request.headers.get("atproto-proxy")
    if header:
        return header.strip()
    s = services(request).settings
    return f"{s.chat_did}#bsky_chat" if nsid.startswith("chat.bsky.") else f"{s.appview_did}#bsky_appview"


async def forward_request(request: Request, nsid: str, ctx: Any, target: Target | None = None) -> Response:
    """Forward this request to its target and stream the answer back."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    query = request.scope.get("query_string", b"").decode("latin-1")
    method = "HEAD" if request.scope.get(HEAD_KEY) else request.method  # HEAD reaches us as GET (http_serve)
    body = body_chunks(request) if method == "POST" else None
    fwd = await proxy_service(request).forward(ctx, nsid, method, query, headers, body, target)
    media_type = fwd.headers.pop("content-type", None) or "application/octet-stream"
    if method == "HEAD":
        await fwd.aclose()
        return Response(content=b"", status_code=fwd.status, headers=fwd.headers, media_type=media_type)
    # an upstream failure mid-body drops our connection too, so the client sees a broken body, not a short one
    return Stream(fwd.body, status_code=fwd.status, headers=fwd.headers, media_type=media_type, abort_on=(UpstreamBroken,))


@route("/xrpc/{nsid:str}", http_method=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def proxy_call(request: Request) -> Response:
    nsid = request.path_params["nsid"]
    if not is_valid_nsid(nsid):
        raise InvalidRequest(f"Invalid XRPC method name: {nsid[:100]}")
    if request.method not in ("GET", "POST"):
        raise InvalidRequest("XRPC requests only supports GET and POST")
    check_proxy_allowed(nsid, None)
    # a method with no default target is 501 for anyone; DID documents are fetched only for signed-in callers
    target = None if request.headers.get("atproto-proxy") else await proxy_service(request).target_for(nsid, None)
    ctx = await access_auth(request)
    ctx.require(RpcCall(nsid, rpc_audience(request, nsid)))
    return await forward_request(request, nsid, ctx, target)


