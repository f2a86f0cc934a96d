"""MST nodes: key heights and prefixes, the immutable in-memory node, the decoded-node cache.

Owns `Node`, `key_height`, `common_prefix_len`, `is_valid_key`, `MstError` and the LRU
`NodeCache` (content-addressed, so one shared `DEFAULT_CACHE` is safe). Pure; must not
reach into the storage layer. Tricky bits: keys are ASCII bytes inside the package; a node's
`layer` comes from its keys, or from its parent for a keyless (leafless) inner node.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Union

from ..cid import CID

MAX_KEY_LEN = 1024
_KEY_RE = re.compile(rb"[a-zA-Z0-9_~.:\-]+/[a-zA-Z0-9_~.:\-]+")


class MstError(ValueError):
    """An MST is malformed (bad node, order, height, encoding) or an operation is impossible."""


def key_height(key: str | bytes) -> int:
    """The MST layer of a key: leading zero bits of sha256(key), two bits per layer (fanout 4)."""
    if type(key) is str:
        key = key.encode("utf-8")
    digest = hashlib.sha256(key).digest()
    return (256 - int.from_bytes(digest, "big").bit_length()) >> 1


def common_prefix_len(a: str | bytes, b: str | bytes) -> int:
    """Length in bytes of the common prefix of two keys."""
    if type(a) is str:
        a = a.encode("utf-8")
    if type(b) is str:
        b = b.encode("utf-8")
    n = min(len(a), len(b))
    x = int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")
    if x == 0:
        return n
    return n - 1 - ((x.bit_length() - 1) >> 3)


def is_valid_key(key: bytes) -> bool:
    """Repo paths only: `collection/rkey` in the restricted ASCII set, at most 1024 bytes."""
    return len(key) <= MAX_KEY_LEN and _KEY_RE.fullmatch(key) is not None


class Node:
    """One immutable MST node at `layer`.

    keys: tuple of full keys (bytes), strictly increasing; vals: their value CIDs;
    subs: len(keys)+1 subtree refs, subs[0] is `l` and subs[i+1] the `t` of entry i.
    A ref is None, a CID (stored node, loaded on demand) or a Node (built in memory).
    `cid`/`data` are filled when encoded; `new` marks nodes built by mutations.
    """

    __slots__ = ("layer", "keys", "vals", "subs", "cid", "data", "new")

    def __init__(self, layer, keys, vals, subs, cid=None, data=None, new=True):
        self.layer = layer
        self.keys = keys
        self.vals = vals
        self.subs = subs
        self.cid = cid
        self.data = data
        self.new = new

    def is_empty(self) -> bool:
        return not self.keys and self.subs[0] is None

    def __repr__(self) -> str:
        return f"Node(layer={self.layer}, keys={len(self.keys)}, cid={self.cid})"


Ref = Union[None, CID, Node]

def empty_node() -> Node:
    return Node(0, (), (), (None,))


# ---- loading --------------------------------------------------------------------


class NodeCache:
    """A small LRU of decoded nodes keyed by CID (content-addressed, so safe to share).

    Tolerates use from several threads without a lock: a racing eviction can only turn
    a hit into a miss, never return a wrong node.
    """

    __slots__ = ("maxsize", "_d")

    def __init__(self, maxsize: int = 8192):
        self.maxsize = maxsize
        self._d: OrderedDict[CID, Node] = OrderedDict()

    def get(self, cid: CID) -> Node | None:
        node = self._d.get(cid)
        if node is not None:
            try:
                self._d.move_to_end(cid)
            except KeyError:
                pass
        return node

    def put(self, cid: CID, node: Node) -> None:
        d = self._d
        d[cid] = node
        while len(d) > self.maxsize:
            try:
                d.popitem(last=False)
            except KeyError:
                break

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


DEFAULT_CACHE = NodeCache(2048)  # a commit touches one root-to-leaf path: the hot top levels fit; bounds RSS on a Pi
