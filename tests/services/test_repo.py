"""RepoService.apply_writes: create/update/delete, swap checks, errors, concurrency; store contract."""

from __future__ import annotations

import asyncio

import pytest

from tinypds import errors
from tinypds.core import dagcbor
from tinypds.core.commit import invert_and_check, verify_commit
from tinypds.core.crypto import parse_did_key
from tinypds.core.mst import MST
from tinypds.services.repo.writes import MUST_NOT_EXIST, Write
from tinypds.services.repo.car_io import verify_stored
from tinypds.store import events as events_db
from tinypds.store import repo as repo_db
from tinypds.store.blocks import SqliteBlocks

from .repo_helpers import DID, fixed_key, open_env, snapshot

POST = "app.bsky.feed.post"


def post(text: str, **extra) -> dict:
    return {"$type": POST, "text": text, "createdAt": "2024-01-01T00:00:00.000Z", **extra}


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    yield e
    e.db.close()


def run(coro):
    return asyncio.run(coro)


def test_new_account_has_an_empty_signed_repo(env):
    root = env.repo.get_root()
    commit = env.db.read(lambda c: c.execute("SELECT data FROM blocks WHERE cid = ?", (bytes(root.commit_cid),)).fetchone()[0])
    obj = verify_commit(commit, parse_did_key(fixed_key(DID).public_key().did_key()).verify)
    assert obj["did"] == DID and obj["data"] == root.data_cid
    assert env.repo.list_collections() == []
    summary = verify_stored(env.db, keys=env.keys)
    assert summary.records == 0 and summary.signature.startswith("valid")
    types = [r.type for r in env.db.read(lambda c: events_db.events_after(c, 0))]
    assert types == ["#identity", "#account", "#commit"]


def test_create_get_list_update_delete(env):
    r = run(env.repo.create_record(POST, post("one"), rkey="3kaaaaaaaaaa2"))
    assert r.results[0].uri == f"at://{DID}/{POST}/3kaaaaaaaaaa2"
    assert r.results[0].cid == dagcbor.encode_with_cid(post("one"))[0]
    got = env.repo.get_record(POST, "3kaaaaaaaaaa2")
    assert got.value["text"] == "one" and got.cid == r.results[0].cid
    assert env.repo.get_record(POST, "3kaaaaaaaaaa2", cid=dagcbor.encode_with_cid(post("x"))[0]) is None

    r2 = run(env.repo.apply_writes([Write("update", POST, "3kaaaaaaaaaa2", post("two"))]))
    assert r2.rev > r.rev and r2.commit.ops[0].prev == r.results[0].cid
    assert env.repo.get_record(POST, "3kaaaaaaaaaa2").value["text"] == "two"

    run(env.repo.create_record(POST, post("three"), rkey="3kaaaaaaaaab2"))
    run(env.repo.create_record("app.bsky.feed.like", {"$type": "app.bsky.feed.like", "createdAt": "2024-01-01T00:00:00Z"}, rkey="l1"))
    page, cursor = env.repo.list_records(POST, limit=1)
    assert [v.value["text"] for v in page] == ["three"] and cursor == "3kaaaaaaaaab2"
    page2, cursor2 = env.repo.list_records(POST, limit=1, cursor=cursor)
    assert [v.value["text"] for v in page2] == ["two"]
    asc, _ = env.repo.list_records(POST, reverse=True)
    assert [v.value["text"] for v in asc] == ["two", "three"]
    assert env.repo.list_collections() == ["app.bsky.feed.like", POST]

    run(env.repo.delete_record(POST, "3kaaaaaaaaaa2"))
    assert env.repo.get_record(POST, "3kaaaaaaaaaa2") is None
    assert env.repo.count_records() == 2
    assert verify_stored(env.db, keys=env.keys).records == 2


def test_commit_is_persisted_with_its_event_and_verifies_inductively(env):
    r = run(env.repo.apply_writes([Write("create", POST, f"3kaaaaaaaaa{i}2", post(str(i))) for i in range(5)]))
    invert_and_check(r.commit)  # a firehose consumer can check the change from relevant_blocks alone
    root = env.repo.get_root()
    assert (root.commit_cid, root.rev, root.data_cid) == (r.commit_cid, r.rev, r.commit.data)
    ev = env.db.read(lambda c: events_db.events_after(c, r.seq - 1, 1))[0]
    assert ev.seq == r.seq and ev.type == "#commit"
    body = dagcbor.decode(ev.body)
    assert body["commit"] == r.commit_cid and body["rev"] == r.rev and len(body["ops"]) == 5
    assert "seq" not in body
    tree = env.db.read(lambda c: list(MST.load(SqliteBlocks(c), root.data_cid).items()))
    assert [k for k, _ in tree] == [f"{POST}/3kaaaaaaaaa{i}2" for i in range(5)]


