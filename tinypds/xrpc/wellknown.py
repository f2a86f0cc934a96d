"""Non-lexicon routes: /xrpc/_health, /robots.txt, /.well-known/atproto-did, the root page,
and did:web's /.well-known/did.json.

Imports tinypds.web, errors and the routing helpers only.
"""

from __future__ import annotations

from .. import __version__
from ..services.identity.create import get_account
from ..errors import NotFound
from litestar import Request, get
from .routing import services

ROBOTS = "# Hello!\n\n# Crawling the public API is allowed\nUser-agent: *\nAllow: /\n"
HOME = (
    "This is an AT Protocol Personal Data Server (tinypds).\n\n"
    "Most API routes are under /xrpc/\n"
)


@get("/xrpc/_health")
async def health() -> dict:
    return {"version": __version__}


@get("/robots.txt", media_type="text/plain")
async def robots() -> str:
    return ROBOTS


@get("/", media_type="text/plain")
async def home() -> str:
    return HOME


@get("/.well-known/atproto-did", media_type="text/plain")
async def atproto_did(request: Request) -> str:
    """The account's DID when the requested host is the account's handle."""
    svc = services(request)
    host = (request.headers.get("host") or "").rsplit(":", 1)[0].lower()
    account = get_account(svc.db) if svc.db is not None else None
    if account is None or not host or (account.handle or "").lower() != host or account.status == "deleted":
        raise NotFound("User not found")
    return account.did


@get("/.well-known/did.json")
async def did_json(request: Request) -> dict:
    """The DID document of a did:web account (did:web:<this host>)."""
    svc = services(request)
    ident = svc.identity
    row = ident.identity() if ident is not None else None
    if row is None or row.method != "web":
        raise NotFound("No did:web document here")
    return ident.own_doc()


ROUTES = [health, robots, home, atproto_did, did_json]
