"""create_app(settings): the Litestar application — lifespan, routes, the one error handler, CORS.

Owns wiring only: the lifespan opens the database and builds the services (typed
`AppServices`, kept on `app.state.services`), the route table is the union of the xrpc
modules' ROUTES, and ONE app-level exception handler renders every failure as XRPC JSON
{"error","message"} (XrpcError, Litestar's own 404/405/413/400 included; anything else is a
logged 500 with no detail). Imports services and xrpc; never the store's SQL modules.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException

from . import errors
from .config import Settings
from .services.container import AppServices, attach_account, close_services, open_services
from .xrpc import ROUTES
from . import pages  # the owner's pages and the OAuth pages (templates load on the first page)
from .xrpc.oauth import dpop_nonce_header
from .xrpc.routing import ClientDisconnected

__all__ = ["AppServices", "attach_account", "close_services", "create_app", "open_services", "xrpc_exception_handler"]

log = logging.getLogger("tinypds.app")


def _to_xrpc_error(request: Request, exc: Exception) -> errors.XrpcError:
    if isinstance(exc, errors.XrpcError):
        return exc
    if isinstance(exc, ClientDisconnected) or (
            isinstance(exc, HTTPException) and exc.status_code == 500 and "disconnected" in str(exc.detail)):
        # the client went away mid-body (e.g. an aborted upload): nobody is listening for the answer
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return errors.InvalidRequest("Client disconnected")
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return _from_litestar(exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return errors.InternalServerError()


def _from_litestar(exc: HTTPException) -> errors.XrpcError:
    """Litestar's own refusals (router 404/405, body too large, bad parameters) as XRPC errors."""
    status = exc.status_code
    if status == 404:
        return errors.NotFound("Not Found")
    if status == 405:
        return errors.MethodNotAllowed(str(exc.detail) or "Method Not Allowed")
    if status == 413:
        return errors.PayloadTooLarge("Request body too large")
    err = errors.InvalidRequest(str(exc.detail)[:500] or "Invalid request")
    err.status = status
    return err


def xrpc_exception_handler(request: Request, exc: Exception) -> Response:
    """The one place exceptions become HTTP responses."""
    err = _to_xrpc_error(request, exc)
    return Response(err.body(), status_code=err.status, headers=err.headers or None, media_type="application/json")


async def going_away(app: Litestar) -> None:
    """Before the server closes connections: firehose subscribers are told 1001 Going Away."""
    svc = getattr(app.state, "services", None)
    if svc is not None and svc.firehose is not None:
        await svc.firehose.going_away()


CORS_EXPOSE = ["*", "dpop-nonce", "www-authenticate", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]


def _open_metrics(settings: Settings) -> Any:
    if settings.metrics == "off":
        return None
    from .services.sync.metrics import Metrics

    return Metrics(settings, known_paths={p for h in ROUTES for p in getattr(h, "paths", ())})


def metrics_route(metrics: Any) -> Any:
    """GET /metrics (Prometheus text); with TINYPDS_METRICS=loopback only for clients on this machine."""
    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics_endpoint(request: Request) -> Response:
        if not metrics.allowed(request.client.host if request.client else None):
            raise errors.NotFound("Not Found")
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)
    return metrics_endpoint


def create_app(
    settings: Settings,
    services: AppServices | None = None,
    on_open: Callable[[AppServices], Awaitable[None]] | None = None,
) -> Litestar:
    """The ASGI app. Pass `services` to reuse already-opened services (tests);
    `on_open` runs once the services are open, before the first request (first-start setup)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = services is None
        svc = await open_services(settings) if own else services
        app.state.services = svc
        if metrics is not None:
            metrics.services = svc  # firehose and health gauges are read at scrape time
        try:
            if on_open is not None:
                await on_open(svc)
                attach_account(svc)
            yield
        finally:
            if own:
                await close_services(svc)

    metrics = _open_metrics(settings)  # TINYPDS_METRICS=loopback|on; None (nothing imported) when off
    app = Litestar(
        route_handlers=[*ROUTES, *([metrics_route(metrics)] if metrics is not None else [])],
        middleware=[metrics.middleware] if metrics is not None else [],
        exception_handlers={Exception: xrpc_exception_handler},
        template_config=pages.template_config(),
        before_send=[dpop_nonce_header],  # DPoP-Nonce on answers to OAuth (DPoP) requests
        lifespan=[lifespan],
        request_max_body_size=settings.max_request_bytes,
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                               expose_headers=CORS_EXPOSE, max_age=86400),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    app.state.settings = settings
    for handler in pages.routes():
        app.register(handler)
    return app
