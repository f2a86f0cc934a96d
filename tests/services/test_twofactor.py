"""TwoFactorService and AuthService's second-factor step on a real SQLite file and a real sealed
key file: TOTP enrolment, single-use codes, recovery codes, createSession's
AuthFactorTokenRequired, app passwords skipping it, the throttle, the CLI off switch."""

from __future__ import annotations

import asyncio

import pyotp
import pytest

from tinypds.cli import main as cli_main
from tinypds.errors import AuthFactorTokenRequired, InvalidToken, RateLimitExceeded
from tinypds.services.auth import passwords
from tinypds.services.auth.service import AuthService
from tinypds.services.identity.keys import KeyStore, SealedFile
from tinypds.services.auth.twofactor import TwoFactorError, TwoFactorService, normalize_code
from tinypds.store import accounts
from tinypds.store.db import Database

DID = "did:plc:abcdefghijklmnopqrstuvwx"
HANDLE = "alice.test"
PASSWORD = "correct horse battery staple"
SERVICE_DID = "did:web:localhost%3A2583"


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def db(tmp_path):
    database = Database.open(tmp_path / "tinypds.sqlite")
    pw_hash = passwords.hash_password(PASSWORD)
    database.write(lambda c: accounts.create_account(c, DID, HANDLE, "2026-01-01T00:00:00.000Z", password_hash=pw_hash))
    yield database
    database.close()


@pytest.fixture
def keys(tmp_path):
    return KeyStore(SealedFile(tmp_path / "keys.json"))


@pytest.fixture
def tfa(db, keys, clock):
    return TwoFactorService(db, keys, seal_did=SERVICE_DID, rp_id="localhost", origin="http://localhost:2583", clock=clock)


@pytest.fixture
def auth(db, tfa, clock):
    a = AuthService(db, service_did=SERVICE_DID, jwt_secret=b"s" * 32, clock=clock, ip_limit=(50, 300), account_limits=((6, 300),))
    a.twofactor = tfa
    return a


def enrol(tfa, clock) -> tuple[pyotp.TOTP, list[str]]:
    begun = run(tfa.totp_begin(DID, HANDLE))
    totp = pyotp.TOTP(begun["secret"])
    assert begun["uri"].startswith("otpauth://totp/") and "<svg" in begun["qr_svg"]
    codes = run(tfa.totp_confirm(DID, totp.at(clock())))
    return totp, codes


def test_enrolment_needs_a_right_code_and_seals_the_secret(tfa, db, clock, tmp_path):
    begun = run(tfa.totp_begin(DID, HANDLE))
    assert not tfa.required(DID)  # pending until confirmed
    with pytest.raises(TwoFactorError):
        run(tfa.totp_confirm(DID, "000000" if pyotp.TOTP(begun["secret"]).at(clock()) != "000000" else "111111"))
    assert not tfa.required(DID)
    codes = run(tfa.totp_confirm(DID, pyotp.TOTP(begun["secret"]).at(clock())))
    assert tfa.required(DID) and len(codes) == 10 and len(set(codes)) == 10
    # neither the secret nor a recovery code is in the SQLite file
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("tinypds.sqlite"))  # + WAL
    assert begun["secret"].encode() not in raw
    assert all(normalize_code(code).encode() not in raw and code.encode() not in raw for code in codes)
    # a second enrolment is refused while one is on
    with pytest.raises(TwoFactorError):
        run(tfa.totp_begin(DID, HANDLE))


def test_totp_codes_work_once_and_within_one_step(tfa, clock):
    totp, _ = enrol(tfa, clock)
    clock.t += 60
    code = totp.at(clock())
    assert run(tfa.check_code(DID, code[:3] + " " + code[3:])) == "totp"
    assert run(tfa.check_code(DID, code)) is None  # replay of the same step
    clock.t += 30
    assert run(tfa.check_code(DID, totp.at(clock() - 30))) is None  # an older step than the last used
    assert run(tfa.check_code(DID, totp.at(clock() + 30))) == "totp"  # one step of drift ahead
    clock.t += 300
    assert run(tfa.check_code(DID, totp.at(clock() - 120))) is None  # too old


def test_recovery_codes_are_single_use(tfa, clock):
    _, codes = enrol(tfa, clock)
    assert run(tfa.check_code(DID, codes[0].lower())) == "recovery"
    assert run(tfa.check_code(DID, codes[0])) is None
    assert tfa.status(DID)["recovery_codes"] == 9
    assert run(tfa.check_code(DID, codes[1][:-1] + ("2" if codes[1][-1] != "2" else "3"))) is None
    assert run(tfa.check_code(DID, "not a code")) is None
    fresh = run(tfa.new_recovery_codes(DID))
    assert run(tfa.check_code(DID, codes[2])) is None and run(tfa.check_code(DID, fresh[0])) == "recovery"


