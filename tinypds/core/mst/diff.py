"""Diff two MSTs: record adds/updates/deletes plus the node blocks gained and lost.

Owns `mst_diff` and `MstDiff`. Pure. Tricky bits: both trees are walked in key order as
streams of tokens (subtree or leaf); identical subtrees (same CID) are skipped without
loading; a subtree is only opened when the other side's head is a leaf or a lower-or-equal
subtree that differs. Node CIDs opened on both sides cancel out (a subtree that moved).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cid import CID
from .codec import ensure_encoded
from .node import Node
from .tree import MST


@dataclass
class MstDiff:
    adds: dict[str, CID] = field(default_factory=dict)
    updates: dict[str, tuple[CID, CID]] = field(default_factory=dict)
    deletes: dict[str, CID] = field(default_factory=dict)
    new_nodes: dict[CID, bytes] = field(default_factory=dict)
    removed_node_cids: set[CID] = field(default_factory=set)

    @property
    def new_node_cids(self) -> set[CID]:
        return set(self.new_nodes)

    def is_empty(self) -> bool:
        return not (self.adds or self.updates or self.deletes)


class _Walker:
    """Key-ordered token stream over one tree. Tokens: (True, layer, ref, cid) or (False, key, val)."""

    __slots__ = ("mst", "stack", "opened")

    def __init__(self, mst: MST):
        self.mst = mst
        root = mst.root_node()
        cid = ensure_encoded(root, mst.cache)
        self.stack: list[tuple] = [(True, root.layer, root, cid)]
        self.opened: dict[CID, bytes] = {}

    def open(self) -> None:
        """Replace the subtree token on top by its node's contents."""
        _, layer, ref, cid = self.stack.pop()
        node = self.mst._load(ref, layer)
        if node.data is None:
            ensure_encoded(node, self.mst.cache)
        self.opened[cid] = node.data
        push = self.stack.append
        keys, vals, subs = node.keys, node.vals, node.subs
        child_layer = layer - 1
        for i in range(len(keys), -1, -1):
            s = subs[i]
            if s is not None:
                push((True, child_layer, s, s.cid if type(s) is Node else s))
            if i:
                push((False, keys[i - 1], vals[i - 1]))


def mst_diff(old: MST | None, new: MST) -> MstDiff:
    """What changed from `old` (None = nothing) to `new`."""
    diff = MstDiff()
    b = _Walker(new)
    if old is None:
        while b.stack:
            tok = b.stack[-1]
            if tok[0]:
                b.open()
            else:
                b.stack.pop()
                diff.adds[tok[1].decode("ascii")] = tok[2]
        diff.new_nodes = b.opened
        return diff
    a = _Walker(old)
    if a.stack[0][3] == b.stack[0][3]:
        return diff
    sa, sb = a.stack, b.stack
    while sa and sb:
        ta, tb = sa[-1], sb[-1]
        if ta[0]:
            if tb[0]:
                if ta[3] == tb[3]:
                    sa.pop()
                    sb.pop()
                elif ta[1] > tb[1]:
                    a.open()
                elif tb[1] > ta[1]:
                    b.open()
                else:
                    a.open()
                    b.open()
            else:
                a.open()
        elif tb[0]:
            b.open()
        else:
            ka, kb = ta[1], tb[1]
            if ka == kb:
                sa.pop()
                sb.pop()
                if ta[2] != tb[2]:
                    diff.updates[ka.decode("ascii")] = (ta[2], tb[2])
            elif ka < kb:
                sa.pop()
                diff.deletes[ka.decode("ascii")] = ta[2]
            else:
                sb.pop()
                diff.adds[kb.decode("ascii")] = tb[2]
    while sa:
        ta = sa[-1]
        if ta[0]:
            a.open()
        else:
            sa.pop()
            diff.deletes[ta[1].decode("ascii")] = ta[2]
    while sb:
        tb = sb[-1]
        if tb[0]:
            b.open()
        else:
            sb.pop()
            diff.adds[tb[1].decode("ascii")] = tb[2]
    removed = set(a.opened)
    added = b.opened
    for cid in removed & added.keys():
        removed.discard(cid)
        del added[cid]
    diff.new_nodes = added
    diff.removed_node_cids = removed
    return diff
