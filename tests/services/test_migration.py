"""Migration, server and client side, without any network: invite codes, createAccount for an
existing DID (service auth checked against the DID's key, one account only, deactivated, no
events), activation only once the DID names us (then #account, #identity, #sync), the
client's state file and its session refresh. The PLC directory is a fake holding a real,
signed operation log."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tinypds import errors
from tinypds.config import Settings
from tinypds.core import plc as core_plc
from tinypds.core.crypto import K256PrivateKey
from tinypds.core.jwt import create_service_auth, sign_jwt
from tinypds.services.auth.service import AuthService
from tinypds.services.identity.resolver import HandleResolver
from tinypds.services.identity.keys import KeyStore, SealedFileKeyring
from tinypds.services.identity.local import build_local_identity
from tinypds.services.migration.service import CREATE_ACCOUNT_LXM, MigrationService, mint_invite_code
from tinypds.services.migration.client import MigrationState
from tinypds.services.net.xrpc_client import XrpcClient
from tinypds.store import accounts as accounts_db
from tinypds.store import events as events_db
from tinypds.store.db import Database

OLD_PDS = "https://old.example.com"


class FakePlc:
    """A PLC directory holding one DID's log (signed by the 'old PDS' rotation key)."""

    def __init__(self) -> None:
        self.rotation = K256PrivateKey.generate()
        self.signing = K256PrivateKey.generate()
        op = core_plc.build_atproto_operation(self.signing.public_key().did_key(), "alice.test", OLD_PDS,
                                              [self.rotation.public_key().did_key()], None)
        self.ops = [core_plc.sign_operation(op, self.rotation)]
        self.did = core_plc.did_for_genesis(self.ops[0])

    async def get_log(self, did: str) -> list[dict]:
        assert did == self.did
        return list(self.ops)

    def move_to(self, endpoint: str, creds: dict) -> None:
        state = core_plc.verify_operation_chain(self.did, self.ops)
        op = core_plc.build_update(state, rotation_keys=creds["rotationKeys"],
                                   verification_methods=creds["verificationMethods"],
                                   services={"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": endpoint}})
        self.ops.append(core_plc.sign_operation(op, self.rotation))

    async def aclose(self) -> None:
        pass


class Env:
    def __init__(self, tmp: Path):
        self.settings = Settings(data_dir=tmp, hostname="localhost:2700", dev=True)
        self.db = Database.open(tmp / "t.sqlite")
        self.keys = KeyStore(SealedFileKeyring(tmp / "keys" / "keys.json"))
        self.ident = build_local_identity(self.settings, self.db, self.keys,
                                          handles=HandleResolver(dns_txt=_no_dns, well_known_url=lambda h: "http://127.0.0.1:9/"))
        self.auth = AuthService(self.db, service_did=self.settings.service_did, jwt_secret=b"s" * 32)
        self.plc = FakePlc()
        self.changed = 0
        self.mig = MigrationService(self.settings, self.db, self.keys, self.ident, self.auth, plc_client=self.plc,
                                    on_account_change=self._changed)

    def _changed(self) -> None:
        self.changed += 1

    def token(self, *, aud: str | None = None, lxm: str = CREATE_ACCOUNT_LXM, key=None, iss: str | None = None) -> str:
        return create_service_auth(iss or self.plc.did, aud or self.settings.service_did, lxm, key or self.plc.signing,
                                   int(time.time()))

    def create(self, code: str | None, token: str | None, **kw):
        args = {"did": self.plc.did, "handle": "alice.test", "password": "pw-123456", "email": None,
                "invite_code": code, "service_auth": token, **kw}
        return asyncio.run(self.mig.create_account(**args))

    def event_types(self) -> list[str]:
        return [r.type for r in self.db.read(lambda c: events_db.events_after(c, 0))]

    def account(self):
        return self.db.read(lambda c: accounts_db.get_account(c))


async def _no_dns(name: str) -> list[str]:
    return []


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.db.close()


def test_invite_codes_are_single_use_and_expire(env):
    code = mint_invite_code(env.db, env.settings.service_did)
    with pytest.raises(errors.InvalidInviteCode):
        env.create(None, env.token())
    with pytest.raises(errors.InvalidInviteCode):
        env.create(code + "x", env.token())
    old = mint_invite_code(env.db, env.settings.service_did, now=time.time() - 8 * 86400)
    with pytest.raises(errors.InvalidInviteCode):
        env.create(old, env.token())  # expired (and it replaced the earlier code)
    code = mint_invite_code(env.db, env.settings.service_did)
    env.create(code, env.token())
    with pytest.raises(errors.AccountAlreadyExists):
        env.create(code, env.token())


@pytest.mark.parametrize("bad", ["none", "wrong_aud", "wrong_lxm", "forged", "other_iss", "expired"])
def test_service_auth_must_come_from_the_dids_current_key(env, bad):
    code = mint_invite_code(env.db, env.settings.service_did)
    token = {
        "none": None,
        "wrong_aud": env.token(aud="did:web:elsewhere.example"),
        "wrong_lxm": env.token(lxm="com.atproto.repo.createRecord"),
        "forged": env.token(key=K256PrivateKey.generate()),
        "other_iss": env.token(iss="did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"),
        "expired": sign_jwt({"typ": "JWT", "alg": "ES256K"},
                            {"iss": env.plc.did, "aud": env.settings.service_did, "lxm": CREATE_ACCOUNT_LXM,
                             "exp": int(time.time()) - 5, "iat": int(time.time()) - 65}, env.plc.signing),
    }[bad]
    with pytest.raises(errors.AuthenticationRequired):
        env.create(code, token)
    assert env.account() is None and not env.keys.has_key(env.plc.did, "signing")
    env.create(code, env.token())  # the invite survived the refused attempt
    assert env.account() is not None


