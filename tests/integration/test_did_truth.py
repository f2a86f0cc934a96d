"""checkAccountStatus's validDid tells the truth: against the lab's REAL PLC directory, an
operation someone else submits (here: signed with our rotation key but sent straight to the
directory, as a new PDS does after a move) is learned into the local log, verified op by op,
and validDid turns false; a forged audit log is refused and nothing is written."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from tinypds.config import Settings
from tinypds.core import plc as core_plc
from tinypds.core.crypto import K256PrivateKey
from tinypds.services.account.status import DidTruth
from tinypds.services.identity.keys import KeyStore, SealedFileKeyring
from tinypds.services.identity.local import build_local_identity, pds_services
from tinypds.services.identity.plc import PlcClient, PlcLogError
from tinypds.store.db import Database


class Env:
    def __init__(self, tmp: Path, plc_url: str):
        self.settings = Settings(data_dir=tmp, hostname="localhost:2653", dev=True, plc_url=plc_url)
        self.db = Database.open(tmp / "t.sqlite")
        self.keys = KeyStore(SealedFileKeyring(tmp / "keys.json"))
        self.ident = build_local_identity(self.settings, self.db, self.keys)
        self.truth = DidTruth(self.settings, self.ident,
                              lambda did: self.keys.get_key(did, "signing").public_key().did_key(), ttl=0)


@pytest.fixture
def env(tmp_path, lab_plc_url):
    e = Env(tmp_path, lab_plc_url)
    yield e
    e.db.close()


def run(env, coro_fn):
    async def wrapped():
        try:
            await coro_fn()
        finally:
            await env.ident.aclose()

    asyncio.run(wrapped())


def test_valid_did_follows_the_directory(env):
    async def main():
        new = await env.ident.create("carol.test", password_hash=None, plc_url=env.settings.plc_url)
        assert await env.truth.valid(new.did) is True
        # the new PDS's op: another endpoint and another signing key, submitted elsewhere
        state = env.ident.plc.state(new.did)
        other_key = K256PrivateKey.generate().public_key().did_key()
        op = core_plc.build_update(state, services=pds_services("http://localhost:2597"),
                                   verification_methods={"atproto": other_key})
        signed = core_plc.sign_operation(op, env.keys.get_key(new.did, "rotation"))
        client = PlcClient(env.settings.plc_url)
        try:
            await client.submit(new.did, signed)
        finally:
            await client.aclose()
        assert len(env.ident.plc.ops(new.did)) == 1  # not learned yet
        assert await env.truth.valid(new.did) is False
        rows = env.ident.plc.ops(new.did)
        assert [r.cid for r in rows][-1] == str(core_plc.operation_cid(signed))
        assert env.ident.plc.state(new.did).pds_endpoint() == "http://localhost:2597"
        # the keys this server holds still match its identity record: a restart is not refused
        env.ident.check_keys()

    run(env, main)


def test_a_forged_audit_log_is_refused_and_nothing_written(env, monkeypatch):
    async def main():
        new = await env.ident.create("dave.test", password_hash=None, plc_url=env.settings.plc_url)
        client = env.ident.plc.client(env.settings.plc_url)
        real = await client.get_audit_log(new.did)
        forged_op = core_plc.sign_operation(
            core_plc.build_update(env.ident.plc.state(new.did), services=pds_services("http://evil.example")),
            K256PrivateKey.generate())  # not a rotation key of the DID
        entry = copy.deepcopy(real[-1])
        entry.update(operation=forged_op, cid=str(core_plc.operation_cid(forged_op)),
                     createdAt="2099-01-01T00:00:00.000Z")

        async def forged(did):
            return real + [entry]

        monkeypatch.setattr(client, "get_audit_log", forged)
        with pytest.raises(PlcLogError):
            await env.ident.plc.learn_from_directory(new.did)
        assert len(env.ident.plc.ops(new.did)) == 1
        assert await env.truth.valid(new.did) is True  # the unverifiable op is not believed

    run(env, main)
