"""Server: listen, run the app's lifespan, accept connections, stop gracefully on SIGTERM.

Owns the process-level part; one connection's protocol is http1.Connection. Tricky bit:
a first SIGINT/SIGTERM drains (idle connections close at once, busy ones after their
answer, all within `graceful_seconds`); a second one cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any, Awaitable, Callable, Iterable

from . import limits
from .http1 import Connection

log = logging.getLogger("tinypds.http")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class Server:
    """Serve `app` on host:port until SIGINT/SIGTERM (or `stop()`), then drain and shut down."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *,
                 trusted_proxies: Iterable[str] = limits.TRUSTED_PROXIES, graceful_seconds: float = 10.0,
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
        conn = Connection(self, reader, writer)
        assert task is not None
        if len(self._connections) >= limits.MAX_CONNECTIONS:  # a Pi's memory is the limit: refuse, do not queue
            log.warning("refused a connection: %d open (limit %d)", len(self._connections), limits.MAX_CONNECTIONS)
            await conn.refuse(503, "too many connections")
            writer.close()
            return
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
