"""Logging: one stderr handler at the configured level, and a one-line-per-request ASGI log.

A leaf module (imports nothing from tinypds). `RequestLog` wraps the whole ASGI app (so
router 404s are logged too) and writes `method=... path=... status=... ms=...` to the
`tinypds.request` logger at INFO. Tricky bits: only the path is logged — never the query
string, headers or bodies (tokens and passwords live there); a websocket's line is written
when it ends, with its close code and duration.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_PATH = 200

log = logging.getLogger("tinypds.request")


def configure_logging(level: str, stream: Any = None) -> None:
    """Root logger -> one stderr handler (journald adds nothing but the unit name)."""
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=stream or sys.stderr, force=True)


def _clean_path(path: str) -> str:
    """The path as one token: no spaces, quotes or control characters, bounded length."""
    out = "".join(c if 0x20 < ord(c) < 0x7F and c != '"' else "%%%02X" % (ord(c) & 0xFF) for c in path)
    return out if len(out) <= MAX_PATH else out[:MAX_PATH] + "..."


class RequestLog:
    """ASGI middleware: one INFO line per HTTP request or websocket session."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None):
        self.app = app
        self.log = logger or log

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = {"status": 0}

        async def logged_send(message: Message) -> None:
            t = message.get("type")
            if t == "http.response.start":
                state["status"] = message.get("status", 0)
            elif t == "websocket.accept":
                state["status"] = 101
            elif t == "websocket.close":
                state["close"] = message.get("code", 1000)
                if not state["status"]:
                    state["status"] = 403  # closed before accepting: rejected
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except BaseException:
            if not state["status"]:
                state["status"] = 500
            raise
        finally:
            ms = (time.perf_counter() - start) * 1000
            method = scope.get("method", "GET") if kind == "http" else "WS"
            extra = f" close={state['close']}" if "close" in state else ""
            self.log.info("method=%s path=%s status=%d ms=%.1f%s", method, _clean_path(scope.get("path", "")),
                          state["status"], ms, extra)