def test_create_session_needs_the_factor_and_app_passwords_skip_it(auth, tfa, clock):
    from tinypds.services.auth.context import AuthContext

    full = AuthContext(did=DID, kind="access", scopes=frozenset())
    app_pw = run(auth.create_app_password(full, "phone", False))["password"]
    totp, codes = enrol(tfa, clock)
    with pytest.raises(AuthFactorTokenRequired) as e:
        run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    assert e.value.status == 401 and e.value.error == "AuthFactorTokenRequired"
    with pytest.raises(InvalidToken) as e:
        run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1", auth_factor_token="123 456" if totp.at(clock()) != "123456" else "654321"))
    assert e.value.message == "Token is invalid"
    clock.t += 30  # the enrolment used this step's code
    account, tokens = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1", auth_factor_token=totp.at(clock())))
    assert account["did"] == DID and tokens["accessJwt"]
    account, tokens = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1", auth_factor_token=codes[3]))
    assert tokens["accessJwt"]
    _, tokens = run(auth.create_session(HANDLE, app_pw, "1.1.1.1"))  # no factor asked
    assert run(auth.verify_access(tokens["accessJwt"])).kind == "app_password"
    # a wrong password with 2FA on is still just a wrong password
    with pytest.raises(Exception) as e:
        run(auth.create_session(HANDLE, "wrong", "1.1.1.1", auth_factor_token=totp.at(clock())))
    assert type(e.value).__name__ == "AuthenticationRequired"


def test_failed_codes_count_against_the_sign_in_throttle(auth, tfa, clock):
    totp, _ = enrol(tfa, clock)
    clock.t += 30
    wrong = "000000" if totp.at(clock()) != "000000" else "111111"
    for _ in range(6):
        with pytest.raises(InvalidToken):
            run(auth.create_session(HANDLE, PASSWORD, "2.2.2.2", auth_factor_token=wrong))
    with pytest.raises(RateLimitExceeded):  # even the right code (and the right password) waits now
        run(auth.create_session(HANDLE, PASSWORD, "2.2.2.2", auth_factor_token=totp.at(clock())))
    clock.t += 301
    _, tokens = run(auth.create_session(HANDLE, PASSWORD, "2.2.2.2", auth_factor_token=totp.at(clock())))
    assert tokens["accessJwt"]


def test_sessions_listed_and_revoked_one_by_one(auth):
    _, t1 = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    _, t2 = run(auth.create_session(HANDLE, PASSWORD, "1.1.1.1"))
    listed = auth.list_sessions(DID)
    assert len(listed) == 2 and all(s["app_password"] is None for s in listed)
    sid = run(auth.verify_access(t1["accessJwt"])).session_id
    assert run(auth.revoke_session(DID, sid)) and not run(auth.revoke_session("did:plc:other", listed[0]["id"]))
    with pytest.raises(Exception):
        run(auth.verify_access(t1["accessJwt"]))
    assert run(auth.verify_access(t2["accessJwt"])).did == DID and len(auth.list_sessions(DID)) == 1


def test_removing_the_last_factor_drops_the_recovery_codes(tfa, clock):
    enrol(tfa, clock)
    run(tfa.totp_remove(DID))
    st = tfa.status(DID)
    assert not tfa.required(DID) and st["recovery_codes"] == 0 and not st["totp"]


def test_a_changed_key_store_is_a_clear_error(tfa, db, clock, tmp_path):
    totp, codes = enrol(tfa, clock)
    other = TwoFactorService(db, KeyStore(SealedFile(tmp_path / "other.json")), seal_did=SERVICE_DID, rp_id="localhost",
                             origin="http://localhost:2583", clock=clock)
    with pytest.raises(TwoFactorError, match="2fa off"):
        other._unseal(db.read(lambda c: __import__("tinypds.store.twofactor", fromlist=["x"]).get_totp(c, DID)).secret_sealed)
    clock.t += 30
    assert run(other.check_code(DID, totp.at(clock()))) is None  # refused (and logged), never a 500
    assert run(other.check_code(DID, codes[0])) == "recovery"  # recovery codes need no key: the way back in


def test_cli_2fa_off(tfa, db, clock, tmp_path, capsys, monkeypatch):
    enrol(tfa, clock)
    db.close()  # the CLI opens the file itself
    assert cli_main(["--data", str(tmp_path), "account", "2fa", "status"]) == 0
    assert "authenticator:  on" in capsys.readouterr().out
    assert cli_main(["--data", str(tmp_path), "account", "2fa", "off"]) == 0
    assert "second factors off" in capsys.readouterr().out
    reopened = Database.open(tmp_path / "tinypds.sqlite")
    try:
        t = TwoFactorService(reopened, None, seal_did=SERVICE_DID, rp_id="localhost", origin="http://localhost", clock=clock)
        assert not t.required(DID) and t.status(DID)["recovery_codes"] == 0
    finally:
        reopened.close()


def test_failed_passkey_assertions_count_in_the_throttle(auth):
    for _ in range(6):
        with pytest.raises(InvalidToken):
            run(auth.check_passkey(DID, "no-such-ceremony", '{"rawId": "AAAA"}', "3.3.3.3"))
    with pytest.raises(RateLimitExceeded):
        run(auth.check_passkey(DID, "no-such-ceremony", "{}", "3.3.3.3"))
