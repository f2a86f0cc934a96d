"""/account over real HTTP: sign-in with and without a second factor, CSRF and session checks on
every action, headers (CSP nonce, cookies), app passwords, sessions, TOTP enrolment, backups."""

from __future__ import annotations

import html
import re
import time

import httpx
import pyotp
import pytest

from .harness import page_server

ACTIONS = ["/account/2fa/totp/begin", "/account/2fa/totp/confirm", "/account/2fa/totp/remove", "/account/2fa/recovery",
           "/account/2fa/passkey/options", "/account/2fa/passkey/add", "/account/2fa/passkey/remove",
           "/account/sessions/revoke", "/account/apps/revoke", "/account/app-passwords/create",
           "/account/app-passwords/revoke", "/account/handle", "/account/backup/sealed",
           "/account/password", "/account/password/token", "/account/email/send", "/account/email/confirm",
           "/account/email/change", "/account/deactivate", "/account/activate", "/account/delete/token", "/account/delete",
           "/account/move/out"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with page_server(tmp_path_factory.mktemp("pages")) as s:
        yield s


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page[:500]
    return html.unescape(m.group(1))


def new_client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


def sign_in(server, client: httpx.Client, code_for=None) -> str:
    page = client.get("/account").text
    r = client.post("/account/signin", data={"csrf": csrf_of(page), "password": server.password})
    assert r.status_code == 303, r.text
    page = client.get("/account").text
    if code_for is not None:
        assert "Confirm it" in page
        r = client.post("/account/signin/code", data={"csrf": csrf_of(page), "code": code_for()})
        assert r.status_code == 303, r.text
        page = client.get("/account").text
    assert "Sign-in security" in page
    return page


def test_sign_in_page_headers_and_cookie(server):
    with new_client(server) as c:
        r = c.get("/account")
        assert r.status_code == 200 and "Password" in r.text and "@alice.test" in r.text
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
        assert c.get("/account").headers["content-security-policy"] != csp  # a fresh nonce each time
        r = c.post("/account/signin", data={"csrf": csrf_of(r.text), "password": server.password})
        cookie = r.headers["set-cookie"]
        assert "tinypds-page=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/account" in cookie


def test_sign_in_refusals(server):
    with new_client(server) as c:
        page = c.get("/account").text
        r = c.post("/account/signin", data={"password": server.password})  # no CSRF token
        assert r.status_code == 403 and "tinypds-page=" not in r.headers.get("set-cookie", "")
        r = c.post("/account/signin", data={"csrf": csrf_of(page), "password": "wrong"})
        assert r.status_code == 401 and "Wrong password" in r.text
        r = c.post("/account/signin", data={"csrf": csrf_of(page), "password": server.password},
                   headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403


@pytest.mark.parametrize("path", ACTIONS)
def test_nothing_works_without_a_session(server, path):
    with new_client(server) as c:
        r = c.post(path, data={"csrf": "x", "name": "n", "handle": "x.test", "passphrase": "p" * 10})
        assert r.status_code == 401
    with new_client(server) as c:
        assert c.get("/account/backup/repo.car").status_code == 401


@pytest.mark.parametrize("path", ACTIONS)
def test_nothing_works_without_the_csrf_token(server, path):
    with new_client(server) as c:
        page = sign_in(server, c)
        token = csrf_of(page)
        for data in ({}, {"csrf": token[:-2] + "xx"}, {"csrf": ""}):
            r = c.post(path, data={**data, "name": "n", "handle": "x.test", "passphrase": "p" * 10})
            assert r.status_code == 403, (path, data, r.status_code)
        r = c.post(path, data={"csrf": token, "name": "n"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = c.post(path, data={"csrf": token, "name": "n"}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert server.call(server.svc.auth.list_app_passwords(_ctx(server))) == []  # nothing was created


def _ctx(server):
    from tinypds.services.auth.context import AuthContext

    return AuthContext(did=server.did, kind="access", scopes=frozenset())


def test_app_passwords_and_sessions(server):
    with new_client(server) as c:
        page = sign_in(server, c)
        r = c.post("/account/app-passwords/create", data={"csrf": csrf_of(page), "name": "phone", "privileged": "1"})
        assert r.status_code == 303 and r.headers["location"].endswith("#app-passwords")
        page = c.get("/account").text
        m = re.search(r'id="new-app-password">([a-z2-7-]{19})<', page)
        assert m and "allowed" in page
        assert m.group(1) not in c.get("/account").text  # shown once
        # the app password signs in (a session appears on the page) ...
        _, tokens = server.call(server.svc.auth.create_session(server.handle, m.group(1), "127.0.0.1"))
        page = c.get("/account").text
        assert "App password “phone”" in page
        sid = re.search(r'name="id" value="([^"]+)"><button class="secondary small" type="submit" aria-label="Sign out session App', page)
        assert sid
        r = c.post("/account/sessions/revoke", data={"csrf": csrf_of(page), "id": html.unescape(sid.group(1))})
        assert r.status_code == 303
        with pytest.raises(Exception):
            server.call(server.svc.auth.verify_access(tokens["accessJwt"]))
        page = c.get("/account").text
        assert "Signed out that session." in page
        r = c.post("/account/app-passwords/revoke", data={"csrf": csrf_of(page), "name": "phone"})
        assert r.status_code == 303
        assert "No app passwords." in c.get("/account").text


def test_totp_enrolment_then_sign_in_needs_the_code(server):
    with new_client(server) as c:
        page = sign_in(server, c)
        assert c.post("/account/2fa/totp/begin", data={"csrf": csrf_of(page)}).status_code == 303
        page = c.get("/account").text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
        assert "<svg" in page
        totp = pyotp.TOTP(secret)
        r = c.post("/account/2fa/totp/confirm", data={"csrf": csrf_of(page), "code": totp.now()})
        assert r.status_code == 303
        page = c.get("/account").text
        codes = re.findall(r"<li><code>([A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4})</code></li>", page)
        assert len(codes) == 10 and "<strong>On.</strong>" in page
    # a new sign-in: the password alone is not enough
    with new_client(server) as c:
        page = c.get("/account").text
        c.post("/account/signin", data={"csrf": csrf_of(page), "password": server.password})
        page = c.get("/account").text
        assert "Confirm it" in page and "Sign-in security" not in page
        for path in ("/account/app-passwords/create", "/account/2fa/totp/remove"):  # half-signed-in can do nothing
            assert c.post(path, data={"csrf": csrf_of(page), "name": "x"}).status_code == 401
        assert c.get("/account/backup/repo.car").status_code == 401
        r = c.post("/account/signin/code", data={"csrf": csrf_of(page), "code": "000000" if totp.now() != "000000" else "111111"})
        assert r.status_code == 401 and "not right" in r.text
        r = c.post("/account/signin/code", data={"csrf": csrf_of(page), "code": codes[0]})
        assert r.status_code == 303
        page = c.get("/account").text
        assert "9 recovery codes left" in page
        # createSession (the Bluesky app's path) now wants the factor
        from tinypds.errors import AuthFactorTokenRequired

        with pytest.raises(AuthFactorTokenRequired):
            server.call(server.svc.auth.create_session(server.handle, server.password, "127.0.0.1"))
        # switch it off again for the other tests
        assert c.post("/account/2fa/totp/remove", data={"csrf": csrf_of(page)}).status_code == 303
        assert "<p>Off.</p>" in c.get("/account").text


def test_signout_ends_the_session(server):
    with new_client(server) as c:
        page = sign_in(server, c)
        assert c.post("/account/signout", data={"csrf": csrf_of(page)}).status_code == 303
        assert "Sign-in security" not in c.get("/account").text
        assert c.post("/account/app-passwords/create", data={"csrf": csrf_of(page), "name": "x"}).status_code == 401


def test_idle_timeout(server):
    with new_client(server) as c:
        sign_in(server, c)
        sessions = _page_store(server)
        real = sessions.clock
        sessions.clock = lambda: real() + sessions.idle + 1
        try:
            assert "Sign-in security" not in c.get("/account").text
        finally:
            sessions.clock = real


def _page_store(server):
    from tinypds.pages.common import page_sessions  # noqa: F401  (the store lives on app.state)

    return server.app.state.page_sessions


def test_backups_download(server, tmp_path):
    with new_client(server) as c:
        page = sign_in(server, c)
        assert "Download the repository" in page
        with c.stream("GET", "/account/backup/repo.car") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.ipld.car")
            data = b"".join(r.iter_bytes())
        from tinypds.core.car import read_car_bytes

        roots, blocks = read_car_bytes(data)  # every block's hash verified
        assert len(roots) == 1 and blocks
        t0 = time.monotonic()
        r = c.post("/account/backup/sealed", data={"csrf": csrf_of(page), "passphrase": "a good passphrase"})
        assert r.status_code == 200 and r.content[:16] == b"SQLite format 3\x00", r.text[:300]
        assert int(r.headers["content-length"]) == len(r.content)
        assert time.monotonic() - t0 < 120
        for _ in range(100):  # the temporary copy is removed once the stream ends (bounded wait)
            if not list(server.data_dir.glob(".backup-*")):
                break
            time.sleep(0.05)
        assert not list(server.data_dir.glob(".backup-*"))
        (tmp_path / "b.sqlite").write_bytes(r.content)
        import apsw

        conn = apsw.Connection(str(tmp_path / "b.sqlite"))
        assert conn.execute("SELECT count(*) FROM backup_keys").fetchone()[0] == 1
        conn.close()


def test_another_browser_is_listed_and_signed_out(server):
    with new_client(server) as a, new_client(server) as b:
        sign_in(server, a)
        page = sign_in(server, b)
        import hashlib

        handle = "page:" + hashlib.sha256(a.cookies["tinypds-page"].encode()).hexdigest()
        assert f'name="id" value="{handle}"' in page and "Account page in another browser" in page
        assert a.cookies["tinypds-page"] not in page  # the list shows a hash, never the cookie itself
        r = b.post("/account/sessions/revoke", data={"csrf": csrf_of(page), "id": handle})
        assert r.status_code == 303 and "Signed out that browser." in b.get("/account").text
        assert "Sign-in security" not in a.get("/account").text  # browser a is signed out
