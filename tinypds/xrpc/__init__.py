"""XRPC handlers: one module per lexicon namespace, one function per NSID.

Handlers parse input at the edge (core.syntax), call one service, and return the
lexicon's output shape; they never build error JSON (they raise tinypds.errors) and
never import tinypds.store. ROUTES is the whole route table, in one place.
"""

from __future__ import annotations

from . import identity, repo, server, sync, wellknown

ROUTES: list = [
    *wellknown.ROUTES,
    *server.ROUTES,
    *identity.ROUTES,
    *repo.ROUTES,
    *sync.ROUTES,
    # the catch-all last: unknown /xrpc/<nsid> -> 501 (later: the proxy)
    *wellknown.FALLBACK_ROUTES,
]
