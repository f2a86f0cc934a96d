"""mst_diff against a slow reference (full item lists and full node sets) on random trees."""

from __future__ import annotations

import random

from tests.core.test_mst import CID1, build, example_keys, rand_keys, store_all, value_cid
from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.mst import MST, NodeCache, mst_diff


def reference(old: dict, new: dict):
    adds = {k: v for k, v in new.items() if k not in old}
    deletes = {k: v for k, v in old.items() if k not in new}
    updates = {k: (old[k], new[k]) for k in old.keys() & new.keys() if old[k] != new[k]}
    return adds, updates, deletes


def nodes(mst: MST) -> dict:
    return dict(mst.walk_blocks())


def check(old_items: dict, new_items: dict, old: MST, new: MST):
    d = mst_diff(old, new)
    adds, updates, deletes = reference(old_items, new_items)
    assert d.adds == adds
    assert d.updates == updates
    assert d.deletes == deletes
    old_nodes, new_nodes = nodes(old), nodes(new)
    assert d.new_nodes == {c: b for c, b in new_nodes.items() if c not in old_nodes}
    assert d.new_node_cids == set(new_nodes) - set(old_nodes)
    assert d.removed_node_cids == set(old_nodes) - set(new_nodes)
    return d


def mutate(rng: random.Random, items: dict, pool: list[str], n_ops: int, step0: int = 0) -> dict:
    out = dict(items)
    for i in range(n_ops):
        k = rng.choice(pool)
        r = rng.random()
        if k in out and r < 0.35:
            del out[k]
        else:
            out[k] = value_cid(step0 + i) if (k in out or r < 0.9) else CID1
    return out


def test_random_diffs_match_reference():
    rng = random.Random(11)
    for trial in range(60):
        pool = rand_keys(rng, rng.choice([5, 40, 300]))
        old_items = mutate(rng, {}, pool, rng.randint(0, len(pool)), 0)
        new_items = mutate(rng, old_items, pool, rng.choice([1, 2, 5, 30, 200]), 10_000 * trial)
        check(old_items, new_items, build(old_items), build(new_items))


def test_diff_of_incrementally_edited_tree_from_storage():
    rng = random.Random(12)
    pool = rand_keys(rng, 800)
    old_items = {k: value_cid(i) for i, k in enumerate(pool[:600])}
    store = MemoryBlockStore()
    root = store_all(build(old_items), store)
    old = MST.load(store, root, cache=NodeCache())
    new, new_items = old, dict(old_items)
    for i in range(25):
        k = rng.choice(pool)
        if k in new_items and i % 3 == 0:
            new = new.delete(k)
            del new_items[k]
        else:
            new_items[k] = value_cid(5000 + i)
            new = new.put(k, new_items[k])
    d = check(old_items, new_items, old, new)
    assert d.new_nodes == new.new_blocks()


def test_example_keys_diffs():
    keys = example_keys()
    full = {k: CID1 for k in keys}
    half = {k: CID1 for k in keys[::2]}
    check(half, full, build(half), build(full))
    check(full, half, build(full), build(half))
    check({}, full, build({}), build(full))
    check(full, {}, build(full), build({}))


def test_null_and_identical():
    items = {k: CID1 for k in example_keys()[:50]}
    mst = build(items)
    d = mst_diff(None, mst)
    assert d.adds == items and not d.updates and not d.deletes
    assert d.new_nodes == nodes(mst)
    same = mst_diff(mst, build(items, order=sorted(items, reverse=True)))
    assert same.is_empty() and not same.new_nodes and not same.removed_node_cids


class CountingStore(MemoryBlockStore):
    __slots__ = ("reads",)

    def __init__(self, blocks=None):
        super().__init__(blocks)
        self.reads = 0

    def get_block(self, cid):
        self.reads += 1
        return super().get_block(cid)


def test_diff_skips_identical_subtrees():
    rng = random.Random(13)
    items = {k: value_cid(i) for i, k in enumerate(rand_keys(rng, 3000))}
    store = CountingStore()
    root = store_all(build(items), store)
    old = MST.load(store, root, cache=NodeCache())
    key = next(iter(items))
    changed = old.put(key, CID1)
    for cid, data in changed.new_blocks().items():
        store.put_block(cid, data)
    # fresh caches: every node the diff opens is a read from the store
    a = MST.load(store, root, cache=NodeCache())
    b = MST.load(store, changed.root_cid(), cache=NodeCache())
    store.reads = 0
    d = mst_diff(a, b)
    assert d.updates == {key: (items[key], CID1)} and not d.adds and not d.deletes
    # only the nodes on one root-to-leaf path (on each side) are opened, not the ~1000 nodes
    assert 0 < store.reads <= 2 * (a.layer + 1)
    assert len(d.removed_node_cids) == len(d.new_nodes) <= a.layer + 1
