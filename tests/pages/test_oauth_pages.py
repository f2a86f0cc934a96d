"""The OAuth sign-in/consent page from templates, over real HTTP: headers and CSRF, the password,
then the second factor (a code; the password is not carried along), throttling, deny."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pyotp
import pytest

from tests.services.oauth_helpers import DpopKey, pkce

from .harness import page_server

REDIRECT = "http://127.0.0.1:9/callback"
SCOPE = "atproto repo:com.example.note"
CLIENT_ID = f"http://localhost?redirect_uri={quote(REDIRECT, safe='')}&scope={quote(SCOPE, safe='')}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tinypds.services.oauth.server import OAuthService

    with page_server(tmp_path_factory.mktemp("oauthpages")) as s:
        s.svc.oauth = OAuthService(s.svc.db, issuer=s.svc.settings.public_url)
        yield s


def par(server) -> str:
    oauth = server.svc.oauth
    url = server.svc.settings.public_url + "/oauth/par"
    key = DpopKey()
    key.nonce = oauth.dpop.nonces.current()
    form = {"client_id": CLIENT_ID, "response_type": "code", "code_challenge": pkce()[1], "code_challenge_method": "S256",
            "state": "st-1", "redirect_uri": REDIRECT, "scope": SCOPE}
    return server.call(oauth.par(form, key.proof("POST", url), [url]))["request_uri"]


def page(c: httpx.Client, request_uri: str) -> tuple[httpx.Response, str]:
    r = c.get("/oauth/authorize", params={"client_id": CLIENT_ID, "request_uri": request_uri})
    m = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert m, r.text[:400]
    return r, html.unescape(m.group(1))


def submit(c: httpx.Client, request_uri: str, csrf: str, **fields) -> httpx.Response:
    return c.post("/oauth/authorize", data={"csrf": csrf, "request_uri": request_uri, "client_id": CLIENT_ID, **fields})


def test_consent_page_from_the_template(server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        r, csrf = page(c, par(server))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "form-action" not in csp and r.headers["x-frame-options"] == "DENY"
        assert "Loopback development client" in r.text and "com.example.note" in r.text and "@alice.test" in r.text
        assert "<script" not in r.text and 'type="password"' in r.text and 'name="remember"' in r.text
        assert '/account/static/style.css' in r.text  # the one layout


def test_csrf_wrong_password_and_deny(server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        request_uri = par(server)
        _, csrf = page(c, request_uri)
        forged = httpx.post(server.url + "/oauth/authorize", data={"csrf": csrf, "request_uri": request_uri, "client_id": CLIENT_ID,
                                                                   "password": server.password, "action": "allow"})
        assert forged.status_code == 403 and "location" not in forged.headers
        wrong = submit(c, request_uri, csrf, password="nope", action="allow")
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        denied = submit(c, request_uri, csrf, action="deny")
        assert denied.status_code == 303 and parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]


def test_second_factor_on_the_oauth_page(server):
    tf = server.svc.auth.twofactor
    begun = server.call(tf.totp_begin(server.did, server.handle))
    totp = pyotp.TOTP(begun["secret"])
    codes = server.call(tf.totp_confirm(server.did, totp.now()))
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as c:
            request_uri = par(server)
            _, csrf = page(c, request_uri)
            r = submit(c, request_uri, csrf, password=server.password, action="allow")
            assert r.status_code == 200 and "location" not in r.headers  # no code issued yet
            assert 'name="code"' in r.text and 'type="password"' not in r.text and server.password not in r.text
            pending = html.unescape(re.search(r'name="pending" value="([^"]+)"', r.text).group(1))
            r = submit(c, request_uri, csrf, pending=pending, code="000000" if totp.now() != "000000" else "111111", action="allow")
            assert r.status_code == 401 and "not right" in r.text and "location" not in r.headers
            r = submit(c, request_uri, csrf, pending="forged", code=codes[0], action="allow")
            assert r.status_code == 401 and "location" not in r.headers
            r = submit(c, request_uri, csrf, pending=pending, code=codes[0], action="allow")
            assert r.status_code == 303
            q = parse_qs(urlsplit(r.headers["location"]).query)
            assert q["code"] and q["state"] == ["st-1"]
            # the pending token is spent
            r = submit(c, request_uri, csrf, pending=pending, code=codes[1], action="allow")
            assert r.status_code in (400, 401) and "location" not in r.headers
    finally:
        server.call(tf.disable_all(server.did))
