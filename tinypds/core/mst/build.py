"""Bottom-up streaming MST build from sorted keys (imports, rebuilds, 1M-record repos).

Owns `TreeBuilder` (push: add(key, cid) ... finish() -> root CID, blocks go to an
`on_block(cid, data)` callback) and `build_tree` (pull: a generator of (cid, data) whose
last block is the root). Pure. Memory is O(depth * fanout): one open node per layer.
Tricky bits: a key of height h closes every open node below h; each closed node becomes
the subtree just before that key one layer up, so gaps spanning several layers get
leafless intermediate nodes, exactly as repeated inserts would produce.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from ..cid import CID, cid_for_dagcbor
from .codec import encode_node
from .node import MstError, is_valid_key, key_height


class TreeBuilder:
    """Feed strictly increasing keys with add(); finish() emits the last nodes and returns the root."""

    __slots__ = ("_on_block", "_levels", "_last", "count", "_done")

    def __init__(self, on_block: Callable[[CID, bytes], None]):
        self._on_block = on_block
        # per layer: [keys, vals, subs] with len(subs) == len(keys) + 1
        self._levels: list[list[list]] = []
        self._last: bytes | None = None
        self.count = 0
        self._done = False

    def add(self, key: str | bytes, value: CID) -> None:
        if self._done:
            raise MstError("TreeBuilder already finished")
        k = key.encode("ascii") if type(key) is str else bytes(key)
        if self._last is not None and k <= self._last:
            raise MstError(f"keys must be strictly increasing: {self._last!r} then {k!r}")
        if not is_valid_key(k):
            raise MstError(f"invalid MST key {k!r}")
        if type(value) is not CID:
            value = CID(value)
        self._last = k
        self.count += 1
        h = key_height(k)
        levels = self._levels
        while len(levels) <= h:
            levels.append([[], [], [None]])
        for layer in range(h):
            levels[layer + 1][2][-1] = self._close(layer)
        keys, vals, subs = levels[h]
        keys.append(k)
        vals.append(value)
        subs.append(None)

    def _close(self, layer: int) -> CID | None:
        keys, vals, subs = self._levels[layer]
        if not keys and subs[0] is None:
            return None
        data = encode_node(keys, vals, subs)
        cid = cid_for_dagcbor(data)
        self._on_block(cid, data)
        self._levels[layer] = [[], [], [None]]
        return cid

    def finish(self) -> CID:
        """Close every open node bottom-up; returns the root CID (the empty node if no keys)."""
        if self._done:
            raise MstError("TreeBuilder already finished")
        self._done = True
        levels = self._levels
        if not levels:
            data = encode_node((), (), (None,))
            cid = cid_for_dagcbor(data)
            self._on_block(cid, data)
            return cid
        top = len(levels) - 1
        for layer in range(top):
            levels[layer + 1][2][-1] = self._close(layer)
        root = self._close(top)
        assert root is not None  # the top layer always holds the key that created it
        return root


def build_tree(sorted_items: Iterable[tuple[str | bytes, CID]]) -> Iterator[tuple[CID, bytes]]:
    """Yield the node blocks of the tree of `sorted_items` as they complete; the last is the root.

    The generator's return value (StopIteration.value) is also the root CID.
    """
    pending: list[tuple[CID, bytes]] = []
    builder = TreeBuilder(lambda cid, data: pending.append((cid, data)))
    for key, value in sorted_items:
        builder.add(key, value)
        if pending:
            yield from pending
            pending.clear()
    root = builder.finish()
    yield from pending
    return root
