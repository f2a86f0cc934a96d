"""AuthService on a real SQLite database: sign-in, tokens, rotation, revocation,
app passwords, throttling. Time is injected (a mutable clock), never slept."""

from __future__ import annotations

import asyncio

import pytest

from tinypds.core.jwt import decode_jwt_unverified, sign_jwt
from tinypds.errors import (
    AccountTakedown,
    AuthenticationRequired,
    ExpiredToken,
    InvalidRequest,
    InvalidToken,
    RateLimitExceeded,
)
from tinypds.services.auth import passwords
from tinypds.services.auth.service import (ACCESS_SCOPE, APP_PASS_PRIVILEGED_SCOPE, APP_PASS_SCOPE, REFRESH_SCOPE, AuthService, generate_app_password)
from tinypds.store import accounts
from tinypds.store.db import Database

DID = "did:plc:abcdefghijklmnopqrstuvwx"
HANDLE = "alice.test"
PASSWORD = "correct horse battery staple"
SERVICE_DID = "did:web:localhost%3A2583"
SECRET = b"s" * 32


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path):
    database = Database.open(tmp_path / "tinypds.sqlite")
    pw_hash = passwords.hash_password(PASSWORD)
    database.write(lambda c: accounts.create_account(c, DID, HANDLE, "2026-01-01T00:00:00.000Z", email="alice@example.com", password_hash=pw_hash))
    yield database
    database.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def auth(db, clock):
    return AuthService(db, service_did=SERVICE_DID, jwt_secret=SECRET, clock=clock, ip_limit=(5, 300), account_limits=((8, 300),))


def run(coro):
    return asyncio.run(coro)


def test_login_by_handle_email_and_did(auth):
    for ident in (HANDLE, "ALICE.test", "alice@example.com", DID):
        account, tokens = run(auth.create_session(ident, PASSWORD, "1.1.1.1"))
        assert account["did"] == DID and account["handle"] == HANDLE
        ctx = run(auth.verify_access(tokens["accessJwt"]))
        assert ctx.did == DID and ctx.kind == "access" and ctx.scopes == {ACCESS_SCOPE}


def test_token_claims(auth, clock):
    _, tokens = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    header, payload, _, _ = decode_jwt_unverified(tokens["accessJwt"])
    assert header == {"typ": "at+jwt", "alg": "HS256"}
    assert payload["scope"] == ACCESS_SCOPE and payload["aud"] == SERVICE_DID and payload["sub"] == DID
    assert payload["exp"] - payload["iat"] == auth.access_ttl
    header, payload, _, _ = decode_jwt_unverified(tokens["refreshJwt"])
    assert header["typ"] == "refresh+jwt" and payload["scope"] == REFRESH_SCOPE and payload["jti"]


def test_wrong_password_and_unknown_account(auth):
    with pytest.raises(AuthenticationRequired) as e:
        run(auth.create_session(HANDLE, "wrong", "1.1.1.1"))
    assert type(e.value) is AuthenticationRequired and e.value.status == 401
    with pytest.raises(AuthenticationRequired) as e2:
        run(auth.create_session("nobody.test", PASSWORD, "1.1.1.2"))
    assert e.value.message == e2.value.message  # no hint which part was wrong


def test_refresh_token_is_access_token_nor_vice_versa(auth):
    _, tokens = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    with pytest.raises(InvalidToken):
        run(auth.verify_access(tokens["refreshJwt"]))
    with pytest.raises(InvalidToken):
        run(auth.verify_refresh(tokens["accessJwt"]))


def test_expired_and_forged_tokens(auth, clock):
    _, tokens = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    header, payload, _, _ = decode_jwt_unverified(tokens["accessJwt"])
    forged = sign_jwt(header, payload, b"x" * 32)
    with pytest.raises(InvalidToken):
        run(auth.verify_access(forged))
    with pytest.raises(InvalidToken):
        run(auth.verify_access("not.a.jwt"))
    wrong_aud = sign_jwt(header, {**payload, "aud": "did:web:elsewhere.example"}, SECRET)
    with pytest.raises(InvalidToken):
        run(auth.verify_access(wrong_aud))
    clock.t += auth.access_ttl + 1
    with pytest.raises(ExpiredToken) as e:
        run(auth.verify_access(tokens["accessJwt"]))
    assert e.value.status == 400 and e.value.error == "ExpiredToken"
    # the refresh token still works and yields a fresh access token
    ctx = run(auth.verify_refresh(tokens["refreshJwt"]))
    _, fresh = run(auth.refresh_session(ctx))
    assert run(auth.verify_access(fresh["accessJwt"])).did == DID


def test_a_token_verified_before_is_still_checked_each_use(auth, clock):
    """The signature check is remembered per token; expiry, type and revocation are not."""
    _, t = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    assert run(auth.verify_access(t["accessJwt"])).did == DID
    assert run(auth.verify_refresh(t["refreshJwt"])).kind == "refresh"
    with pytest.raises(InvalidToken):
        run(auth.verify_access(t["refreshJwt"]))  # a refresh token verified before is still no access token
    clock.t += auth.access_ttl + 1
    with pytest.raises(ExpiredToken):
        run(auth.verify_access(t["accessJwt"]))
    run(auth.delete_session(run(auth.verify_refresh(t["refreshJwt"]))))
    with pytest.raises(ExpiredToken):
        run(auth.verify_refresh(t["refreshJwt"]))


