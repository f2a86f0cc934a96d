"""SyncService (the read side the firehose's consumers use): status errors as the lexicons
name them, getRepo?since diffs, record proofs of presence and absence, getBlocks."""

from __future__ import annotations

import asyncio

import pytest

from tinypds import errors
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.car import CarParser
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.dagcbor import decode
from tinypds.core.mst import verify_proof, verify_tree
from tinypds.services.sync.reads import SyncService
from tinypds.store import accounts as accounts_db

from .repo_helpers import DID, OTHER_DID, open_env

NOW = "2026-01-01T00:00:00.000Z"


def post(i: int) -> dict:
    return {"$type": "app.bsky.feed.post", "text": f"p{i}", "createdAt": NOW}


def car(data: bytes):
    p = CarParser()
    blocks = dict(p.feed(data))
    p.close()
    return p.roots, blocks


async def collect(chunks) -> bytes:
    return b"".join([c async for c in chunks])


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    yield e
    e.db.close()


def test_status_errors_follow_the_account_status(env):
    sync = SyncService(env.db)

    async def main():
        assert (await sync.repo_status(DID))["active"] is True
        with pytest.raises(errors.RepoNotFound):
            await sync.check_available(OTHER_DID)
        for status, err in (("deactivated", errors.RepoDeactivated), ("takendown", errors.RepoTakendown),
                            ("suspended", errors.RepoSuspended)):
            env.db.write(lambda c, s=status: accounts_db.set_status(c, DID, s))
            with pytest.raises(err):
                await sync.repo_car(DID)
            with pytest.raises(err):
                await sync.record_proof(DID, "app.bsky.feed.post", "x")
            assert await sync.repo_status(DID) == {"did": DID, "active": False, "status": status}
            repos, _ = await sync.list_repos()
            assert repos[0]["active"] is False and repos[0]["status"] == status
        env.db.write(lambda c: accounts_db.set_status(c, DID, "deleted"))
        with pytest.raises(errors.RepoNotFound):
            await sync.repo_status(DID)
        assert (await sync.list_repos())[0] == []

    asyncio.run(main())


def test_since_diff_proofs_and_blocks(env):
    sync = SyncService(env.db)

    async def main():
        keys = []
        for i in range(30):
            res = await env.repo.create_record("app.bsky.feed.post", post(i))
            keys.append(res.results[0].uri.rsplit("/", 1)[1])
        full_before = await collect(await sync.repo_car(DID))
        since = env.repo.get_root().rev
        await env.repo.delete_record("app.bsky.feed.post", keys[3])
        await env.repo.put_record("app.bsky.feed.post", keys[4], post(99))
        diff = await collect(await sync.repo_car(DID, since))
        full_after = await collect(await sync.repo_car(DID))
        present = await sync.record_proof(DID, "app.bsky.feed.post", keys[4])
        absent = await sync.record_proof(DID, "app.bsky.feed.post", keys[3])
        root = env.repo.get_root()
        blocks = await sync.blocks_car(DID, [root.commit_cid, root.data_cid])
        with pytest.raises(errors.BlockNotFound):
            await sync.blocks_car(DID, [root.commit_cid, cid_for_dagcbor(b"\xa0")])
        return keys, full_before, diff, full_after, present, absent, blocks, root

    keys, full_before, diff, full_after, present, absent, blocks, root = asyncio.run(main())
    _, old = car(full_before)
    roots, new = car(diff)
    assert roots == [root.commit_cid] and len(new) < len(old) // 2
    merged = MemoryBlockStore({**old, **new})
    _, full = car(full_after)
    assert list(verify_tree(merged, root.data_cid)) == list(verify_tree(MemoryBlockStore(full), root.data_cid))

    for (data, cid), key, want in ((present, keys[4], True), (absent, keys[3], False)):
        proof_roots, proof = car(data)
        commit = decode(proof[proof_roots[0]])
        got = verify_proof(commit["data"], f"app.bsky.feed.post/{key}", MemoryBlockStore(proof))
        assert got == cid and (got is not None) == want
        if want:
            assert decode(proof[got])["text"] == "p99"
        assert len(proof) < len(full)  # a path, not the repo

    assert car(blocks)[0] == [] and set(car(blocks)[1]) == {root.commit_cid, root.data_cid}
