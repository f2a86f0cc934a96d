"""MST nodes: key heights, the immutable in-memory node, its canonical encoding and decoding.

Owns `Node`, `encode_node`, `decode_node`, `key_height`, `common_prefix_len`, `MstError`
and the decoded-node LRU `NodeCache`. Pure; must not import tinypds.store. Tricky bits:
nodes are encoded by hand (fixed shape, canonical by construction: map keys "e" < "l",
entry keys "k" < "p" < "t" < "v"); strict decoding re-encodes and compares bytes, which
also proves the prefix compression canonical. Keys are ASCII bytes inside the package.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import Union

from ..blocks import BlockSource, MissingBlockError
from ..cid import CID, DAG_CBOR, cid_for_dagcbor
from ..dagcbor import DagCborError
from ..dagcbor import decode as _cbor_decode

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


# ---- encoding -----------------------------------------------------------------

_NULL = b"\xf6"


def _head(major: int, n: int) -> bytes:
    m = major << 5
    if n < 24:
        return bytes((m | n,))
    if n < 0x100:
        return bytes((m | 24, n))
    if n < 0x10000:
        return bytes((m | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((m | 26,)) + n.to_bytes(4, "big")
    return bytes((m | 27,)) + n.to_bytes(8, "big")


def _cid_bytes(cid: bytes) -> bytes:
    if len(cid) == 36:
        return b"\xd8\x2a\x58\x25\x00" + cid
    return b"\xd8\x2a" + _head(2, len(cid) + 1) + b"\x00" + cid


def encode_node(keys, vals, sub_cids) -> bytes:
    """Canonical DAG-CBOR of {l, e: [{p, k, v, t}]} with prefix compression."""
    parts = [b"\xa2\x61e", _head(4, len(keys))]
    append = parts.append
    prev = b""
    for i, key in enumerate(keys):
        p = common_prefix_len(prev, key) if prev else 0
        suffix = key[p:]
        t = sub_cids[i + 1]
        append(b"\xa4\x61k")
        append(_head(2, len(suffix)))
        append(suffix)
        append(b"\x61p")
        append(_head(0, p))
        append(b"\x61t")
        append(_NULL if t is None else _cid_bytes(t))
        append(b"\x61v")
        append(_cid_bytes(vals[i]))
        prev = key
    append(b"\x61l")
    left = sub_cids[0]
    append(_NULL if left is None else _cid_bytes(left))
    return b"".join(parts)


def ensure_encoded(node: Node, cache: "NodeCache | None" = None) -> CID:
    """Encode `node` (and any unencoded in-memory children); returns its CID."""
    if node.cid is not None:
        return node.cid
    sub_cids = []
    for s in node.subs:
        if type(s) is Node:
            s = s.cid if s.cid is not None else ensure_encoded(s, cache)
        sub_cids.append(s)
    data = encode_node(node.keys, node.vals, sub_cids)
    cid = cid_for_dagcbor(data)
    node.data = data
    node.cid = cid
    if cache is not None:
        # cache a clean copy (children by CID) so a later load of this root is not "new"
        cache.put(cid, Node(node.layer, node.keys, node.vals, tuple(sub_cids), cid, data, False))
    return cid


# ---- decoding -----------------------------------------------------------------


def _bad(cid: CID | None, msg: str) -> MstError:
    return MstError(f"MST node {cid}: {msg}" if cid is not None else f"MST node: {msg}")


def decode_node(data: bytes, cid: CID | None = None, layer: int | None = None, check: bool = False) -> Node:
    """Decode a node block. `layer` is the expected layer (None for a root: taken from the keys).

    check=True also refuses anything non-canonical: field set and types, prefix
    compression, key order and syntax, key heights vs layer, subtrees on layer 0,
    and byte-for-byte canonical CBOR.
    """
    try:
        obj = _cbor_decode(data, strict=False)
    except DagCborError as exc:
        raise _bad(cid, f"not DAG-CBOR: {exc}") from None
    try:
        entries = obj["e"]
        left = obj["l"]
        keys = []
        vals = []
        subs = [left]
        prev = b""
        for e in entries:
            p = e["p"]
            key = prev[:p] + e["k"] if p else e["k"]
            keys.append(key)
            vals.append(e["v"])
            subs.append(e["t"])
            if check:
                _check_entry(cid, e, prev, key, p, len(keys) == 1)
            prev = key
    except (KeyError, TypeError, IndexError) as exc:
        raise _bad(cid, f"malformed node ({type(exc).__name__}: {exc})") from None
    if layer is None and keys:
        layer = key_height(keys[0])
    node = Node(layer, tuple(keys), tuple(vals), tuple(subs), cid, data, False)
    if check:
        _check_node(node, obj)
    return node


def _check_entry(cid, e, prev, key, p, first) -> None:
    if type(e) is not dict or len(e) != 4:
        raise _bad(cid, "entry must have exactly the fields p, k, v, t")
    if type(p) is not int or p < 0 or type(e["k"]) is not bytes:
        raise _bad(cid, "entry p must be an integer and k bytes")
    if first and p != 0:
        raise _bad(cid, "first entry must have p = 0")
    if p > len(prev):
        raise _bad(cid, f"prefix length {p} longer than the previous key")
    if type(e["v"]) is not CID or not (e["t"] is None or type(e["t"]) is CID):
        raise _bad(cid, "entry v must be a CID and t a CID or null")
    if not is_valid_key(key):
        raise _bad(cid, f"invalid key {key!r}")
    if prev:
        if key <= prev:
            raise _bad(cid, f"keys not strictly increasing: {prev!r} then {key!r}")
        if p != common_prefix_len(prev, key):
            raise _bad(cid, f"non-canonical prefix compression for key {key!r}")


def _check_node(node: Node, obj) -> None:
    cid = node.cid
    if type(obj) is not dict or len(obj) != 2 or type(obj["e"]) is not list:
        raise _bad(cid, "node must have exactly the fields l and e")
    for s in node.subs:
        if s is not None and (type(s) is not CID or s.codec != DAG_CBOR):
            raise _bad(cid, "subtree links must be dag-cbor CIDs or null")
    layer = node.layer
    if layer is not None:
        for key in node.keys:
            h = key_height(key)
            if h != layer:
                raise _bad(cid, f"key {key!r} has height {h} but sits on layer {layer}")
        if layer == 0 and any(s is not None for s in node.subs):
            raise _bad(cid, "layer-0 node has a subtree")
    if encode_node(node.keys, node.vals, node.subs) != node.data:
        raise _bad(cid, "non-canonical DAG-CBOR encoding")


# ---- loading --------------------------------------------------------------------


class NodeCache:
    """A small LRU of decoded nodes keyed by CID (content-addressed, so safe to share)."""

    __slots__ = ("maxsize", "_d")

    def __init__(self, maxsize: int = 8192):
        self.maxsize = maxsize
        self._d: OrderedDict[CID, Node] = OrderedDict()

    def get(self, cid: CID) -> Node | None:
        node = self._d.get(cid)
        if node is not None:
            self._d.move_to_end(cid)
        return node

    def put(self, cid: CID, node: Node) -> None:
        d = self._d
        d[cid] = node
        if len(d) > self.maxsize:
            d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


DEFAULT_CACHE = NodeCache()


def load_node(source: BlockSource, cid: CID, layer: int | None, cache: NodeCache | None, check: bool) -> Node:
    """Read and decode one stored node (through `cache`); check=True also verifies its hash."""
    if cache is not None:
        node = cache.get(cid)
        if node is not None:
            if layer is not None and node.layer != layer and check:
                raise _bad(cid, f"expected layer {layer}, node is on layer {node.layer}")
            return node
    data = source.get_block(cid)
    if data is None:
        raise MissingBlockError(cid, "MST node")
    if check:
        if type(cid) is not CID or cid.codec != DAG_CBOR or not cid.matches(data):
            raise _bad(cid, "block does not match its CID")
    node = decode_node(data, cid, layer, check)
    if cache is not None:
        cache.put(cid, node)
    return node
