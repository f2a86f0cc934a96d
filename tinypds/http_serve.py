"""make_server(app, settings, host, port): the app on uvicorn, with tinypds's limits and shutdown.

The sole uvicorn importer. uvicorn owns HTTP/1.1 (httptools) and websockets (wsproto); this
module sets its limits (keep-alive, concurrency, websocket frame size and pings, trusted
proxies for X-Forwarded-For/-Proto) and bounds shutdown: firehose subscribers are told
1001 Going Away first, clients still busy after SHUTDOWN_SECONDS are cut off, then the
lifespan closes the database. Tricky bits: a second SIGTERM/SIGINT stops waiting at once;
uvicorn's habit of re-raising the signal after a clean shutdown is dropped (exit 0, as
systemd expects); the request log wraps the app so router 404s are logged too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Iterator

import uvicorn

from .app import going_away
from .config import Settings
from .logging_setup import RequestLog
from .xrpc.streams import HEAD_KEY, QuietIncomplete

SHUTDOWN_SECONDS = 10  # in-flight requests get this long after SIGTERM (systemd waits 30 s)
WS_MAX_MESSAGE = 64 * 1024  # nothing a firehose consumer sends us is larger
WS_PING_SECONDS = 30.0


class Server(uvicorn.Server):
    """uvicorn's server with an announcement once listening and tinypds's shutdown order."""

    def __init__(self, config: uvicorn.Config, app: Any, on_listening: Callable[[list], None] | None = None):
        super().__init__(config)
        self.tinypds_app = app
        self.on_listening = on_listening
        self.sockets: list = []

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.sockets = [s for srv in getattr(self, "servers", []) for s in (srv.sockets or ())]
            if self.on_listening is not None:
                self.on_listening(self.sockets)

    async def shutdown(self, sockets: list | None = None) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(going_away(self.tinypds_app), 2)
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.should_exit:  # asked twice: stop waiting for busy connections
            self.force_exit = True
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Thread-safe: begin a graceful shutdown (a second call stops waiting)."""
        self.handle_exit(signal.SIGTERM, None)


class HeadAsGet:
    """HEAD is answered by the GET route (as the reference's express server does): the app
    sees GET, uvicorn (which keeps the original method) sends the headers and no body, and
    streamed answers stop at once (`HEAD_KEY` in the scope)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = dict(scope, method="GET")
            scope[HEAD_KEY] = True
        await self.app(scope, receive, send)


def make_server(app: Any, settings: Settings, host: str, port: int, *,
                on_listening: Callable[[list], None] | None = None, log_requests: bool = True) -> Server:
    errors_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietIncomplete) for f in errors_log.filters):  # once per process
        errors_log.addFilter(QuietIncomplete())
    config = uvicorn.Config(
        RequestLog(HeadAsGet(app)) if log_requests else HeadAsGet(app),
        host=host,
        port=port,
        loop="asyncio",  # uvloop measured (docs/BENCHMARKS.md, issue 13): +2.3 MB idle RSS, over the 55 MB budget
        http="httptools",
        ws="wsproto",
        ws_per_message_deflate=False,  # as the reference PDS: 20 firehose subscribers cost half the CPU per event
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=True,
        forwarded_allow_ips=list(settings.trusted_proxies),
        timeout_keep_alive=settings.keep_alive_seconds,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        limit_concurrency=settings.max_concurrency,
        ws_max_size=WS_MAX_MESSAGE,
        ws_ping_interval=WS_PING_SECONDS,
        ws_ping_timeout=WS_PING_SECONDS,
    )
    return Server(config, app, on_listening)
