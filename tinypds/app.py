"""create_app(settings): the ASGI application (tinypds.web) — lifespan, routes, the one error handler, CORS.

Owns wiring only: the lifespan opens the database and builds the services (kept on
`app.state.services`), the route table is the union of the xrpc modules' ROUTES, and
ONE app-level exception handler renders every failure as XRPC JSON {"error","message"}
(XrpcError, including the router's 404/405/413; anything else is a logged 500 with no
detail). Imports services and xrpc; never the store's SQL modules directly
except through services' factories.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from . import errors
from .config import Settings
from .web import CORS, App, ClientDisconnected, Request, Response
from .xrpc import FALLBACK, ROUTES
from .xrpc.oauth import dpop_nonce_header

log = logging.getLogger("tinypds.app")

@dataclass
class AppServices:
    """What handlers reach through `request.app.state.services`; None = not available."""

    settings: Settings
    db: Any = None
    keys: Any = None
    account: Any = None
    repo: Any = None
    records: Any = None
    auth: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _to_xrpc_error(exc: Exception, request: Request) -> errors.XrpcError:
    if isinstance(exc, errors.XrpcError):
        return exc
    if isinstance(exc, ClientDisconnected):
        # the client went away mid-body (e.g. an aborted upload): nothing to report,
        # and nobody is listening for the answer
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return errors.InvalidRequest("Client disconnected")
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return errors.InternalServerError()


def xrpc_exception_handler(request: Request, exc: Exception) -> Response:
    """The one place exceptions become HTTP responses."""
    err = _to_xrpc_error(exc, request)
    return Response(err.body(), err.status, headers=err.headers or None, media_type="application/json")


async def open_services(settings: Settings) -> AppServices:
    """Open the database (migrating it), the key store and the services built on them."""
    from .services.auth import AuthService, load_jwt_secret
    from .services.blobs import BlobService
    from .services.keys import KeyStore
    from .services.local_identity import build_local_identity
    from .store.db import Database

    svc = AppServices(settings=settings)
    svc.db = await asyncio.to_thread(Database.open, settings.db_path)
    try:
        svc.keys = await asyncio.to_thread(KeyStore.open, settings)
        svc.extra["identity"] = build_local_identity(settings, svc.db, svc.keys, on_event=lambda: _notify_firehose(svc))
        await asyncio.to_thread(svc.extra["identity"].check_keys)  # missing keys: fail now, naming the fix
        secret = await asyncio.to_thread(load_jwt_secret, svc.keys, settings.service_did)
        svc.auth = AuthService(
            svc.db,
            service_did=settings.service_did,
            jwt_secret=secret,
            access_ttl=settings.access_token_seconds,
            refresh_ttl=settings.refresh_token_seconds,
        )
        # the OAuth service is built on the first OAuth request (xrpc/oauth.py): idle servers never load it
        svc.extra["blobs"] = BlobService(svc.db, settings)
        await svc.extra["blobs"].start()  # startup blob GC, then a periodic GC task (stopped by aclose)
        attach_account(svc)
        svc.extra["attach_account"] = lambda: attach_account(svc)  # after createAccount/import/status changes
        from .services.relay import open_relay_services
        svc.extra.update(await open_relay_services(settings, svc.db))  # seq guard, firehose, crawler, write budget
    except BaseException:
        await asyncio.to_thread(svc.db.close)
        raise
    return svc


def _notify_firehose(svc: AppServices, *_args: Any) -> None:
    from .services.relay import after_event
    after_event(svc.extra)  # firehose subscribers and relays hear of the new event


def attach_account(svc: AppServices) -> None:
    """(Re)build the per-account services once the database holds an account."""
    from .services.account import get_account
    from .services.records import RecordService
    from .services.repo import RepoService

    row = get_account(svc.db)
    svc.account = row
    if row is None:
        svc.repo = svc.records = None
        return
    if row.status == "offline-copy":  # imported without keys: reads only, no key lookups
        from .services.repo import read_only_signer
        svc.repo = RepoService(svc.db, row.did, read_only_signer(row.did))
    else:
        svc.repo = RepoService.from_keystore(svc.db, row.did, svc.keys)
    svc.repo.add_listener(lambda *_a: _notify_firehose(svc))
    svc.records = RecordService(svc.repo, blobs=svc.extra.get("blobs"))


async def close_services(svc: AppServices) -> None:
    for obj in (svc.auth, svc.repo, *svc.extra.values()):
        closer = getattr(obj, "aclose", None)
        if closer is not None:
            await closer()
    if svc.db is not None:
        await asyncio.to_thread(svc.db.close)


def create_app(
    settings: Settings,
    services: AppServices | None = None,
    on_open: Callable[[AppServices], Awaitable[None]] | None = None,
) -> App:
    """The ASGI app. Pass `services` to reuse already-opened services (tests);
    `on_open` runs once the services are open, before the first request (first-start setup)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: App) -> AsyncIterator[None]:
        own = services is None
        svc = await open_services(settings) if own else services
        app.state.services = svc
        try:
            if on_open is not None:
                await on_open(svc)
                attach_account(svc)
            yield
        finally:
            if own:
                await close_services(svc)

    cors = CORS(expose_headers=("*", "dpop-nonce", "www-authenticate", "ratelimit-limit", "ratelimit-remaining",
                                "ratelimit-reset"))
    app = App(
        ROUTES,
        fallback=FALLBACK,
        exception_handler=xrpc_exception_handler,
        before_send=[dpop_nonce_header],  # DPoP-Nonce on answers to OAuth (DPoP) requests
        lifespan=lifespan,
        max_body_size=settings.max_request_bytes,
        cors=cors,
    )
    app.state.settings = settings
    return app