def test_refresh_rotation_refuses_reuse(auth):
    _, t1 = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    _, t2 = run(auth.refresh_session(run(auth.verify_refresh(t1["refreshJwt"]))))
    assert t2["refreshJwt"] != t1["refreshJwt"]
    with pytest.raises(ExpiredToken):
        run(auth.verify_refresh(t1["refreshJwt"]))
    # a race: both verified before either rotated -> only one wins
    c1 = run(auth.verify_refresh(t2["refreshJwt"]))
    c2 = run(auth.verify_refresh(t2["refreshJwt"]))
    run(auth.refresh_session(c1))
    with pytest.raises(ExpiredToken):
        run(auth.refresh_session(c2))
    # access tokens of the same session stay valid across rotation
    assert run(auth.verify_access(t1["accessJwt"])).did == DID


def test_delete_session_revokes_refresh_and_access(auth):
    _, t = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    _, other = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    run(auth.delete_session(run(auth.verify_refresh(t["refreshJwt"]))))
    with pytest.raises(ExpiredToken):
        run(auth.verify_refresh(t["refreshJwt"]))
    with pytest.raises(ExpiredToken):
        run(auth.verify_access(t["accessJwt"]))
    assert run(auth.verify_access(other["accessJwt"])).did == DID  # other sessions unaffected


def test_app_passwords(auth):
    _, full = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    ctx = run(auth.verify_access(full["accessJwt"], full=True))
    plain = run(auth.create_app_password(ctx, "phone", False))
    priv = run(auth.create_app_password(ctx, "trusted", True))
    assert plain["password"] != priv["password"] and plain["createdAt"].endswith("Z")
    with pytest.raises(InvalidRequest):
        run(auth.create_app_password(ctx, "phone", False))
    listed = run(auth.list_app_passwords(ctx))
    assert [(p["name"], p["privileged"]) for p in listed] == [("phone", False), ("trusted", True)]
    assert all("password" not in p for p in listed)

    _, t_plain = run(auth.create_session(HANDLE, plain["password"], "1.1.1.1"))
    c_plain = run(auth.verify_access(t_plain["accessJwt"]))
    assert c_plain.kind == "app_password" and c_plain.scopes == {APP_PASS_SCOPE}
    with pytest.raises(InvalidToken):
        run(auth.verify_access(t_plain["accessJwt"], full=True))
    with pytest.raises(InvalidToken):
        run(auth.verify_access(t_plain["accessJwt"], privileged=True))
    with pytest.raises(InvalidToken):
        run(auth.create_app_password(c_plain, "sneaky", True))

    _, t_priv = run(auth.create_session(DID, priv["password"], "1.1.1.1"))
    c_priv = run(auth.verify_access(t_priv["accessJwt"], privileged=True))
    assert c_priv.kind == "app_password_privileged" and c_priv.scopes == {APP_PASS_PRIVILEGED_SCOPE}
    # refreshing an app-password session keeps its restricted scope
    _, t_plain2 = run(auth.refresh_session(run(auth.verify_refresh(t_plain["refreshJwt"]))))
    assert run(auth.verify_access(t_plain2["accessJwt"])).kind == "app_password"

    # revoking signs out its sessions at once and the password stops working
    run(auth.revoke_app_password(ctx, "phone"))
    with pytest.raises(ExpiredToken):
        run(auth.verify_access(t_plain2["accessJwt"]))
    with pytest.raises(AuthenticationRequired):
        run(auth.create_session(HANDLE, plain["password"], "1.1.1.1"))
    assert run(auth.verify_access(t_priv["accessJwt"])).kind == "app_password_privileged"
    assert [p["name"] for p in run(auth.list_app_passwords(ctx))] == ["trusted"]


def test_app_password_format():
    import re

    for _ in range(20):
        assert re.fullmatch(r"[a-z2-7]{4}(-[a-z2-7]{4}){3}", generate_app_password())


def test_failure_throttle_per_ip_and_account(auth, clock):
    for _ in range(5):
        with pytest.raises(AuthenticationRequired):
            run(auth.create_session(HANDLE, "nope", "9.9.9.9"))
    # this IP is now blocked, even with the right password
    with pytest.raises(RateLimitExceeded) as e:
        run(auth.create_session(HANDLE, PASSWORD, "9.9.9.9"))
    assert e.value.status == 429
    # another IP may still sign in until the account limit (8) is reached
    run(auth.create_session(HANDLE, PASSWORD, "8.8.8.8"))
    for ip in ("7.7.7.1", "7.7.7.2", "7.7.7.3"):
        with pytest.raises(AuthenticationRequired):
            run(auth.create_session(HANDLE, "nope", ip))
    with pytest.raises(RateLimitExceeded):
        run(auth.create_session(HANDLE, PASSWORD, "6.6.6.6"))
    clock.t += 301  # the window slides
    account, _ = run(auth.create_session(HANDLE, PASSWORD, "9.9.9.9"))
    assert account["did"] == DID


def test_takendown_account_cannot_sign_in(auth, db):
    db.write(lambda c: accounts.set_status(c, DID, "takendown"))
    with pytest.raises(AccountTakedown):
        run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))


def test_deactivated_account_signs_in_inactive(auth, db):
    db.write(lambda c: accounts.set_status(c, DID, "deactivated"))
    account, _ = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    assert account["status"] == "deactivated"


def test_secret_must_be_long():
    with pytest.raises(ValueError):
        AuthService(None, service_did=SERVICE_DID, jwt_secret=b"short")
