"""Firehose outbox: replay then live with no gap or repeat, cutover under concurrent writes,
FutureCursor, OutdatedCursor, ConsumerTooSlow without delaying others, pruning, memory bound."""

from __future__ import annotations

import asyncio

import pytest

from tinypds.core import dagcbor
from tinypds.services.sync.firehose import Firehose, iso_time
from tinypds.store import events as events_db

from .repo_helpers import open_env

NOW = "2026-01-01T00:00:00.000Z"


def post(i: int) -> dict:
    return {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": NOW}


def parse(frame: bytes) -> tuple[dict, dict]:
    """Split a frame into (header, body) with the strict DAG-CBOR decoder."""
    header, rest = dagcbor.decode_first(frame) if hasattr(dagcbor, "decode_first") else _split(frame)
    return header, dagcbor.decode(rest)


def _split(frame: bytes) -> tuple[dict, bytes]:
    # the header is a tiny map; find the shortest prefix that decodes strictly
    for i in range(2, min(len(frame), 64)):
        try:
            header = dagcbor.decode(frame[:i])
        except Exception:
            continue
        return header, frame[i:]
    raise AssertionError("no header in frame")


@pytest.fixture
def env(tmp_path):
    e = open_env(tmp_path)
    yield e
    e.db.close()


class Collector:
    """A consumer: records every frame; optional per-frame delay."""

    def __init__(self, delay: float = 0.0):
        self.frames: list[tuple[dict, dict]] = []
        self.delay = delay

    async def send(self, data: bytes) -> None:
        self.frames.append(parse(data))
        if self.delay:
            await asyncio.sleep(self.delay)
        else:
            await asyncio.sleep(0)

    def seqs(self) -> list[int]:
        return [b["seq"] for h, b in self.frames if h.get("op") == 1 and "seq" in b]

    async def wait_for(self, seq: int, timeout: float = 20) -> None:
        async def until():
            while not self.seqs() or self.seqs()[-1] < seq:
                await asyncio.sleep(0.005)
        await asyncio.wait_for(until(), timeout)


def all_seqs(db) -> list[int]:
    return [r.seq for r in db.read(lambda c: events_db.events_after(c, 0, 1_000_000))]


async def write_posts(env, fh: Firehose, start: int, n: int) -> None:
    for i in range(start, start + n):
        await env.repo.create_record("app.bsky.feed.post", post(i))


def test_replay_from_zero_then_live_exactly_once(env):
    async def main():
        fh = Firehose(env.db, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        await write_posts(env, fh, 0, 5)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send, cursor=0))
        await write_posts(env, fh, 5, 5)
        expected = all_seqs(env.db)
        await c.wait_for(expected[-1])
        task.cancel()
        await fh.aclose()
        return c, expected

    c, expected = asyncio.run(main())
    assert c.seqs() == expected  # every stored event once, in order (account creation events included)
    types = [h["t"] for h, _ in c.frames]
    assert types[:3] == ["#identity", "#account", "#commit"]
    commits = [b for h, b in c.frames if h["t"] == "#commit"]
    assert len(commits) == 11 and all(b["ops"] and b["blocks"] for b in commits[1:])


def test_no_cursor_means_live_only(env):
    async def main():
        fh = Firehose(env.db, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        await write_posts(env, fh, 0, 3)
        head = all_seqs(env.db)[-1]
        while fh.head < head:
            await asyncio.sleep(0.005)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send))
        await asyncio.sleep(0.05)
        await write_posts(env, fh, 3, 2)
        await c.wait_for(head + 2)
        await asyncio.sleep(0.05)
        task.cancel()
        await fh.aclose()
        return c, head

    c, head = asyncio.run(main())
    assert c.seqs() == [head + 1, head + 2]


