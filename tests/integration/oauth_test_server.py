"""Test-only launcher: the real tinypds app, except that OAuth client-metadata documents come
from a local JSON file instead of the network (python -m tests.integration.oauth_test_server DATA PORT DOCS).

Why: a confidential client's client_id must be an https URL on a public host, which a
loopback test cannot provide, and the production fetcher (rightly) refuses loopback and
private addresses. Everything else (routes, services, database, dev account) is the
production code path. DOCS maps URL -> JSON document; unknown URLs answer 404.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx

from tinypds.app import create_app
from tinypds.cli.server import _ensure_dev_account
from tinypds.config import load_settings
from tinypds.http_serve import make_server
from tinypds.services.auth.oauth.clients import ClientRegistry
from tinypds.services.auth.oauth.server import OAuthService


def main() -> None:
    data, port, docs_path = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    docs = json.loads(docs_path.read_text())

    def serve(request: httpx.Request) -> httpx.Response:
        doc = docs.get(str(request.url))
        return httpx.Response(200, json=doc) if doc is not None else httpx.Response(404, json={})

    settings = load_settings({"data_dir": data, "dev": True, "hostname": f"localhost:{port}", "port": port,
                              "keyring_backend": "file", "write_rate_limit": 0})

    async def on_open(svc):
        await _ensure_dev_account(svc)
        # the app builds its OAuthService on the first OAuth request; this one is there first
        clients = ClientRegistry(http=httpx.AsyncClient(transport=httpx.MockTransport(serve)))
        svc.oauth = OAuthService(svc.db, issuer=settings.public_url, clients=clients)

    data.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, on_open=on_open)
    make_server(app, settings, "127.0.0.1", port).run()  # the dev account's handle/did/password are printed on first start


if __name__ == "__main__":
    main()
