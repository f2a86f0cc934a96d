"""One websocket: the handshake through wsproto's H11Handshake (the request is already
parsed), frames through wsproto, ASGI messages to and from the app. wsproto (and h11 under
it) is imported with the first websocket: an idle server has none.

Tricky bits: a reader task answers pings and notices the peer leaving while the app only
sends; a silent peer is pinged after limits.WS_PING_SECONDS and dropped after as long again;
incoming messages are capped at limits.WS_MAX_MESSAGE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import limits

log = logging.getLogger("tinypds.http")

def wants_websocket(req: Any) -> bool:
    """A GET asking to upgrade to websocket."""
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

    return SimpleNamespace(
        ConnectionType=ConnectionType, AcceptConnection=AcceptConnection, BytesMessage=BytesMessage,
        CloseConnection=CloseConnection, Message=Message, Ping=Ping, RejectConnection=RejectConnection,
        TextMessage=TextMessage, H11Handshake=H11Handshake, LocalProtocolError=LocalProtocolError,
        RemoteProtocolError=RemoteProtocolError)


class WebSocket:
    """One websocket: the handshake via wsproto's H11Handshake (the request is already parsed),
    frames via wsproto, ASGI messages to and from the app."""

    def __init__(self, conn: Any, req: Any):
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
                            if size > limits.WS_MAX_MESSAGE:
                                code = 1009
                                await self.send({"type": "websocket.close", "code": 1009})
                                return
                            if event.message_finished:
                                key = "text" if isinstance(event, ws_.TextMessage) else "bytes"
                                joined = "".join(parts) if key == "text" else b"".join(parts)
                                self.inbox.put_nowait({"type": "websocket.receive", key: joined})
                                parts, size = [], 0
                try:
                    data = await asyncio.wait_for(self.conn.reader.read(limits.READ_SIZE), limits.WS_PING_SECONDS)
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
