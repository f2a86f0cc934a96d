"""build_commit / verify_commit / verify_inductive with real k256 signatures."""

from __future__ import annotations

import random

import pytest

from tests.core.test_mst import rand_keys
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.cid import CID, cid_for_dagcbor, cid_for_raw
from tinypds.core.commit import (
    CommitError,
    InductiveProofError,
    InvalidCommitError,
    InvalidWriteError,
    RecordAlreadyExistsError,
    RecordNotFoundError,
    RecordOp,
    RecordWrite,
    build_commit,
    build_commit_from_root,
    invert_and_check,
    verify_commit,
    verify_inductive,
)
from tinypds.core.crypto import K256PrivateKey
from tinypds.core.dagcbor import decode, encode
from tinypds.core.mst import MST, NodeCache, verify_tree

KEY = K256PrivateKey.from_bytes(bytes(range(1, 33)))
PUB = KEY.public_key()
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def rev(n: int) -> str:
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    out = ""
    n += 1 << 60
    for _ in range(13):
        out = alphabet[n & 31] + out
        n >>= 5
    return out


def rec(text: str, blob: CID | None = None) -> tuple[CID, bytes]:
    obj = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}
    if blob is not None:
        obj["embed"] = {"$type": "blob", "ref": blob, "mimeType": "image/png", "size": 3}
    block = encode(obj)
    return cid_for_dagcbor(block), block


def create(path: str, text: str | None = None, blob=None) -> RecordWrite:
    coll, rkey = path.split("/")
    return RecordWrite("create", coll, rkey, *rec(text or path, blob))


class Repo:
    """A minimal in-memory repo: applies CommitData to a block store, like the store layer will."""

    def __init__(self):
        self.store = MemoryBlockStore()
        self.head: tuple[CID, CID, str] | None = None
        self.n = 0

    def commit(self, writes):
        self.n += 1
        cd = build_commit(self.store, DID, self.head, writes, rev(self.n), KEY.sign)
        for cid, data in cd.new_blocks.items():
            self.store.put_block(cid, data)
        self.head = (cd.cid, cd.data, cd.rev)
        return cd


def test_first_commit_shape_and_signature():
    repo = Repo()
    blob = cid_for_raw(b"png")
    cd = repo.commit([create("app.bsky.feed.post/3k2a", blob=blob), create("app.bsky.feed.like/3k2b")])
    commit = verify_commit(cd.commit_block, PUB.verify)
    assert commit["did"] == DID and commit["version"] == 3 and commit["prev"] is None
    assert commit["data"] == cd.data and commit["rev"] == cd.rev and len(commit["sig"]) == 64
    assert set(commit) == {"did", "version", "data", "rev", "prev", "sig"}
    assert cd.cid == cid_for_dagcbor(cd.commit_block)
    assert cd.since is None and cd.prev_data is None
    assert [op.action for op in cd.ops] == ["create", "create"]
    assert cd.ops[0] == RecordOp("create", "app.bsky.feed.post/3k2a", rec("app.bsky.feed.post/3k2a", blob)[0], None)
    assert cd.blobs == (blob,)
    assert cd.commit_block == cd.new_blocks[cd.cid]
    for op in cd.ops:
        assert op.cid in cd.new_blocks  # record blocks travel with the commit
    assert cd.removed == frozenset()
    invert_and_check(cd)
    assert list(verify_tree(repo.store, cd.data)) == sorted((op.path, op.cid) for op in cd.ops)


def test_update_delete_removed_and_since():
    repo = Repo()
    first = repo.commit([create("a.b.c/1"), create("a.b.c/2"), create("a.b.c/3")])
    new_cid, new_block = rec("changed")
    second = repo.commit(
        [RecordWrite("update", "a.b.c", "1", new_cid, new_block), RecordWrite("delete", "a.b.c", "2")]
    )
    assert second.since == first.rev and second.prev_data == first.data
    old1, old2 = first.ops[0].cid, first.ops[1].cid
    assert second.ops == (
        RecordOp("update", "a.b.c/1", new_cid, old1),
        RecordOp("delete", "a.b.c/2", None, old2),
    )
    assert {old1, old2, first.cid} <= second.removed
    old_nodes = {c for c, _ in MST.load(repo.store, first.data, cache=NodeCache()).walk_blocks()}
    new_nodes = {c for c, _ in MST.load(repo.store, second.data, cache=NodeCache()).walk_blocks()}
    assert second.removed - {old1, old2, first.cid} == old_nodes - new_nodes
    assert {c for c in second.new_blocks if c in new_nodes} == new_nodes - old_nodes
    assert not (second.removed & set(second.new_blocks))
    invert_and_check(second)
    tree = MST.load(repo.store, second.data, cache=NodeCache())
    assert tree.get("a.b.c/1") == new_cid and tree.get("a.b.c/2") is None


