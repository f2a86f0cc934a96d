"""The persistent MST: get, put, delete, ordered listing and block walks.

Owns `MST`. Pure; reads nodes through a BlockSource and a NodeCache, never writes
storage (new nodes stay in memory until `new_blocks()`/`walk_blocks()` hand them out).
Tricky bits (see the package docstring): inserts above the root split the whole tree and
may add leafless layers; deletes merge the two neighbouring subtrees all the way down and
trim a root that is left holding only a pointer.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterator

from ..blocks import BlockSource, MissingBlockError
from ..cid import CID
from .codec import decode_node, ensure_encoded, load_node
from .node import DEFAULT_CACHE, MstError, Node, NodeCache, Ref, empty_node, is_valid_key, key_height


def _key_bytes(key: str | bytes) -> bytes:
    if type(key) is str:
        try:
            return key.encode("ascii")
        except UnicodeEncodeError:
            raise MstError(f"MST keys must be ASCII: {key!r}") from None
    return bytes(key)


class MST:
    """An immutable Merkle Search Tree; every mutation returns a new MST sharing structure.

    `check=True` (for untrusted blocks) verifies every loaded node's hash, encoding and
    heights and uses a private cache; otherwise stored nodes are trusted and decoded
    through the shared `DEFAULT_CACHE` (or the `cache` given).
    """

    __slots__ = ("source", "cache", "check", "_root")

    def __init__(self, source: BlockSource, root: Node | CID, cache: NodeCache | None = None, check: bool = False):
        self.source = source
        self.check = check
        if cache is None:
            cache = NodeCache(4096) if check else DEFAULT_CACHE
        self.cache = cache
        self._root = root

    # ---- construction ---------------------------------------------------------
    @classmethod
    def empty(cls, source: BlockSource, cache: NodeCache | None = None, check: bool = False) -> "MST":
        return cls(source, empty_node(), cache, check)

    @classmethod
    def load(cls, source: BlockSource, root: CID, cache: NodeCache | None = None, check: bool = False) -> "MST":
        """A lazily loaded tree: nothing is read until first use."""
        return cls(source, CID(root), cache, check)

    def _derive(self, root: Node) -> "MST":
        return MST(self.source, root, self.cache, self.check)

    # ---- node access ----------------------------------------------------------
    def _load(self, ref: Ref, layer: int | None) -> Node:
        if type(ref) is Node:
            return ref
        return load_node(self.source, ref, layer, self.cache, self.check)

    def root_node(self) -> Node:
        root = self._root
        if type(root) is not Node:
            root = self._load(root, None)
            if root.layer is None:
                root = self._resolve_root_layer(root)
            self._root = root
        return root

    def _resolve_root_layer(self, root: Node) -> Node:
        """A stored root without keys: empty (layer 0) or, non-canonically, a bare pointer."""
        if root.subs[0] is None:
            root.layer = 0
            return root
        if self.check:
            raise MstError(f"MST root {root.cid} has no entries but points to a subtree (untrimmed root)")
        child = load_node(self.source, root.subs[0], None, None, False)
        if child.layer is None:
            child = self._resolve_root_layer(child)
        root.layer = child.layer + 1
        return root

    @property
    def layer(self) -> int:
        return self.root_node().layer

    def root_cid(self) -> CID:
        """The root CID; encodes (and caches) any nodes built in memory."""
        root = self._root
        if type(root) is not Node:
            return root
        return ensure_encoded(root, self.cache)

    # ---- reads ----------------------------------------------------------------
    def get(self, key: str) -> CID | None:
        k = _key_bytes(key)
        node = self.root_node()
        while True:
            keys = node.keys
            i = bisect_left(keys, k)
            if i < len(keys) and keys[i] == k:
                return node.vals[i]
            sub = node.subs[i]
            if sub is None:
                return None
            node = self._load(sub, node.layer - 1)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def items(self, start: str | None = None, end: str | None = None, reverse: bool = False) -> Iterator[tuple[str, CID]]:
        """(key, value) in key order, lazily; `start` inclusive, `end` exclusive."""
        lo = _key_bytes(start) if start else None
        hi = _key_bytes(end) if end is not None else None
        for k, v in self._walk(self.root_node(), lo, hi, reverse):
            yield k.decode("ascii"), v

    def _walk(self, node: Node, lo: bytes | None, hi: bytes | None, reverse: bool):
        keys, vals, subs = node.keys, node.vals, node.subs
        i0 = bisect_left(keys, lo) if lo is not None else 0
        i1 = bisect_left(keys, hi) if hi is not None else len(keys)
        if i0 > i1:
            return
        layer = node.layer - 1
        if not reverse:
            for i in range(i0, i1 + 1):
                sub = subs[i]
                if sub is not None:
                    yield from self._walk(self._load(sub, layer), lo, hi, False)
                if i < i1:
                    yield keys[i], vals[i]
        else:
            for i in range(i1, i0 - 1, -1):
                if i < i1:
                    yield keys[i], vals[i]
                sub = subs[i]
                if sub is not None:
                    yield from self._walk(self._load(sub, layer), lo, hi, True)

    def keys(self) -> Iterator[str]:
        return (k for k, _ in self.items())

    def count(self) -> int:
        return sum(1 for _ in self.items())

    # ---- writes ---------------------------------------------------------------
    def put(self, key: str, value: CID) -> "MST":
        """Insert or update `key`; returns a new tree (self if nothing changed)."""
        k = _key_bytes(key)
        if not is_valid_key(k):
            raise MstError(f"invalid MST key {key!r}: must be 'collection/rkey' in the repo path charset")
        if type(value) is not CID:
            value = CID(value)
        h = key_height(k)
        root = self.root_node()
        if h > root.layer:
            left, right = self._split(root, k, root.layer)
            for layer in range(root.layer + 1, h):
                if left is not None:
                    left = Node(layer, (), (), (left,))
                if right is not None:
                    right = Node(layer, (), (), (right,))
            return self._derive(Node(h, (k,), (value,), (left, right)))
        new_root = self._put(root, k, value, h)
        return self if new_root is root else self._derive(new_root)

    def _put(self, node: Node, k: bytes, v: CID, h: int) -> Node:
        layer, keys, vals, subs = node.layer, node.keys, node.vals, node.subs
        i = bisect_left(keys, k)
        if h == layer:
            if i < len(keys) and keys[i] == k:
                if vals[i] == v:
                    return node
                return Node(layer, keys, vals[:i] + (v,) + vals[i + 1 :], subs)
            left, right = self._split(subs[i], k, layer - 1)
            return Node(
                layer,
                keys[:i] + (k,) + keys[i:],
                vals[:i] + (v,) + vals[i:],
                subs[:i] + (left, right) + subs[i + 1 :],
            )
        sub = subs[i]
        child = self._load(sub, layer - 1) if sub is not None else Node(layer - 1, (), (), (None,))
        new_child = self._put(child, k, v, h)
        if new_child is child:
            return node
        return Node(layer, keys, vals, subs[:i] + (new_child,) + subs[i + 1 :])

    def _split(self, ref: Ref, k: bytes, layer: int) -> tuple[Ref, Ref]:
        """Split the subtree at `ref` around a key that is not in it (it belongs higher)."""
        if ref is None:
            return None, None
        node = self._load(ref, layer)
        keys, vals, subs = node.keys, node.vals, node.subs
        i = bisect_left(keys, k)
        sub_left, sub_right = self._split(subs[i], k, layer - 1)
        left = Node(layer, keys[:i], vals[:i], subs[:i] + (sub_left,)) if i or sub_left is not None else None
        n = len(keys)
        right = Node(layer, keys[i:], vals[i:], (sub_right,) + subs[i + 1 :]) if i < n or sub_right is not None else None
        return left, right

    def delete(self, key: str) -> "MST":
        """Remove `key`; KeyError if it is absent."""
        k = _key_bytes(key)
        root = self.root_node()
        h = key_height(k)
        if h > root.layer:
            raise KeyError(key)
        new_root = self._delete(root, k, h, key)
        while not new_root.keys and new_root.subs[0] is not None:  # trim the top
            new_root = self._load(new_root.subs[0], new_root.layer - 1)
        if new_root.is_empty():
            new_root = empty_node()
        return self._derive(new_root)

    def _delete(self, node: Node, k: bytes, h: int, key: str) -> Node:
        layer, keys, vals, subs = node.layer, node.keys, node.vals, node.subs
        i = bisect_left(keys, k)
        if h == layer:
            if i >= len(keys) or keys[i] != k:
                raise KeyError(key)
            merged = self._merge(subs[i], subs[i + 1], layer - 1)
            return Node(layer, keys[:i] + keys[i + 1 :], vals[:i] + vals[i + 1 :], subs[:i] + (merged,) + subs[i + 2 :])
        sub = subs[i]
        if sub is None:
            raise KeyError(key)
        child = self._delete(self._load(sub, layer - 1), k, h, key)
        ref = None if child.is_empty() else child
        return Node(layer, keys, vals, subs[:i] + (ref,) + subs[i + 1 :])

    def _merge(self, a: Ref, b: Ref, layer: int) -> Ref:
        """Join two adjacent subtrees of the same layer (every key of a < every key of b)."""
        if a is None:
            return b
        if b is None:
            return a
        na = self._load(a, layer)
        nb = self._load(b, layer)
        mid = self._merge(na.subs[-1], nb.subs[0], layer - 1)
        return Node(layer, na.keys + nb.keys, na.vals + nb.vals, na.subs[:-1] + (mid,) + nb.subs[1:])

    # ---- blocks ---------------------------------------------------------------
    def new_blocks(self) -> dict[CID, bytes]:
        """Node blocks built by mutations since load/empty and reachable from the current root."""
        self.root_cid()
        out: dict[CID, bytes] = {}
        root = self._root
        if type(root) is not Node or not root.new:
            return out
        stack = [root]
        while stack:
            node = stack.pop()
            out[node.cid] = node.data
            for s in node.subs:
                if type(s) is Node and s.new:
                    stack.append(s)
        return out

    def walk_blocks(self) -> Iterator[tuple[CID, bytes]]:
        """Every node block reachable from the root, depth-first pre-order, streaming.

        Stored nodes are read straight from the source (not through the cache), so a
        full walk of a large repo keeps only O(depth * fanout) refs in memory.
        """
        root = self.root_node()
        stack: list[tuple[Ref, int]] = [(root, root.layer)]
        while stack:
            ref, layer = stack.pop()
            if type(ref) is Node:
                node = ref
                ensure_encoded(node, self.cache)
            else:
                data = self.source.get_block(ref)
                if data is None:
                    raise MissingBlockError(ref, "MST node")
                if self.check and not ref.matches(data):
                    raise MstError(f"MST node {ref}: block does not match its CID")
                node = decode_node(data, ref, layer, self.check)
            yield node.cid, node.data
            for s in reversed(node.subs):
                if s is not None:
                    stack.append((s, layer - 1))

    def __repr__(self) -> str:
        return f"MST(root={self.root_cid()})"
