"""Covering proofs: the MST nodes that prove a key's value or absence, and checking them.

Owns `proof_blocks` (producer side, for sync.getRecord and firehose commits) and
`verify_proof` (consumer side). Pure. Tricky bits: like the reference implementation a
covering proof is the union of three root-to-leaf paths: to the key itself, to its left
neighbour and to its right neighbour; the neighbours are what make deletions invertible
(sync v1.1). Verification checks hashes, heights and key ranges of every node it visits.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

from ..blocks import BlockSource
from ..cid import CID
from .codec import load_node
from .node import MstError, Node, key_height
from .tree import MST, _key_bytes


def _add(out: dict[CID, bytes], node: Node) -> None:
    out[node.cid] = node.data


def _for_key(mst: MST, node: Node, k: bytes, out: dict) -> None:
    i = bisect_left(node.keys, k)
    if i < len(node.keys) and node.keys[i] == k:
        _add(out, node)
        return
    sub = node.subs[i]
    if sub is None:
        return
    _for_key(mst, mst._load(sub, node.layer - 1), k, out)
    _add(out, node)


def _left_sib(mst: MST, node: Node, k: bytes, out: dict) -> None:
    sub = node.subs[bisect_left(node.keys, k)]
    if sub is not None:
        _left_sib(mst, mst._load(sub, node.layer - 1), k, out)
    _add(out, node)


def _right_sib(mst: MST, node: Node, k: bytes, out: dict) -> None:
    keys = node.keys
    i = bisect_left(keys, k)
    if i < len(keys):
        sub = node.subs[i + 1] if keys[i] == k else node.subs[i]
    else:
        sub = node.subs[i]
    if sub is not None:
        _right_sib(mst, mst._load(sub, node.layer - 1), k, out)
    _add(out, node)


def proof_blocks(mst: MST, key: str, out: dict[CID, bytes] | None = None) -> dict[CID, bytes]:
    """Node blocks proving `key`'s value or absence in `mst`, with both neighbours' paths."""
    if out is None:
        out = {}
    mst.root_cid()  # encode in-memory nodes so every node has cid and data
    root = mst.root_node()
    k = _key_bytes(key)
    _for_key(mst, root, k, out)
    _left_sib(mst, root, k, out)
    _right_sib(mst, root, k, out)
    return out


def proof_blocks_for_keys(mst: MST, keys: Iterable[str]) -> dict[CID, bytes]:
    out: dict[CID, bytes] = {}
    for key in keys:
        proof_blocks(mst, key, out)
    return out


def verify_proof(root: CID, key: str, blocks: BlockSource) -> CID | None:
    """The value of `key` under `root` (None if proven absent), using only `blocks`.

    Raises MissingBlockError if the proof is incomplete and MstError if a node is
    invalid (bad hash or encoding, wrong height, keys out of their subtree's range).
    """
    k = _key_bytes(key)
    h = key_height(k)
    node = load_node(blocks, CID(root), None, None, True)
    if node.layer is None:
        if node.subs[0] is not None:
            raise MstError(f"MST root {root}: no entries but points to a subtree (untrimmed root)")
        return None
    lo: bytes | None = None
    hi: bytes | None = None
    while True:
        keys = node.keys
        if keys and ((lo is not None and keys[0] <= lo) or (hi is not None and keys[-1] >= hi)):
            raise MstError(f"MST node {node.cid}: keys outside the range of its parent entry")
        i = bisect_left(keys, k)
        if i < len(keys) and keys[i] == k:
            return node.vals[i]
        if node.layer <= h:
            return None
        sub = node.subs[i]
        if sub is None:
            return None
        if i > 0:
            lo = keys[i - 1]
        if i < len(keys):
            hi = keys[i]
        child = load_node(blocks, sub, node.layer - 1, None, True)
        if child.is_empty():
            raise MstError(f"MST node {child.cid}: empty non-root node")
        node = child
