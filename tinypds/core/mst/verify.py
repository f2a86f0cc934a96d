"""Streaming structural verification of a whole MST read from storage.

Owns `verify_tree`. Pure. Memory is O(depth * fanout): nodes are decoded one at a time
straight from the source (no cache) and dropped after their entries are walked.
Tricky bits: every block is hashed, strictly decoded and re-encoded (canonical CBOR and
prefix compression), heights are checked against the layer the parent implies, and the
global in-order key sequence must be strictly increasing (which also proves each subtree
lies inside its parent's key range). An untrimmed root or an empty inner node is refused.
"""

from __future__ import annotations

from typing import Iterator

from ..blocks import BlockSource, MissingBlockError
from ..cid import CID
from .codec import load_node
from .node import MstError, Node


def _load(source: BlockSource, cid: CID, layer: int | None, parent: CID | None, hashed: bool = False) -> Node:
    try:
        return load_node(source, cid, layer, None, True, hashed)
    except MissingBlockError:
        where = f" (linked from {parent})" if parent is not None else ""
        raise MstError(f"missing MST node {cid}{where}") from None


def verify_tree(source: BlockSource, root: CID, hashed: bool = False) -> Iterator[tuple[str, CID]]:
    """Yield (key, value) of a tree while proving it canonical; raises MstError on the first fault.

    hashed=True: the source's blocks are known to match their CIDs (e.g. each was checked
    as it came in from a CAR), so nodes are not hashed again."""
    node = _load(source, CID(root), None, None, hashed)
    if node.layer is None:  # no keys in the root
        if node.subs[0] is not None:
            raise MstError(f"MST root {node.cid}: no entries but points to a subtree (untrimmed root)")
        return
    last: bytes | None = None
    # frames: (node, i, sub_done): visit subs[i] (unless sub_done), then key i, then i + 1
    stack: list[tuple[Node, int, bool]] = [(node, 0, False)]
    while stack:
        node, i, sub_done = stack.pop()
        keys, vals, subs = node.keys, node.vals, node.subs
        n = len(keys)
        while True:
            if not sub_done:
                sub = subs[i]
                if sub is not None:
                    if node.layer == 0:
                        raise MstError(f"MST node {node.cid}: layer-0 node has a subtree")
                    child = _load(source, sub, node.layer - 1, node.cid, hashed)
                    if child.is_empty():
                        raise MstError(f"MST node {child.cid}: empty non-root node (linked from {node.cid})")
                    stack.append((node, i, True))
                    stack.append((child, 0, False))
                    break
            sub_done = False
            if i == n:
                break
            key = keys[i]
            if last is not None and key <= last:
                raise MstError(
                    f"MST node {node.cid}: key {key.decode('ascii', 'replace')!r} is not greater than "
                    f"the previous key {last.decode('ascii', 'replace')!r} (keys out of order or out of range)"
                )
            last = key
            yield key.decode("ascii"), vals[i]
            i += 1
