"""The HTTP/1.1 + websocket server for the one ASGI app, on asyncio streams: httptools (llhttp,
Node's parser) parses requests, wsproto speaks websocket, this module frames responses, keeps
the limits and runs the lifespan. It replaced uvicorn, whose package always imports its
command line and process supervisors (click, multiprocessing, logging.config: ~3.5 MB of a
Pi's idle RSS). Imports httptools, wsproto and the standard library only.

Tricky bits: a connection serves one request at a time (pipelined ones wait, parsed, in a
queue); a request body the app left unread is dropped after the answer, or the connection
closed if it is large; response header names and values are checked (no CR/LF/NUL: no
header injection from a redirect target); a request from a trusted proxy (loopback: Caddy on
the same host) takes the client address and scheme from X-Forwarded-For / X-Forwarded-Proto;
a websocket is pinged after 30 s of silence and dropped after 30 s more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections import deque
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Iterable, NamedTuple
from urllib.parse import unquote

import httptools

log = logging.getLogger("tinypds.http")

READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024  # request line + headers; more is 431
FIRST_REQUEST_SECONDS = 10.0  # a new connection must send a request's first bytes within this
KEEP_ALIVE_SECONDS = 20.0  # an idle keep-alive connection is closed after this (longer than clients' 4-5 s pools)
HEADER_SECONDS = 30.0  # a started request must complete its headers within this
BODY_IDLE_SECONDS = 60.0  # a request body that stalls this long: the client is gone
WS_PING_SECONDS = 30.0
WS_MAX_MESSAGE = 1 << 20
TRUSTED_PROXIES = frozenset({"127.0.0.1", "::1"})

_DISCONNECT = {"type": "http.disconnect"}
MAX_DRAIN_BYTES = 256 * 1024  # an unread body up to this is read and dropped to keep the connection; more closes it
DRAIN_SECONDS = 2.0

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


_date = [0, b""]  # the Date header, formatted once per second


def _http_date() -> bytes:
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date[1]


class Server:
    """Serve `app` on host:port until SIGINT/SIGTERM (or `stop()`), then drain and shut down."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *,
                 trusted_proxies: Iterable[str] = TRUSTED_PROXIES, graceful_seconds: float = 10.0,
                 on_listening: Callable[[list], None] | None = None):
        self.app = app
        self.host, self.port = host, port
        self.trusted_proxies = frozenset(trusted_proxies)
        self.graceful_seconds = graceful_seconds
        self.on_listening = on_listening
        self.started = False
        self.closing = False
        self.sockets: list = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._connections: dict[asyncio.Task, Any] = {}

    def run(self) -> bool:
        """Blocking: serve until stopped. True when the server started (and stopped cleanly)."""
        return asyncio.run(self.serve())

    def stop(self) -> None:
        """Thread-safe: begin a graceful shutdown (a second call cancels what is still running)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._on_signal)

    def _on_signal(self) -> None:
        if self._stop is None:
            return
        if self._stop.is_set():  # asked twice: stop waiting for busy connections
            for task in list(self._connections):
                task.cancel()
        self._stop.set()

    async def serve(self) -> bool:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):  # not the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, self._on_signal)
        lifespan = _Lifespan(self.app)
        if not await lifespan.startup():
            return False
        try:
            server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.host, self.port, exc)
            await lifespan.shutdown()
            return False
        self.sockets = list(server.sockets)
        self.started = True
        if self.on_listening is not None:
            self.on_listening(self.sockets)
        await self._stop.wait()
        self.closing = True
        server.close()
        for conn in list(self._connections.values()):
            conn.shutdown()
        if self._connections:
            _done, pending = await asyncio.wait(list(self._connections), timeout=self.graceful_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await lifespan.shutdown()
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        conn = _Connection(self, reader, writer)
        assert task is not None
        self._connections[task] = conn
        try:
            await conn.run()
        except (OSError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Lifespan:
    """Runs the app's lifespan protocol: startup before listening, shutdown after draining."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future = loop.create_future()
        self.stopped: asyncio.Future = loop.create_future()
        self.task: asyncio.Task | None = None

    async def _send(self, message: dict) -> None:
        target = self.started if message["type"].startswith("lifespan.startup") else self.stopped
        if not target.done():
            target.set_result(message)

    async def _run(self) -> None:
        try:
            await self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, self.inbox.get, self._send)
        except BaseException as exc:
            log.error("lifespan failed: %s", exc, exc_info=exc)
            for fut in (self.started, self.stopped):
                if not fut.done():
                    fut.set_result({"type": "failed", "message": str(exc)})

    async def startup(self) -> bool:
        self.task = asyncio.ensure_future(self._run())
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self.started
        if message["type"] != "lifespan.startup.complete":
            log.error("Application startup failed. Exiting.")
            return False
        return True

    async def shutdown(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.stopped
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


class _Request(NamedTuple):
    method: bytes
    target: bytes
    headers: list
    http_version: str
    keep_alive: bool


class _Parsed:
    """httptools callbacks -> a queue of events the connection pulls from: ("request", _Request),
    ("data", bytes), ("end", None). The parser runs ahead over pipelined bytes; order is kept."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.events: deque = deque()
        self.in_head = False
        self.head_bytes = 0
        self._url = b""
        self._headers: list = []

    def on_message_begin(self) -> None:
        self.in_head, self.head_bytes, self._url, self._headers = True, 0, b"", []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        p = self.parser
        self.events.append(("request", _Request(p.get_method(), self._url, self._headers, p.get_http_version(),
                                                p.should_keep_alive())))

    def on_body(self, body: bytes) -> None:
        self.events.append(("data", body))

    def on_message_complete(self) -> None:
        self.events.append(("end", None))


class _Refused(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class _Exchange:
    """One request/response on a connection."""

    __slots__ = ("req", "head", "started", "done", "body_done", "disconnected", "pending", "finished", "chunked",
                 "keep_alive", "no_body", "continue_sent")

    def __init__(self, req: _Request):
        self.req = req
        self.head = req.method == b"HEAD"
        self.started = self.done = self.disconnected = self.body_done = self.chunked = self.no_body = False
        self.keep_alive = req.keep_alive
        self.continue_sent = False
        self.pending = b""
        self.finished = asyncio.Event()


class _Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.parsed = _Parsed()
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if peer else None
        self.local = (sock[0], sock[1]) if sock else None
        self.idle = True
        self.websocket: _WebSocket | None = None
        self.read_lock = asyncio.Lock()
        self.served = 0
        self.upgraded: bytes | None = None  # bytes after an Upgrade request's head (the parser stops there)

    def shutdown(self) -> None:
        """Server stopping: idle connections close now, busy ones after their answer."""
        if self.websocket is not None:
            self.websocket.going_away()
        elif self.idle:
            self.writer.close()

    async def run(self) -> None:
        while not self.server.closing:
            try:
                async with self.read_lock:  # a receive() the app left pending finishes first
                    event = await self._next_event(self._idle_timeout())
            except _Refused as exc:
                await self._refuse(exc.status, str(exc))
                return
            if event is None or event[0] != "request":
                return  # closed, timed out
            req = event[1]
            self.idle = False
            if self.upgraded is not None and _wants_websocket(req):
                self.websocket = _WebSocket(self, req)
                await self.websocket.run()
                return
            ex = _Exchange(req)
            if not await self._serve(ex) or not ex.keep_alive or self.upgraded is not None:
                return
            async with self.read_lock:
                if not await self._drain_unread_body(ex):
                    return
            self.served += 1
            self.idle = True

    async def _drain_unread_body(self, ex: _Exchange) -> bool:
        """After the answer: read and drop what the app left of the request body (a GET's end
        of message, a refused small POST) so the connection can serve the next request;
        False (close instead) for a large, stalled or broken body."""
        dropped = 0
        while not ex.body_done:
            try:
                event = await self._next_event(DRAIN_SECONDS)
            except _Refused:
                return False
            if event is None:
                return False
            if event[0] == "end":
                ex.body_done = True
            elif event[0] == "data":
                dropped += len(event[1])
                if dropped > MAX_DRAIN_BYTES:
                    return False
        return True

    def _idle_timeout(self) -> float:
        if self.parsed.in_head:
            return HEADER_SECONDS  # a request has started arriving
        return KEEP_ALIVE_SECONDS if self.served else FIRST_REQUEST_SECONDS

    async def _next_event(self, timeout: float) -> Any:
        """The next parsed event; None when the peer is gone or silent for `timeout`."""
        events = self.parsed.events
        while not events:
            if self.upgraded is not None or not await self._fill(timeout):
                return None
        return events.popleft()

    async def _fill(self, timeout: float) -> bool:
        """Read more bytes into the parser; False on silence, the end of the stream or a dead
        socket. What a read got is parsed even when the caller is being cancelled."""
        reading = asyncio.ensure_future(self.reader.read(READ_SIZE))
        try:
            await asyncio.wait({reading}, timeout=timeout)
        finally:
            reading.cancel()  # a no-op when it is done; else abandoned (the bytes stay in the reader)
            result = (await asyncio.gather(reading, return_exceptions=True))[0]
            if isinstance(result, bytes) and result:
                self._feed(result)
        return isinstance(result, bytes) and bool(result)

    def _feed(self, data: bytes) -> None:
        parsed = self.parsed
        try:
            parsed.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = data[exc.args[0]:] if exc.args else b""
        except httptools.HttpParserError as exc:
            raise _Refused(400, f"unparsable request: {exc}") from None
        if parsed.in_head:
            parsed.head_bytes += len(data)
            if parsed.head_bytes > MAX_HEADER_BYTES:
                raise _Refused(431, "request head too large")

    async def _refuse(self, status: int, why: str) -> None:
        """Answer a request we could not parse (400, 431) or an app failure (500), and close."""
        if status >= 500:
            body = b'{"error":"InternalServerError","message":"Internal Server Error"}'
        else:
            body = b'{"error":"InvalidRequest","message":"Bad HTTP request"}'
        log.info("refused a request (%d): %s", status, why)
        self.writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                          b"connection: close\r\ndate: %s\r\n\r\n%s" % (status, _reason(status), len(body), _http_date(), body))
        with contextlib.suppress(OSError):
            await self.writer.drain()

    def scope(self, req: _Request, kind: str) -> dict:
        path, _, query = req.target.partition(b"?")
        headers = req.headers
        client, scheme = self.client, "http"
        if client is not None and client[0] in self.server.trusted_proxies:
            for name, value in headers:
                if name == b"x-forwarded-proto" and value.strip().lower() in (b"http", b"https"):
                    scheme = value.strip().lower().decode()
                elif name == b"x-forwarded-for":
                    hops = [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
                    untrusted = [h for h in hops if h not in self.server.trusted_proxies]
                    if untrusted:
                        client = (untrusted[-1], 0)  # the nearest hop the proxy did not vouch for
        if kind == "websocket":
            scheme = "wss" if scheme == "https" else "ws"
        return {
            "type": kind, "asgi": {"version": "3.0"}, "http_version": req.http_version,
            "method": req.method.decode("ascii", "replace"), "scheme": scheme,
            "path": unquote(path.decode("ascii", "replace")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": headers, "client": client, "server": self.local,
        }

    async def _serve(self, ex: _Exchange) -> bool:
        """Run the app for one request; False when the connection must close afterwards."""
        scope = self.scope(ex.req, "http")
        if ex.req.http_version not in ("1.1", "1.0"):
            await self._refuse(505, "HTTP version not supported")
            return False

        async def receive() -> dict:
            async with self.read_lock:
                return await self._receive(ex)

        async def send(message: dict) -> None:
            await self._send(ex, message)

        try:
            await self.server.app(scope, receive, send)
        except OSError:
            return False
        except _Refused as exc:  # the request body could not be parsed
            if not ex.started:
                await self._refuse(exc.status, str(exc))
            return False
        except Exception:
            log.exception("the app failed on %s %s", scope["method"], scope["path"])
            if not ex.started:
                await self._refuse(500, "app error")
            return False
        finally:
            ex.finished.set()
        if not ex.done:
            log.error("the app returned without completing the response to %s %s", scope["method"], scope["path"])
            return False
        return not ex.disconnected

    async def _receive(self, ex: _Exchange) -> dict:
        if ex.disconnected:
            return _DISCONNECT
        if not ex.body_done:
            if not ex.continue_sent and not self.parsed.events and _expects_continue(ex.req):
                ex.continue_sent = True
                self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                event = await self._next_event(BODY_IDLE_SECONDS)
            except _Refused:
                event = None
            if event is not None and event[0] == "data":
                return {"type": "http.request", "body": event[1], "more_body": True}
            if event is not None and event[0] == "end":
                ex.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            ex.disconnected = True
            return _DISCONNECT
        # the body is read: wait until the response is done or the client goes away
        while not ex.finished.is_set() and not ex.done and not ex.disconnected and self.upgraded is None:
            if len(self.parsed.events) > 64:  # pipelined requests queue up: stop reading until this one is answered
                await ex.finished.wait()
                break
            reading = asyncio.ensure_future(self.reader.read(READ_SIZE))
            finishing = asyncio.ensure_future(ex.finished.wait())
            try:
                await asyncio.wait({reading, finishing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                finishing.cancel()
                reading.cancel()  # a no-op when it is done; else the read is abandoned (the bytes stay buffered)
                # the reader allows one waiter: the abandoned read must be gone before the next one;
                # and what a finished read got must be parsed even when this task is being cancelled
                result = (await asyncio.gather(reading, return_exceptions=True))[0]
                if isinstance(result, bytes):
                    if result:
                        with contextlib.suppress(_Refused):  # a bad next request is refused in its turn
                            self._feed(result)
                    else:
                        ex.disconnected = True
        return _DISCONNECT

    async def _send(self, ex: _Exchange, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if ex.started:
                raise RuntimeError("the response has already started")
            status = message["status"]
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))]
            has_length = False
            for name, value in message.get("headers") or ():
                name, value = bytes(name), bytes(value)
                if _BAD_HEADER.search(name) or _BAD_VALUE.search(value):
                    raise ValueError(f"invalid response header {name!r}")
                lower = name.lower()
                if lower == b"content-length":
                    has_length = True
                elif lower == b"connection" and value.lower() == b"close":
                    ex.keep_alive = False
                    continue
                elif lower == b"transfer-encoding":
                    continue  # framing is ours
                lines.append(b"%s: %s\r\n" % (name, value))
            ex.no_body = ex.head or status in (204, 304) or status < 200
            if not has_length and not ex.no_body:
                if ex.req.http_version == "1.1":
                    ex.chunked = True
                    lines.append(b"transfer-encoding: chunked\r\n")
                else:
                    ex.keep_alive = False  # HTTP/1.0: the end of the body is the end of the connection
            if self.server.closing:
                ex.keep_alive = False
            if not ex.keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"date: %s\r\n\r\n" % _http_date())
            ex.pending = b"".join(lines)
            ex.started = True  # only now: a refused header above still gets a 500 answer
            return
        if kind != "http.response.body":
            return
        if not ex.started or ex.done:
            raise RuntimeError("response body outside a response")
        body, more = message.get("body", b""), message.get("more_body", False)
        out = ex.pending
        ex.pending = b""
        if body and not ex.no_body:
            out += b"%x\r\n%s\r\n" % (len(body), body) if ex.chunked else body
        if not more:
            if ex.chunked:
                out += b"0\r\n\r\n"
            ex.done = True
            ex.finished.set()
        if ex.disconnected:
            raise ConnectionResetError("the client has gone")
        if out:
            self.writer.write(out)
            await self.writer.drain()


_BAD_HEADER = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")  # a header name is a token
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _expects_continue(req: _Request) -> bool:
    return any(n == b"expect" and v.lower() == b"100-continue" for n, v in req.headers)


def _wants_websocket(req: _Request) -> bool:
    upgrade = connection = b""
    for name, value in req.headers:
        if name == b"upgrade":
            upgrade = value.lower()
        elif name == b"connection":
            connection = value.lower()
    return req.method == b"GET" and upgrade == b"websocket" and b"upgrade" in connection


ws_: Any = None  # the wsproto names, set by the first websocket (_load_wsproto)


def _load_wsproto() -> None:
    """Import wsproto (and h11 under it) with the first websocket: an idle server has none."""
    global ws_
    if ws_ is None:
        ws_ = _wsproto()


def _wsproto() -> Any:
    from types import SimpleNamespace

    from wsproto import ConnectionType
    from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, RejectConnection,
                                TextMessage)
    from wsproto.handshake import H11Handshake
    from wsproto.utilities import LocalProtocolError, RemoteProtocolError

    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "SimpleNamespace"})


class _WebSocket:
    """One websocket: the handshake via wsproto's H11Handshake (the request is already parsed),
    frames via wsproto, ASGI messages to and from the app."""

    def __init__(self, conn: _Connection, req: _Request):
        self.conn = conn
        self.scope = conn.scope(req, "websocket")
        self.scope["subprotocols"] = [p.strip() for n, v in req.headers if n == b"sec-websocket-protocol"
                                      for p in v.decode("latin-1").split(",") if p.strip()]
        _load_wsproto()
        self.handshake = ws_.H11Handshake(ws_.ConnectionType.SERVER)
        self.handshake.initiate_upgrade_connection(list(req.headers), req.target)
        self.ws: Any = None
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.inbox.put_nowait({"type": "websocket.connect"})
        self.accepted = self.closed = False
        self.reading: asyncio.Task | None = None

    def going_away(self) -> None:
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})

    async def run(self) -> None:
        try:
            await self.conn.server.app(self.scope, self.inbox.get, self.send)
        except OSError:
            pass
        except Exception:
            log.exception("websocket app failed on %s", self.scope["path"])
        finally:
            if self.reading is not None:
                self.reading.cancel()
            with contextlib.suppress(Exception):
                if not self.accepted and not self.closed:
                    await self._write(self.handshake.send(ws_.RejectConnection(status_code=500, headers=[(b"content-length", b"0")])))
                elif not self.closed:
                    await self._write(self.ws.send(ws_.CloseConnection(code=1000)))

    async def _write(self, data: bytes) -> None:
        self.conn.writer.write(data)
        await self.conn.writer.drain()

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("websocket already accepted or closed")
            extra = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
            await self._write(self.handshake.send(ws_.AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=extra)))
            self.ws = self.handshake.connection
            self.accepted = True
            self.reading = asyncio.ensure_future(self._read_loop(self.conn.upgraded or b""))
        elif kind == "websocket.send":
            if self.closed or not self.accepted:
                raise ConnectionResetError("the websocket is closed")
            data = message.get("bytes")
            await self._write(self.ws.send(ws_.Message(data=data if data is not None else message.get("text") or "")))
        elif kind == "websocket.close":
            if self.closed:
                return
            self.closed = True
            if not self.accepted:
                await self._write(self.handshake.send(ws_.RejectConnection(status_code=403, headers=[(b"content-length", b"0")])))
            else:
                with contextlib.suppress(ws_.LocalProtocolError):
                    await self._write(self.ws.send(ws_.CloseConnection(code=message.get("code", 1000), reason=message.get("reason") or None)))

    async def _read_loop(self, leftover: bytes) -> None:
        parts: list = []
        size = 0
        pinged = False
        code = 1006
        try:
            data = leftover
            while True:
                if data:
                    self.ws.receive_data(data)
                    for event in self.ws.events():
                        if isinstance(event, ws_.Ping):
                            await self._write(self.ws.send(event.response()))
                        elif isinstance(event, ws_.CloseConnection):
                            code = event.code
                            if not self.closed:
                                self.closed = True
                                with contextlib.suppress(ws_.LocalProtocolError):
                                    await self._write(self.ws.send(event.response()))
                            return
                        elif isinstance(event, (ws_.TextMessage, ws_.BytesMessage)):
                            parts.append(event.data)
                            size += len(event.data)
                            if size > WS_MAX_MESSAGE:
                                code = 1009
                                await self.send({"type": "websocket.close", "code": 1009})
                                return
                            if event.message_finished:
                                key = "text" if isinstance(event, ws_.TextMessage) else "bytes"
                                joined = "".join(parts) if key == "text" else b"".join(parts)
                                self.inbox.put_nowait({"type": "websocket.receive", key: joined})
                                parts, size = [], 0
                try:
                    data = await asyncio.wait_for(self.conn.reader.read(READ_SIZE), WS_PING_SECONDS)
                except asyncio.TimeoutError:
                    if pinged:
                        return  # silent through a whole ping interval: gone
                    pinged = True
                    await self._write(self.ws.send(ws_.Ping(payload=b"tinypds")))
                    data = b""
                    continue
                pinged = False
                if not data:
                    return
        except ws_.RemoteProtocolError:
            code = 1002
            with contextlib.suppress(Exception):
                await self.send({"type": "websocket.close", "code": 1002})
        except OSError:
            pass
        finally:
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})
