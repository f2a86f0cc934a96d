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
    from tinypds.services.auth.oauth.server import OAuthService

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


def test_permission_set_shown_by_its_own_words_and_expanded_in_the_token(server, tmp_path):
    """include: through a DNS stand-in and a lexicon host on loopback: the consent page names the
    set by its title in the browser's language; the access token's scopes carry its grants."""
    from tests.services.test_oauth_permission_sets import NSID, DnsStandIn, LexiconHost, calendar_set
    from tinypds.services.identity.resolver import DidResolver, dns_txt_at
    from tinypds.services.auth.oauth.permission_sets import PermissionSetResolver
    from tinypds.services.auth.oauth.scopes import RepoWrite, scope_allows

    host = LexiconHost()
    host.records[NSID] = calendar_set()
    dnsd = DnsStandIn({"_lexicon.calendar.example.com": [f"did={host.did}"]})
    dids = DidResolver("http://127.0.0.1:9")
    oauth = server.svc.oauth
    oauth.permission_sets = PermissionSetResolver(dns_txt=dns_txt_at("127.0.0.1", dnsd.port), dids=dids,
                                                  local_did=lambda: None, local_record=None)
    scope = f"atproto include:{NSID}"
    client_id = f"http://localhost?redirect_uri={quote(REDIRECT, safe='')}&scope={quote(scope, safe='')}"
    try:
        url = server.svc.settings.public_url + "/oauth/par"
        key = DpopKey()
        key.nonce = oauth.dpop.nonces.current()
        verifier, challenge = pkce()
        form = {"client_id": client_id, "response_type": "code", "code_challenge": challenge, "code_challenge_method": "S256",
                "state": "st-2", "redirect_uri": REDIRECT, "scope": scope}
        request_uri = server.call(oauth.par(form, key.proof("POST", url), [url]))["request_uri"]
        with httpx.Client(base_url=server.url, follow_redirects=False, headers={"Accept-Language": "de-DE,de;q=0.9"}) as c:
            r = c.get("/oauth/authorize", params={"client_id": client_id, "request_uri": request_uri})
            assert "Kalender: Termine verwalten" in r.text, r.text[:2000]
            csrf = html.unescape(re.search(r'name="csrf" value="([^"]+)"', r.text).group(1))
            r = c.post("/oauth/authorize", data={"csrf": csrf, "request_uri": request_uri, "client_id": client_id,
                                                 "password": server.password, "action": "allow"})
            assert r.status_code == 303
            code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        token_url = server.svc.settings.public_url + "/oauth/token"
        tokens = server.call(oauth.token({"client_id": client_id, "grant_type": "authorization_code", "code": code,
                                          "code_verifier": verifier, "redirect_uri": REDIRECT},
                                         key.proof("POST", token_url), [token_url]))
        res_url = server.svc.settings.public_url + "/xrpc/com.atproto.repo.createRecord"
        ctx = server.call(oauth.verify_access(tokens["access_token"], key.proof("POST", res_url, access_token=tokens["access_token"]),
                                              "POST", [res_url]))
        assert scope_allows(ctx.scopes, RepoWrite("com.example.calendar.event", "create"))
        assert not scope_allows(ctx.scopes, RepoWrite("app.bsky.feed.post", "create"))
        # the set changes upstream: a token refresh looks it up again (the cache is bypassed)
        host.records[NSID] = calendar_set(extra=[{"type": "permission", "resource": "repo",
                                                  "collection": ["com.example.calendar.todo"]}])
        tokens = server.call(oauth.token({"client_id": client_id, "grant_type": "refresh_token",
                                          "refresh_token": tokens["refresh_token"]}, key.proof("POST", token_url), [token_url]))
        ctx = server.call(oauth.verify_access(tokens["access_token"], key.proof("POST", res_url, access_token=tokens["access_token"]),
                                              "POST", [res_url]))
        assert scope_allows(ctx.scopes, RepoWrite("com.example.calendar.todo", "create"))
        # a set nobody can resolve is refused at PAR, by name
        bad = "atproto include:com.nowhere.set.basic"
        bad_client = f"http://localhost?redirect_uri={quote(REDIRECT, safe='')}&scope={quote(bad, safe='')}"
        key.nonce = oauth.dpop.nonces.current()
        with pytest.raises(Exception) as e:
            server.call(oauth.par({**form, "client_id": bad_client, "scope": bad, "code_challenge": pkce()[1]},
                                  key.proof("POST", url), [url]))
        assert getattr(e.value, "error", None) == "invalid_scope" and "com.nowhere.set.basic" in e.value.description
    finally:
        oauth.permission_sets = None
        server.call(dids.aclose())
        dnsd.close()
        host.close()
