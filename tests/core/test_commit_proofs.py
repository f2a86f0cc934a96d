"""Sync v1.1 commit proofs: every row of firehose/commit-proof-fixtures.json."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.fixtures import fixture_path
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.cid import CID
from tinypds.core.commit import InductiveProofError, RecordOp, RecordWrite, build_commit, verify_inductive
from tinypds.core.mst import MST, NodeCache
from tinypds.core.mst.proof import proof_blocks_for_keys


def load_rows():
    return json.loads(fixture_path("firehose", "commit-proof-fixtures.json").read_text())


def ops_for(row, leaf):
    return [RecordOp("create", k, leaf, None) for k in row["adds"]] + [
        RecordOp("delete", k, None, leaf) for k in row["dels"]
    ]


def test_fixture_rows():
    rows = load_rows()
    assert len(rows) >= 6
    for row in rows:
        leaf = CID.parse(row["leafValue"])
        mst = MST.empty(MemoryBlockStore())
        for k in row["keys"]:
            mst = mst.put(k, leaf)
        assert str(mst.root_cid()) == row["rootBeforeCommit"], row["comment"]
        for k in row["adds"]:
            mst = mst.put(k, leaf)
        for k in row["dels"]:
            mst = mst.delete(k)
        after = mst.root_cid()
        assert str(after) == row["rootAfterCommit"], row["comment"]

        proof = proof_blocks_for_keys(mst, row["adds"] + row["dels"])
        expected = {CID.parse(c) for c in row["blocksInProof"]}
        assert set(proof) == expected, row["comment"]

        # the fixture's blocks alone are enough to invert the ops, in every order
        only = MemoryBlockStore({c: proof[c] for c in expected})
        ops = ops_for(row, leaf)
        before = CID.parse(row["rootBeforeCommit"])
        for order in itertools.permutations(ops):
            verify_inductive(after, list(order), before, only)
        # without the new root node nothing can be inverted
        short = MemoryBlockStore({c: proof[c] for c in expected if c != after})
        with pytest.raises(InductiveProofError, match="incomplete"):
            verify_inductive(after, ops, before, short)
        with pytest.raises(InductiveProofError, match="prevData"):
            verify_inductive(after, ops, after, only)


def test_fixture_rows_through_build_commit():
    """The same key sets through build_commit, with real record blocks instead of the fixture's
    leaf CID: the tree shapes are the same, so the proofs have the same number of nodes."""
    from tinypds.core.cid import cid_for_dagcbor
    from tinypds.core.dagcbor import encode

    def sign(msg: bytes) -> bytes:
        return bytes(64)  # signatures are not what this test checks

    def record(key: str) -> tuple[CID, bytes]:
        block = encode({"$type": "x.y.z", "k": key})
        return cid_for_dagcbor(block), block

    for row in load_rows():
        store = MemoryBlockStore()
        mst = MST.empty(store)
        for k in row["keys"]:
            mst = mst.put(k, record(k)[0])
        for cid, data in mst.walk_blocks():
            store.put_block(cid, data)
        prev = (cid_for_dagcbor(b"previous commit"), mst.root_cid(), "2222222222222")
        writes = [RecordWrite("create", *k.split("/"), *record(k)) for k in row["adds"]]
        writes += [RecordWrite("delete", *k.split("/")) for k in row["dels"]]
        cd = build_commit(store, "did:plc:abc", prev, writes, "3333333333333", sign)
        after = MST.load(MemoryBlockStore(cd.relevant_blocks), cd.data, cache=NodeCache())
        proof = proof_blocks_for_keys(after, row["adds"] + row["dels"])
        assert len(proof) == len(row["blocksInProof"]), row["comment"]
        assert set(proof) <= set(cd.relevant_blocks)
        assert set(cd.new_blocks) <= set(cd.relevant_blocks)
        verify_inductive(cd.data, cd.ops, cd.prev_data, MemoryBlockStore(proof))
