"""One HTTP/1.1 connection: httptools parses requests into a queue of events, the ASGI app
gets `receive`/`send`, answers are framed here (Content-Length or chunked), keep-alive and
the limits in `limits` are kept. A websocket upgrade is handed to websocket.WebSocket.

Tricky bits: the app pulls the body (nothing is read from the socket it has not asked for,
so TCP pushes back); a read is always handed to the parser even when its caller is
cancelled; an unread body is dropped after the answer if small, else the connection closes;
response header names and values are checked (no CR/LF/NUL injection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

import httptools

from . import limits
from .websocket import WebSocket, wants_websocket

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("tinypds.http")

_DISCONNECT = {"type": "http.disconnect"}
_date = [0, b""]  # the Date header, formatted once per second


def _http_date() -> bytes:
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
    return _date[1]


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
        self.head_began = 0.0
        self._url = b""
        self._headers: list = []

    def on_message_begin(self) -> None:
        self.in_head, self.head_bytes, self._url, self._headers = True, 0, b"", []
        self.head_began = time.monotonic()

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


class Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        self.parsed = _Parsed()
        peer = writer.get_extra_info("peername")
        sock = writer.get_extra_info("sockname")
        self.client = (peer[0], peer[1]) if peer else None
        self.local = (sock[0], sock[1]) if sock else None
        self.idle = True
        self.websocket: WebSocket | None = None
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
                    event = await self._next_event(None)
            except _Refused as exc:
                await self.refuse(exc.status, str(exc))
                return
            if event is None or event[0] != "request":
                return  # closed, timed out
            req = event[1]
            self.idle = False
            if self.upgraded is not None and wants_websocket(req):
                self.websocket = WebSocket(self, req)
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
                event = await self._next_event(limits.DRAIN_SECONDS)
            except _Refused:
                return False
            if event is None:
                return False
            if event[0] == "end":
                ex.body_done = True
            elif event[0] == "data":
                dropped += len(event[1])
                if dropped > limits.MAX_DRAIN_BYTES:
                    return False
        return True

    def _idle_timeout(self) -> float:
        if self.parsed.in_head:  # a request has started arriving: its whole head has HEADER_SECONDS
            return max(0.0, limits.HEADER_SECONDS - (time.monotonic() - self.parsed.head_began))
        return limits.KEEP_ALIVE_SECONDS if self.served else limits.FIRST_REQUEST_SECONDS

    async def _next_event(self, timeout: float | None) -> Any:
        """The next parsed event; None when the peer is gone or silent for `timeout` (None:
        between requests, where the wait depends on how far the next request has come)."""
        events = self.parsed.events
        while not events:
            wait = self._idle_timeout() if timeout is None else timeout
            if self.upgraded is not None or not await self._fill(wait):
                return None
        return events.popleft()

    async def _fill(self, timeout: float | None, until: asyncio.Event | None = None) -> bool:
        """Read more bytes into the parser. False on silence for `timeout`, the end of the stream,
        a dead socket, or `until` being set first. What a read got is parsed even when the
        caller is being cancelled (the reader allows one waiter: an abandoned read is awaited)."""
        reading = asyncio.ensure_future(self.reader.read(limits.READ_SIZE))
        waiting = asyncio.ensure_future(until.wait()) if until is not None else None
        try:
            await asyncio.wait({reading} if waiting is None else {reading, waiting}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            if waiting is not None:
                waiting.cancel()
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
            if parsed.head_bytes > limits.MAX_HEADER_BYTES:
                raise _Refused(431, "request head too large")

    async def refuse(self, status: int, why: str) -> None:
        """Answer a request we could not parse (400, 431), an app failure (500) or a full server (503); close."""
        if status == 503:
            body = b'{"error":"NotEnoughResources","message":"Too many connections; try again later"}'
        elif status >= 500:
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
            await self.refuse(505, "HTTP version not supported")
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
                await self.refuse(exc.status, str(exc))
            return False
        except Exception:
            log.exception("the app failed on %s %s", scope["method"], scope["path"])
            if not ex.started:
                await self.refuse(500, "app error")
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
                event = await self._next_event(limits.BODY_IDLE_SECONDS)
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
            try:
                got = await self._fill(None, until=ex.finished)  # a pipelined request is parsed for its turn
            except _Refused:  # a bad next request is refused in its turn
                continue
            if not got and not ex.finished.is_set():
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
