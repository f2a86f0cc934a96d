"""Moving an account IN through /account on a fresh tinypds (no account yet), from the reference
PDS in the lab: the server's invite code opens the form, the job waits for the PLC token the old
PDS "emailed" (read with the lab's email-token.py), and the account arrives here."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import time

import httpx

from tests.integration.migration_lab import LAB, PASSWORD, cli, unique_handle
from tests.integration.test_migration import assert_arrived, assert_deactivated, lab, ref_account, servers  # noqa: F401


def csrf_of(page: str) -> str:
    return html.unescape(re.search(r'name="csrf" value="([^"]+)"', page).group(1))


def _wait(c: httpx.Client, words: str, seconds: float = 180) -> str:
    deadline = time.monotonic() + seconds
    while True:
        page = c.get("/account").text
        if words in page:
            return page
        assert "The move stopped" not in page and time.monotonic() < deadline, page[-3000:]
        time.sleep(1)


def test_move_in_from_the_reference_pds_through_the_page(lab, servers):  # noqa: F811
    ref_url = lab[0]
    handle = unique_handle("pi")
    acct = ref_account(ref_url, handle)
    before = acct.snapshot()
    new = servers("new")
    invite = cli(new.data_dir, "invite", port=new.port)
    assert invite.returncode == 0, invite.stderr
    code = invite.stdout.split()[0]
    with httpx.Client(base_url=f"http://localhost:{new.port}", timeout=60, follow_redirects=False) as c:
        page = c.get("/account").text
        assert "This server has no account yet" in page
        r = c.post("/account/move/in", data={"csrf": csrf_of(page), "invite_code": code, "old_url": ref_url,
                                             "identifier": handle, "password": PASSWORD})
        assert r.status_code == 303, r.text
        page = _wait(c, "PLC operation")  # the form for the emailed token
        token = subprocess.run([sys.executable, str(LAB / "ref-pds" / "email-token.py"), ref_url, acct.did],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        assert token
        r = c.post("/account/move/in/token", data={"csrf": csrf_of(page), "token": token})
        assert r.status_code == 303
        _wait(c, "The account lives here now")
    assert_arrived(before, f"http://localhost:{new.port}", handle)
    assert_deactivated(ref_url, acct.did)
