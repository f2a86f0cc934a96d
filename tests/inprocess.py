"""Serve an ASGI app from THIS process on a real socket (127.0.0.1, port 0) under uvicorn.

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
import uvicorn


@contextlib.contextmanager
def serve(app: Any, timeout: float = 30.0) -> Iterator[httpx.Client]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning",
                            http="httptools", ws="wsproto", loop="asyncio")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name="inprocess-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the in-process server failed to start (see the log)")
        if time.monotonic() > deadline:
            raise TimeoutError("the in-process server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout)
