"""Relay-facing pieces around the firehose: commit-proof fixtures through the framing, seq that
never goes backwards (restart, restored backup), the write budget, and requestCrawl scheduling."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.fixtures import fixture_path
from tinypds import errors
from tinypds.config import Settings
from tinypds.core import events as events_core
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.car import CarParser
from tinypds.core.cid import CID
from tinypds.core.commit import CommitData, RecordOp, build_commit_from_root, verify_inductive
from tinypds.core.mst import MST
from tinypds.core.mst.proof import proof_blocks_for_keys
from tinypds.services.sync.crawl import Crawler
from tinypds.services.sync.ratelimit import WriteRateLimiter
from tinypds.services.sync.sequencer import SeqKeeper
from tinypds.store import events as events_db
from tinypds.store.db import Database

from .repo_helpers import open_env

NOW = "2026-01-01T00:00:00.000Z"


# ---- commit-proof fixtures through the frame ------------------------------------------------
def test_commit_proof_fixtures_verify_from_the_frame_alone():
    rows = json.loads(fixture_path("firehose", "commit-proof-fixtures.json").read_text())
    for row in rows:
        leaf = CID.parse(row["leafValue"])
        tree = MST.empty(MemoryBlockStore())
        for k in row["keys"]:
            tree = tree.put(k, leaf)
        before = tree.root_cid()
        ops = []
        for k in row["adds"]:
            tree = tree.put(k, leaf)
            ops.append(RecordOp("create", k, leaf, None))
        for k in row["dels"]:
            tree = tree.delete(k)
            ops.append(RecordOp("delete", k, None, leaf))
        after = tree.root_cid()
        assert str(after) == row["rootAfterCommit"], row["comment"]
        cid, block = build_commit_from_root("did:plc:fixture00000000000000000", after, "3kaaaaaaaaaaa", lambda m: bytes(64))
        proof = proof_blocks_for_keys(tree, [op.path for op in ops])
        commit = CommitData(did="did:plc:fixture00000000000000000", cid=cid, rev="3kaaaaaaaaaaa", since="3jzzzzzzzzzzz",
                            prev_data=before, data=after, commit_block=block, new_blocks={cid: block, **proof},
                            removed=frozenset(), ops=tuple(ops), relevant_blocks=proof, blobs=())
        data = events_core.frame(7, events_core.COMMIT, events_core.encode_body(events_core.commit_body(commit, NOW)))

        header, body = events_core.parse_frame(data)
        assert header == {"op": 1, "t": "#commit"} and body["seq"] == 7
        parser = CarParser()
        blocks = dict(parser.feed(body["blocks"]))
        parser.close()
        assert parser.roots == [cid] and body["prevData"] == CID.parse(row["rootBeforeCommit"])
        assert {CID.parse(c) for c in row["blocksInProof"]} <= set(blocks), row["comment"]
        verify_inductive(after, body["ops"], body["prevData"], MemoryBlockStore(blocks))


# ---- seq never goes backwards ------------------------------------------------------------
def post(i: int) -> dict:
    return {"$type": "app.bsky.feed.post", "text": f"p{i}", "createdAt": NOW}


def test_restart_keeps_seq_and_a_restored_backup_jumps_above_it(tmp_path):
    env = open_env(tmp_path)
    keeper = SeqKeeper(env.db, env.dir, reserve=1000)
    first = keeper.guard()
    assert not first.restored

    async def write(n: int) -> None:
        for i in range(n):
            await env.repo.create_record("app.bsky.feed.post", post(i))

    asyncio.run(write(3))
    backup = tmp_path / "backup.sqlite"
    env.db.backup_to(backup)
    asyncio.run(write(4))
    head = env.db.read(events_db.last_seq)
    keeper.observe(head)  # what the firehose does every few seconds
    env.db.close()

    # a plain restart: nothing detected, seq continues
    db = Database.open(env.dir / "tinypds.sqlite")
    again = SeqKeeper(db, env.dir, reserve=1000).guard()
    assert not again.restored and again.last_seq == head
    db.close()

    # restore the older backup over the live file
    shutil.copyfile(backup, env.dir / "tinypds.sqlite")
    for extra in ("-wal", "-shm"):
        (env.dir / f"tinypds.sqlite{extra}").unlink(missing_ok=True)
    db = Database.open(env.dir / "tinypds.sqlite")
    restored = SeqKeeper(db, env.dir, reserve=1000).guard()
    assert restored.restored and restored.last_seq > head
    rows = db.read(lambda c: events_db.events_after(c, head, 100))
    assert [r.type for r in rows] == ["#sync"]  # the relay is told the current state
    sync = events_core.parse_frame(events_core.frame(rows[0].seq, rows[0].type, rows[0].body))[1]
    assert sync["did"] == env.repo.did and sync["rev"]
    db.close()


# ---- the write budget ------------------------------------------------------------------------
def test_write_budget_refuses_with_ratelimit_headers_and_recovers():
    now = [1_000_000.2]
    lim = WriteRateLimiter(windows=(("second", 1, 5), ("hour", 3600, 8)), clock=lambda: now[0])
    for _ in range(5):
        lim.acquire()
    with pytest.raises(errors.RateLimitExceeded) as exc:
        lim.acquire()
    assert exc.value.status == 429
    h = exc.value.headers
    assert h["ratelimit-limit"] == "5" and h["ratelimit-remaining"] == "0"
    assert h["ratelimit-policy"] == "5;w=1" and int(h["ratelimit-reset"]) == 1_000_001
    now[0] += 1  # next second: the per-second window is open again, the hour window is not
    for _ in range(3):
        lim.acquire()
    with pytest.raises(errors.RateLimitExceeded) as exc:
        lim.acquire()
    assert exc.value.headers["ratelimit-policy"] == "8;w=3600"


def test_write_budget_defaults_and_off_switch():
    lim = WriteRateLimiter.from_settings(Settings())
    assert [(w.seconds, w.limit) for w in lim.windows] == [(1, 50), (3600, 2600), (86400, 21000)]
    off = WriteRateLimiter.from_settings(Settings(write_rate_limit=0))
    for _ in range(100):
        assert off.acquire() == {}


# ---- requestCrawl ----------------------------------------------------------------------------
class FakeRelay:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.up = True

    async def post(self, url: str, body: dict) -> bool:
        self.calls.append((url, body))
        if not self.up:
            raise OSError("connection refused")
        return True


def test_crawl_at_startup_then_at_most_once_per_interval_with_backoff():
    async def main():
        now = [0.0]
        relay = FakeRelay()
        announced = []

        async def reannounce():
            announced.append(now[0])

        settings = Settings(hostname="pds.example.com", relays=("https://relay.example",), crawl_interval_seconds=1200)
        c = Crawler(settings, post=relay.post, on_first_success=reannounce, clock=lambda: now[0])
        c.start()
        await c.wait_idle()
        assert relay.calls == [("https://relay.example/xrpc/com.atproto.sync.requestCrawl", {"hostname": "pds.example.com"})]
        assert announced == [0.0]
        for _ in range(10):  # writes within the interval ask nobody
            c.notify_write()
        await c.wait_idle()
        assert len(relay.calls) == 1
        now[0] = 1300.0
        relay.up = False
        c.notify_write()  # due, but the relay is down: no exception reaches the writer
        await c.wait_idle()
        assert len(relay.calls) == 2
        now[0] = 1310.0
        c.notify_write()  # backing off
        await c.wait_idle()
        assert len(relay.calls) == 2
        relay.up = True
        now[0] = 1331.0
        c.notify_write()
        await c.wait_idle()
        assert len(relay.calls) == 3 and announced == [0.0]  # identity/account re-sent only once
        await c.aclose()

    asyncio.run(main())


def test_a_loopback_hostname_is_not_announced_to_public_relays():
    async def main():
        relay = FakeRelay()
        settings = Settings(hostname="localhost:2583", relays=("https://bsky.network", "http://127.0.0.1:9"))
        c = Crawler(settings, post=relay.post)
        c.start()
        await c.wait_idle()
        await c.aclose()
        return relay.calls

    calls = asyncio.run(main())
    assert [u for u, _ in calls] == ["http://127.0.0.1:9/xrpc/com.atproto.sync.requestCrawl"]
