"""app.bsky.* served locally: getPreferences / putPreferences (everything else is proxied).

As the reference PDS: with an `atproto-proxy` header naming another AppView than the
configured one, both are proxied there instead. Full account sessions see and set the
personal-details preference; app passwords do not. Imports tinypds.web, services and the
routing helpers; never store.
"""

from __future__ import annotations

from ..errors import MethodNotImplemented
from ..services.account.preferences import PreferencesService
from ..services.auth.oauth.scopes import RpcCall
from litestar import Request, Response, get
from .proxy import forward_request, rpc_audience
from .routing import access_auth, json_body, post, services

NS = "/xrpc/app.bsky.actor."


def _preferences(request: Request) -> PreferencesService:
    svc = services(request)
    prefs = svc.preferences
    if prefs is None:
        if svc.db is None:
            raise MethodNotImplemented("Preferences need the database, which is not open")
        prefs = svc.preferences = PreferencesService(svc.db)
    return prefs


def _other_appview(request: Request) -> bool:
    header = request.headers.get("atproto-proxy")
    settings = services(request).settings
    return bool(header) and header.strip() != f"{settings.appview_did}#bsky_appview"


@get(NS + "getPreferences")
async def get_preferences(request: Request) -> dict | Response:
    ctx = await access_auth(request)
    ctx.require(RpcCall("app.bsky.actor.getPreferences", rpc_audience(request, "app.bsky.actor.getPreferences")))
    if _other_appview(request):
        return await forward_request(request, "app.bsky.actor.getPreferences", ctx)
    prefs = await _preferences(request).get(ctx.did, full_access=ctx.is_full_session)
    return {"preferences": prefs}


@post(NS + "putPreferences", status_code=200)
async def put_preferences(request: Request) -> None | Response:
    ctx = await access_auth(request)
    ctx.require(RpcCall("app.bsky.actor.putPreferences", rpc_audience(request, "app.bsky.actor.putPreferences")))
    if _other_appview(request):
        return await forward_request(request, "app.bsky.actor.putPreferences", ctx)
    body = await json_body(request)
    await _preferences(request).put(ctx.did, body.get("preferences"), full_access=ctx.is_full_session)
    return None


ROUTES = [get_preferences, put_preferences]
