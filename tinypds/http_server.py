"""The HTTP/1.1 + websocket server for the one ASGI app, on asyncio streams: h11 speaks HTTP,
wsproto speaks websocket, this module moves bytes, keeps the limits and runs the lifespan.
It replaced uvicorn, whose package always imports its command line and process supervisors
(click, multiprocessing, logging.config: ~3.5 MB of a Pi's idle RSS). Imports h11, wsproto
and the standard library only.

Tricky bits: a connection serves one request at a time (pipelined ones wait in h11's
buffer); a request body the app left unread is dropped after the answer, or the connection
closed if it is large; a
request from a trusted proxy (loopback: Caddy on the same host) takes the client address
and scheme from X-Forwarded-For / X-Forwarded-Proto; a websocket is pinged after 30 s of
silence and dropped after 30 s more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import unquote

import h11
from wsproto import ConnectionType
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Message, Ping, RejectConnection,
                            TextMessage)
from wsproto.handshake import H11Handshake
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

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


class _Exchange:
    """One request/response on a connection."""

    __slots__ = ("head", "started", "done", "body_done", "disconnected", "pending", "finished")

    def __init__(self, head: bool):
        self.head = head
        self.started = self.done = self.disconnected = self.body_done = False
        self.pending = b""
        self.finished = asyncio.Event()


class _Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if peer else None
        self.local = (sock[0], sock[1]) if sock else None
        self.idle = True
        self.websocket: _WebSocket | None = None
        self.read_lock = asyncio.Lock()
        self.served = 0

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
            except h11.RemoteProtocolError as exc:
                await self._refuse(exc.error_status_hint, str(exc))
                return
            if not isinstance(event, h11.Request):
                return  # closed, timed out
            self.idle = False
            if _wants_websocket(event):
                self.websocket = _WebSocket(self, event)
                await self.websocket.run()
                return
            if not await self._serve(event):
                return
            async with self.read_lock:
                if not await self._drain_unread_body():
                    return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()
            self.served += 1
            self.idle = True

    async def _drain_unread_body(self) -> bool:
        """After the answer: read and drop what the app left of the request body (a GET's end
        of message, a refused small POST) so the connection can serve the next request;
        False (close instead) for a large or stalled body."""
        dropped = 0
        while self.h11.their_state is h11.SEND_BODY:
            try:
                event = await self._next_event(DRAIN_SECONDS)
            except h11.RemoteProtocolError:
                return False
            if event is None or isinstance(event, h11.ConnectionClosed):
                return False
            if isinstance(event, h11.Data):
                dropped += len(event.data)
                if dropped > MAX_DRAIN_BYTES:
                    return False
        return True

    def _idle_timeout(self) -> float:
        if self.h11.trailing_data[0]:
            return HEADER_SECONDS  # a request has started arriving
        return KEEP_ALIVE_SECONDS if self.served else FIRST_REQUEST_SECONDS

    async def _next_event(self, timeout: float) -> Any:
        """The next h11 event; None when the peer is gone or silent for `timeout`."""
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if not await self._fill(timeout):
                return None

    async def _fill(self, timeout: float) -> bool:
        """Read more bytes into h11 (b"" marks the end of the stream); False on silence or a dead
        socket. What a read got reaches h11 even when the caller is being cancelled."""
        reading = asyncio.ensure_future(self.reader.read(READ_SIZE))
        try:
            await asyncio.wait({reading}, timeout=timeout)
        finally:
            reading.cancel()  # a no-op when it is done; else abandoned (the bytes stay in the reader)
            result = (await asyncio.gather(reading, return_exceptions=True))[0]
            if isinstance(result, bytes):
                self.h11.receive_data(result)
        return isinstance(result, bytes)

    async def _refuse(self, status: int, why: str) -> None:
        """Answer a request we could not parse (400, 431...) or an app failure (500), and close."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        if status >= 500:
            body = b'{"error":"InternalServerError","message":"Internal Server Error"}'
        else:
            body = b'{"error":"InvalidRequest","message":"Bad HTTP request"}'
        log.info("refused a malformed request (%d): %s", status, why)
        try:
            data = self.h11.send(h11.Response(status_code=status, headers=[
                (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                (b"connection", b"close"), (b"date", _http_date())]))
            data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return
        self.writer.write(data)
        with contextlib.suppress(OSError):
            await self.writer.drain()

    def scope(self, req: h11.Request, kind: str) -> dict:
        path, _, query = req.target.partition(b"?")
        headers = list(req.headers)
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
            "type": kind, "asgi": {"version": "3.0"}, "http_version": req.http_version.decode("ascii"),
            "method": req.method.decode("ascii"), "scheme": scheme,
            "path": unquote(path.decode("ascii", "replace")), "raw_path": path, "query_string": query,
            "root_path": "", "headers": headers, "client": client, "server": self.local,
        }

    async def _serve(self, req: h11.Request) -> bool:
        """Run the app for one request; False when the connection must close afterwards."""
        ex = _Exchange(req.method == b"HEAD")
        scope = self.scope(req, "http")

        async def receive() -> dict:
            async with self.read_lock:
                return await self._receive(ex)

        async def send(message: dict) -> None:
            await self._send(ex, message)

        try:
            await self.server.app(scope, receive, send)
        except OSError:
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
            if self.h11.they_are_waiting_for_100_continue:
                self.writer.write(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            try:
                event = await self._next_event(BODY_IDLE_SECONDS)
            except h11.RemoteProtocolError:
                event = None
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            if isinstance(event, h11.EndOfMessage):
                ex.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            ex.disconnected = True
            return _DISCONNECT
        # the body is read: wait until the response is done or the client goes away
        while not ex.finished.is_set() and not ex.done and not ex.disconnected:
            reading = asyncio.ensure_future(self.reader.read(READ_SIZE))
            finishing = asyncio.ensure_future(ex.finished.wait())
            try:
                await asyncio.wait({reading, finishing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                finishing.cancel()
                reading.cancel()  # a no-op when it is done; else the read is abandoned (the bytes stay buffered)
                # the reader allows one waiter: the abandoned read must be gone before the next one;
                # and what a finished read got must reach h11 even when this task is being cancelled
                result = (await asyncio.gather(reading, return_exceptions=True))[0]
                if isinstance(result, bytes):
                    if result:
                        self.h11.receive_data(result)  # a pipelined or next request: kept for its cycle
                    else:
                        ex.disconnected = True
            if len(self.h11.trailing_data[0]) > MAX_HEADER_BYTES:
                await ex.finished.wait()
        return _DISCONNECT

    async def _send(self, ex: _Exchange, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if ex.started:
                raise RuntimeError("the response has already started")
            ex.started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
            headers.append((b"date", _http_date()))
            if self.server.closing:
                headers.append((b"connection", b"close"))
            ex.pending = self.h11.send(h11.Response(status_code=message["status"], headers=headers)) or b""
            return
        if kind != "http.response.body":
            return
        if not ex.started or ex.done:
            raise RuntimeError("response body outside a response")
        body, more = message.get("body", b""), message.get("more_body", False)
        out = ex.pending
        ex.pending = b""
        if body and not ex.head:
            out += self.h11.send(h11.Data(data=body)) or b""
        if not more:
            out += self.h11.send(h11.EndOfMessage()) or b""
            ex.done = True
            ex.finished.set()
        if ex.disconnected:
            raise ConnectionResetError("the client has gone")
        self.writer.write(out)
        await self.writer.drain()


def _wants_websocket(req: h11.Request) -> bool:
    upgrade = connection = b""
    for name, value in req.headers:
        if name == b"upgrade":
            upgrade = value.lower()
        elif name == b"connection":
            connection = value.lower()
    return req.method == b"GET" and upgrade == b"websocket" and b"upgrade" in connection


class _WebSocket:
    """One websocket: the handshake via wsproto's H11Handshake (h11 already parsed the request),
    frames via wsproto, ASGI messages to and from the app."""

    def __init__(self, conn: _Connection, req: h11.Request):
        self.conn = conn
        self.scope = conn.scope(req, "websocket")
        self.scope["subprotocols"] = [p.strip() for n, v in req.headers if n == b"sec-websocket-protocol"
                                      for p in v.decode("latin-1").split(",") if p.strip()]
        self.handshake = H11Handshake(ConnectionType.SERVER)
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
                    await self._write(self.handshake.send(RejectConnection(status_code=500, headers=[(b"content-length", b"0")])))
                elif not self.closed:
                    await self._write(self.ws.send(CloseConnection(code=1000)))

    async def _write(self, data: bytes) -> None:
        self.conn.writer.write(data)
        await self.conn.writer.drain()

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                raise RuntimeError("websocket already accepted or closed")
            extra = [(bytes(k), bytes(v)) for k, v in message.get("headers") or ()]
            await self._write(self.handshake.send(AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=extra)))
            self.ws = self.handshake.connection
            self.accepted = True
            self.reading = asyncio.ensure_future(self._read_loop(self.conn.h11.trailing_data[0]))
        elif kind == "websocket.send":
            if self.closed or not self.accepted:
                raise ConnectionResetError("the websocket is closed")
            data = message.get("bytes")
            await self._write(self.ws.send(Message(data=data if data is not None else message.get("text") or "")))
        elif kind == "websocket.close":
            if self.closed:
                return
            self.closed = True
            if not self.accepted:
                await self._write(self.handshake.send(RejectConnection(status_code=403, headers=[(b"content-length", b"0")])))
            else:
                with contextlib.suppress(LocalProtocolError):
                    await self._write(self.ws.send(CloseConnection(code=message.get("code", 1000), reason=message.get("reason") or None)))

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
                        if isinstance(event, Ping):
                            await self._write(self.ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            code = event.code
                            if not self.closed:
                                self.closed = True
                                with contextlib.suppress(LocalProtocolError):
                                    await self._write(self.ws.send(event.response()))
                            return
                        elif isinstance(event, (TextMessage, BytesMessage)):
                            parts.append(event.data)
                            size += len(event.data)
                            if size > WS_MAX_MESSAGE:
                                code = 1009
                                await self.send({"type": "websocket.close", "code": 1009})
                                return
                            if event.message_finished:
                                key = "text" if isinstance(event, TextMessage) else "bytes"
                                joined = "".join(parts) if key == "text" else b"".join(parts)
                                self.inbox.put_nowait({"type": "websocket.receive", key: joined})
                                parts, size = [], 0
                try:
                    data = await asyncio.wait_for(self.conn.reader.read(READ_SIZE), WS_PING_SECONDS)
                except asyncio.TimeoutError:
                    if pinged:
                        return  # silent through a whole ping interval: gone
                    pinged = True
                    await self._write(self.ws.send(Ping(payload=b"tinypds")))
                    data = b""
                    continue
                pinged = False
                if not data:
                    return
        except RemoteProtocolError:
            code = 1002
            with contextlib.suppress(Exception):
                await self.send({"type": "websocket.close", "code": 1002})
        except OSError:
            pass
        finally:
            self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})