def test_old_blocks_are_removed_but_shared_record_blocks_survive(env):
    same = post("same")
    run(env.repo.apply_writes([Write("create", POST, "a1", same), Write("create", POST, "a2", same)]))
    n_blocks = snapshot(env.db)["blocks"]
    run(env.repo.delete_record(POST, "a1"))
    assert env.repo.get_record(POST, "a2").value["text"] == "same"  # the shared block is still there
    verify_stored(env.db, keys=env.keys)
    run(env.repo.delete_record(POST, "a2"))
    snap = snapshot(env.db)
    assert snap["blocks"] == 2 and snap["records"] == 0 and n_blocks > 2  # commit + empty root node only


def test_blob_refs_are_indexed(env):
    blob = {"$type": "blob", "ref": dagcbor.from_json({"$link": "bafkreibme22gw2h7y2h7tg2fhqotaqjucnbc24deqo72b6mkl2egezxhvy"}),
            "mimeType": "image/png", "size": 10}
    rec = post("pic", embed={"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": blob}]})
    run(env.repo.create_record(POST, rec, rkey="p1"))
    assert snapshot(env.db)["record_blobs"] == 1
    run(env.repo.put_record(POST, "p1", post("no pic")))
    assert snapshot(env.db)["record_blobs"] == 0


def test_create_existing_and_update_or_delete_missing_are_refused(env):
    run(env.repo.create_record(POST, post("x"), rkey="r1"))
    before = snapshot(env.db)
    with pytest.raises(errors.InvalidRequest, match="already exists"):
        run(env.repo.create_record(POST, post("y"), rkey="r1"))
    with pytest.raises(errors.InvalidRequest, match="Could not locate record"):
        run(env.repo.apply_writes([Write("update", POST, "nope", post("y"))]))
    with pytest.raises(errors.InvalidRequest, match="Could not locate record"):
        run(env.repo.delete_record(POST, "nope"))
    with pytest.raises(errors.InvalidRequest, match="does not match collection"):
        run(env.repo.create_record("app.bsky.feed.like", post("y")))
    with pytest.raises(errors.InvalidRequest, match="floats"):
        run(env.repo.create_record(POST, post("y", n=1.5)))
    # a failing write in a batch rolls back the whole batch
    with pytest.raises(errors.InvalidRequest):
        run(env.repo.apply_writes([Write("create", POST, "ok", post("ok")), Write("delete", POST, "nope")]))
    assert snapshot(env.db) == before


def test_swap_checks(env):
    r = run(env.repo.create_record(POST, post("x"), rkey="r1"))
    cid = r.results[0].cid
    other = dagcbor.encode_with_cid(post("other"))[0]
    before = snapshot(env.db)
    with pytest.raises(errors.InvalidSwap):
        run(env.repo.apply_writes([Write("update", POST, "r1", post("y"), swap_record=other)]))
    with pytest.raises(errors.InvalidSwap):
        run(env.repo.delete_record(POST, "r1", swap_record=other))
    with pytest.raises(errors.InvalidSwap):
        run(env.repo.put_record(POST, "r1", post("y"), swap_record=MUST_NOT_EXIST))
    with pytest.raises(errors.InvalidSwap, match="Commit was at"):
        run(env.repo.create_record(POST, post("z"), swap_commit=other))
    assert snapshot(env.db) == before
    ok = run(env.repo.apply_writes([Write("update", POST, "r1", post("y"), swap_record=cid)], swap_commit=r.commit_cid))
    assert ok.results[0].action == "update"
    created = run(env.repo.put_record(POST, "r2", post("new"), swap_record=MUST_NOT_EXIST))
    assert created.results[0].action == "create"


def test_concurrent_writes_make_a_linear_chain(env):
    async def main():
        return await asyncio.gather(*(env.repo.create_record(POST, post(f"p{i}"), rkey=f"3kbbbbbbbb{i:02d}2") for i in range(50)))

    results = run(main())
    assert env.repo.count_records() == 50
    ordered = sorted(results, key=lambda r: r.seq)
    revs = [r.rev for r in ordered]
    assert revs == sorted(revs) and len(set(revs)) == 50
    for prev, cur in zip(ordered, ordered[1:]):
        assert cur.commit.since == prev.rev  # each commit builds on the previous one
        assert cur.commit.prev_data == prev.commit.data
    assert env.repo.get_root().commit_cid == ordered[-1].commit_cid
    assert verify_stored(env.db, keys=env.keys).records == 50


def test_listener_hears_commits_after_they_are_durable(env):
    heard = []

    def listener(seq, commit):
        root = env.repo.get_root()
        heard.append((seq, commit.cid == root.commit_cid))

    unsubscribe = env.repo.add_listener(listener)
    r = run(env.repo.create_record(POST, post("x"), rkey="r1"))
    unsubscribe()
    run(env.repo.create_record(POST, post("y"), rkey="r2"))
    assert heard == [(r.seq, True)]


def test_rev_stays_above_a_future_rev(env):
    # a root whose rev is ahead of the clock (e.g. after an import): the next rev must exceed it
    future = "7zzzzzzzzzzz2"
    root = env.repo.get_root()
    env.db.write(lambda c: repo_db.set_root(c, DID, root.commit_cid, future, root.data_cid))
    r = run(env.repo.create_record(POST, post("x"), rkey="r1"))
    assert r.rev > future
