"""Requests and websockets as handlers see them: headers, query parameters, cookies, the
URL, the client address, a body read as a capped stream. Imports tinypds.errors only.

Tricky bit: the body is only ever read as a stream with a byte cap (the route's, or the
app's default); past it, or past a declared Content-Length over it, is 413.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterable, NamedTuple
from urllib.parse import parse_qsl

from .. import errors

if TYPE_CHECKING:
    from .app import App

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNLIMITED = -1


class ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


class WebSocketDisconnect(Exception):
    """The websocket peer is gone."""




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
                 max_body: int = UNLIMITED):
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
        if cap != UNLIMITED:
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
                if cap != UNLIMITED and total > cap:
                    raise errors.PayloadTooLarge(f"Request body exceeds {cap} bytes")
                yield chunk
            if not message.get("more_body", False):
                return


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
