"""verify_tree accepts canonical trees and names the faulty node for each kind of damage."""

from __future__ import annotations

import random

import pytest

from tests.core.test_mst import CID1, build, example_keys, rand_keys, value_cid
from tests.core.test_mst_diff import CountingStore
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.dagcbor import decode, encode
from tinypds.core.mst import MST, MstError, key_height, verify_tree
from tinypds.core.mst.codec import encode_node

POOL = rand_keys(random.Random(41), 2000)
H0 = [k.encode() for k in POOL if key_height(k) == 0]
H1 = [k.encode() for k in POOL if key_height(k) == 1]


def put(store: MemoryBlockStore, data: bytes):
    cid = cid_for_dagcbor(data)
    store.put_block(cid, data)
    return cid


def expect_error(store, root, match):
    with pytest.raises(MstError, match=match) as info:
        list(verify_tree(store, root))
    return str(info.value)


def test_accepts_valid_trees():
    rng = random.Random(42)
    for n in (0, 1, 5, 156, 1500):
        keys = example_keys() if n == 156 else rand_keys(rng, n)
        items = {k: value_cid(i) for i, k in enumerate(keys)}
        mst = build(items)
        store = MemoryBlockStore(mst.walk_blocks())
        assert list(verify_tree(store, mst.root_cid())) == sorted(items.items())


def test_streams_without_reading_everything_first():
    mst = build({k: CID1 for k in POOL})
    store = CountingStore(mst.walk_blocks())
    it = verify_tree(store, mst.root_cid())
    next(it)
    assert store.reads <= mst.layer + 1
    assert len(list(it)) == len(POOL) - 1
    assert store.reads == len(store)


def test_rejects_unsorted_keys():
    store = MemoryBlockStore()
    a, b = sorted(H0[:2])
    root = put(store, encode_node([b, a], [CID1, CID1], [None, None, None]))
    msg = expect_error(store, root, "strictly increasing")
    assert str(root) in msg


def test_rejects_wrong_height():
    store = MemoryBlockStore()
    keys = sorted([H0[0], H1[0]])
    root = put(store, encode_node(keys, [CID1, CID1], [None, None, None]))
    assert str(root) in expect_error(store, root, "height")
    # a child one layer too low for its parent
    top = next(k.encode() for k in POOL if key_height(k) == 2)
    lo = sorted(k for k in H0 if k < top)
    assert lo
    child = put(store, encode_node([lo[0]], [CID1], [None, None]))
    root = put(store, encode_node([top], [CID1], [child, None]))
    assert str(child) in expect_error(store, root, "height 0 but sits on layer 1")


def test_rejects_non_canonical_prefix():
    store = MemoryBlockStore()
    a, b = sorted(H0[:2])
    assert a[:5] == b[:5]
    entries = [{"k": a, "p": 0, "t": None, "v": CID1}, {"k": b, "p": 0, "t": None, "v": CID1}]
    root = put(store, encode({"e": entries, "l": None}))
    assert str(root) in expect_error(store, root, "prefix")


def test_rejects_empty_inner_node_and_untrimmed_root():
    store = MemoryBlockStore()
    empty = put(store, encode_node([], [], [None]))
    k1 = H1[0]
    root = put(store, encode_node([k1], [CID1], [empty, empty]))
    assert str(empty) in expect_error(store, root, "empty non-root")
    with pytest.raises(MstError, match="empty non-root"):
        MST.load(store, root, check=True).get(H0[0].decode())
    inner = put(store, encode_node([k1], [CID1], [None, None]))
    untrimmed = put(store, encode_node([], [], [inner]))
    assert str(untrimmed) in expect_error(store, untrimmed, "untrimmed")


def test_rejects_missing_block():
    mst = build({k: CID1 for k in POOL[:300]})
    blocks = dict(mst.walk_blocks())
    victim = list(blocks)[-1]
    del blocks[victim]
    assert str(victim) in expect_error(MemoryBlockStore(blocks), mst.root_cid(), "missing MST node")
    assert str(mst.root_cid()) in expect_error(MemoryBlockStore(), mst.root_cid(), "missing")


