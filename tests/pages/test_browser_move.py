"""Moving the account out from /account in headless Chromium, to the reference PDS in the lab
(real PLC directory): the page's form starts the same flow as `tinypds migrate out`, shows
its progress, and the account arrives there with its records while this server deactivates it."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.migration_lab import PASSWORD, unique_handle
from tests.integration.test_migration import assert_arrived, assert_deactivated, lab, old_tinypds, servers  # noqa: F401

from .test_browser import ARGS, CHROMIUM, pytestmark  # noqa: F401  (skipped without chromium)


def test_move_out_to_the_reference_pds_in_chromium(lab, tmp_path, servers):
    sync_api = pytest.importorskip("playwright.sync_api")

    ref_url = lab[1]
    handle = unique_handle("pg")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        try:
            page.goto(acct.url + "/account")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector("#h-move")
            page.get_by_label("New PDS address").fill(ref_url)
            page.get_by_label("Email there").fill(f"{handle}@example.com")
            page.get_by_label("Your password (the new account gets it)").fill(PASSWORD)
            page.get_by_label(f"Type your handle ({handle}) to confirm").first.fill(handle)
            page.get_by_role("button", name="Move the account").click()
            deadline = __import__("time").monotonic() + 240
            while "Moved to" not in (text := page.inner_text("main")):  # the page refreshes itself while it runs
                assert "The move stopped" not in text and __import__("time").monotonic() < deadline, text[-1500:]
                page.wait_for_timeout(1000)
            assert page.get_by_text("records: 10").is_visible()
            if __import__("os").environ.get("TINYPDS_SCREENSHOTS"):
                page.screenshot(path=__import__("os").environ["TINYPDS_SCREENSHOTS"] + "/08-moved.png", full_page=True)
        finally:
            browser.close()
    assert_arrived(before, ref_url, handle)
    assert_deactivated(acct.url, did)
    assert httpx.get(acct.url + "/xrpc/_health").status_code == 200