@pytest.mark.parametrize("page,ring", [(2, 8), (50, 4096)])
def test_cutover_while_writing_loses_and_repeats_nothing(env, page, ring):
    """Backfill pages from SQLite while writes land; the stream must be exactly the log."""

    async def main():
        fh = Firehose(env.db, page_size=page, ring_size=ring, max_lag=ring - 1, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        await write_posts(env, fh, 0, 30)
        consumers = [Collector(delay=0.002), Collector()]
        tasks = [asyncio.create_task(fh.serve(c.send, cursor=0)) for c in consumers]
        await write_posts(env, fh, 30, 40)  # while the backfill is streaming
        expected = all_seqs(env.db)
        for c in consumers:
            await c.wait_for(expected[-1])
        await write_posts(env, fh, 70, 3)
        expected = all_seqs(env.db)
        for c in consumers:
            await c.wait_for(expected[-1])
        for t in tasks:
            t.cancel()
        await fh.aclose()
        return consumers, expected

    consumers, expected = asyncio.run(main())
    for c in consumers:
        assert c.seqs() == expected


def test_events_written_without_notify_arrive_via_the_poll(env):
    async def main():
        fh = Firehose(env.db, poll_seconds=0.02)
        await fh.start()  # no listener registered
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send))
        await asyncio.sleep(0.02)
        await write_posts(env, fh, 0, 2)
        expected = all_seqs(env.db)
        await c.wait_for(expected[-1])
        task.cancel()
        await fh.aclose()
        return c, expected

    c, expected = asyncio.run(main())
    assert c.seqs() == expected[-2:]


def test_future_cursor_gets_an_error_frame(env):
    async def main():
        fh = Firehose(env.db)
        await fh.start(background=False)
        c = Collector()
        reason = await fh.serve(c.send, cursor=fh.head + 10)
        return reason, c

    reason, c = asyncio.run(main())
    assert reason == "FutureCursor"
    assert c.frames[0][0] == {"op": -1} and c.frames[0][1]["error"] == "FutureCursor"


def test_outdated_cursor_gets_info_then_the_oldest_kept(env):
    async def main():
        fh = Firehose(env.db, retention_hours=1, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        await write_posts(env, fh, 0, 3)
        # everything so far is older than the retention window "two hours from now"
        import time
        removed = await fh.prune(now=time.time() + 7200)
        await write_posts(env, fh, 3, 2)
        kept = all_seqs(env.db)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send, cursor=1))
        await c.wait_for(kept[-1])
        task.cancel()
        await fh.aclose()
        return removed, kept, c

    removed, kept, c = asyncio.run(main())
    assert removed == 6 and len(kept) == 2
    assert c.frames[0][0] == {"op": 1, "t": "#info"} and c.frames[0][1]["name"] == "OutdatedCursor"
    assert c.seqs() == kept


def test_pruning_never_breaks_the_live_stream(env):
    async def main():
        import time
        fh = Firehose(env.db, retention_hours=1, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send, cursor=0))
        await write_posts(env, fh, 0, 3)
        await c.wait_for(all_seqs(env.db)[-1])
        before = c.seqs()
        await fh.prune(now=time.time() + 7200)  # deletes every stored event
        assert all_seqs(env.db) == []
        await write_posts(env, fh, 3, 3)
        await c.wait_for(before[-1] + 3)
        task.cancel()
        await fh.aclose()
        return before, c.seqs()

    before, after = asyncio.run(main())
    assert after == before + [before[-1] + 1, before[-1] + 2, before[-1] + 3]


