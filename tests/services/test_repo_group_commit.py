"""RepoService group commit: queued calls share one transaction, yet each is its own commit.

Calls gathered in one event-loop turn are queued before the flusher runs, so they form one
group deterministically; the tests count write transactions to prove it.
"""

from __future__ import annotations

import asyncio

import pytest

from tinypds import errors
from tinypds.core import dagcbor
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.commit import verify_commit, verify_inductive
from tinypds.core.crypto import parse_did_key
from tinypds.services.repo import writes as repo_service
from tinypds.services.repo.writes import Write
from tinypds.services.repo.car_io import verify_stored
from tinypds.store import events as events_db

from .repo_helpers import DID, fixed_key, open_env, snapshot

POST = "app.bsky.feed.post"


def post(text: str) -> dict:
    return {"$type": POST, "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    yield e
    e.db.close()


def count_transactions(env) -> list[int]:
    """Wrap db.awrite (the writer transaction) and count calls."""
    calls = [0]
    real = env.db.awrite

    async def counting(fn):
        calls[0] += 1
        return await real(fn)

    env.db.awrite = counting
    return calls


async def settle(coros):
    return await asyncio.gather(*coros, return_exceptions=True)


def test_failing_calls_in_a_group_do_not_fail_their_neighbours(env):
    verify_key = parse_did_key(fixed_key(DID).public_key().did_key())
    start_root = env.repo.get_root()
    stale_swap = start_root.commit_cid  # valid now, stale once the group's first commit is built
    a_cid = dagcbor.encode_with_cid(post("a"))[0]
    heard: list[int] = []
    env.repo.add_listener(lambda seq, commit: heard.append(seq))
    transactions = count_transactions(env)

    outcomes = asyncio.run(settle([
        env.repo.create_record(POST, post("a"), rkey="ra"),                             # ok
        env.repo.create_record(POST, post("dup"), rkey="ra"),                           # sees "ra" from the call before
        env.repo.apply_writes([Write("update", POST, "ra", post("a2"), swap_record=a_cid)]),  # swap against the previous call's record
        env.repo.apply_writes([Write("delete", POST, "missing")]),                      # nothing to delete
        env.repo.create_record(POST, post("stale"), rkey="rs", swap_commit=stale_swap),  # commit moved on
        env.repo.create_record(POST, post("b"), rkey="rb"),                             # ok
    ]))

    assert transactions[0] == 1  # one group, one transaction (one fsync)
    ok_a, dup, upd, missing, stale, ok_b = outcomes
    assert isinstance(dup, errors.InvalidRequest) and "already exists" in str(dup)
    assert isinstance(missing, errors.InvalidRequest) and "Could not locate record" in str(missing)
    assert isinstance(stale, errors.InvalidSwap)
    good = [ok_a, upd, ok_b]
    assert all(isinstance(r, repo_service.CommitResult) for r in good), outcomes
    assert upd.results[0].action == "update"

    seqs, revs = [r.seq for r in good], [r.rev for r in good]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and heard == seqs  # listeners in seq order
    assert revs == sorted(revs) and len(set(revs)) == 3
    assert good[0].commit.since == start_root.rev and good[0].commit.prev_data == start_root.data_cid
    for prev, cur in zip(good, good[1:]):  # a linear chain inside the group
        assert cur.commit.since == prev.rev and cur.commit.prev_data == prev.commit.data

    for r in good:  # each commit verifies on its own: signature, and its ops from its relevant blocks alone
        obj = verify_commit(r.commit.commit_block, verify_key.verify)
        assert obj["rev"] == r.rev and obj["data"] == r.commit.data
        verify_inductive(r.commit.data, r.commit.ops, r.commit.prev_data, MemoryBlockStore(r.commit.relevant_blocks))
        ev = env.db.read(lambda c, s=r.seq: events_db.events_after(c, s - 1, 1))[0]
        body = dagcbor.decode(ev.body)
        assert ev.seq == r.seq and body["commit"] == r.commit_cid and body["rev"] == r.rev

    assert env.repo.get_record(POST, "ra").value["text"] == "a2"
    assert env.repo.get_record(POST, "rb").value["text"] == "b"
    assert env.repo.get_record(POST, "rs") is None
    assert env.repo.get_root().commit_cid == ok_b.commit_cid
    assert verify_stored(env.db, keys=env.keys).records == 2


def test_a_storage_failure_fails_the_whole_group_and_acknowledges_nobody(env, monkeypatch):
    before = snapshot(env.db)
    heard: list[int] = []
    env.repo.add_listener(lambda seq, commit: heard.append(seq))
    real_apply = repo_service.repo_db.apply_commit
    n = [0]

    def flaky_apply(conn, *args, **kw):
        n[0] += 1
        if n[0] == 2:  # the second commit of the group hits a storage error
            raise OSError("disk I/O error (injected)")
        return real_apply(conn, *args, **kw)

    monkeypatch.setattr(repo_service.repo_db, "apply_commit", flaky_apply)
    outcomes = asyncio.run(settle([env.repo.create_record(POST, post(f"p{i}"), rkey=f"r{i}") for i in range(3)]))
    assert all(isinstance(o, OSError) for o in outcomes), outcomes  # the first one's commit was rolled back too
    assert heard == [] and snapshot(env.db) == before

    monkeypatch.setattr(repo_service.repo_db, "apply_commit", real_apply)
    r = asyncio.run(env.repo.create_record(POST, post("after"), rkey="r9"))
    assert heard == [r.seq] and env.repo.count_records() == 1
    assert verify_stored(env.db, keys=env.keys).records == 1


def test_queued_calls_wait_for_the_group_in_flight(env):
    """Calls arriving while a group is being written form the next group (not one each)."""
    transactions = count_transactions(env)

    async def main():
        first = asyncio.ensure_future(env.repo.create_record(POST, post("first"), rkey="f0"))
        await asyncio.sleep(0)  # the first group (of one) is now on the writer thread
        await asyncio.sleep(0)
        rest = [env.repo.create_record(POST, post(f"n{i}"), rkey=f"n{i}") for i in range(10)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert env.repo.count_records() == 11
    assert transactions[0] == 2
    revs = [r.rev for r in sorted(results, key=lambda r: r.seq)]
    assert revs == sorted(revs) and len(set(revs)) == 11
