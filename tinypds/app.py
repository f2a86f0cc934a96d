"""create_app(settings): the Litestar application — lifespan, routes, the one error handler, CORS.

Owns wiring only: the lifespan opens the database and builds the services (kept on
`app.state.services`), the route table is the union of the xrpc modules' ROUTES, and
ONE app-level exception handler renders every failure as XRPC JSON {"error","message"}
(XrpcError, Litestar's router 404/405, validation errors; anything else is a logged 500
with no detail). Imports services and xrpc; never the store's SQL modules directly
except through services' factories.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from litestar import Litestar, Request, Response
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException

from . import errors
from .config import Settings
from .xrpc import ROUTES

log = logging.getLogger("tinypds.app")

_BY_STATUS: dict[int, type[errors.XrpcError]] = {
    400: errors.InvalidRequest,
    401: errors.AuthenticationRequired,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    429: errors.RateLimitExceeded,
    501: errors.MethodNotImplemented,
    502: errors.UpstreamFailure,
    503: errors.NotEnoughResources,
    504: errors.UpstreamTimeout,
}


@dataclass
class AppServices:
    """What handlers reach through `request.app.state.services`; None = not available."""

    settings: Settings
    db: Any = None
    keys: Any = None
    account: Any = None
    repo: Any = None
    auth: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _to_xrpc_error(exc: Exception, request: Request) -> errors.XrpcError:
    if isinstance(exc, errors.XrpcError):
        return exc
    if isinstance(exc, HTTPException):
        code = exc.status_code
        if code == 405:
            return errors.MethodNotAllowed(f"Method {request.method} not allowed for {request.url.path}")
        if code == 404:
            return errors.NotFound("Not Found")
        cls = _BY_STATUS.get(code)
        if cls is not None and code < 500:
            return cls(str(exc.detail) if exc.detail else None)
        if cls is not None:
            return cls()
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return errors.InternalServerError()


def xrpc_exception_handler(request: Request, exc: Exception) -> Response:
    """The one place exceptions become HTTP responses."""
    err = _to_xrpc_error(exc, request)
    return Response(content=err.body(), status_code=err.status, headers=err.headers or None, media_type="application/json")


def _optional(module: str) -> Any:
    """Import a service module that may not exist yet (tolerated while the project grows)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


async def open_services(settings: Settings) -> AppServices:
    """Open the database and build the services that exist in this build."""
    svc = AppServices(settings=settings)
    bootstrap = _optional("tinypds.services.bootstrap")
    if bootstrap is not None and hasattr(bootstrap, "open_services"):
        opened = await bootstrap.open_services(settings)
        for name, value in opened.items():
            if hasattr(svc, name):
                setattr(svc, name, value)
            else:
                svc.extra[name] = value
    return svc


async def close_services(svc: AppServices) -> None:
    for name in ("auth", "repo", "account", "keys"):
        obj = getattr(svc, name)
        closer = getattr(obj, "aclose", None)
        if closer is not None:
            await closer()
    if svc.db is not None:
        closer = getattr(svc.db, "aclose", None) or getattr(svc.db, "close", None)
        if closer is not None:
            result = closer()
            if hasattr(result, "__await__"):
                await result


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
        try:
            if on_open is not None:
                await on_open(svc)
            yield
        finally:
            if own:
                await close_services(svc)

    cors = CORSConfig(
        allow_origins=["*"],
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"],
        allow_headers=["*"],
        expose_headers=["*", "dpop-nonce", "www-authenticate", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
        max_age=86400,
    )
    app = Litestar(
        route_handlers=ROUTES,
        exception_handlers={Exception: xrpc_exception_handler},
        cors_config=cors,
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,
        request_max_body_size=settings.max_request_bytes,
        debug=False,
    )
    app.state.settings = settings
    return app