def test_only_did_plc_and_a_handle_that_fits(env):
    code = mint_invite_code(env.db, env.settings.service_did)
    with pytest.raises(errors.IncompatibleDidDoc):
        env.create(code, env.token(), did="did:web:alice.example")
    with pytest.raises(errors.HandleNotAvailable):
        env.create(code, env.token(), handle="someone.example.org")  # not ours, not the DID's, does not resolve


def test_created_deactivated_without_events_then_activated_once_the_did_points_here(env):
    code = mint_invite_code(env.db, env.settings.service_did)
    out = env.create(code, env.token())
    assert out["did"] == env.plc.did and env.changed == 1
    assert env.account().status == "deactivated" and env.event_types() == []
    creds = env.ident.recommended_credentials(env.plc.did)
    assert creds["services"]["atproto_pds"]["endpoint"] == "http://localhost:2700"
    with pytest.raises(errors.InvalidRequest, match="does not name this PDS"):
        asyncio.run(env.mig.activate(env.plc.did))
    env.plc.move_to("http://localhost:2700", creds)
    asyncio.run(env.mig.activate(env.plc.did))
    assert env.account().status == "active"
    assert env.event_types() == ["#account", "#identity", "#sync"]
    assert len(env.ident.plc.ops(env.plc.did)) == 2  # the local log caught up with the directory
    asyncio.run(env.mig.deactivate(env.plc.did))
    assert env.account().status == "deactivated" and env.event_types()[-1] == "#account"


def test_state_file_survives_runs_and_resets_for_another_move(tmp_path):
    path = tmp_path / "state.json"
    st = MigrationState.load(path, "did:plc:x", "https://a", "https://b")
    st.account_created, st.imported_rev = True, "3kabc"
    st.save()
    again = MigrationState.load(path, "did:plc:x", "https://a", "https://b")
    assert again.account_created and again.imported_rev == "3kabc"
    other = MigrationState.load(path, "did:plc:x", "https://a", "https://c")
    assert not other.account_created and other.imported_rev == ""
    assert "password" not in path.read_text() and "Jwt" not in path.read_text()


def _jwt(exp_in: int, lifetime: int = 7200) -> str:
    now = int(time.time())
    return sign_jwt({"typ": "at+jwt"}, {"iat": now + exp_in - lifetime, "exp": now + exp_in}, b"k" * 32)


def test_client_refreshes_a_session_before_it_expires_and_once_after_expired_token():
    calls: list[str] = []
    state = {"fail_once": True}

    def handler(request: httpx.Request) -> httpx.Response:
        nsid = request.url.path.rsplit("/", 1)[1]
        calls.append(nsid)
        if nsid == "com.atproto.server.refreshSession":
            return httpx.Response(200, json={"accessJwt": _jwt(7000), "refreshJwt": "r2", "did": "did:plc:x"})
        if nsid == "com.atproto.sync.listBlobs" and state["fail_once"]:
            state["fail_once"] = False
            return httpx.Response(400, json={"error": "ExpiredToken", "message": "Token has expired"})
        return httpx.Response(200, json={"ok": True})

    async def run() -> None:
        client = XrpcClient("http://pds.test", transport=httpx.MockTransport(handler))
        client.session = {"accessJwt": _jwt(30), "refreshJwt": "r1", "did": "did:plc:x"}  # 30 s left of 2 h
        assert await client.get("com.atproto.server.getSession") == {"ok": True}
        assert calls == ["com.atproto.server.refreshSession", "com.atproto.server.getSession"]
        calls.clear()
        assert await client.get("com.atproto.sync.listBlobs") == {"ok": True}
        assert calls == ["com.atproto.sync.listBlobs", "com.atproto.server.refreshSession", "com.atproto.sync.listBlobs"]
        await client.aclose()

    asyncio.run(run())


def test_a_rotation_key_the_did_still_lists_is_kept(env):
    """Moving back to a server that still holds a listed rotation key reuses it (never overwritten)."""
    ours = K256PrivateKey.generate()
    state = core_plc.verify_operation_chain(env.plc.did, env.plc.ops)
    op = core_plc.build_update(state, rotation_keys=[env.plc.rotation.public_key().did_key(), ours.public_key().did_key()])
    env.plc.ops.append(core_plc.sign_operation(op, env.plc.rotation))
    env.keys.put_key(env.plc.did, "rotation", ours)
    env.create(mint_invite_code(env.db, env.settings.service_did), env.token())
    assert env.keys.get_key(env.plc.did, "rotation").public_key().did_key() == ours.public_key().did_key()
    assert env.ident.recommended_credentials(env.plc.did)["rotationKeys"] == [ours.public_key().did_key()]
