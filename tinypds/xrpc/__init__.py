"""XRPC handlers: one module per lexicon namespace, one function per NSID.

Handlers parse input at the edge (core.syntax), call one service, and return the
lexicon's output shape (Litestar route handlers); they never build error JSON (they raise tinypds.errors) and
never import tinypds.store. ROUTES is the whole route table, in one place.
"""

from __future__ import annotations

from . import app_bsky, identity, migration, oauth, proxy, repo, server, sync, wellknown

ROUTES: list = [
    *wellknown.ROUTES,
    *oauth.ROUTES,
    *server.ROUTES,
    *migration.ROUTES,
    *identity.ROUTES,
    *repo.ROUTES,
    *sync.ROUTES,
    *app_bsky.ROUTES,
    proxy.proxy_call,  # any other /xrpc/<nsid>: proxied (AppView, chat, atproto-proxy target)
]
