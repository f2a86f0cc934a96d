"""/account in a real browser: headless Chromium (Debian's, driven by Playwright's Python package
with the system browser; never `playwright install`) signs in, enrols TOTP (codes computed from
the shown secret), enrols a passkey through Chromium's virtual authenticator (DevTools
WebAuthn domain) and signs in with it, makes and revokes an app password, signs a session out,
changes the handle, downloads both backups, changes the password, deactivates and reactivates. Screenshots go to TINYPDS_SCREENSHOTS if set."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pyotp
import pytest

from .harness import page_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def _shot(page, name: str) -> None:
    where = os.environ.get("TINYPDS_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


def _next_code(totp: pyotp.TOTP, used: set[str]) -> str:
    """A code for a step not used yet (a TOTP step is accepted once); waits at most one step."""
    deadline = time.monotonic() + 35
    while time.monotonic() < deadline:
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(0.5)
    raise AssertionError("no fresh TOTP step within 35 s")


def test_account_page_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with page_server(tmp_path) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        try:
            # ---- sign in with the password ----
            page.goto(server.url + "/account")
            _shot(page, "01-signin")
            page.get_by_label("Password").fill(server.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("#h-overview")  # (the URL is /account before and after)
            assert page.get_by_role("heading", name="Overview").is_visible()
            _shot(page, "02-account")

            # ---- TOTP: enrol with the code computed from the shown secret ----
            page.get_by_role("button", name="Set up an authenticator app").click()
            secret = page.locator("#totp-secret").inner_text().strip()
            assert page.locator("figure.qr svg").count() == 1
            _shot(page, "03-totp-enrol")
            totp, used = pyotp.TOTP(secret), set()
            page.get_by_label("Code from the app").fill(_next_code(totp, used))
            page.get_by_role("button", name="Turn on").click()
            page.wait_for_selector("#recovery-codes")
            codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
            assert len(codes) == 10
            assert page.get_by_text("The authenticator app is on").is_visible()
            _shot(page, "04-totp-on")

            # ---- passkey: a virtual authenticator through the DevTools protocol ----
            cdp = context.new_cdp_session(page)
            cdp.send("WebAuthn.enable")
            cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
                "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}})
            page.get_by_label("Name for a new passkey").fill("Virtual key")
            page.get_by_role("button", name="Add a passkey").click()
            page.wait_for_selector("text=Passkey added", timeout=20000)
            assert page.get_by_role("cell", name="Virtual key", exact=True).is_visible()

            # ---- sign out; password + TOTP code; sign out; password + passkey ----
            page.get_by_role("button", name="Sign out").first.click()
            page.get_by_label("Password").fill(server.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("text=Confirm it")
            _shot(page, "05-second-factor")
            page.locator("#code").fill(_next_code(totp, used))
            page.get_by_role("button", name="Continue").click()
            page.wait_for_selector("#h-overview")
            page.get_by_role("button", name="Sign out").first.click()
            page.get_by_label("Password").fill(server.password)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Use a passkey or security key").click()
            page.wait_for_selector("#h-overview", timeout=20000)
            assert page.get_by_role("cell", name="Virtual key", exact=True).is_visible()

            # ---- an app's OAuth sign-in: password, then the passkey, then back to the app with a code ----
            from tests.services.oauth_helpers import DpopKey, pkce
            from urllib.parse import parse_qs, quote, urlencode, urlsplit

            from tinypds.services.auth.oauth.permission_sets import oauth_service

            oauth = oauth_service(server.svc)
            redirect = "http://127.0.0.1:9/callback"
            client_id = f"http://localhost?redirect_uri={quote(redirect, safe='')}&scope={quote('atproto transition:generic', safe='')}"
            key = DpopKey()
            key.nonce = oauth.dpop.nonces.current()
            par_url = server.svc.settings.public_url + "/oauth/par"
            request_uri = server.call(oauth.par({"client_id": client_id, "response_type": "code", "code_challenge": pkce()[1],
                                                 "code_challenge_method": "S256", "state": "s1", "redirect_uri": redirect,
                                                 "scope": "atproto transition:generic"}, key.proof("POST", par_url), [par_url]))["request_uri"]
            page.goto(server.url + "/oauth/authorize?" + urlencode({"client_id": client_id, "request_uri": request_uri}))
            page.get_by_label("Password").fill(server.password)
            page.get_by_role("button", name="Allow").click()
            page.wait_for_selector("text=Confirm it's you")
            _shot(page, "05b-oauth-second-factor")
            page.route(redirect + "**", lambda route: route.fulfill(status=200, body="the app got its code"))  # the app's callback
            with page.expect_request(lambda req: req.url.startswith(redirect), timeout=20000) as back_to_app:
                page.get_by_role("button", name="Use a passkey or security key and allow").click()
            page.wait_for_selector("text=the app got its code")
            q = parse_qs(urlsplit(back_to_app.value.url).query)
            assert q["state"] == ["s1"] and q["code"]
            page.goto(server.url + "/account")

            # ---- app password: create, see it once, revoke ----
            page.get_by_label("Name", exact=True).fill("Graysky")
            page.get_by_label("Allow access to direct messages (privileged)").check()
            page.get_by_role("button", name="Create app password").click()
            app_pw = page.locator("#new-app-password").inner_text()
            assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", app_pw)
            _shot(page, "06-app-password")
            # an app password skips the second factor: it signs in as a session shown on the page
            server.call(server.svc.auth.create_session(server.handle, app_pw, "127.0.0.1"))
            page.reload()
            page.get_by_role("button", name=re.compile("^Sign out session App password")).click()
            page.wait_for_selector("text=Signed out that session.")
            assert page.get_by_text("App password “Graysky”").count() == 0
            page.get_by_role("button", name="Revoke app password Graysky").click()
            page.wait_for_selector("text=App password revoked")

            # ---- handle: check, then change ----
            page.get_by_label("New handle").fill("bob.test")
            page.get_by_role("button", name="Check").click()
            page.wait_for_selector("text=will work at once")
            page.get_by_role("button", name="Change handle").click()
            page.wait_for_selector("text=Your handle is now @bob.test")
            assert page.get_by_role("heading", name="@bob.test").is_visible()

            # ---- backups: the CAR export and the sealed one-file backup ----
            with page.expect_download() as dl:
                page.get_by_role("link", name="Download the repository").click()
            car = tmp_path / "repo.car"
            dl.value.save_as(car)
            assert car.stat().st_size > 100
            page.get_by_label("Passphrase for the keys").fill("a long passphrase")
            with page.expect_download() as dl:
                page.get_by_role("button", name="Download sealed backup").click()
            sealed = tmp_path / "backup.sqlite"
            dl.value.save_as(sealed)
            assert sealed.read_bytes()[:16] == b"SQLite format 3\x00"
            _shot(page, "07-final")

            # ---- password change; deactivate and reactivate behind a typed confirmation ----
            page.get_by_label("Current password").fill(server.password)
            page.get_by_label("New password", exact=True).fill("a brand new password")
            page.get_by_label("New password again").fill("a brand new password")
            page.get_by_role("button", name="Change password").click()
            page.wait_for_selector("text=Password changed")
            page.locator("#deactivate-confirm").fill("bob.test")
            page.get_by_role("button", name="Deactivate the account").click()
            page.wait_for_selector("text=The account is deactivated")
            assert server.svc.account.status == "deactivated"
            page.get_by_role("button", name="Reactivate the account").click()
            page.wait_for_selector("text=The account is active again")
            assert server.svc.account.status == "active"
            server.call(server.svc.auth.check_password(server.did, "a brand new password", "127.0.0.1"))
            assert not [m for m in console if "Content Security Policy" in m], console
        finally:
            context.close()
            browser.close()
