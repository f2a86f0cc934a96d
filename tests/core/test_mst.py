"""MST basics: interop fixtures (heights, prefixes, example keys), known root CIDs from the
TS/indigo interop suites, get/put/delete/items against a dict, loading from blocks."""

from __future__ import annotations

import json
import random

import pytest

from tests.fixtures import fixture_lines, fixture_path
from tinypds.core.blocks import MemoryBlockStore, MissingBlockError
from tinypds.core.cid import CID, cid_for_dagcbor
from tinypds.core.mst import MST, MstError, NodeCache, common_prefix_len, key_height

CID1 = CID.parse("bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454")
R = "com.example.record/"


# ---- helpers shared by the other test_mst*/test_commit* modules ------------------------


def value_cid(n: int) -> CID:
    return cid_for_dagcbor(b"\xa1avX" + n.to_bytes(8, "big"))


def rand_keys(rng: random.Random, n: int, collections=("app.bsky.feed.post", "app.bsky.feed.like", "a.b.c")) -> list[str]:
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    keys: set[str] = set()
    while len(keys) < n:
        rkey = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 13)))
        keys.add(f"{rng.choice(collections)}/{rkey}")
    return sorted(keys)


def build(items: dict[str, CID], source=None, order=None) -> MST:
    mst = MST.empty(source if source is not None else MemoryBlockStore())
    for k in order if order is not None else items:
        mst = mst.put(k, items[k])
    return mst


def store_all(mst: MST, store: MemoryBlockStore) -> CID:
    for cid, data in mst.walk_blocks():
        store.put_block(cid, data)
    return mst.root_cid()


def example_keys() -> list[str]:
    return [line.strip() for line in fixture_lines("mst", "example_keys.txt")]


# ---- interop fixtures ------------------------------------------------------------------


def test_key_heights_fixture():
    rows = json.loads(fixture_path("mst", "key_heights.json").read_text())
    assert rows
    for row in rows:
        assert key_height(row["key"]) == row["height"], row
        assert key_height(row["key"].encode()) == row["height"], row


def test_common_prefix_fixture():
    rows = json.loads(fixture_path("mst", "common_prefix.json").read_text())
    assert rows
    for row in rows:
        assert common_prefix_len(row["left"], row["right"]) == row["len"], row
        assert common_prefix_len(row["left"].encode(), row["right"].encode()) == row["len"], row


def test_example_keys_any_order_same_root():
    keys = example_keys()
    assert len(keys) == 156
    items = {k: CID1 for k in keys}
    rng = random.Random(1)
    roots = set()
    for _ in range(4):
        order = keys[:]
        rng.shuffle(order)
        mst = build(items, order=order)
        roots.add(mst.root_cid())
        assert list(mst.keys()) == sorted(keys)
    assert len(roots) == 1
    # heights encoded in the fixture names: "A3/..." lives on layer 3 at most; max is the root layer
    assert mst.layer == max(key_height(k) for k in keys)


def test_example_keys_delete_all_in_random_order():
    keys = example_keys()
    mst = build({k: CID1 for k in keys})
    order = keys[:]
    random.Random(2).shuffle(order)
    for i, k in enumerate(order):
        mst = mst.delete(k)
        assert mst.get(k) is None
        if i % 31 == 0:
            rest = sorted(order[i + 1 :])
            assert list(mst.keys()) == rest
            assert mst.root_cid() == build({r: CID1 for r in rest}).root_cid()
    assert mst.root_cid() == MST.empty(MemoryBlockStore()).root_cid()


# ---- known roots (TS packages/repo/tests/mst.test.ts, indigo mst_interop_test.go) -------


def test_known_roots():
    empty = MST.empty(MemoryBlockStore())
    assert str(empty.root_cid()) == "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    trivial = empty.put(R + "3jqfcqzm3fo2j", CID1)
    assert str(trivial.root_cid()) == "bafyreibj4lsc3aqnrvphp5xmrnfoorvru4wynt6lwidqbm2623a6tatzdu"
    single2 = empty.put(R + "3jqfcqzm3fx2j", CID1)
    assert single2.layer == 2
    assert str(single2.root_cid()) == "bafyreih7wfei65pxzhauoibu3ls7jgmkju4bspy4t2ha2qdjnzqvoy33ai"
    simple = build({R + k: CID1 for k in ["3jqfcqzm3fp2j", "3jqfcqzm3fr2j", "3jqfcqzm3fs2j", "3jqfcqzm3ft2j", "3jqfcqzm4fc2j"]})
    assert str(simple.root_cid()) == "bafyreicmahysq4n6wfuxo522m6dpiy7z7qzym3dzs756t5n7nfdgccwq7m"


