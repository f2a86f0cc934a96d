"""A real tinypds (services opened by tinypds.app.open_services on a temp data dir, a fresh account)
serving the whole app (tinypds.app.create_app) on 127.0.0.1 with uvicorn in a background thread.

The socket is bound first so the public URL (http://localhost:PORT) is known before the
services open: WebAuthn's origin and RP ID come from it, and a browser treats localhost as a
secure context.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

HANDLE = "alice.test"
PASSWORD = "correct horse battery staple"


@dataclass
class PageServer:
    url: str
    data_dir: Path
    svc: Any
    loop: asyncio.AbstractEventLoop
    did: str
    app: Any = None
    handle: str = HANDLE
    password: str = PASSWORD

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (services belong to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def _app(svc: Any) -> Any:
    """The whole application (XRPC and pages) on the already-open services."""
    from tinypds.app import create_app

    return create_app(svc.settings, services=svc)


@contextlib.contextmanager
def page_server(tmp_path: Path) -> Iterator[PageServer]:
    import uvicorn

    from tinypds.app import close_services, open_services
    from tinypds.config import load_settings
    from tinypds.services.auth import passwords
    from tinypds.services.auth.twofactor import TwoFactorService, rp_from_public_url

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    data_dir = tmp_path / "data"
    settings = load_settings({"data_dir": str(data_dir), "dev": True, "hostname": f"localhost:{port}",
                              "keyring_backend": "file", "write_rate_limit": 0}, environ={})
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}

    async def setup() -> Any:
        svc = await open_services(settings)
        new = await svc.identity.create(HANDLE, password_hash=passwords.hash_password(PASSWORD), method="plc", plc_url=None)
        svc.attach_account()
        if getattr(svc.auth, "twofactor", None) is None:
            rp_id, origin = rp_from_public_url(settings.public_url)
            svc.auth.twofactor = TwoFactorService(svc.db, svc.keys, seal_did=settings.service_did, rp_id=rp_id, origin=origin)
        holder["did"] = new.did
        return svc

    svc = loop.run_until_complete(setup())
    app = _app(svc)
    config = uvicorn.Config(app, log_level="warning", lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, name="page-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the page server did not start")
        time.sleep(0.01)
    try:
        yield PageServer(url=f"http://localhost:{port}", data_dir=data_dir, svc=svc, loop=loop, did=holder["did"], app=app)
    finally:
        server.should_exit = True
        thread.join(30)
        loop.run_until_complete(close_services(svc))
        loop.close()
        sock.close()
