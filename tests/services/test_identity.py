"""The local account's identity: creation, the local PLC log, handle changes with their
#identity event, PLC-operation tokens and checks, did:web, and all-or-nothing failures
(directory down or refusing, handle not pointing at us, foreign signatures, a tampered log)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tinypds.config import Settings
from tinypds.core import dagcbor
from tinypds.core import plc as core_plc
from tinypds.core.crypto import K256PrivateKey
from tinypds.errors import (
    AccountAlreadyExists,
    ExpiredToken,
    HandleNotAvailable,
    InvalidHandle,
    InvalidRequest,
    InvalidToken,
    UnsupportedDomain,
    UpstreamFailure,
)
from tinypds.services.identity.resolver import HandleResolver
from tinypds.services.identity.keys import KeyMissingError, KeyStore, SealedFileKeyring
from tinypds.services.identity.local import build_local_identity
from tinypds.services.identity.plc import PlcClient, PlcLogError
from tinypds.store import events as events_db
from tinypds.store.db import Database

from .test_identity_resolve import Loopback, dns_table


class Env:
    def __init__(self, tmp: Path, *, dev: bool = True, dns: dict | None = None, plc_client_for=None):
        self.settings = Settings(data_dir=tmp, hostname="localhost:2600" if dev else "pds.example.com", dev=dev)
        self.db = Database.open(tmp / "t.sqlite")
        self.keys = KeyStore(SealedFileKeyring(tmp / "keys" / "keys.json"))
        self.dns = dns_table(dns or {})
        self.ident = build_local_identity(
            self.settings, self.db, self.keys, plc_client_for=plc_client_for,
            handles=HandleResolver(dns_txt=self.dns, well_known_url=lambda h: "http://127.0.0.1:9/none"),
        )

    def run(self, coro):
        async def wrapped():
            try:
                return await coro
            finally:
                await self.ident.aclose()

        return asyncio.run(wrapped())

    def events(self):
        rows = self.db.read(lambda c: events_db.events_after(c, 0))
        return [(r.type, dagcbor.decode(r.body)) for r in rows]

    def snapshot(self):
        """Everything a failed change must leave untouched."""
        account = self.ident.account()
        log = self.ident.plc.ops(account.did) if self.ident.identity().method == "plc" else []
        return account, [r.cid for r in log], len(self.events())

    def close(self):
        self.db.close()


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.close()


def create(env: Env, handle="alice.test", **kw):
    return env.run(env.ident.create(handle, password_hash=None, **kw))


def test_create_did_plc_local_log(env):
    new = create(env)
    assert new.did.startswith("did:plc:") and new.plc_url is None
    state = env.ident.plc.state(new.did)  # verifies genesis hash and signature
    assert state.handle() == "alice.test"
    assert state.pds_endpoint() == "http://localhost:2600"
    assert state.signing_key() == new.signing_key == env.keys.get_key(new.did, "signing").public_key().did_key()
    assert state.rotation_keys == [env.keys.get_key(new.did, "rotation").public_key().did_key()]
    doc = env.ident.own_doc()
    assert doc["id"] == new.did and doc["alsoKnownAs"] == ["at://alice.test"]
    assert env.ident.account().handle == "alice.test"
    assert [t for t, _ in env.events()][:1] == ["#identity"]


def test_create_refuses_twice_and_keeps_the_first(env):
    first = create(env)
    with pytest.raises(AccountAlreadyExists):
        create(env, "bob.test")
    assert env.ident.account().did == first.did


def test_recovery_key_goes_first(env):
    recovery = K256PrivateKey.generate().public_key().did_key()
    new = create(env, recovery_key=recovery)
    assert env.ident.plc.state(new.did).rotation_keys[0] == recovery
    assert len(new.rotation_keys) == 2


@pytest.mark.parametrize("handle,exc", [("no spaces.test", InvalidHandle), ("alice.local", UnsupportedDomain)])
def test_create_refuses_bad_handles(env, handle, exc):
    with pytest.raises(exc):
        create(env, handle)
    assert env.ident.account() is None


def test_update_handle_appends_op_and_emits_identity_event(env):
    new = create(env)
    before = len(env.events())
    env.run(env.ident.update_handle(new.did, "Carol.test"))
    ops = env.ident.plc.ops(new.did)
    assert len(ops) == 2 and ops[1].operation["prev"] == ops[0].cid
    assert env.ident.plc.state(new.did).handle() == "carol.test"
    assert env.ident.account().handle == "carol.test"
    events = env.events()
    assert len(events) == before + 1
    kind, body = events[-1]
    assert kind == "#identity" and body["did"] == new.did and body["handle"] == "carol.test"


def test_update_handle_that_does_not_resolve_changes_nothing(env):
    new = create(env)
    before = env.snapshot()
    with pytest.raises(HandleNotAvailable, match="does not resolve"):
        env.run(env.ident.update_handle(new.did, "alice.example.com"))
    assert env.snapshot() == before


def test_update_handle_verified_by_dns(env):
    new = create(env)
    env.ident.resolver.handles._dns_txt = dns_table({"_atproto.alice.example.com": [f"did={new.did}"]})
    env.run(env.ident.update_handle(new.did, "alice.example.com"))
    assert env.ident.account().handle == "alice.example.com"
    assert env.ident.plc.state(new.did).handle() == "alice.example.com"
    # a handle pointing at someone else is refused
    env.ident.resolver.handles._dns_txt = dns_table({"_atproto.bob.example.com": ["did=did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"]})
    before = env.snapshot()
    with pytest.raises(HandleNotAvailable):
        env.run(env.ident.update_handle(new.did, "bob.example.com"))
    assert env.snapshot() == before


def test_directory_down_during_update_leaves_nothing_half_written(tmp_path):
    env = Env(tmp_path)
    try:
        new = create(env)
        # pretend this DID lives at a directory that is down
        env.db.write(lambda c: c.execute("UPDATE identity SET plc_url = 'http://127.0.0.1:9'"))
        before = env.snapshot()
        with pytest.raises(UpstreamFailure, match="unreachable"):
            env.run(env.ident.update_handle(new.did, "carol.test"))
        assert env.snapshot() == before
    finally:
        env.close()


def test_directory_garbage_at_init_leaves_no_account_and_no_keys(tmp_path):
    srv = Loopback()
    srv.routes = _AllPaths(500, b"<html>broken</html>")
    env = Env(tmp_path)
    try:
        with pytest.raises(UpstreamFailure, match="HTTP 500"):
            create(env, plc_url=srv.url)
        assert env.ident.account() is None and env.ident.identity() is None
        assert env.db.read(lambda c: c.execute("SELECT count(*) FROM plc_log").fetchone()[0]) == 0
        assert env.keys._backend._load() == {}  # the keys made for the failed DID were removed
    finally:
        env.close()
        srv.close()


class _AllPaths(dict):
    def __init__(self, status, body):
        super().__init__()
        self.answer = (status, body, 0)

    def get(self, key, default=None):
        return self.answer


def test_directory_refusal_at_init_is_a_clear_error(tmp_path):
    srv = Loopback()
    srv.routes = _AllPaths(400, b'{"message":"Invalid signature on op"}')
    env = Env(tmp_path)
    try:
        with pytest.raises(InvalidRequest, match="Invalid signature on op"):
            create(env, plc_url=srv.url)
        assert env.ident.account() is None
    finally:
        env.close()
        srv.close()


def test_op_not_signed_by_a_rotation_key_is_refused(env):
    new = create(env)
    state = env.ident.plc.state(new.did)
    op = core_plc.build_update(state, also_known_as=["at://alice.test"])
    forged = core_plc.sign_operation(op, env.keys.get_key(new.did, "signing"))  # signing key is no rotation key
    before = env.snapshot()
    with pytest.raises(InvalidRequest, match="signature"):
        env.run(env.ident.submit_plc_operation(new.did, forged))
    with pytest.raises(InvalidRequest, match="signature"):
        env.run(env.ident.plc.apply(new.did, forged))
    assert env.snapshot() == before


def test_op_with_stale_prev_is_refused(env):
    new = create(env)
    stale = env.ident.plc.sign_update(new.did, also_known_as=["at://alice.test"])
    env.run(env.ident.update_handle(new.did, "carol.test"))
    before = env.snapshot()
    with pytest.raises(InvalidRequest, match="prev"):
        env.run(env.ident.plc.apply(new.did, stale))
    assert env.snapshot() == before


def test_plc_token_flow_sign_and_submit(env):
    new = create(env)

    async def flow():
        token = await env.ident.request_plc_signature(new.did)
        with pytest.raises(InvalidToken):
            await env.ident.sign_plc_operation(new.did, "AAAAA-BBBBB", {})
        op = await env.ident.sign_plc_operation(new.did, token.lower(), {"alsoKnownAs": ["at://alice.test", "https://x.example"]})
        with pytest.raises(InvalidToken):  # single use
            await env.ident.sign_plc_operation(new.did, token, {})
        await env.ident.submit_plc_operation(new.did, op)
        return op

    op = env.run(flow())
    ops = env.ident.plc.ops(new.did)
    assert ops[-1].operation == op
    assert env.ident.plc.state(new.did).also_known_as == ["at://alice.test", "https://x.example"]
    assert env.events()[-1][0] == "#identity"


def test_plc_token_expires(tmp_path):
    env = Env(tmp_path)
    try:
        new = create(env)
        now = [1_000_000.0]
        env.ident.plc._clock = lambda: now[0]
        token = env.run(env.ident.plc.mint_token(new.did))
        now[0] += 16 * 60
        with pytest.raises(ExpiredToken):
            asyncio.run(env.ident.plc.consume_token(new.did, token))
        with pytest.raises(InvalidToken):  # gone after expiry
            asyncio.run(env.ident.plc.consume_token(new.did, token))
    finally:
        env.close()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"rotationKeys": ["did:key:zQ3shZYuXQqMEVne4FZkjAM6roJsEzUbkjihazSPYXUmqZ6FP"]}, "rotation key"),
        ({"services": {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://elsewhere.example"}}}, "endpoint"),
        ({"verificationMethods": {"atproto": "did:key:zQ3shZYuXQqMEVne4FZkjAM6roJsEzUbkjihazSPYXUmqZ6FP"}}, "signing key"),
        ({"alsoKnownAs": ["at://someone.else"]}, "handle"),
    ],
)
def test_submit_refuses_ops_that_take_the_account_away(env, change, match):
    new = create(env)
    kw = {{"rotationKeys": "rotation_keys", "services": "services", "verificationMethods": "verification_methods",
           "alsoKnownAs": "also_known_as"}[k]: v for k, v in change.items()}
    op = env.ident.plc.sign_update(new.did, **kw)
    before = env.snapshot()
    with pytest.raises(InvalidRequest, match=match):
        env.run(env.ident.submit_plc_operation(new.did, op))
    assert env.snapshot() == before


def test_recommended_credentials_match_the_doc(env):
    new = create(env)
    creds = env.ident.recommended_credentials(new.did)
    state = env.ident.plc.state(new.did)
    assert creds["rotationKeys"] == state.rotation_keys
    assert creds["verificationMethods"] == state.verification_methods
    assert creds["alsoKnownAs"] == state.also_known_as
    assert creds["services"] == state.services


def test_endpoint_change_and_key_rotation_ops(env):
    new = create(env)
    env.run(env.ident.change_endpoint(new.did, "http://localhost:2700"))
    assert env.ident.plc.state(new.did).pds_endpoint() == "http://localhost:2700"
    fresh = K256PrivateKey.generate()
    op = env.ident.plc.sign_update(new.did, rotation_keys=[fresh.public_key().did_key()])
    asyncio.run(env.ident.plc.apply(new.did, op))
    with pytest.raises(InvalidRequest, match="no longer"):
        env.ident.plc.sign_update(new.did, also_known_as=["at://alice.test"])  # our key rotated out
    assert len(env.ident.plc.ops(new.did)) == 3


def test_tampered_local_log_does_not_verify(env):
    new = create(env)
    env.db.write(lambda c: c.execute(
        "UPDATE plc_log SET operation = replace(operation, 'alice.test', 'mallory.test') WHERE seq = 0"))
    with pytest.raises(PlcLogError):
        env.ident.plc.state(new.did)


def test_did_web_identity(env):
    new = create(env, method="web")
    assert new.did == "did:web:localhost%3A2600"
    doc = env.ident.own_doc()
    assert doc["id"] == new.did and doc["alsoKnownAs"] == ["at://alice.test"]
    assert doc["service"][0]["serviceEndpoint"] == "http://localhost:2600"
    assert doc["verificationMethod"][0]["publicKeyMultibase"] == new.signing_key.removeprefix("did:key:")
    with pytest.raises(KeyMissingError):
        env.keys.get_key(new.did, "rotation")
    env.run(env.ident.update_handle(new.did, "dora.test"))
    assert env.ident.own_doc()["alsoKnownAs"] == ["at://dora.test"]
    assert env.events()[-1][1]["handle"] == "dora.test"
    with pytest.raises(InvalidRequest, match="did:web"):
        env.run(env.ident.request_plc_signature(new.did))


def test_resolution_short_cuts_the_local_account(env):
    new = create(env)

    async def go():
        return (await env.ident.resolve_handle("alice.test"), await env.ident.resolve_did(new.did),
                await env.ident.resolve_identity("alice.test"), await env.ident.handle_is_correct())

    did, doc, info, correct = env.run(go())
    assert did == new.did and doc["id"] == new.did
    assert info["handle"] == "alice.test" and info["did"] == new.did
    assert correct is True


def test_rotate_rotation_key_keeps_recovery_key_first(env):
    recovery = K256PrivateKey.generate().public_key().did_key()
    new = create(env, recovery_key=recovery)
    old = env.keys.get_key(new.did, "rotation").public_key().did_key()
    fresh = env.run(env.ident.rotate_rotation_key(new.did))
    state = env.ident.plc.state(new.did)
    assert state.rotation_keys == [recovery, fresh] and fresh != old
    assert env.keys.get_key(new.did, "rotation").public_key().did_key() == fresh
    assert env.ident.identity().rotation_key == fresh
    assert len(env.ident.plc.ops(new.did)) == 3
    env.ident.check_keys()  # the stored keys are the ones in use
    env.run(env.ident.update_handle(new.did, "carol.test"))  # signed with the new key
    assert env.ident.plc.state(new.did).handle() == "carol.test"


def test_check_keys_names_the_fix_when_a_key_is_missing(env):
    new = create(env)
    env.ident.check_keys()
    env.keys.delete_key(new.did, "rotation")
    with pytest.raises(KeyMissingError, match="key import"):
        env.ident.check_keys()
    env.keys.put_key(new.did, "rotation", K256PrivateKey.generate())  # a different key is no fix
    with pytest.raises(Exception, match="not one"):
        env.ident.check_keys()
