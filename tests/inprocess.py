"""Serve an ASGI app from THIS process on a real socket (127.0.0.1, port 0) with uvicorn
(tinypds.http_serve, the production settings), in a background thread.

For tests that need in-process hooks (monkeypatched services, a spied key store, a toy
route table) but still real HTTP: `with serve(app) as http:` yields an httpx.Client bound
to the server; leaving the block shuts the server down (lifespan shutdown included).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import httpx

from tinypds.config import Settings
from tinypds.http_serve import Server, make_server


@contextlib.contextmanager
def running(app: Any, timeout: float = 30.0, settings: Settings | None = None,
            **options: Any) -> Iterator[tuple[Server, str]]:
    """(server, base URL) while the server runs in a thread."""
    server = make_server(app, settings or Settings(), "127.0.0.1", 0, **options)
    thread = threading.Thread(target=server.run, name="inprocess-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the in-process server failed to start (see the log)")
        if time.monotonic() > deadline:
            raise TimeoutError("the in-process server did not start")
        time.sleep(0.01)
    port = server.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        thread.join(timeout)


@contextlib.contextmanager
def serve(app: Any, timeout: float = 30.0) -> Iterator[httpx.Client]:
    with running(app, timeout) as (_server, url), httpx.Client(base_url=url, timeout=30) as client:
        yield client
