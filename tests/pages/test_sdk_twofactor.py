"""The whole server (subprocess, `tinypds serve` with its dev account): TOTP turned on through
/account, then the atproto Python SDK's createSession sees AuthFactorTokenRequired and signs in
with the TOTP code as authFactorToken; an app password skips the factor; `tinypds account 2fa
off` (the owner's recovery from loss) switches it off on the running server."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pyotp
import pytest

from tests.integration.conftest import REPO_ROOT, server_env, start_server

from .test_account_pages import csrf_of


@pytest.fixture
def pds(tmp_path):
    server = start_server(tmp_path / "data")
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.stderr(), server.stderr()


def _fresh(totp: pyotp.TOTP, used: set[str]) -> str:
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(0.5)
    raise AssertionError("no fresh TOTP step")


def test_sdk_login_with_totp_app_password_and_cli_off(pds):
    from atproto import Client, models
    from atproto_client.exceptions import UnauthorizedError

    used: set[str] = set()
    with httpx.Client(base_url=pds.url, follow_redirects=False, timeout=30) as c:
        page = c.get("/account").text
        assert c.post("/account/signin", data={"csrf": csrf_of(page), "password": pds.password}).status_code == 303
        page = c.get("/account").text
        c.post("/account/2fa/totp/begin", data={"csrf": csrf_of(page)})
        page = c.get("/account").text
        import re

        totp = pyotp.TOTP(re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1))
        c.post("/account/2fa/totp/confirm", data={"csrf": csrf_of(page), "code": _fresh(totp, used)})
        page = c.get("/account").text
        assert "<strong>On.</strong>" in page
        c.post("/account/app-passwords/create", data={"csrf": csrf_of(page), "name": "sdk"})
        app_pw = re.search(r'id="new-app-password">([a-z2-7-]{19})<', c.get("/account").text).group(1)

    def create_session(password: str, token: str | None = None):
        # the SDK's own createSession call (login() would go on to fetch the profile from the AppView)
        data = models.ComAtprotoServerCreateSession.Data(identifier=pds.handle, password=password, auth_factor_token=token)
        return Client(base_url=pds.url).com.atproto.server.create_session(data)

    with pytest.raises(UnauthorizedError) as e:
        create_session(pds.password)
    assert e.value.response.status_code == 401 and e.value.response.content.error == "AuthFactorTokenRequired"
    session = create_session(pds.password, _fresh(totp, used))
    assert session.did == pds.did and session.access_jwt
    # an app password skips the second factor
    assert create_session(app_pw).access_jwt
    # a wrong code is refused with the words the Bluesky app shows
    r = httpx.post(pds.url + "/xrpc/com.atproto.server.createSession",
                   json={"identifier": pds.handle, "password": pds.password, "authFactorToken": "12345"})
    assert r.status_code in (400, 401) and r.json() == {"error": "InvalidToken", "message": "Token is invalid"}
    # the owner switches it off from the shell, on the running server
    out = subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(pds.data_dir), "account", "2fa", "off"],
                         cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert create_session(pds.password).access_jwt