def test_write_errors():
    repo = Repo()
    repo.commit([create("a.b.c/1")])
    with pytest.raises(RecordAlreadyExistsError, match="a.b.c/1"):
        repo.commit([create("a.b.c/1")])
    with pytest.raises(RecordNotFoundError, match="a.b.c/9"):
        repo.commit([RecordWrite("update", "a.b.c", "9", *rec("x"))])
    with pytest.raises(RecordNotFoundError):
        repo.commit([RecordWrite("delete", "a.b.c", "9")])
    with pytest.raises(InvalidWriteError, match="more than one"):
        repo.commit([create("a.b.c/2"), RecordWrite("delete", "a.b.c", "2")])
    cid, _ = rec("x")
    with pytest.raises(InvalidWriteError, match="does not match"):
        repo.commit([RecordWrite("create", "a.b.c", "3", cid, b"\xa0")])
    with pytest.raises(InvalidWriteError, match="needs"):
        repo.commit([RecordWrite("create", "a.b.c", "3", cid, None)])
    with pytest.raises(InvalidWriteError):
        repo.commit([RecordWrite("create", "a.b.c", "bad key", *rec("y"))])
    with pytest.raises(InvalidWriteError, match="action"):
        repo.commit([RecordWrite("upsert", "a.b.c", "4", *rec("z"))])
    with pytest.raises(CommitError, match="not after"):
        build_commit(repo.store, DID, repo.head, [create("a.b.c/5")], repo.head[2], KEY.sign)
    assert all(isinstance(e, CommitError) for e in (RecordNotFoundError("x"), InvalidWriteError("x")))


def test_verify_commit_rejects_bad_commits():
    root = cid_for_dagcbor(b"x")
    cid, block = build_commit_from_root(DID, root, rev(1), KEY.sign)
    assert cid == cid_for_dagcbor(block)
    assert verify_commit(block, PUB.verify)["data"] == root
    other = K256PrivateKey.from_bytes(bytes(range(2, 34))).public_key()
    with pytest.raises(InvalidCommitError, match="signature"):
        verify_commit(block, other.verify)
    obj = decode(block)
    for field, value, match in [
        ("version", 2, "version"),
        ("data", "not-a-cid", "data"),
        ("did", 7, "did"),
        ("rev", None, "rev"),
        ("sig", "abc", "sig"),
    ]:
        with pytest.raises(InvalidCommitError, match=match):
            verify_commit(encode({**obj, field: value}), PUB.verify)
    tampered = encode({**obj, "rev": rev(2)})
    with pytest.raises(InvalidCommitError, match="signature"):
        verify_commit(tampered, PUB.verify)
    with pytest.raises(InvalidCommitError, match="DAG-CBOR"):
        verify_commit(block[:-1], PUB.verify)
    with pytest.raises(InvalidCommitError):
        verify_commit(encode([1, 2]), PUB.verify)


def test_verify_inductive_catches_lies():
    repo = Repo()
    repo.commit([create(k) for k in rand_keys(random.Random(51), 200)])
    path = "app.bsky.feed.post/zzzz"
    cd = repo.commit([create(path)])
    blocks = MemoryBlockStore(cd.relevant_blocks)
    verify_inductive(cd.data, cd.ops, cd.prev_data, blocks)
    with pytest.raises(InductiveProofError, match="prevData"):
        verify_inductive(cd.data, cd.ops, cid_for_dagcbor(b"nope"), blocks)
    wrong_cid = RecordOp("create", path, rec("other")[0], None)
    with pytest.raises(InductiveProofError, match="create"):
        verify_inductive(cd.data, [wrong_cid], cd.prev_data, blocks)
    with pytest.raises(InductiveProofError):  # an op that did not happen
        verify_inductive(cd.data, [*cd.ops, RecordOp("delete", "a.b.c/gone", None, rec("q")[0])], cd.prev_data, blocks)
    with pytest.raises(InductiveProofError, match="prevData"):  # an op left out
        verify_inductive(cd.data, [], cd.prev_data, blocks)
    with pytest.raises(InductiveProofError, match="incomplete"):
        verify_inductive(cd.data, cd.ops, cd.prev_data, MemoryBlockStore({cd.cid: cd.commit_block}))
    as_dicts = [{"action": o.action, "path": o.path, "cid": o.cid, "prev": o.prev} for o in cd.ops]
    verify_inductive(cd.data, as_dicts, cd.prev_data, blocks)


def test_random_commit_chain_inverts_and_matches_reference():
    rng = random.Random(52)
    pool = rand_keys(rng, 400)
    repo = Repo()
    ref: dict[str, CID] = {}
    for step in range(40):
        writes, touched = [], set()
        for _ in range(rng.choice([1, 1, 2, 5, 12])):
            path = rng.choice(pool)
            if path in touched:
                continue
            touched.add(path)
            coll, rkey = path.split("/")
            if path in ref and rng.random() < 0.4:
                writes.append(RecordWrite("delete", coll, rkey))
            elif path in ref:
                writes.append(RecordWrite("update", coll, rkey, *rec(f"{path}@{step}")))
            else:
                writes.append(RecordWrite("create", coll, rkey, *rec(f"{path}@{step}")))
        cd = repo.commit(writes)
        for w in writes:
            if w.action == "delete":
                del ref[w.path]
            else:
                ref[w.path] = w.cid
        invert_and_check(cd)
        verify_commit(cd.commit_block, PUB.verify)
        assert set(cd.relevant_blocks) >= set(cd.new_blocks)
    tree = MST.load(repo.store, repo.head[1], cache=NodeCache())
    assert list(tree.items()) == sorted(ref.items())
    assert list(verify_tree(repo.store, repo.head[1])) == sorted(ref.items())
