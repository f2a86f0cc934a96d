"""The HTTP toolkit under the XRPC handlers: a small ASGI app with exact-path routing,
requests, responses, streams, websockets, CORS and lifespan — what tinypds needs from a web
framework and nothing more (it replaced Litestar to keep a Pi's idle RSS small: see
docs/BENCHMARKS.md). Imports msgspec and tinypds.errors only; never services or store.

Tricky bits: request bodies are only ever read as a stream with a byte cap; a streamed
response watches for the client leaving and stops producing; an exception after a response
has started cannot become an error document, so the connection is dropped instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, NamedTuple
from urllib.parse import parse_qsl

import msgspec

from . import errors

log = logging.getLogger("tinypds.web")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_json = msgspec.json.Encoder()
_UNLIMITED = -1
# CORS headers the app sets on every answer (an upstream's, e.g. a proxied AppView's, are replaced)
_CORS_OWN = frozenset((b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-expose-headers"))


class ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


class WebSocketDisconnect(Exception):
    """The websocket peer is gone."""


# ---- request side -------------------------------------------------------------------------------


class Headers:
    """Case-insensitive, read-only view of ASGI headers (first value wins on `get`)."""

    __slots__ = ("raw", "_map")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]):
        self.raw = list(raw)
        self._map: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        if self._map is None:
            out: dict[str, str] = {}
            for k, v in self.raw:
                out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
            self._map = out
        return self._map

    def get(self, name: str, default: Any = None) -> Any:
        return self._lookup().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self.raw]


class QueryParams:
    """Parsed query string: `get` gives the first value, `getall` every value of a name."""

    __slots__ = ("_pairs",)

    def __init__(self, query_string: bytes):
        self._pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if query_string else []

    def get(self, name: str, default: Any = None) -> Any:
        for k, v in self._pairs:
            if k == name:
                return v
        return default

    def getall(self, name: str, default: Any = None) -> list[str]:
        values = [v for k, v in self._pairs if k == name]
        return values if values or default is None else list(default)

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


class Address(NamedTuple):
    host: str
    port: int


@dataclass(frozen=True)
class URL:
    scheme: str
    netloc: str
    path: str
    query: str


class _Connection:
    """What a request and a websocket share: scope, headers, query, app."""

    __slots__ = ("scope", "receive", "app", "path_params", "_headers", "_query")

    def __init__(self, scope: Scope, receive: Receive, app: "App", path_params: dict[str, str] | None = None):
        self.scope = scope
        self.receive = receive
        self.app = app
        self.path_params = path_params or {}
        self._headers: Headers | None = None
        self._query: QueryParams | None = None

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self.scope.get("headers") or ())
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        if self._query is None:
            self._query = QueryParams(self.scope.get("query_string") or b"")
        return self._query

    @property
    def url(self) -> URL:
        scheme = self.scope.get("scheme", "http")
        host = self.headers.get("host")
        if not host:
            server = self.scope.get("server") or ("localhost", 80)
            host = f"{server[0]}:{server[1]}"
        return URL(scheme, host, self.scope.get("path", "/"), (self.scope.get("query_string") or b"").decode("latin-1"))

    @property
    def client(self) -> Address | None:
        client = self.scope.get("client")
        return Address(client[0], client[1]) if client else None

    @property
    def cookies(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in (self.headers.get("cookie") or "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name and name not in out:
                out[name] = value.strip().strip('"')
        return out


class Request(_Connection):
    __slots__ = ("max_body", "_consumed")

    def __init__(self, scope: Scope, receive: Receive, app: "App", path_params: dict[str, str] | None = None,
                 max_body: int = _UNLIMITED):
        super().__init__(scope, receive, app, path_params)
        self.max_body = max_body
        self._consumed = False

    @property
    def method(self) -> str:
        return self.scope["method"]

    async def stream(self) -> AsyncIterator[bytes]:
        """The body in chunks as they arrive; 413 past the route's cap (declared or counted)."""
        if self._consumed:
            return
        self._consumed = True
        cap = self.max_body
        if cap != _UNLIMITED:
            declared = self.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > cap:
                raise errors.PayloadTooLarge(f"Request body exceeds {cap} bytes")
        total = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected("client disconnected before the body was read")
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if cap != _UNLIMITED and total > cap:
                    raise errors.PayloadTooLarge(f"Request body exceeds {cap} bytes")
                yield chunk
            if not message.get("more_body", False):
                return


