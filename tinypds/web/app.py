"""The ASGI app: routes by exact path (a `/xrpc/<name>` miss goes to the fallback route),
handlers named by their parameters, CORS on every answer, the lifespan, and one exception
handler that turns every failure into an answer.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterable

from .. import errors
from .connection import UNLIMITED, Message, Receive, Request, Scope, Send, WebSocket, WebSocketDisconnect
from .responses import Response

log = logging.getLogger("tinypds.web")

# CORS headers the app sets on every answer (an upstream's, e.g. a proxied AppView's, are replaced)
_CORS_OWN = frozenset((b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-expose-headers"))


class Route:
    """A handler bound to a path and methods; the handler names what it wants by parameter:
    `request`, `socket`, or a path parameter (`nsid` for a `/xrpc/{nsid}` catch-all)."""

    __slots__ = ("path", "methods", "fn", "status_code", "media_type", "max_body", "params", "websocket")

    def __init__(self, path: str, methods: Iterable[str], fn: Callable[..., Awaitable[Any]], *, status_code: int = 200,
                 media_type: str | None = None, max_body: int | None | object = ..., websocket: bool = False):
        self.path = path
        self.methods = frozenset(m.upper() for m in methods)
        self.fn = fn
        self.status_code = status_code
        self.media_type = media_type
        self.max_body = max_body  # ...: the app's cap; None: no cap (the handler enforces its own)
        self.params = tuple(inspect.signature(fn).parameters)
        self.websocket = websocket


def route(path: str, *, http_method: Iterable[str], **options: Any) -> Callable[[Callable[..., Any]], Route]:
    return lambda fn: Route(path, http_method, fn, **options)


def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Route]:
    return route(path, http_method=("GET",), **options)


def post(path: str, **options: Any) -> Callable[[Callable[..., Any]], Route]:
    return route(path, http_method=("POST",), **options)


def websocket(path: str) -> Callable[[Callable[..., Any]], Route]:
    return lambda fn: Route(path, ("GET",), fn, websocket=True)


@dataclass(frozen=True)
class CORS:
    """Any origin; what a preflight may ask for and what a response exposes."""

    allow_methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD")
    expose_headers: tuple[str, ...] = ("*",)
    max_age: int = 86400


ExceptionHandler = Callable[[Request, Exception], Response]
Hook = Callable[[Message, Scope], Awaitable[None]]


class App:
    """The ASGI app: routes by exact path, `/xrpc/<name>` misses go to the fallback route."""

    def __init__(self, routes: Iterable[Route], *, exception_handler: ExceptionHandler,
                 fallback: Route | None = None, before_send: Iterable[Hook] = (),
                 lifespan: Callable[["App"], contextlib.AbstractAsyncContextManager[Any]] | None = None,
                 max_body_size: int = 1 << 20, cors: CORS | None = CORS()):
        self.state = SimpleNamespace()
        self._http: dict[str, dict[str, Route]] = {}
        self._ws: dict[str, Route] = {}
        for r in routes:
            if r.websocket:
                self._ws[r.path] = r
                continue
            by_method = self._http.setdefault(r.path, {})
            for m in r.methods:
                if m in by_method:
                    raise ValueError(f"two routes for {m} {r.path}")
                by_method[m] = r
        self.fallback = fallback
        self.exception_handler = exception_handler
        self.before_send = tuple(before_send)
        self.lifespan = lifespan
        self.max_body_size = max_body_size
        self.cors = cors
        self._cors_headers = [(b"access-control-allow-origin", b"*")]
        if cors is not None and cors.expose_headers:
            self._cors_headers.append((b"access-control-expose-headers", ", ".join(cors.expose_headers).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._serve_http(scope, receive, self._wrap_send(scope, send))
        elif kind == "websocket":
            await self._serve_ws(scope, receive, send)
        elif kind == "lifespan":
            await self._serve_lifespan(receive, send)

    def _wrap_send(self, scope: Scope, send: Send) -> Send:
        hooks, cors = self.before_send, self.cors is not None
        if not hooks and not cors:
            return send

        async def wrapped(message: Message) -> None:
            if cors and message["type"] == "http.response.start":
                headers = [h for h in message.get("headers") or () if h[0].lower() not in _CORS_OWN]
                message["headers"] = headers + self._cors_headers
            for hook in hooks:
                await hook(message, scope)
            await send(message)

        return wrapped

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        by_method = self._http.get(path)
        if by_method is None:
            name = path[6:] if path.startswith("/xrpc/") else ""
            if self.fallback is not None and name and "/" not in name:
                if method not in self.fallback.methods:
                    raise errors.MethodNotAllowed(f"Method {method} not allowed for {path}")
                return self.fallback, {"nsid": name}
            raise errors.NotFound("Not Found")
        handler = by_method.get(method) or (by_method.get("GET") if method == "HEAD" else None)
        if handler is None:
            raise errors.MethodNotAllowed(f"Method {method} not allowed for {path}")
        return handler, {}

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        request = Request(scope, receive, self)
        try:
            if method == "OPTIONS" and self.cors is not None and "access-control-request-method" in request.headers:
                response: Any = self._preflight(request)
            else:
                handler, params = self._find(method, path)
                request.path_params = params
                cap = handler.max_body
                request.max_body = self.max_body_size if cap is ... else (UNLIMITED if cap is None else int(cap))
                args = {}
                for name in handler.params:
                    args[name] = request if name == "request" else params.get(name)
                response = _as_response(await handler.fn(**args), handler)
        except Exception as exc:  # the one place exceptions become answers
            response = self.exception_handler(request, exc)
        await response(scope, receive, send)

    def _preflight(self, request: Request) -> Response:
        assert self.cors is not None
        asked = request.headers.get("access-control-request-headers")
        headers = {"access-control-allow-methods": ", ".join(self.cors.allow_methods),
                   "access-control-max-age": str(self.cors.max_age)}
        if asked:
            headers["access-control-allow-headers"] = asked
        return Response(None, 204, headers)

    async def _serve_ws(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._ws.get(scope["path"])
        if handler is None:
            await send({"type": "websocket.close", "code": 1000})
            return
        socket = WebSocket(scope, receive, send, self)
        try:
            await handler.fn(socket)
        except (WebSocketDisconnect, OSError):
            pass
        except Exception:
            log.exception("websocket handler failed: %s", scope["path"])
            with contextlib.suppress(Exception):
                await socket.close(1011)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "lifespan.startup":
            return
        stack = contextlib.AsyncExitStack()
        try:
            if self.lifespan is not None:
                await stack.enter_async_context(self.lifespan(self))
        except BaseException as exc:
            log.error("startup failed: %s", exc, exc_info=exc)
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            await stack.aclose()
        except BaseException as exc:
            log.error("shutdown failed: %s", exc, exc_info=exc)
            await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})


def _as_response(result: Any, handler: Route) -> Any:
    """A handler's return value as an ASGI app: responses and ASGI callables pass through;
    dict/list become JSON, str/bytes a body of the route's media type, None an empty body."""
    if callable(result):
        return result
    if result is not None and not isinstance(result, (dict, list, str, bytes)):
        raise TypeError(f"handler {handler.fn.__name__} returned {type(result).__name__}")
    media = handler.media_type or ("application/octet-stream" if isinstance(result, bytes) else None)
    return Response(result, handler.status_code, media_type=media)  # (Response picks JSON / text/plain)
