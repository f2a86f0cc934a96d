"""/account's care sections over real HTTP: password change (current password, or a reset code),
email confirmation and change with codes, deactivate/reactivate and delete behind confirmations."""

from __future__ import annotations

import httpx
import pytest

from .harness import page_server
from .test_account_pages import csrf_of, sign_in


@pytest.fixture
def server(tmp_path):
    with page_server(tmp_path) as s:
        yield s


def _life(server, c):
    from tinypds.services.account.page import account_life_for

    return account_life_for(server.svc, server.app.state)  # the one the page and XRPC share


def test_password_change_with_the_current_password_then_a_code(server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as c, \
            httpx.Client(base_url=server.url, follow_redirects=False) as other:
        sign_in(server, other)
        page = sign_in(server, c)
        r = c.post("/account/password", data={"csrf": csrf_of(page), "current_password": "wrong",
                                              "new_password": "n3w password", "new_password2": "n3w password"})
        assert r.status_code == 303
        page = c.get("/account").text
        assert "current password is not right" in page
        r = c.post("/account/password", data={"csrf": csrf_of(page), "current_password": server.password,
                                              "new_password": "n3w password", "new_password2": "n3w password"})
        page = c.get("/account").text
        assert "Password changed" in page and "Sign-in security" in page  # this browser stays signed in
        assert "Sign-in security" not in other.get("/account").text  # the other browser must sign in again
        server.call(server.svc.auth.check_password(server.did, "n3w password", "127.0.0.1"))
        # a reset code instead of the current password
        r = c.post("/account/password/token", data={"csrf": csrf_of(page)})
        page = c.get("/account").text
        life = _life(server, c)
        token = server.call(life.tokens.mint(server.did, "reset_password"))
        r = c.post("/account/password", data={"csrf": csrf_of(page), "token": token,
                                              "new_password": server.password, "new_password2": server.password})
        assert "Password changed" in c.get("/account").text
        server.call(server.svc.auth.check_password(server.did, server.password, "127.0.0.1"))


def test_email_confirm_and_change(server):
    from tinypds.services.account.life import set_email_offline

    set_email_offline(server.svc.db, "alice@example.com")
    server.svc.attach_account()
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        page = sign_in(server, c)
        assert "alice@example.com" in page and "not confirmed" in page
        life = _life(server, c)
        token = server.call(life.tokens.mint(server.did, "confirm_email"))
        c.post("/account/email/confirm", data={"csrf": csrf_of(page), "token": "WRONG-CODE"})
        page = c.get("/account").text
        assert "not confirmed" in page
        c.post("/account/email/confirm", data={"csrf": csrf_of(page), "token": token})
        page = c.get("/account").text
        assert "Email confirmed." in page and "— confirmed" in page
        token = server.call(life.tokens.mint(server.did, "update_email"))
        c.post("/account/email/change", data={"csrf": csrf_of(page), "email": "alice@new.example", "token": token})
        page = c.get("/account").text
        assert "alice@new.example" in page and "not confirmed" in page


def test_deactivate_reactivate_and_delete(server):
    with httpx.Client(base_url=server.url, follow_redirects=False) as c:
        page = sign_in(server, c)
        c.post("/account/deactivate", data={"csrf": csrf_of(page), "confirm": "someone-else.test"})
        page = c.get("/account").text
        assert "type your handle to confirm" in page and server.svc.account.status == "active"
        c.post("/account/deactivate", data={"csrf": csrf_of(page), "confirm": "@" + server.handle})
        page = c.get("/account").text
        assert server.svc.account.status == "deactivated" and "Reactivate the account" in page
        c.post("/account/activate", data={"csrf": csrf_of(page)})
        page = c.get("/account").text
        assert server.svc.account.status == "active"
        life = _life(server, c)
        token = server.call(life.tokens.mint(server.did, "delete_account"))
        r = c.post("/account/delete", data={"csrf": csrf_of(page), "confirm": server.handle, "password": "wrong", "token": token})
        assert r.status_code == 303 and server.svc.account is not None
        page = c.get("/account").text
        r = c.post("/account/delete", data={"csrf": csrf_of(page), "confirm": server.handle, "password": server.password,
                                            "token": token})
        assert r.status_code == 200 and "Account deleted" in r.text
        page = c.get("/account").text
        assert "This server has no account yet" in page and "Move your account here" in page
        # moving an account in needs the server's invite code
        r = c.post("/account/move/in", data={"csrf": csrf_of(page), "invite_code": "guess", "old_url": "http://127.0.0.1:9",
                                             "identifier": "x.test", "password": "pw"})
        assert r.status_code == 403 and "invite code" in r.text
        from tinypds.services.migration.service import mint_invite_code

        invite = mint_invite_code(server.svc.db, server.svc.settings.service_did)
        r = c.post("/account/move/in", data={"csrf": csrf_of(page), "invite_code": invite, "old_url": "http://127.0.0.1:9",
                                             "identifier": "x.test", "password": "pw"})
        assert r.status_code == 303
        import time

        for _ in range(100):  # the old PDS is unreachable: the job stops and says so (bounded wait)
            page = c.get("/account").text
            if "The move stopped" in page:
                break
            time.sleep(0.1)
        assert "The move stopped" in page and "Moving x.test from http://127.0.0.1:9" in page
        with httpx.Client(base_url=server.url) as stranger:  # another browser sees no progress
            assert "Moving x.test" not in stranger.get("/account").text
