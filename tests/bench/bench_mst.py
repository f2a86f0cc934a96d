"""MST timings (figures, not assertions): python tests/bench/bench_mst.py [sizes...]

For each size: bottom-up build, then per-commit costs on the stored tree the way the
repo service uses it (load root -> put -> root_cid -> new_blocks), get, diff, proof,
and a full build_commit with a real k256 signature.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tinypds.core.blocks import MemoryBlockStore  # noqa: E402
from tinypds.core.cid import cid_for_dagcbor  # noqa: E402
from tinypds.core.commit import RecordWrite, build_commit  # noqa: E402
from tinypds.core.crypto import K256PrivateKey  # noqa: E402
from tinypds.core.dagcbor import encode  # noqa: E402
from tinypds.core.mst import MST, NodeCache, build_tree, mst_diff, proof_blocks  # noqa: E402

ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid(rng: random.Random) -> str:
    return "3" + "".join(rng.choice(ALPHABET) for _ in range(12))


def per_op(label: str, n: int, fn) -> None:
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    print(f"  {label:<38} {dt / n * 1e6:9.1f} µs/op  ({n} ops)")


def bench(size: int) -> None:
    rng = random.Random(size)
    keys = sorted({f"app.bsky.feed.post/{tid(rng)}" for _ in range(size)})
    val = cid_for_dagcbor(b"record")
    store = MemoryBlockStore()
    print(f"{len(keys)} keys")
    t = time.perf_counter()
    gen = build_tree((k, val) for k in keys)
    for cid, data in gen:
        store.put_block(cid, data)
        root = cid
    print(f"  {'bottom-up build':<38} {time.perf_counter() - t:9.2f} s total, {len(store)} nodes")

    cache = NodeCache()
    new_keys = [f"app.bsky.feed.post/{tid(rng)}" for _ in range(2000)]

    state = {"root": root}

    def puts():
        for k in new_keys:
            mst = MST.load(store, state["root"], cache=cache).put(k, val)
            state["root"] = mst.root_cid()
            for c, d in mst.new_blocks().items():
                store.put_block(c, d)

    per_op("load+put+root_cid+new_blocks", len(new_keys), puts)
    mst = MST.load(store, state["root"], cache=cache)
    probes = rng.sample(keys, 2000)
    per_op("get (warm cache)", len(probes), lambda: [mst.get(k) for k in probes])
    cold = MST.load(store, state["root"], cache=NodeCache(16))
    per_op("get (cold cache)", 500, lambda: [cold.get(k) for k in probes[:500]])

    pairs = []
    for k in new_keys[:500]:
        pairs.append((mst, mst.put(k + "x", val)))
    per_op("mst_diff after one put", len(pairs), lambda: [mst_diff(a, b) for a, b in pairs])
    per_op("covering proof", 500, lambda: [proof_blocks(mst, k) for k in probes[:500]])

    key = K256PrivateKey.from_bytes(bytes(range(1, 33)))
    head = {"prev": (cid_for_dagcbor(b"c"), state["root"], "3aaaaaaaaaaaa"), "n": 0}

    def commits():
        for i in range(500):
            block = encode({"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": "2024-01-01T00:00:00Z"})
            w = RecordWrite("create", "app.bsky.feed.post", tid(rng), cid_for_dagcbor(block), block)
            rev = "3b" + format(i, "011d").translate(str.maketrans("0123456789", "234567abcd"))
            cd = build_commit(store, "did:plc:bench", head["prev"], [w], rev, key.sign, blobs=())
            for c, d in cd.new_blocks.items():
                store.put_block(c, d)
            head["prev"] = (cd.cid, cd.data, cd.rev)

    per_op("build_commit (1 create, signed)", 500, commits)
    t = time.perf_counter()
    n = sum(1 for _ in MST.load(store, head["prev"][1], cache=NodeCache()).items())
    print(f"  {'full items() walk':<38} {time.perf_counter() - t:9.2f} s for {n} keys")


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]
    for s in sizes:
        bench(s)
