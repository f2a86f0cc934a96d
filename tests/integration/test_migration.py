"""Account migration end to end, with real servers: tinypds <-> reference PDS (both ways) and
tinypds -> tinypds, a real PLC directory, the `tinypds migrate` CLI; plus failure injection
(old PDS dies mid-copy, PLC submit fails, a corrupt blob) and the createAccount guards.

Needs the lab (../shared/lab: PLC on :2582, reference PDS on :2597/:2598); skipped with the
reason when it cannot start.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from .migration_lab import (
    PASSWORD,
    PLC_URL,
    Account,
    CuttingProxy,
    LAB,
    cli,
    ensure_lab,
    free_port,
    init_tinypds,
    pds_endpoint,
    plc_doc,
    start_tinypds,
    unique_handle,
)

XRPC = "/xrpc/"


@pytest.fixture(scope="module")
def lab() -> list[str]:
    return ensure_lab()


@pytest.fixture
def servers(tmp_path):
    started = []

    def start(name: str, port: int | None = None, **kw):
        port = port or free_port()
        s = start_tinypds(tmp_path / name, port, **kw)
        s.port = port
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
        assert "Traceback" not in s.stderr(), s.stderr()


def old_tinypds(tmp_path, servers, handle: str):
    port = free_port()
    did = init_tinypds(tmp_path / "old", port, handle)
    server = servers("old", port)
    acct = Account(f"http://localhost:{port}", handle)
    acct.populate()
    return server, acct, did


def assert_arrived(before: dict, new_url: str, identifier: str) -> Account:
    after = Account(new_url, identifier)
    snap = after.snapshot()
    assert snap["records"] == before["records"] and len(before["records"]) == 10  # 6 posts, 3 likes, profile
    assert snap["blobs"] == before["blobs"] and len(before["blobs"]) == 5  # 4 images + avatar
    assert snap["preferences"] == before["preferences"]
    assert pds_endpoint(plc_doc(after.did)) == new_url
    return after


def assert_deactivated(url: str, did: str) -> None:
    r = httpx.get(url + XRPC + "com.atproto.sync.getRepoStatus", params={"did": did}, timeout=10)
    assert r.status_code == 200 and r.json()["active"] is False, r.text
    r = httpx.get(url + XRPC + "com.atproto.sync.getLatestCommit", params={"did": did}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "RepoDeactivated", r.text


def migrate_in(new, old_url: str, identifier: str, *extra: str, token_cmd: str | None = None):
    args = ["migrate", "in", "--from", old_url, "--identifier", identifier, "--password-stdin", *extra]
    if token_cmd:
        args += ["--plc-token-cmd", token_cmd]
    return cli(new.data_dir, *args, port=new.port, stdin=PASSWORD + "\n")


def local_token_cmd(server) -> str:
    """The PLC token of a tinypds old side, minted with its CLI (what its owner would do)."""
    return (f"TINYPDS_HOSTNAME=localhost:{server.port} TINYPDS_KEYRING_BACKEND=file TINYPDS_DEV=1 "
            f"{sys.executable} -m tinypds.cli --data {server.data_dir} plc token")


def ref_token_cmd(url: str) -> str:
    return f"{sys.executable} {LAB / 'ref-pds' / 'email-token.py'} {url} {{did}}"


# ---- tinypds -> tinypds ----------------------------------------------------------------------


def test_tinypds_to_tinypds(lab, tmp_path, servers):
    handle = unique_handle("tt")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    new = servers("new")
    new_url = f"http://localhost:{new.port}"

    dry = migrate_in(new, acct.url, handle, "--check")
    assert dry.returncode == 0, dry.stderr
    assert "records:     10" in dry.stdout and "blobs:       5" in dry.stdout and "preferences: 2" in dry.stdout
    assert f"-> {new_url}" in dry.stdout
    assert pds_endpoint(plc_doc(did)) == acct.url  # the dry run changed nothing
    assert httpx.get(new_url + XRPC + "com.atproto.sync.listRepos").json()["repos"] == []

    out = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DID document names" in out.stdout
    assert_arrived(before, new_url, handle)
    assert_deactivated(acct.url, did)


# ---- reference PDS <-> tinypds ------------------------------------------------------------------


def ref_account(url: str, handle: str) -> Account:
    r = httpx.post(url + XRPC + "com.atproto.server.createAccount", timeout=30,
                   json={"handle": handle, "email": f"{handle}@example.com", "password": PASSWORD})
    assert r.status_code == 200, r.text
    acct = Account(url, handle)
    acct.populate()
    return acct


def test_reference_pds_to_tinypds(lab, servers):
    ref_url = lab[0]
    handle = unique_handle("ri")
    acct = ref_account(ref_url, handle)
    before = acct.snapshot()
    new = servers("new")
    new_url = f"http://localhost:{new.port}"
    out = migrate_in(new, ref_url, handle, token_cmd=ref_token_cmd(ref_url))
    assert out.returncode == 0, out.stdout + out.stderr
    after = assert_arrived(before, new_url, handle)
    assert_deactivated(ref_url, acct.did)
    # the account is usable here: writes work and the repo verifies with our key
    after.create("app.bsky.feed.post", {"text": "hello from tinypds", "createdAt": "2026-01-01T00:00:00.000Z"})
    status = after.http.get(XRPC + "com.atproto.server.checkAccountStatus").json()
    assert status["activated"] and status["validDid"] and status["indexedRecords"] == 11


def test_tinypds_to_reference_pds(lab, tmp_path, servers):
    ref_url = lab[1]
    handle = unique_handle("ro")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    out = cli(old.data_dir, "migrate", "out", "--to", ref_url, "--handle", handle, "--email", f"{handle}@example.com",
              "--password-stdin", port=old.port, stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert_arrived(before, ref_url, handle)
    assert_deactivated(acct.url, did)


# ---- failure injection: the account stays usable on the old side, a re-run finishes -----------


def old_still_in_charge(acct: Account, did: str) -> None:
    assert pds_endpoint(plc_doc(did)) == acct.url
    acct.create("app.bsky.feed.post", {"text": "still here", "createdAt": "2026-01-02T00:00:00.000Z"})


def new_status(url: str, handle: str) -> dict:
    acct = Account(url, handle)
    try:
        return acct.http.get(XRPC + "com.atproto.server.checkAccountStatus").json()
    finally:
        acct.close()


def test_old_pds_dies_mid_blob_copy_then_resume(lab, tmp_path, servers):
    handle = unique_handle("fd")
    port = free_port()
    did = init_tinypds(tmp_path / "old", port, handle)
    old = servers("old", port)
    acct = Account(f"http://localhost:{port}", handle)
    acct.populate(image_size=96)  # ~27 KB images: the cut lands inside one
    before = acct.snapshot()
    new = servers("new")
    new_url = f"http://localhost:{new.port}"
    proxy = CuttingProxy(port)
    proxy.kill_on, proxy.kill_skip, proxy.kill_mid = b"getBlob", 2, 4000  # the 3rd blob stops after ~4 KB
    try:
        first = migrate_in(new, f"http://127.0.0.1:{proxy.port}", handle, token_cmd=local_token_cmd(old))
        assert first.returncode == 1 and "migration stopped" in first.stderr, first.stdout + first.stderr
        old_still_in_charge(acct, did)
        status = new_status(new_url, handle)
        assert status["activated"] is False and status["importedBlobs"] == 2 and status["expectedBlobs"] == 5
        proxy.heal()
        proxy.requests.clear()
        second = migrate_in(new, f"http://127.0.0.1:{proxy.port}", handle, token_cmd=local_token_cmd(old))
        assert second.returncode == 0, second.stdout + second.stderr
        assert len([r for r in proxy.requests if b"getBlob" in r]) == 3  # the 2 copied blobs were not re-sent
    finally:
        proxy.close()
    before["records"].update({k: v for k, v in acct_records_after(acct).items()})
    after = Account(new_url, handle).snapshot()
    assert after["records"] == before["records"] and len(after["records"]) == 11  # incl. the post made meanwhile
    assert after["blobs"] == before["blobs"] and after["preferences"] == before["preferences"]
    assert pds_endpoint(plc_doc(did)) == new_url
    assert_deactivated(acct.url, did)


def acct_records_after(acct: Account) -> dict:
    r = acct.http.get(XRPC + "com.atproto.repo.listRecords",
                      params={"repo": acct.did, "collection": "app.bsky.feed.post", "limit": 100})
    assert r.status_code == 200, r.text
    return {rec["uri"]: rec["cid"] for rec in r.json()["records"]}


def test_plc_submit_fails_then_resume(lab, tmp_path, servers):
    handle = unique_handle("fp")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    plc_proxy = CuttingProxy(2582)
    new = servers("new", plc_url=f"http://localhost:{plc_proxy.port}")  # the new PDS reaches PLC through the proxy
    new_url = f"http://localhost:{new.port}"
    plc_proxy.kill_on = b"POST /did:plc"  # the directory "goes away" when the operation is submitted
    try:
        first = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))
        assert first.returncode == 1 and "submitPlcOperation" in first.stderr, first.stdout + first.stderr
        old_still_in_charge(acct, did)
        assert new_status(new_url, handle)["activated"] is False
        plc_proxy.heal()
        second = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        plc_proxy.close()
    after = Account(new_url, handle).snapshot()
    assert set(before["records"]) < set(after["records"]) and after["blobs"] == before["blobs"]
    assert pds_endpoint(plc_doc(did)) == new_url
    assert_deactivated(acct.url, did)


def test_corrupt_blob_stops_before_the_switch(lab, tmp_path, servers):
    import sqlite3

    handle = unique_handle("fc")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    new = servers("new")
    new_url = f"http://localhost:{new.port}"
    db = sqlite3.connect(old.data_dir / "tinypds.sqlite", timeout=10)
    blob_id, data = db.execute("SELECT blob_id, data FROM blob_parts ORDER BY blob_id LIMIT 1").fetchone()
    db.execute("UPDATE blob_parts SET data = ? WHERE blob_id = ? AND idx = 0", (bytes([data[0] ^ 0xFF]) + data[1:], blob_id))
    db.commit()
    first = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))
    assert first.returncode == 1 and "could not be copied intact" in first.stderr, first.stdout + first.stderr
    old_still_in_charge(acct, did)
    status = new_status(new_url, handle)
    assert status["activated"] is False and status["importedBlobs"] == 4 and status["expectedBlobs"] == 5
    db.execute("UPDATE blob_parts SET data = ? WHERE blob_id = ? AND idx = 0", (data, blob_id))  # repaired
    db.commit()
    db.close()
    second = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))
    assert second.returncode == 0, second.stdout + second.stderr
    after = Account(new_url, handle).snapshot()
    assert after["blobs"] == before["blobs"] and pds_endpoint(plc_doc(did)) == new_url