def test_trims_top_on_delete():
    keys = ["3jqfcqzm3fn2j", "3jqfcqzm3fo2j", "3jqfcqzm3fp2j", "3jqfcqzm3fs2j", "3jqfcqzm3ft2j", "3jqfcqzm3fu2j"]
    mst = build({R + k: CID1 for k in keys})
    assert mst.layer == 1
    assert str(mst.root_cid()) == "bafyreifnqrwbk6ffmyaz5qtujqrzf5qmxf7cbxvgzktl4e3gabuxbtatv4"
    mst = mst.delete(R + "3jqfcqzm3fs2j")
    assert mst.layer == 0
    assert str(mst.root_cid()) == "bafyreie4kjuxbwkhzg2i5dljaswcroeih4dgiqq6pazcmunwt2byd725vi"


def test_insertion_splits_two_layers_down():
    keys = ["3jqfcqzm3fo2j", "3jqfcqzm3fp2j", "3jqfcqzm3fr2j", "3jqfcqzm3fs2j", "3jqfcqzm3ft2j", "3jqfcqzm3fz2j",
            "3jqfcqzm4fc2j", "3jqfcqzm4fd2j", "3jqfcqzm4ff2j", "3jqfcqzm4fg2j", "3jqfcqzm4fh2j"]  # fmt: skip
    l1 = "bafyreiettyludka6fpgp33stwxfuwhkzlur6chs4d2v4nkmq2j3ogpdjem"
    mst = build({R + k: CID1 for k in keys})
    assert mst.layer == 1 and str(mst.root_cid()) == l1
    mst = mst.put(R + "3jqfcqzm3fx2j", CID1)
    assert mst.layer == 2
    assert str(mst.root_cid()) == "bafyreid2x5eqs4w4qxvc5jiwda4cien3gw2q6cshofxwnvv7iucrmfohpm"
    mst = mst.delete(R + "3jqfcqzm3fx2j")
    assert mst.layer == 1 and str(mst.root_cid()) == l1


def test_new_layers_two_higher():
    l0 = "bafyreidfcktqnfmykz2ps3dbul35pepleq7kvv526g47xahuz3rqtptmky"
    l2 = "bafyreiavxaxdz7o7rbvr3zg2liox2yww46t7g6hkehx4i4h3lwudly7dhy"
    mst = build({R + "3jqfcqzm3ft2j": CID1, R + "3jqfcqzm3fz2j": CID1})
    assert mst.layer == 0 and str(mst.root_cid()) == l0
    mst = mst.put(R + "3jqfcqzm3fx2j", CID1)
    assert str(mst.root_cid()) == l2
    mst = mst.delete(R + "3jqfcqzm3fx2j")
    assert mst.layer == 0 and str(mst.root_cid()) == l0
    mst = mst.put(R + "3jqfcqzm3fx2j", CID1).put(R + "3jqfcqzm4fd2j", CID1)
    assert mst.layer == 2
    assert str(mst.root_cid()) == "bafyreig4jv3vuajbsybhyvb7gggvpwh2zszwfyttjrj6qwvcsp24h6popu"
    mst = mst.delete(R + "3jqfcqzm4fd2j")
    assert mst.layer == 2 and str(mst.root_cid()) == l2


# ---- operations against a dict -----------------------------------------------------------


def test_random_ops_match_dict_and_canonical_root():
    rng = random.Random(3)
    keys = rand_keys(rng, 600)
    ref: dict[str, CID] = {}
    mst = MST.empty(MemoryBlockStore())
    for step in range(1500):
        k = rng.choice(keys)
        if k in ref and rng.random() < 0.4:
            mst = mst.delete(k)
            del ref[k]
        else:
            ref[k] = value_cid(step)
            mst = mst.put(k, ref[k])
        if step % 250 == 0:
            assert list(mst.items()) == sorted(ref.items())
            assert mst.root_cid() == build(ref, order=sorted(ref)).root_cid()
    for k in keys:
        assert mst.get(k) == ref.get(k)


def test_put_same_value_is_noop_and_trees_are_persistent():
    mst = build({R + "a": CID1, R + "b": CID1})
    assert mst.put(R + "a", CID1) is mst
    updated = mst.put(R + "a", value_cid(1))
    assert updated.get(R + "a") == value_cid(1)
    assert mst.get(R + "a") == CID1  # the old version is untouched
    assert updated.root_cid() != mst.root_cid()


