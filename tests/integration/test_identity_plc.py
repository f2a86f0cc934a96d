"""did:plc against a REAL PLC directory on loopback (@did-plc/server from ../shared/lab).

The session fixture starts it with `ref-pds/start.sh plc` (idempotent; the first run
installs node and takes ~2 min) and skips with the reason when it cannot. It is left running
(other suites share it; it keeps state in memory only).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tinypds.config import Settings
from tinypds.core import plc as core_plc
from tinypds.core.crypto import K256PrivateKey
from tinypds.errors import InvalidRequest
from tinypds.services.identity.resolver import doc_handle, doc_pds_endpoint, doc_signing_key
from tinypds.services.identity.keys import KeyStore, SealedFileKeyring
from tinypds.services.identity.local import build_local_identity
from tinypds.services.identity.plc import DirectoryRejected, PlcClient
from tinypds.store.db import Database

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB = Path(os.environ.get("TINYPDS_LAB", REPO_ROOT.parent / "shared" / "lab"))
PLC_URL = "http://localhost:2582"


@pytest.fixture(scope="session")
def plc_url(lab_plc_url) -> str:
    return lab_plc_url


class Env:
    def __init__(self, tmp: Path, plc_url: str):
        self.settings = Settings(data_dir=tmp, hostname="localhost:2651", dev=True, plc_url=plc_url)
        self.db = Database.open(tmp / "t.sqlite")
        self.keys = KeyStore(SealedFileKeyring(tmp / "keys.json"))
        self.ident = build_local_identity(self.settings, self.db, self.keys)
        self.plc_url = plc_url

    def run(self, coro):
        async def wrapped():
            try:
                return await coro
            finally:
                await self.ident.aclose()

        return asyncio.run(wrapped())


@pytest.fixture
def env(tmp_path, plc_url):
    e = Env(tmp_path, plc_url)
    yield e
    e.db.close()


def plc_get(path: str):
    r = httpx.get(PLC_URL + path, timeout=10)
    r.raise_for_status()
    return r.json()


def test_plc_document_names_our_endpoint_handle_and_signing_key(env):
    new = env.run(env.ident.create("alice.test", password_hash=None, plc_url=env.plc_url))
    doc = plc_get(f"/{new.did}")
    assert doc["id"] == new.did
    assert doc_handle(doc) == "alice.test"
    assert doc_pds_endpoint(doc) == "http://localhost:2651"
    assert doc_signing_key(doc) == env.keys.get_key(new.did, "signing").public_key().did_key()
    data = plc_get(f"/{new.did}/data")
    assert data["rotationKeys"] == [env.keys.get_key(new.did, "rotation").public_key().did_key()]


def test_later_ops_reach_the_directory_and_match_the_local_log(env):
    new = env.run(env.ident.create("alice.test", password_hash=None, plc_url=env.plc_url))
    env.run(env.ident.update_handle(new.did, "bob.test"))
    env.run(env.ident.change_endpoint(new.did, "http://localhost:2652"))
    doc = plc_get(f"/{new.did}")
    assert doc_handle(doc) == "bob.test" and doc_pds_endpoint(doc) == "http://localhost:2652"
    assert env.run(env.ident.plc.compare_with_directory(new.did)) == []
    # the directory's audit log verifies with our own checker, and ends where the local log ends
    audit = plc_get(f"/{new.did}/log/audit")
    state = core_plc.verify_audit_log(new.did, audit)
    assert state.prev == env.ident.plc.ops(new.did)[-1].cid


def test_key_rotation_is_accepted_and_the_old_key_loses_power(env):
    new = env.run(env.ident.create("alice.test", password_hash=None, plc_url=env.plc_url))
    fresh = K256PrivateKey.generate()
    ours = env.keys.get_key(new.did, "rotation").public_key().did_key()
    op = env.ident.plc.sign_update(new.did, rotation_keys=[fresh.public_key().did_key(), ours])
    env.run(env.ident.plc.apply(new.did, op))
    assert plc_get(f"/{new.did}/data")["rotationKeys"] == [fresh.public_key().did_key(), ours]
    # drop our key with the new one; then an op signed by our (old) key is refused by the directory
    state = env.ident.plc.state(new.did)
    drop = core_plc.sign_operation(core_plc.build_update(state, rotation_keys=[fresh.public_key().did_key()]), fresh)
    env.run(env.ident.plc.apply(new.did, drop))
    stale = core_plc.sign_operation(
        core_plc.build_update(env.ident.plc.state(new.did), also_known_as=["at://x.test"]),
        env.keys.get_key(new.did, "rotation"),
    )

    async def submit():
        c = PlcClient(env.plc_url)
        try:
            await c.submit(new.did, stale)
        finally:
            await c.aclose()

    with pytest.raises(DirectoryRejected):
        asyncio.run(submit())


def test_op_not_signed_by_a_rotation_key_is_refused_by_plc_and_by_us(env):
    new = env.run(env.ident.create("alice.test", password_hash=None, plc_url=env.plc_url))
    state = env.ident.plc.state(new.did)
    forged = core_plc.sign_operation(
        core_plc.build_update(state, also_known_as=["at://mallory.test"]), K256PrivateKey.generate()
    )

    async def submit():
        c = PlcClient(env.plc_url)
        try:
            await c.submit(new.did, forged)
        finally:
            await c.aclose()

    with pytest.raises(DirectoryRejected, match="refused"):
        asyncio.run(submit())
    with pytest.raises(InvalidRequest, match="signature"):
        env.run(env.ident.plc.apply(new.did, forged))
    assert doc_handle(plc_get(f"/{new.did}")) == "alice.test"
    assert len(env.ident.plc.ops(new.did)) == 1


def _cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    env["TINYPDS_KEYRING_BACKEND"] = "file"
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120)


def test_cli_init_dev_with_plc_url_then_verify(tmp_path, plc_url):
    data = tmp_path / "d"
    out = _cli(data, "init", "--dev", "--plc-url", plc_url, "--handle", "carol.test",
               "--hostname", "localhost:2653", "--password-stdin", stdin="correct horse\n")
    assert out.returncode == 0, out.stderr
    did = re.search(r"did:\s+(did:plc:[a-z2-7]{24})", out.stdout).group(1)
    signing = re.search(r"signing key:\s+(did:key:\S+)", out.stdout).group(1)
    doc = plc_get(f"/{did}")
    assert doc_handle(doc) == "carol.test" and doc_pds_endpoint(doc) == "http://localhost:2653"
    assert doc_signing_key(doc) == signing
    verify = _cli(data, "plc", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "holds the same operations" in verify.stdout
    again = _cli(data, "init", "--dev", "--handle", "dave.test", "--hostname", "localhost:2653", "--password-stdin",
                 stdin="x\n")
    assert again.returncode == 1 and "already holds the account" in again.stderr


def test_rotate_rotation_key_at_the_directory(env):
    new = env.run(env.ident.create("alice.test", password_hash=None, plc_url=env.plc_url))
    fresh = env.run(env.ident.rotate_rotation_key(new.did))
    assert plc_get(f"/{new.did}/data")["rotationKeys"] == [fresh]
    assert env.run(env.ident.plc.compare_with_directory(new.did)) == []
    env.run(env.ident.update_handle(new.did, "bob.test"))  # the directory takes ops signed by the new key
    assert doc_handle(plc_get(f"/{new.did}")) == "bob.test"
