"""Store contract: block sources (memory and SQLite) behave alike; apply_commit is one transaction."""

from __future__ import annotations

import pytest

from tinypds.core import dagcbor
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.commit import RecordWrite, build_commit
from tinypds.core.crypto import K256PrivateKey
from tinypds.core.mst import MST
from tinypds.store import blocks as blocks_db
from tinypds.store import events as events_db
from tinypds.store import records as records_db
from tinypds.store import repo as repo_db
from tinypds.store.blocks import DuplicateBlock, SqliteBlocks
from tinypds.store.db import Database

DID = "did:plc:storetest00000000000000000"
KEY = K256PrivateKey.from_bytes(b"\x07" * 32)


@pytest.fixture
def db(tmp_path):
    d = Database.open(tmp_path / "t.sqlite")
    yield d
    d.close()


def _blocks(n):
    out = []
    for i in range(n):
        data = dagcbor.encode({"$type": "x.y", "i": i})
        out.append((cid_for_dagcbor(data), data))
    return out


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_block_source_contract(db, kind):
    blocks = _blocks(50)
    missing = _blocks(51)[-1][0]
    if kind == "memory":
        src = MemoryBlockStore(blocks)
        get = src.get_block
    else:
        db.write(lambda c: blocks_db.put_blocks(c, blocks, "r1"))
        get = lambda cid: db.read(lambda c: SqliteBlocks(c, cache_size=8).get_block(cid))  # noqa: E731
    for cid, data in blocks:
        assert get(cid) == data
    assert get(missing) is None


def test_sqlite_blocks_cache_is_read_through(db):
    blocks = _blocks(20)
    db.write(lambda c: blocks_db.put_blocks(c, blocks, "r1"))

    def reads(c):
        src = SqliteBlocks(c, cache_size=4)
        for cid, _ in blocks[:4] * 3:
            src.get_block(cid)
        assert src.get_block(_blocks(21)[-1][0]) is None
        assert src.get_block(_blocks(21)[-1][0]) is None  # misses are not cached
        return src.reads

    assert db.read(reads) == 4 + 2


def test_put_blocks_is_idempotent_and_unique_insert_names_duplicates(db):
    blocks = _blocks(10)
    assert db.write(lambda c: blocks_db.put_blocks(c, blocks, "r1")) == 10
    assert db.write(lambda c: blocks_db.put_blocks(c, blocks, "r2")) == 0
    with pytest.raises(DuplicateBlock) as info:
        db.write(lambda c: blocks_db.put_blocks_unique(c, _blocks(12)[10:] + [blocks[3]], "r3"))
    assert info.value.cid == blocks[3][0]
    with pytest.raises(DuplicateBlock):
        db.write(lambda c: blocks_db.put_blocks_unique(c, [_blocks(13)[12], _blocks(13)[12]], "r3"))
    assert db.read(blocks_db.count_blocks)[0] == 10  # rolled back


def _commit(source, prev, writes, rev):
    return build_commit(source, DID, prev, writes, rev, KEY.sign)


def _write(action, rkey, text=None):
    if text is None:
        return RecordWrite(action, "app.bsky.feed.post", rkey)
    data = dagcbor.encode({"$type": "app.bsky.feed.post", "text": text})
    return RecordWrite(action, "app.bsky.feed.post", rkey, cid_for_dagcbor(data), data)