def test_slow_consumer_is_cut_off_without_delaying_others(env):
    async def main():
        fh = Firehose(env.db, max_lag=5, ring_size=16, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        stuck = asyncio.Event()
        got: list[bytes] = []

        async def slow_send(data: bytes) -> None:
            got.append(data)
            if len(got) > 1 and parse(data)[0].get("op") != -1:
                await stuck.wait()  # never reads again

        fast = Collector()
        slow_task = asyncio.create_task(fh.serve(slow_send))
        fast_task = asyncio.create_task(fh.serve(fast.send))
        await asyncio.sleep(0.05)
        first = fh.head
        await write_posts(env, fh, 0, 30)
        await fast.wait_for(first + 30)
        reason = await asyncio.wait_for(slow_task, 20)  # error frame goes through once it unblocks
        fast_task.cancel()
        await fh.aclose()
        return reason, fast, got, fh

    reason, fast, got, fh = asyncio.run(main())
    assert reason == "ConsumerTooSlow"
    assert len(fast.seqs()) == 30
    assert fh.subscriber_count == 0


def test_memory_is_the_shared_ring_with_50_stuck_subscribers(env):
    async def main():
        fh = Firehose(env.db, max_lag=10, ring_size=32, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        never = asyncio.Event()

        async def stuck(data: bytes) -> None:
            await never.wait()

        tasks = [asyncio.create_task(fh.serve(stuck)) for _ in range(50)]
        await asyncio.sleep(0.05)
        assert fh.subscriber_count == 50
        await write_posts(env, fh, 0, 100)
        await asyncio.sleep(0.1)
        ring = len(fh._ring)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fh.aclose()
        return ring, fh

    ring, fh = asyncio.run(main())
    assert ring <= 64  # bounded by 2 * ring_size no matter how many subscribers
    assert fh.subscriber_count == 0


def test_iso_time_sorts_like_event_times():
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1.5) < iso_time(2)


def test_cursor_behind_a_fully_pruned_log_gets_outdated_cursor_then_live(env):
    async def main():
        import time
        fh = Firehose(env.db, retention_hours=1, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        await write_posts(env, fh, 0, 2)
        head = all_seqs(env.db)[-1]
        await fh.prune(now=time.time() + 7200)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send, cursor=1))
        await asyncio.sleep(0.05)
        await write_posts(env, fh, 2, 1)
        await c.wait_for(head + 1)
        task.cancel()
        await fh.aclose()
        return c, head

    c, head = asyncio.run(main())
    assert c.frames[0][1]["name"] == "OutdatedCursor"
    assert c.seqs() == [head + 1]


def test_randomized_session_every_commit_frame_verifies_on_its_own(env):
    """Random batches of creates/updates/deletes (the tree grows, then mostly shrinks);
    each #commit frame is checked with ONLY its own blocks: signature,
    inductive inversion to prevData, record blocks present, since/prevData chaining."""
    import random

    from tinypds.core.blocks import MemoryBlockStore
    from tinypds.core.car import CarParser
    from tinypds.core.commit import verify_commit, verify_inductive

    from .repo_helpers import DID, fixed_key

    rng = random.Random(42)

    async def main():
        fh = Firehose(env.db, poll_seconds=0.05)
        await fh.start()
        env.repo.add_listener(fh.notify)
        c = Collector()
        task = asyncio.create_task(fh.serve(c.send, cursor=0))
        live: list[str] = []
        from tinypds.services.repo.writes import Write
        for round_ in range(60):
            writes, used = [], set()
            grow = round_ < 35
            for _ in range(rng.randrange(1, 9)):
                r = rng.random()
                if not live or (grow and r < 0.7) or (not grow and r < 0.15):
                    rkey = f"k{rng.randrange(10**9):09d}"
                    if rkey in used:
                        continue
                    writes.append(Write("create", "app.bsky.feed.post", rkey, post(round_)))
                    used.add(rkey)
                    live.append(rkey)
                else:
                    rkey = rng.choice(live)
                    if rkey in used:
                        continue
                    used.add(rkey)
                    if r < 0.85:
                        writes.append(Write("update", "app.bsky.feed.post", rkey, post(round_ + 1000)))
                    else:
                        writes.append(Write("delete", "app.bsky.feed.post", rkey))
                        live.remove(rkey)
            if writes:
                await env.repo.apply_writes(writes)
        await c.wait_for(all_seqs(env.db)[-1])
        task.cancel()
        await fh.aclose()
        return c

    c = asyncio.run(main())
    key = fixed_key(DID).public_key()
    commits = [b for h, b in c.frames if h["t"] == "#commit"]
    assert len(commits) > 50
    prev_rev, prev_data = None, None
    deletes = 0
    for body in commits:
        parser = CarParser()
        blocks = dict(parser.feed(body["blocks"]))
        parser.close()
        assert parser.roots == [body["commit"]]
        commit = verify_commit(blocks[body["commit"]], key.verify)
        assert commit["rev"] == body["rev"] and body["since"] == prev_rev
        assert body.get("prevData") == prev_data
        verify_inductive(commit["data"], body["ops"], body.get("prevData"), MemoryBlockStore(blocks))
        for op in body["ops"]:
            deletes += op["action"] == "delete"
            if op["action"] != "delete":
                assert op["cid"].matches(blocks[op["cid"]])
        prev_rev, prev_data = body["rev"], commit["data"]
    assert deletes > 20