def test_delete_missing_and_invalid_keys():
    mst = build({R + "a": CID1})
    with pytest.raises(KeyError):
        mst.delete(R + "b")
    with pytest.raises(KeyError):
        MST.empty(MemoryBlockStore()).delete(R + "a")
    for bad in ["", "asdf", "coll/", "/rkey", "a/b/c", "coll/r key", "coll/jalapeño", "c/" + "x" * 1100]:
        with pytest.raises(MstError):
            mst.put(bad, CID1)


def test_items_ranges_and_reverse():
    rng = random.Random(4)
    keys = rand_keys(rng, 400)
    ref = {k: value_cid(i) for i, k in enumerate(keys)}
    mst = build(ref)
    srt = sorted(ref.items())
    assert list(mst.items()) == srt
    assert list(mst.items(reverse=True)) == srt[::-1]
    probes = keys[::37] + ["a", "app.bsky.feed.like/", "app.bsky.feed.post/zzz", "zzzz/", ""]
    for _ in range(40):
        lo, hi = rng.choice(probes) or None, rng.choice(probes) or None
        want = [(k, v) for k, v in srt if (lo is None or k >= lo) and (hi is None or k < hi)]
        assert list(mst.items(lo, hi)) == want, (lo, hi)
        assert list(mst.items(lo, hi, reverse=True)) == want[::-1], (lo, hi)
    assert list(build({}).items()) == []


def test_load_from_blocks_and_new_blocks():
    rng = random.Random(5)
    ref = {k: value_cid(i) for i, k in enumerate(rand_keys(rng, 500))}
    store = MemoryBlockStore()
    root = store_all(build(ref), store)
    loaded = MST.load(store, root, cache=NodeCache())
    assert list(loaded.items()) == sorted(ref.items())
    assert loaded.new_blocks() == {}
    key = "app.bsky.feed.post/" + "x" * 13
    changed = loaded.put(key, CID1)
    new = changed.new_blocks()
    old_nodes = {c for c, _ in loaded.walk_blocks()}
    assert set(new) == {c for c, _ in changed.walk_blocks()} - old_nodes
    assert 1 <= len(new) <= 2 * (changed.layer + 1)  # the path to the key, split at most in two
    assert all(not store.has(c) for c in new)
    for cid, data in new.items():
        assert cid == cid_for_dagcbor(data)
        store.put_block(cid, data)
    again = MST.load(store, changed.root_cid(), cache=NodeCache())
    assert again.get(key) == CID1
    assert list(again.items()) == sorted({**ref, key: CID1}.items())


def test_walk_blocks_preorder_every_node_once():
    rng = random.Random(6)
    ref = {k: CID1 for k in rand_keys(rng, 300)}
    mst = build(ref)
    blocks = list(mst.walk_blocks())
    assert blocks[0][0] == mst.root_cid()
    cids = [c for c, _ in blocks]
    assert len(cids) == len(set(cids))
    assert all(c == cid_for_dagcbor(d) for c, d in blocks)
    assert dict(blocks) == mst.new_blocks()  # a tree built from empty: every node is new
    store = MemoryBlockStore(blocks)
    assert list(MST.load(store, mst.root_cid(), cache=NodeCache()).walk_blocks()) == blocks


def test_missing_block_raises_with_cid():
    rng = random.Random(7)
    mst = build({k: CID1 for k in rand_keys(rng, 200)})
    store = MemoryBlockStore()
    root = store_all(mst, store)
    blocks = dict(store.items())
    victim = next(c for c in blocks if c != root)
    del blocks[victim]
    partial = MST.load(MemoryBlockStore(blocks), root, cache=NodeCache())
    with pytest.raises(MissingBlockError) as info:
        list(partial.items())
    assert info.value.cid == victim
    with pytest.raises(MissingBlockError):
        MST.load(MemoryBlockStore(), root, cache=NodeCache()).get(R + "a")


def test_delete_collapses_levels():
    rng = random.Random(8)
    low = [k for k in rand_keys(rng, 300) if key_height(k) == 0][:40]
    high = next(k for k in (f"x.y.z/{i}" for i in range(100000)) if key_height(k) >= 3)
    base = build({k: CID1 for k in low})
    assert base.layer == 0
    grown = base.put(high, CID1)
    assert grown.layer == key_height(high)
    back = grown.delete(high)
    assert back.layer == 0
    assert back.root_cid() == base.root_cid()
