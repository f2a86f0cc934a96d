"""Bottom-up streaming build must give byte-identical trees to repeated put()."""

from __future__ import annotations

import random

import pytest

from tests.core.test_mst import CID1, build, example_keys, rand_keys, value_cid
from tinypds.core.cid import cid_for_dagcbor
from tinypds.core.mst import MstError, TreeBuilder, build_tree


def run_build(items: dict):
    gen = build_tree(sorted(items.items()))
    blocks = []
    while True:
        try:
            blocks.append(next(gen))
        except StopIteration as stop:
            return blocks, stop.value


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 156, 1000, 4000])
def test_build_matches_repeated_put(n):
    rng = random.Random(n)
    keys = example_keys() if n == 156 else rand_keys(rng, n)
    items = {k: value_cid(i) for i, k in enumerate(keys)}
    blocks, root = run_build(items)
    mst = build(items, order=rng.sample(sorted(items), len(items)))
    assert root == mst.root_cid()
    assert blocks[-1][0] == root
    assert dict(blocks) == dict(mst.walk_blocks())
    assert len(blocks) == len(dict(blocks))  # each node emitted once
    assert all(c == cid_for_dagcbor(d) for c, d in blocks)


def test_build_with_tall_keys_and_leafless_layers():
    # keys of very different heights force leafless intermediate nodes
    rng = random.Random(21)
    pool = rand_keys(rng, 5000)
    from tinypds.core.mst import key_height

    tall = [k for k in pool if key_height(k) >= 3][:3]
    low = [k for k in pool if key_height(k) == 0][:7]
    for subset in ([tall[0]], tall, low + tall[:1], low[:2] + tall):
        items = {k: CID1 for k in subset}
        blocks, root = run_build(items)
        assert root == build(items).root_cid()


def test_builder_streams_blocks_before_finish():
    emitted = []
    builder = TreeBuilder(lambda cid, data: emitted.append(cid))
    keys = rand_keys(random.Random(22), 3000)
    for k in keys:
        builder.add(k, CID1)
    assert len(emitted) > 100  # completed nodes went out while keys were still coming
    assert max(len(level[0]) for level in builder._levels) < 64  # only open nodes are held
    root = builder.finish()
    assert emitted[-1] == root
    assert builder.count == 3000
    with pytest.raises(MstError):
        builder.add("z.z.z/late", CID1)


def test_builder_rejects_unsorted_duplicate_and_invalid():
    b = TreeBuilder(lambda c, d: None)
    b.add("a.b.c/2", CID1)
    with pytest.raises(MstError):
        b.add("a.b.c/1", CID1)
    with pytest.raises(MstError):
        b.add("a.b.c/2", CID1)
    with pytest.raises(MstError):
        TreeBuilder(lambda c, d: None).add("no-slash", CID1)