def test_apply_commit_persists_everything_in_one_transaction(db):
    def first(c):
        src = SqliteBlocks(c)
        commit = _commit(src, None, [_write("create", "a", "A"), _write("create", "b", "B")], "3kaaaaaaaaaa2")
        return commit, repo_db.apply_commit(c, commit, b"body", "2024-01-01T00:00:00.000Z")

    commit, seq = db.write(first)
    assert seq == 1
    root = db.read(repo_db.get_root)
    assert (root.commit_cid, root.rev, root.data_cid) == (commit.cid, commit.rev, commit.data)
    assert db.read(lambda c: records_db.get_record_cid(c, "app.bsky.feed.post", "a")) == commit.ops[0].cid

    def second(c):
        src = SqliteBlocks(c)
        nxt = _commit(src, (root.commit_cid, root.data_cid, root.rev), [_write("delete", "a"), _write("update", "b", "B2")],
                      "3kaaaaaaaaab2")
        repo_db.apply_commit(c, nxt, b"body2", "2024-01-01T00:00:01.000Z")
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        db.write(second)
    assert db.read(repo_db.get_root) == root  # nothing of the second commit is visible
    assert db.read(lambda c: events_db.last_seq(c)) == 1

    def third(c):
        src = SqliteBlocks(c)
        nxt = _commit(src, (root.commit_cid, root.data_cid, root.rev), [_write("delete", "a"), _write("update", "b", "B2")],
                      "3kaaaaaaaaab2")
        return nxt, repo_db.apply_commit(c, nxt, b"body2", "2024-01-01T00:00:01.000Z")

    nxt, seq2 = db.write(third)
    assert seq2 == 2
    # the blocks table holds exactly the current repo: commit, tree nodes, live records
    def current_blocks(c):
        tree = MST.load(SqliteBlocks(c), nxt.data)
        want = {bytes(nxt.cid)} | {bytes(cid) for cid, _ in tree.walk_blocks()} | {bytes(v) for _, v in tree.items()}
        have = {bytes(r[0]) for r in c.execute("SELECT cid FROM blocks")}
        return want, have

    want, have = db.read(current_blocks)
    assert want == have
    assert db.read(lambda c: records_db.count_records(c)) == 1


def test_seq_never_goes_backwards_after_pruning(db):
    seqs = [db.write(lambda c: events_db.append_event(c, "#identity", DID, f"2024-01-0{i}T00:00:00Z", b"x")) for i in range(1, 4)]
    assert seqs == [1, 2, 3]
    assert db.write(lambda c: events_db.prune_events(c, "2024-01-09")) == 3
    assert db.write(lambda c: events_db.append_event(c, "#identity", DID, "2024-01-10T00:00:00Z", b"x")) == 4
    assert [e.seq for e in db.read(lambda c: events_db.events_after(c, 0))] == [4]


def test_list_collections_and_mst_order(db):
    block = _blocks(1)[0]
    cid = bytes(block[0])
    db.write(lambda c: blocks_db.put_blocks(c, [block], "r"))
    rows = [("a.b", "x", cid, "r"), ("a.b.c", "x", cid, "r"), ("a.bb", "y", cid, "r")]
    assert db.write(lambda c: records_db.put_records(c, rows)) is None
    assert db.write(lambda c: records_db.put_records(c, [("a.b", "z", cid_for_dagcbor(b"\x01"), "r")])) == (
        "a.b", "z", cid_for_dagcbor(b"\x01"))  # its block is not stored
    assert db.read(records_db.list_collections) == ["a.b", "a.b.c", "a.bb"]
    # MST order is bytewise on "collection/rkey": "a.b.c/x" < "a.b/x" < "a.bb/y"
    assert [k for k, _ in db.read(lambda c: list(records_db.iter_index_in_mst_order(c)))] == ["a.b.c/x", "a.b/x", "a.bb/y"]


def test_blob_refs_fast_path_agrees_with_the_decoder():
    """store.repo.blob_refs skips the decode for canonical blob refs; every shape gives what
    dagcbor.iter_blob_refs finds (current refs, legacy refs, the word in text, bytes, nesting)."""
    from tinypds.core.cid import CID, cid_for_raw
    from tinypds.store.repo import blob_refs

    a, b = cid_for_raw(b"a"), cid_for_raw(b"b")

    def ref(c, size=1234, mime="image/jpeg"):
        return {"$type": "blob", "ref": c, "mimeType": mime, "size": size}

    records = [
        {"$type": "app.bsky.feed.post", "text": "hi", "embed": {"images": [{"image": ref(a)}, {"image": ref(b, 2**40)}]}},
        {"$type": "app.bsky.feed.post", "text": "mimeType in the text", "embed": {"image": ref(a)}},
        {"$type": "x.legacy", "img": {"cid": str(b), "mimeType": "image/png"}, "other": ref(a, 7)},
        {"$type": "x.bytes", "raw": b"mimeType", "blob": ref(b, 0)},
        {"$type": "x.nested", "a": [[{"b": {"c": ref(a), "d": ref(a)}}]]},
        {"$type": "x.none", "text": "no refs here"},
    ]
    for rec in records:
        data = dagcbor.encode(rec)
        want = sorted({CID(c) for c, _, _ in dagcbor.iter_blob_refs(dagcbor.decode(data))})
        assert blob_refs(data) == want, rec
