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
    ensure_plc,
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
    """PLC + the two reference PDS instances."""
    return ensure_lab()


@pytest.fixture(scope="module")
def plc() -> str:
    """Only the PLC directory (tinypds <-> tinypds)."""
    return ensure_plc()


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


def old_tinypds(tmp_path, servers, handle: str, **kw):
    port = free_port()
    did = init_tinypds(tmp_path / "old", port, handle)
    server = servers("old", port, **kw)
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


def test_tinypds_to_tinypds(plc, tmp_path, servers):
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
    assert events(old.data_dir)[-1] == ("#account", did)  # the deactivation went out on the old firehose
    again = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))  # a re-run finds nothing left to do
    assert again.returncode == 0 and "0 copied this run" in again.stdout, again.stdout + again.stderr


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
    # the old account's email came along (no --email given), not yet confirmed here
    assert (after.session.get("email"), after.session.get("emailConfirmed")) == (f"{handle}@example.com", False)


def test_tinypds_to_reference_pds(lab, tmp_path, servers):
    ref_url = lab[1]
    handle = unique_handle("ro")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    before = acct.snapshot()
    dry = cli(old.data_dir, "migrate", "out", "--to", ref_url, "--handle", handle, "--email", f"{handle}@example.com",
              "--password-stdin", "--check", port=old.port, stdin=PASSWORD + "\n")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "records:     10" in dry.stdout and f"-> {ref_url}" in dry.stdout
    assert pds_endpoint(plc_doc(did)) == acct.url
    r = httpx.post(ref_url + XRPC + "com.atproto.server.createSession", json={"identifier": did, "password": PASSWORD})
    assert r.status_code == 401  # the dry run made no account there
    out = cli(old.data_dir, "migrate", "out", "--to", ref_url, "--handle", handle, "--email", f"{handle}@example.com",
              "--password-stdin", port=old.port, stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert_arrived(before, ref_url, handle)
    assert_deactivated(acct.url, did)
    # tinypds tells the truth afterwards: its local PLC log learned the op the move submitted
    status = new_status(acct.url, did)
    assert status["activated"] is False and status["validDid"] is False, status


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


def test_old_pds_dies_mid_blob_copy_then_resume(plc, tmp_path, servers):
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
        assert any(b"sync.getRepo?" in r and b"since=" in r for r in proxy.requests)  # only the change was re-sent
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


def test_plc_submit_fails_then_resume(plc, tmp_path, servers):
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


def test_corrupt_blob_stops_before_the_switch_then_roll_back_and_retry(plc, tmp_path, servers):
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
    # roll back: delete the half-made account on the new side (its DID never pointed there)
    tok = cli(new.data_dir, "migrate", "delete-token", port=new.port).stdout.strip()
    r = httpx.post(new_url + XRPC + "com.atproto.server.deleteAccount",
                   json={"did": did, "password": PASSWORD, "token": tok}, timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.post(new_url + XRPC + "com.atproto.server.createSession",
                      json={"identifier": handle, "password": PASSWORD}).status_code == 401
    old_still_in_charge(acct, did)
    db.execute("UPDATE blob_parts SET data = ? WHERE blob_id = ? AND idx = 0", (data, blob_id))  # repaired
    db.commit()
    db.close()
    second = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))  # starts over on the new side
    assert second.returncode == 0, second.stdout + second.stderr
    after = Account(new_url, handle).snapshot()
    assert after["blobs"] == before["blobs"] and pds_endpoint(plc_doc(did)) == new_url


# ---- the server side's guards, events and deleteAccount -------------------------------------


def foreign_car() -> bytes:
    """A valid one-record repo CAR of some other DID."""
    from tinypds.core.blocks import MemoryBlockStore
    from tinypds.core.car import write_car
    from tinypds.core.cid import cid_for_dagcbor
    from tinypds.core.commit import RecordWrite, build_commit
    from tinypds.core.crypto import K256PrivateKey
    from tinypds.core.dagcbor import encode

    data = encode({"$type": "app.bsky.feed.post", "text": "x", "createdAt": "2026-01-01T00:00:00.000Z"})
    commit = build_commit(MemoryBlockStore(), "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", None,
                          [RecordWrite("create", "app.bsky.feed.post", "3kabcdefghij2", cid_for_dagcbor(data), data)],
                          "3kabcdefghij2", K256PrivateKey.generate().sign)
    return b"".join(write_car([commit.cid], [(commit.cid, commit.new_blocks[commit.cid]),
                                             *[(c, b) for c, b in commit.new_blocks.items() if c != commit.cid]]))


def events(data_dir) -> list[tuple[str, str]]:
    import sqlite3

    db = sqlite3.connect(f"file:{data_dir / 'tinypds.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT type, did FROM events ORDER BY seq").fetchall()
    finally:
        db.close()


