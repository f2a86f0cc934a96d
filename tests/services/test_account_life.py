"""AccountLife on a real SQLite file and a sealed-file key store: email confirmation and
change, password reset, offline password, deactivate/activate/delete with their #account
events, and the SMTP path against a real SMTP sink (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.services.repo_helpers import DID, open_env
from tinypds import errors
from tinypds.config import load_settings
from tinypds.core import dagcbor
from tinypds.services.auth import passwords
from tinypds.services.account.life import AccountLife, email_state, set_password_offline
from tinypds.services.auth.service import AuthService
from tinypds.services.account.email import EmailTokens, Mailer
from tinypds.store import accounts as accounts_db
from tinypds.store import auth as auth_db

PASSWORD = "first password"
EMAIL = "Alice@Example.com"
TOKEN_RE = re.compile(r"^[A-Z2-7]{5}-[A-Z2-7]{5}$")


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Sent:
    """A Mailer stand-in that records what would be mailed (the SMTP path has its own test)."""

    enabled = True

    def __init__(self):
        self.tokens: list[tuple[str, str, str]] = []

    async def send_token(self, to, purpose, token, handle):
        self.tokens.append((to, purpose, token))
        return True


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    pw = passwords.hash_password(PASSWORD)
    e.db.write(lambda c: c.execute("UPDATE account SET password_hash = ?, email = ?", (pw, EMAIL)))
    yield e
    e.db.close()


def _life(env, clock=None, mailer=None):
    clock = clock or Clock()
    auth = AuthService(env.db, service_did="did:web:localhost", jwt_secret=b"s" * 32, clock=clock)
    settings = load_settings(environ={"TINYPDS_DATA_DIR": str(env.dir)})
    return AccountLife(settings, env.db, env.keys, auth, mailer=mailer or Sent(), tokens=EmailTokens(env.db, clock),
                       clock=clock), auth


def _events(db):
    return db.read(lambda c: [(t, dagcbor.decode(b, strict=False)) for t, b in
                              c.execute("SELECT type, body FROM events ORDER BY seq").fetchall()])


def test_confirm_email_token_format_errors_and_truthful_state(env):
    clock = Clock()
    life, _ = _life(env, clock)
    row = life.account(DID)
    assert email_state(row) == {"email": EMAIL, "email_confirmed": False}
    asyncio.run(life.request_email_confirmation(DID))
    to, purpose, token = life.mailer.tokens[-1]
    assert (to, purpose) == (EMAIL, "confirm_email") and TOKEN_RE.match(token)
    stored = env.db.read(lambda c: c.execute("SELECT token_hash FROM action_tokens WHERE purpose='confirm_email'").fetchone()[0])
    assert token.encode() not in bytes(stored) and len(stored) == 32  # a hash, never the token
    with pytest.raises(errors.InvalidEmail):
        asyncio.run(life.confirm_email(DID, "bob@example.com", token))
    with pytest.raises(errors.InvalidToken):
        asyncio.run(life.confirm_email(DID, EMAIL, "AAAAA-AAAAA"))
    # a wrong guess does not spend the real token; lower case and surrounding spaces are fine
    asyncio.run(life.confirm_email(DID, EMAIL.lower(), " " + token.lower() + " "))
    assert email_state(life.account(DID))["email_confirmed"] is True
    with pytest.raises(errors.InvalidToken):  # single use
        asyncio.run(life.confirm_email(DID, EMAIL, token))


def test_expired_token(env):
    clock = Clock()
    life, _ = _life(env, clock)
    asyncio.run(life.request_email_confirmation(DID))
    token = life.mailer.tokens[-1][2]
    clock.t += 15 * 60 + 1
    with pytest.raises(errors.ExpiredToken):
        asyncio.run(life.confirm_email(DID, EMAIL, token))


def test_update_email_needs_token_once_confirmed(env):
    life, _ = _life(env)
    assert asyncio.run(life.request_email_update(DID)) is False  # unconfirmed: no token needed
    asyncio.run(life.update_email(DID, "alice2@example.com", None))
    assert email_state(life.account(DID)) == {"email": "alice2@example.com", "email_confirmed": False}
    with pytest.raises(errors.InvalidRequest, match="not supported"):
        asyncio.run(life.update_email(DID, "not an email", None))
    with pytest.raises(errors.InvalidRequest, match="second factor"):
        asyncio.run(life.update_email(DID, "alice3@example.com", None, email_auth_factor=True))
    env.db.write(lambda c: accounts_db.set_email_confirmed(c, DID, "2026-01-01T00:00:00Z"))
    with pytest.raises(errors.TokenRequired):
        asyncio.run(life.update_email(DID, "alice3@example.com", None))
    assert asyncio.run(life.request_email_update(DID)) is True
    to, purpose, token = life.mailer.tokens[-1]
    assert (to, purpose) == ("alice2@example.com", "update_email")
    asyncio.run(life.update_email(DID, "alice3@example.com", token))
    assert email_state(life.account(DID)) == {"email": "alice3@example.com", "email_confirmed": False}


def test_password_reset_ends_sessions(env):
    life, auth = _life(env)
    asyncio.run(auth.create_session(DID, PASSWORD, "1.2.3.4"))
    asyncio.run(life.request_password_reset("nobody@example.com"))
    assert life.mailer.tokens == []  # unknown address: nothing sent, nothing said
    asyncio.run(life.request_password_reset(EMAIL.upper()))
    token = life.mailer.tokens[-1][2]
    with pytest.raises(errors.InvalidRequest, match="length"):
        asyncio.run(life.reset_password(token, "x" * 257))
    with pytest.raises(errors.InvalidToken):
        asyncio.run(life.reset_password("ZZZZZ-ZZZZZ", "new password"))
    asyncio.run(life.reset_password(token, "new password"))
    assert env.db.read(lambda c: auth_db.count_sessions(c, DID)) == 0
    with pytest.raises(errors.AuthenticationRequired):
        asyncio.run(auth.create_session(DID, PASSWORD, "1.2.3.4"))
    account, _ = asyncio.run(auth.create_session(DID, "new password", "1.2.3.4"))
    assert account["did"] == DID


def test_offline_password_ends_every_session(env):
    _, auth = _life(env)
    asyncio.run(auth.create_session(DID, PASSWORD, "1.2.3.4"))
    asyncio.run(auth.create_session(DID, PASSWORD, "1.2.3.5"))
    env.db.write(lambda c: c.execute(  # an OAuth app's session, and a remembered sign-in device
        "INSERT INTO oauth_session (id, did, client_id, client_auth, dpop_jkt, scope, created_at, updated_at, "
        "expires_at, refresh_hash, refresh_expires_at, access_hash, access_expires_at) "
        "VALUES ('s1', ?, 'https://app.example/client.json', 'none', 'jkt', 'atproto', 0, 0, 9e9, 'r', 9e9, 'a', 9e9)",
        (DID,)))
    env.db.write(lambda c: c.execute("INSERT INTO oauth_device VALUES ('dev', ?, 0, 9999999999)", (DID,)))
    did, ended = set_password_offline(env.db, "offline password")
    assert (did, ended) == (DID, 3)
    assert env.db.read(lambda c: c.execute("SELECT (SELECT count(*) FROM oauth_session) + "
                                           "(SELECT count(*) FROM oauth_device)").fetchone()[0]) == 0
    asyncio.run(auth.create_session(DID, "offline password", "1.2.3.4"))


def test_deactivate_activate_events(env):
    life, _ = _life(env)
    asyncio.run(life.deactivate(DID, "2027-01-01T00:00:00Z"))
    row = life.account(DID)
    assert (row.status, row.delete_after) == ("deactivated", "2027-01-01T00:00:00Z")
    kind, body = _events(env.db)[-1]
    assert kind == "#account" and body["active"] is False and body["status"] == "deactivated"
    asyncio.run(life.activate(DID))
    assert life.account(DID).status == "active"
    tail = _events(env.db)[-3:]
    assert [t for t, _ in tail] == ["#account", "#identity", "#sync"]  # the reference's order
    assert tail[0][1]["active"] is True and "status" not in tail[0][1]


def test_delete_erases_data_and_keys(env):
    life, auth = _life(env)
    asyncio.run(auth.create_session(DID, PASSWORD, "1.2.3.4"))
    asyncio.run(life.request_delete(DID))
    token = life.mailer.tokens[-1][2]
    with pytest.raises(errors.AuthenticationRequired, match="Invalid did or password"):
        asyncio.run(life.delete(DID, "wrong", token))
    with pytest.raises(errors.InvalidToken):
        asyncio.run(life.delete(DID, PASSWORD, "AAAAA-BBBBB"))
    assert env.keys.has_key(DID, "signing")
    asyncio.run(life.delete(DID, PASSWORD, token))
    counts = env.db.read(lambda c: {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                                    for t in ("account", "blocks", "records", "session", "repo_root", "action_tokens")})
    assert set(counts.values()) == {0}, counts
    events = _events(env.db)
    assert events == [("#account", {"did": DID, "time": events[0][1]["time"], "active": False, "status": "deleted"})]
    assert not env.keys.has_key(DID, "signing")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mailer_sends_through_a_real_smtp_sink(env):
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")

    class Sink:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    sink = Sink()
    port = _free_port()
    controller = aiosmtpd.Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        mailer = Mailer(f"smtp://127.0.0.1:{port}", "pds@example.com", timeout=5)
        life, _ = _life(env, mailer=mailer)
        asyncio.run(life.request_email_confirmation(DID))
        assert len(sink.messages) == 1
        rcpt, content = sink.messages[0]
        assert rcpt == [EMAIL]
        token = re.search(r"\b[A-Z2-7]{5}-[A-Z2-7]{5}\b", content).group(0)
        asyncio.run(life.confirm_email(DID, EMAIL, token))
        assert life.account(DID).email_confirmed_at is not None
    finally:
        controller.stop()
    # the sink is gone: a clear upstream failure, not a hang or a 500
    with pytest.raises(errors.UpstreamFailure):
        asyncio.run(life.request_email_confirmation(DID))


def test_mails_are_rate_limited_per_purpose(env):
    life, _ = _life(env)
    for _ in range(15):
        asyncio.run(life.request_password_reset(EMAIL))
    with pytest.raises(errors.RateLimitExceeded):
        asyncio.run(life.request_password_reset(EMAIL))
    asyncio.run(life.request_email_confirmation(DID))  # another purpose is not held up
    life.clock.t += 3601
    asyncio.run(life.request_password_reset(EMAIL))
