"""DPoP-bound OAuth tokens on proxied calls (AppView, chat) and blob uploads, limited by
rpc:/blob:/transition: scopes. Uses test_proxy's lab (stand-in AppView/chat services that
verify the service-auth token they receive)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pytest

from .test_oauth_http import Client
from .test_proxy import HANDLE, PASSWORD, lab  # noqa: F401  (the module-scoped fixture)


@dataclass
class Account:
    url: str
    handle: str
    password: str
    did: str


def _client(lab, scope: str) -> Client:  # noqa: F811
    c = Client(Account(lab.pds.url, HANDLE, PASSWORD, lab.did), scope)
    c.sign_in()
    return c


def test_generic_token_reaches_the_appview_but_not_chat(lab):  # noqa: F811
    c = _client(lab, "atproto transition:generic")
    r = c.xrpc("GET", "app.bsky.feed.getTimeline", params={"limit": "2"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["service"] == "appview" and echo["iss"] == lab.did and echo["lxm"] == "app.bsky.feed.getTimeline"
    assert "dpop" not in echo["headers"] and c.access not in echo["headers"]["authorization"]
    chat = c.xrpc("GET", "chat.bsky.convo.listConvos")
    assert chat.status_code == 403 and chat.json()["error"] == "ScopeMissingError"
    c2 = _client(lab, "atproto transition:generic transition:chat.bsky")
    assert c2.xrpc("GET", "chat.bsky.convo.listConvos").json()["service"] == "chat"
    c.http.close()
    c2.http.close()


def test_granular_rpc_scope(lab):  # noqa: F811
    aud = f"{lab.appview.did}#bsky_appview"
    c = _client(lab, f"atproto rpc:app.bsky.feed.getTimeline?aud={quote(aud, safe='')}")  # params are URL-encoded
    ok = c.xrpc("GET", "app.bsky.feed.getTimeline")
    assert ok.status_code == 200, (aud, ok.text)
    other = c.xrpc("GET", "app.bsky.feed.getAuthorFeed", params={"actor": lab.did})
    assert other.status_code == 403 and "app.bsky.feed.getAuthorFeed" in other.json()["message"]
    prefs = c.xrpc("GET", "app.bsky.actor.getPreferences")
    assert prefs.status_code == 403
    assert not lab.appview.failures
    c.http.close()


@pytest.mark.parametrize("mime, allowed", [("image/png", True), ("video/mp4", False)])
def test_blob_upload_by_scope(lab, mime, allowed):  # noqa: F811
    c = _client(lab, "atproto blob:image/*")
    r = c.xrpc("POST", "com.atproto.repo.uploadBlob", content=b"\x89PNG\r\n\x1a\n" + b"x" * 100, headers={"content-type": mime})
    if allowed:
        assert r.status_code == 200, r.text
        assert r.json()["blob"]["mimeType"] == mime
    else:
        assert r.status_code == 403 and r.json()["error"] == "ScopeMissingError"
    c.http.close()


def test_get_service_auth_follows_rpc_scopes(lab):  # noqa: F811
    aud = f"{lab.appview.did}#bsky_appview"
    c = _client(lab, f"atproto rpc:app.bsky.feed.getTimeline?aud={quote(aud, safe='')}")
    ok = c.xrpc("GET", "com.atproto.server.getServiceAuth", params={"aud": lab.appview.did, "lxm": "app.bsky.feed.getTimeline"})
    assert ok.status_code == 200 and ok.json()["token"]
    other = c.xrpc("GET", "com.atproto.server.getServiceAuth", params={"aud": lab.appview.did, "lxm": "app.bsky.feed.getAuthorFeed"})
    assert other.status_code == 403 and "token" not in other.json()
    any_method = c.xrpc("GET", "com.atproto.server.getServiceAuth", params={"aud": lab.appview.did})
    assert any_method.status_code == 403 and "token" not in any_method.json()
    c.http.close()
