"""Firehose event bodies and frames built from a CommitData (core.events)."""

from __future__ import annotations

from tinypds.core import car, dagcbor, events
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.commit import RecordWrite, build_commit, verify_inductive
from tinypds.core.crypto import K256PrivateKey

DID = "did:plc:eventtest0000000000000000"
KEY = K256PrivateKey.from_bytes(b"\x05" * 32)


def _commits():
    store = MemoryBlockStore()
    first = build_commit(store, DID, None, [], "3kaaaaaaaaaa2", KEY.sign)
    for cid, data in first.new_blocks.items():
        store.put_block(cid, data)
    store.put_block(first.data, b"\xa2ae\x80al\xf6")  # the empty node
    data = dagcbor.encode({"$type": "app.bsky.feed.post", "text": "hi"})
    w = RecordWrite("create", "app.bsky.feed.post", "3kbbbbbbbbbb2", dagcbor.encode_with_cid({"$type": "app.bsky.feed.post", "text": "hi"})[0], data)
    second = build_commit(store, DID, (first.cid, first.data, first.rev), [w], "3kaaaaaaaaab2", KEY.sign)
    return first, second


def test_commit_body_has_the_lexicon_fields_and_a_checkable_car_slice():
    _, commit = _commits()
    body = events.commit_body(commit, "2024-01-01T00:00:00.000Z")
    assert set(body) == {"repo", "commit", "rev", "since", "blocks", "ops", "blobs", "rebase", "tooBig", "time", "prevData"}
    assert body["repo"] == DID and body["commit"] == commit.cid and body["since"] == "3kaaaaaaaaaa2"
    assert body["ops"] == [{"action": "create", "path": "app.bsky.feed.post/3kbbbbbbbbbb2", "cid": commit.ops[0].cid}]
    roots, blocks = car.read_car_bytes(body["blocks"])
    assert roots == [commit.cid] and blocks[0][0] == commit.cid
    # a consumer can invert the ops with only the slice's blocks
    verify_inductive(commit.data, body["ops"], body["prevData"], MemoryBlockStore(blocks))


def test_frame_adds_seq_and_header():
    _, commit = _commits()
    body = events.encode_body(events.commit_body(commit, "2024-01-01T00:00:00.000Z"))
    frame = events.frame(42, events.COMMIT, body)
    header = dagcbor.encode({"op": 1, "t": "#commit"})
    assert frame.startswith(header)
    decoded = dagcbor.decode(frame[len(header):])
    assert decoded["seq"] == 42 and decoded["commit"] == commit.cid
    err = events.error_frame("FutureCursor", "Cursor in the future")
    assert err.startswith(dagcbor.encode({"op": -1}))


def test_sync_identity_account_bodies():
    first, _ = _commits()
    sync = events.sync_body(DID, first.cid, first.commit_block, first.rev, "t")
    roots, blocks = car.read_car_bytes(sync["blocks"])
    assert roots == [first.cid] and blocks == [(first.cid, first.commit_block)] and sync["rev"] == first.rev
    assert events.identity_body(DID, "t") == {"did": DID, "time": "t"}
    assert events.identity_body(DID, "t", "a.test")["handle"] == "a.test"
    assert events.account_body(DID, "t", True) == {"did": DID, "time": "t", "active": True}
    assert events.account_body(DID, "t", False, "deactivated")["status"] == "deactivated"