def test_create_account_guards_events_and_delete(plc, tmp_path, servers):
    from tinypds.core.crypto import K256PrivateKey
    from tinypds.core.jwt import create_service_auth
    import time

    handle = unique_handle("ga")
    old, acct, did = old_tinypds(tmp_path, servers, handle)
    new = servers("new")
    new_url = f"http://localhost:{new.port}"
    service_did = f"did:web:localhost%3A{new.port}"
    http = httpx.Client(base_url=new_url, timeout=30)
    assert http.get(XRPC + "com.atproto.server.describeServer").json()["inviteCodeRequired"] is True

    def token(aud: str = service_did, lxm: str = "com.atproto.server.createAccount") -> str:
        r = acct.http.get(XRPC + "com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def create(code: str | None, tok: str | None) -> httpx.Response:
        body = {"did": did, "handle": handle, "password": PASSWORD, "email": "m@example.com"}
        if code:
            body["inviteCode"] = code
        return http.post(XRPC + "com.atproto.server.createAccount", json=body,
                         headers={"Authorization": f"Bearer {tok}"} if tok else {})

    invite = cli(new.data_dir, "invite", port=new.port)
    assert invite.returncode == 0, invite.stderr
    code = invite.stdout.strip()
    assert create(None, token()).json()["error"] == "InvalidInviteCode"
    assert create("tinypds-wrong", token()).json()["error"] == "InvalidInviteCode"
    assert create(code, None).status_code == 401
    r = create(code, token(lxm="com.atproto.repo.createRecord"))
    assert r.status_code == 401, r.text
    assert create(code, token(aud="did:web:elsewhere.example")).status_code == 401
    forged = create_service_auth(did, service_did, "com.atproto.server.createAccount", K256PrivateKey.generate(),
                                 int(time.time()))
    assert create(code, forged).status_code == 401
    made = create(code, token())  # the code survived the failed attempts; it is spent now
    assert made.status_code == 200, made.text
    assert made.json()["did"] == did
    again = create(code, token())
    assert again.status_code == 400 and again.json()["error"] == "AccountAlreadyExists"

    auth = {"Authorization": f"Bearer {made.json()['accessJwt']}"}
    r = http.post(XRPC + "com.atproto.repo.createRecord", headers=auth, json={
        "repo": did, "collection": "app.bsky.feed.post",
        "record": {"$type": "app.bsky.feed.post", "text": "too early", "createdAt": "2026-01-01T00:00:00.000Z"}})
    assert r.status_code == 400 and r.json()["error"] == "RepoDeactivated"
    r = http.post(XRPC + "com.atproto.repo.importRepo", headers={**auth, "Content-Type": "application/vnd.ipld.car"},
                  content=foreign_car())
    assert r.status_code == 400 and "refusing to mix accounts" in r.json()["message"], r.text
    car = acct.http.get(XRPC + "com.atproto.sync.getRepo", params={"did": did}).content
    r = http.post(XRPC + "com.atproto.repo.importRepo", headers={**auth, "Content-Type": "application/vnd.ipld.car"},
                  content=car)
    assert r.status_code == 200, r.text
    rev = acct.http.get(XRPC + "com.atproto.sync.getLatestCommit", params={"did": did}).json()["rev"]
    acct.create("app.bsky.feed.post", {"text": "after the copy", "createdAt": "2026-01-03T00:00:00.000Z"})
    diff = acct.http.get(XRPC + "com.atproto.sync.getRepo", params={"did": did, "since": rev}).content
    assert len(diff) < len(car)
    r = http.post(XRPC + "com.atproto.repo.importRepo", headers={**auth, "Content-Type": "application/vnd.ipld.car"},
                  content=diff)  # a `since` diff on top of what is there
    assert r.status_code == 200, r.text
    assert http.get(XRPC + "com.atproto.server.checkAccountStatus", headers=auth).json()["indexedRecords"] == 11
    missing = http.get(XRPC + "com.atproto.repo.listMissingBlobs", headers=auth).json()["blobs"]
    assert len(missing) == 5 and all(m["recordUri"].startswith(f"at://{did}/") for m in missing)
    assert r.status_code == 200 and events(new.data_dir) == []  # nothing on the firehose while deactivated
    r = http.post(XRPC + "com.atproto.server.activateAccount", headers=auth)
    assert r.status_code == 400 and "does not name this PDS" in r.json()["message"]

    out = migrate_in(new, acct.url, handle, token_cmd=local_token_cmd(old))  # picks up the made account
    assert out.returncode == 0, out.stdout + out.stderr
    assert events(new.data_dir)[-3:] == [("#account", did), ("#identity", did), ("#sync", did)]

    # deleteAccount on the old side (the owner may delete anywhere, as on the reference PDS)
    bad = httpx.post(acct.url + XRPC + "com.atproto.server.deleteAccount",
                     json={"did": did, "password": PASSWORD, "token": "WRONG-TOKEN"}, timeout=30)
    assert bad.status_code >= 400
    tok = cli(old.data_dir, "migrate", "delete-token", port=old.port).stdout.strip()
    r = httpx.post(acct.url + XRPC + "com.atproto.server.deleteAccount",
                   json={"did": did, "password": PASSWORD, "token": tok}, timeout=30)
    assert r.status_code == 200, r.text
    assert events(old.data_dir)[-1] == ("#account", did)
    assert httpx.get(acct.url + XRPC + "com.atproto.sync.listRepos").json()["repos"] == []
    assert cli(old.data_dir, "invite", port=old.port).returncode == 0  # the server is empty again
    r = acct.http.get(XRPC + "com.atproto.sync.listBlobs", params={"did": did})
    assert r.status_code == 400 or r.json().get("cids") == []  # the blobs are gone with the account
    http.close()


def test_sessions_are_refreshed_during_a_long_move(plc, tmp_path, servers):
    """Access tokens live 2 s here and the PLC token takes 3 s to arrive: every later call
    needs a refreshed session on both sides."""
    short = {"TINYPDS_ACCESS_TOKEN_SECONDS": "2"}
    handle = unique_handle("rs")
    old, acct, did = old_tinypds(tmp_path, servers, handle, env=short)
    before = acct.snapshot()
    new = servers("new", env=short)
    proxy = CuttingProxy(old.port)
    try:
        out = migrate_in(new, f"http://127.0.0.1:{proxy.port}", handle, token_cmd="sleep 3; " + local_token_cmd(old))
        assert out.returncode == 0, out.stdout + out.stderr
        assert any(b"refreshSession" in r for r in proxy.requests)
    finally:
        proxy.close()
    assert_arrived(before, f"http://localhost:{new.port}", handle)