# ---- response side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cookie:
    key: str
    value: str
    path: str = "/"
    max_age: int | None = None
    httponly: bool = False
    secure: bool = False
    samesite: str = "lax"

    def header(self) -> str:
        parts = [f"{self.key}={self.value}", f"Path={self.path}", f"SameSite={self.samesite.capitalize()}"]
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        if self.httponly:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _media(media_type: str) -> str:
    if media_type.startswith("text/") and "charset" not in media_type:
        return media_type + "; charset=utf-8"
    return media_type


class Response:
    """A whole-body response. `content`: bytes, str, a JSON-able dict/list, or None (empty)."""

    __slots__ = ("status_code", "body", "media_type", "headers", "cookies")

    def __init__(self, content: Any = None, status_code: int = 200, headers: dict[str, str] | None = None,
                 media_type: str | None = None, cookies: Iterable[Cookie] | None = None):
        if content is None:
            body = b""
        elif isinstance(content, bytes):
            body = content
        elif isinstance(content, str):
            body = content.encode("utf-8")
            media_type = media_type or "text/plain"
        else:
            body = _json.encode(content)
            media_type = media_type or "application/json"
        self.status_code = status_code
        self.body = body
        self.media_type = media_type
        self.headers = dict(headers or {})
        self.cookies = list(cookies or ())

    def raw_headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        out = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in self.headers.items()]
        names = {k for k, _ in out}
        if self.media_type and b"content-type" not in names:
            out.append((b"content-type", _media(self.media_type).encode("latin-1")))
        if length is not None and b"content-length" not in names:
            out.append((b"content-length", b"%d" % length))
        out.extend((b"set-cookie", c.header().encode("latin-1")) for c in self.cookies)
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers(len(self.body))})
        await send({"type": "http.response.body", "body": self.body})


class Stream(Response):
    """A streamed response from an async iterator of byte chunks. Production stops when the
    client leaves. An exception after the start line drops the connection (the body is then
    visibly incomplete); types in `abort_on` do so quietly, others are logged."""

    __slots__ = ("chunks", "abort_on")

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200, headers: dict[str, str] | None = None,
                 media_type: str | None = None, abort_on: tuple[type[BaseException], ...] = ()):
        super().__init__(None, status_code, headers, media_type or "application/octet-stream")
        self.chunks = chunks
        self.abort_on = abort_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers(None)})
            async for chunk in self.chunks:
                if left.done():
                    return  # nobody is listening any more
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except self.abort_on:
            log.info("stream aborted mid-body: %s", scope.get("path"))
        except OSError:
            log.info("client left mid-stream: %s", scope.get("path"))
        except Exception:
            log.exception("stream failed mid-body: %s", scope.get("path"))
        finally:
            left.cancel()
            await asyncio.gather(left, return_exceptions=True)  # its pending receive() is gone before we return
            closer = getattr(self.chunks, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# ---- websockets ---------------------------------------------------------------------------------


class WebSocket(_Connection):
    __slots__ = ("_send", "closed")

    def __init__(self, scope: Scope, receive: Receive, send: Send, app: "App"):
        super().__init__(scope, receive, app)
        self._send = send
        self.closed = False

    async def accept(self) -> None:
        message = await self.receive()
        if message["type"] != "websocket.connect":
            raise WebSocketDisconnect("peer left before the handshake")
        await self._send({"type": "websocket.accept"})

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise WebSocketDisconnect("websocket is closed")
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code})


# ---- routes and the app -------------------------------------------------------------------------


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
    return lambda fn: Route(path, http_method, fn, **_options(options))


def get(path: str, **options: Any) -> Callable[[Callable[..., Any]], Route]:
    return route(path, http_method=("GET",), **options)


def post(path: str, **options: Any) -> Callable[[Callable[..., Any]], Route]:
    return route(path, http_method=("POST",), **options)


def websocket(path: str) -> Callable[[Callable[..., Any]], Route]:
    return lambda fn: Route(path, ("GET",), fn, websocket=True)


def _options(options: dict[str, Any]) -> dict[str, Any]:
    if "request_max_body_size" in options:
        options["max_body"] = options.pop("request_max_body_size")
    return options


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
                request.max_body = self.max_body_size if cap is ... else (_UNLIMITED if cap is None else int(cap))
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
    if result is None:
        return Response(None, handler.status_code, media_type=handler.media_type)
    if isinstance(result, (dict, list)):
        return Response(result, handler.status_code, media_type=handler.media_type or "application/json")
    if isinstance(result, str):
        return Response(result, handler.status_code, media_type=handler.media_type or "text/plain")
    if isinstance(result, bytes):
        return Response(result, handler.status_code, media_type=handler.media_type or "application/octet-stream")
    raise TypeError(f"handler {handler.fn.__name__} returned {type(result).__name__}")
