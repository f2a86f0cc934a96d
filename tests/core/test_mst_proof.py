"""Covering proofs: presence and absence verify from the proof blocks alone."""

from __future__ import annotations

import random

import pytest

from tests.core.test_mst import CID1, build, example_keys, rand_keys, value_cid
from tinypds.core.blocks import MemoryBlockStore, MissingBlockError
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.dagcbor import decode, encode
from tinypds.core.mst import MstError, proof_blocks, verify_proof


def test_proofs_of_presence_and_absence():
    rng = random.Random(31)
    pool = rand_keys(rng, 900)
    items = {k: value_cid(i) for i, k in enumerate(pool[:600])}
    mst = build(items)
    all_nodes = dict(mst.walk_blocks())
    root = mst.root_cid()
    probes = rng.sample(pool, 200) + ["a.a.a/0", "zzz.z/z", "app.bsky.feed.post/~"]
    for key in probes:
        proof = proof_blocks(mst, key)
        assert root in proof
        assert all(all_nodes[c] == b for c, b in proof.items())
        assert len(proof) <= 3 * (mst.layer + 1)
        assert verify_proof(root, key, MemoryBlockStore(proof)) == items.get(key)


def test_proof_on_empty_and_example_trees():
    empty = build({})
    proof = proof_blocks(empty, "a.b/c")
    assert list(proof) == [empty.root_cid()]
    assert verify_proof(empty.root_cid(), "a.b/c", MemoryBlockStore(proof)) is None
    items = {k: CID1 for k in example_keys()}
    mst = build(items)
    for key in list(items)[::7] + ["A0/000000", "M9/999999", "ZZ/999999"]:
        got = verify_proof(mst.root_cid(), key, MemoryBlockStore(proof_blocks(mst, key)))
        assert got == items.get(key)


def test_incomplete_proof_raises():
    rng = random.Random(32)
    mst = build({k: CID1 for k in rand_keys(rng, 500)})
    root = mst.root_cid()
    key = next(k for k in mst.keys() if k.encode() not in [e["k"] for e in decode(mst.new_blocks()[root])["e"]])
    proof = proof_blocks(mst, key)
    with pytest.raises(MissingBlockError) as info:
        verify_proof(root, key, MemoryBlockStore({c: b for c, b in proof.items() if c != root}))
    assert info.value.cid == root
    failures = 0
    for victim in [c for c in proof if c != root]:
        try:
            verify_proof(root, key, MemoryBlockStore({c: b for c, b in proof.items() if c != victim}))
        except MissingBlockError as exc:
            assert exc.cid == victim
            failures += 1
    assert failures >= 1  # the key sits below the root, so some node on its path is needed


def test_tampered_proof_is_rejected():
    mst = build({k: CID1 for k in example_keys()})
    key = "A0/374913"
    proof = proof_blocks(mst, key)
    root = mst.root_cid()
    # a block stored under the wrong CID
    bad = dict(proof)
    bad[root] = encode({"e": [], "l": None})
    with pytest.raises(MstError, match="does not match"):
        verify_proof(root, key, MemoryBlockStore(bad))
    # an untrimmed root (no entries, just a pointer) is not a valid tree
    node = decode(proof[root])
    node["e"] = []
    node["l"] = node["l"] or next(e["t"] for e in decode(proof[root])["e"] if e["t"])
    forged = encode(node)
    forged_root = cid_for_dagcbor(forged)
    with pytest.raises(MstError, match="untrimmed"):
        verify_proof(forged_root, key, MemoryBlockStore({**proof, forged_root: forged}))


def test_subtree_out_of_range_is_rejected():
    items = {k: CID1 for k in example_keys()}
    mst = build(items)
    blocks = dict(mst.walk_blocks())
    root = decode(blocks[mst.root_cid()])
    links = [i for i, e in enumerate(root["e"]) if e["t"] is not None]
    assert root["l"] is not None and links
    i = links[-1]
    # swap the leftmost and a right subtree: heights stay valid, key ranges do not
    root["l"], root["e"][i]["t"] = root["e"][i]["t"], root["l"]
    forged = encode(root)
    forged_root = cid_for_dagcbor(forged)
    store = MemoryBlockStore({**blocks, forged_root: forged})
    first_key = sorted(items)[0]
    with pytest.raises(MstError, match="range"):
        verify_proof(forged_root, first_key, store)
