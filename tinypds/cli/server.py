"""`tinypds serve [--host H] [--port P]`: run the PDS (Litestar) on uvicorn (httptools, wsproto).

Owns the process lifetime and uvicorn's settings: binds (port 0 = any free port), prints
one machine-readable line "tinypds listening on http://HOST:PORT" once the lifespan has
opened the database, and shuts down on SIGTERM/SIGINT within SHUTDOWN_SECONDS: firehose
subscribers get 1001 first, stalled clients are cut off, then the lifespan closes the
database (which checkpoints); a second signal stops waiting. On a first start with no
account on a loopback hostname it creates a local dev account and prints it once.
"""

from __future__ import annotations

import argparse
import socket
import sys
from typing import Any

from . import CliError, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the PDS HTTP server", description="Run the PDS HTTP server.")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1 or TINYPDS_HOST)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 2583 or TINYPDS_PORT; 0 = any free port)")
    p.add_argument("--no-dev-account", action="store_true", help="do not create a local dev account on first start")
    p.set_defaults(func=cmd_serve)


def _is_loopback_host(hostname: str) -> bool:
    bare = hostname.rsplit(":", 1)[0] if hostname.count(":") == 1 else hostname
    return bare in ("localhost", "127.0.0.1", "::1", "[::1]") or bare.endswith(".localhost")


def cmd_serve(args: argparse.Namespace) -> int:
    _skip_httpx_cli()  # footprint: before anything imports httpx
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        if not 0 <= args.port < 65536:
            raise CliError(f"--port {args.port} is not a TCP port")
        if args.port:
            overrides["port"] = args.port
    settings = settings_from_args(args, **overrides)
    port = args.port if args.port is not None else settings.port
    local = _is_loopback_host(settings.hostname)
    if local:
        # a loopback PDS has no TLS; in dev mode KeyStore.open keeps the keys beside the data
        settings = settings.replace(dev=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _check_keys(settings)

    from ..services.ops.data_dir import OpsError, ServerLock

    lock = ServerLock(settings.data_dir)  # held until the database is closed (restore checks it)
    try:
        if not lock.acquire():
            raise CliError(f"another tinypds server (or a restore) is running on {settings.data_dir}")
    except OpsError as exc:
        raise CliError(str(exc)) from None
    try:
        return _run(args, settings, port, local)
    finally:
        lock.release()


def _skip_httpx_cli() -> None:
    """httpx imports its command-line client (rich, pygments: ~5 MB of RSS) only to offer
    `httpx.main`, which the server never calls: give it a stand-in before anything imports httpx."""
    if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
        import types

        stub = types.ModuleType("httpx._main")
        stub.main = lambda: None  # type: ignore[attr-defined]
        sys.modules["httpx._main"] = stub


def _run(args: argparse.Namespace, settings: Any, port: int, local: bool) -> int:
    from ..app import create_app
    from ..http_serve import make_server
    from ..logging_setup import configure_logging

    on_open = None
    if not args.no_dev_account and local:
        on_open = _ensure_dev_account
    sock = _bind(settings.host, port)  # before the lifespan: a busy port must not cost the dev account's password
    app = create_app(settings, on_open=on_open)
    configure_logging(settings.log_level)
    server = make_server(app, settings, settings.host, port, on_listening=_announce)
    try:
        server.run(sockets=[sock])  # SIGTERM (how systemd stops a service) drains and shuts down: exit 0
    except SystemExit as exc:  # uvicorn exits when the lifespan fails
        return int(exc.code or 1)
    finally:
        sock.close()
    return 0 if server.started else 1


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or a one-line error naming the fix (port in use, bad address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                       "stop what is using it or pick another port with --port") from None
    sock.set_inheritable(True)
    return sock


def _announce(sockets: list) -> None:
    """Print the bound address (port 0 aware): tests and scripts read this line."""
    for sock in sockets:
        addr = sock.getsockname()
        host = addr[0] if ":" not in addr[0] else f"[{addr[0]}]"
        print(f"tinypds listening on http://{host}:{addr[1]}", flush=True)
        return


def _check_keys(settings: Any) -> None:
    """A missing or locked key store is a one-line startup error naming the fix."""
    from ..services.identity.keys import KeyStoreError
    from ..services.identity.local import check_startup_keys

    try:
        check_startup_keys(settings)
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None


DEV_HANDLE = "dev.test"


async def _ensure_dev_account(svc: Any) -> None:
    """First start on a loopback hostname with no account: make one and say so once.

    The DID is a did:plc from a locally signed genesis operation, kept in the local PLC
    log but registered with no directory; its keys go to the KeyStore.
    """
    import secrets

    from ..services.identity.create import get_account

    if get_account(svc.db) is not None:
        return
    password = secrets.token_urlsafe(12)
    password_hash = await svc.auth.hash_password(password)
    new = await svc.identity.create(DEV_HANDLE, password_hash=password_hash, method="plc", plc_url=None)
    print(
        "tinypds: created a LOCAL DEV ACCOUNT (printed only this once)\n"
        f"  handle:   {new.handle}\n  did:      {new.did}\n  password: {password}",
        flush=True,
    )