def test_rejects_non_canonical_cbor_and_bad_shapes():
    store = MemoryBlockStore()
    good = encode_node([H0[0]], [CID1], [None, None])
    assert b"\x61p\x00" in good
    root = put(store, good.replace(b"\x61p\x00", b"\x61p\x18\x00", 1))  # non-minimal integer
    assert str(root) in expect_error(store, root, "non-canonical")
    no_t = put(store, encode({"e": [{"k": H0[0], "p": 0, "v": CID1}], "l": None}))
    expect_error(store, no_t, "exactly the fields p, k, v, t")
    no_l = put(store, encode({"e": [{"k": H0[0], "p": 0, "t": None, "v": CID1}]}))
    expect_error(store, no_l, "exactly the fields l and e")
    str_key = put(store, encode({"e": [{"k": "text", "p": 0, "t": None, "v": CID1}], "l": None}))
    expect_error(store, str_key, "k bytes|malformed")
    extra = put(store, encode({"e": [], "l": None, "x": 1}))
    expect_error(store, extra, "exactly the fields")
    bad_key = put(store, encode_node([b"no-collection"], [CID1], [None, None]))
    expect_error(store, bad_key, "invalid key")
    garbage = put(store, b"\xff\x00")
    expect_error(store, garbage, "DAG-CBOR")


def test_rejects_hash_mismatch_and_layer0_subtree():
    store = MemoryBlockStore()
    leaf = encode_node([H0[0]], [CID1], [None, None])
    wrong = cid_for_dagcbor(b"something else")
    store.put_block(wrong, leaf)
    expect_error(store, wrong, "does not match")
    child = put(store, encode_node([H0[1]], [CID1], [None, None]))
    root = put(store, encode_node([H0[0]], [CID1], [child, None]))
    expect_error(store, root, "layer-0 node has a subtree")


def test_rejects_subtree_out_of_range():
    items = {k: CID1 for k in example_keys()}
    mst = build(items)
    blocks = dict(mst.walk_blocks())
    root = decode(blocks[mst.root_cid()])
    i = [j for j, e in enumerate(root["e"]) if e["t"] is not None][-1]
    root["l"], root["e"][i]["t"] = root["e"][i]["t"], root["l"]
    store = MemoryBlockStore(blocks)
    forged = put(store, encode(root))
    assert str(forged) in expect_error(store, forged, "not greater than")


def test_a_node_referenced_twice_is_refused_with_bounded_work():
    """The reference refuses an MST in which a node is referenced more than once (0.5.37):
    here a chain of nodes each pointing at the same child from both sides would take 2**depth
    visits to walk in full; the walk stops at the first repeated key instead."""
    store = CountingStore()
    leaf_key = sorted(H0)[0]
    child = put(store, encode_node([leaf_key], [CID1], [None, None]))
    depth_keys = sorted(H1)
    # layer 1: [child] key [child] - the same subtree on both sides of a key
    root = put(store, encode_node([depth_keys[0]], [CID1], [child, child]))
    msg = expect_error(store, root, "not greater than the previous key")
    assert str(root) in msg or leaf_key.decode() in msg
    assert store.reads <= 4  # root, child, child again: refused at once, not walked on


def test_a_deep_chain_of_shared_nodes_fails_fast():
    """Nodes sharing one child on every layer: refused after O(depth) reads, not 2**depth."""
    store = CountingStore()
    by_layer: dict[int, list[bytes]] = {}
    for k in POOL:
        by_layer.setdefault(key_height(k), []).append(k.encode())
    node = put(store, encode_node([sorted(by_layer[0])[0]], [CID1], [None, None]))
    top = max(by_layer)
    for layer in range(1, top + 1):
        key = sorted(by_layer[layer])[0]
        node = put(store, encode_node([key], [CID1], [node, node]))
    store.reads = 0
    with pytest.raises(MstError):
        list(verify_tree(store, node))
    assert store.reads <= 3 * (top + 1)
