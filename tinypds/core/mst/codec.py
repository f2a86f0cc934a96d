"""MST node codec: canonical encoding, fast strict decoding, and loading through the cache.

Owns `encode_node`, `decode_node`, `ensure_encoded` and `load_node`. Pure; must not import
tinypds.store. Tricky bits: nodes are encoded by hand (fixed shape, canonical by
construction: map keys "e" < "l", entry keys "k" < "p" < "t" < "v"); decoding first tries
a hand parser that only accepts the canonical layout (so success proves canonical bytes)
and falls back to cbor2, after which check mode re-encodes and compares.
"""

from __future__ import annotations

from ..blocks import BlockSource, MissingBlockError
from ..cid import CID, DAG_CBOR, cid_for_dagcbor
from ..dagcbor import DagCborError
from ..dagcbor import decode as _cbor_decode
import re
from hashlib import sha256 as _sha256

from .node import _KEY_RE, MAX_KEY_LEN, MstError, Node, NodeCache, common_prefix_len, is_valid_key, key_height

_KEY_FULLMATCH = _KEY_RE.fullmatch

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


_H0 = [_head(0, n) for n in range(256)]
_H2 = [_head(2, n) for n in range(256)]
_CIDH = b"\xd8\x2a\x58\x25\x00"


def encode_node(keys, vals, sub_cids) -> bytes:
    """Canonical DAG-CBOR of {l, e: [{p, k, v, t}]} with prefix compression (hand-inlined: hot path)."""
    n = len(keys)
    parts = [b"\xa2\x61e", _head(4, n)]
    extend = parts.extend
    prev = b""
    i = 0
    for key in keys:
        if prev:  # common_prefix_len, inlined
            ln = len(prev) if len(prev) < len(key) else len(key)
            x = int.from_bytes(prev[:ln], "big") ^ int.from_bytes(key[:ln], "big")
            p = ln - 1 - ((x.bit_length() - 1) >> 3) if x else ln
            suffix = key[p:]
        else:
            p = 0
            suffix = key
        t = sub_cids[i + 1]
        v = vals[i]
        ls = len(suffix)
        extend(
            (
                b"\xa4\x61k",
                _H2[ls] if ls < 256 else _head(2, ls),
                suffix,
                b"\x61p",
                _H0[p] if p < 256 else _head(0, p),
                b"\x61t",
                _NULL if t is None else (_CIDH + t if len(t) == 36 else _cid_bytes(t)),
                b"\x61v",
                _CIDH + v if len(v) == 36 else _cid_bytes(v),
            )
        )
        prev = key
        i += 1
    left = sub_cids[0]
    parts.append(b"\x61l")
    parts.append(_NULL if left is None else (_CIDH + left if len(left) == 36 else _cid_bytes(left)))
    return b"".join(parts)


def ensure_encoded(node: Node, cache: NodeCache | None = None) -> CID:
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


_new_bytes = bytes.__new__
# tag 42, bytes(37), 0x00, then a CIDv1 sha2-256 prefix (dag-cbor or raw)
_CID_HEADS = {b"\xd8\x2a\x58\x25\x00\x01\x71\x12\x20", b"\xd8\x2a\x58\x25\x00\x01\x55\x12\x20"}


def _fast_parse(data: bytes):
    """Parse the exact canonical node layout -> (l, [(p, k, v, t)]), or None for anything else.

    Only minimal-form heads up to one length byte and 36-byte CIDs are accepted, so success
    implies canonical DAG-CBOR; everything else (long keys, odd CIDs, junk) takes the
    cbor2 path. Hand-inlined: this is ~2x faster than cbor2 with a CID tag hook.
    """
    try:
        if data[:3] != b"\xa2\x61e":
            return None
        n = data[3] - 0x80
        pos = 4
        if n > 23:
            if n != 24 or data[4] < 24:
                return None
            n = data[4]
            pos = 5
        elif n < 0:
            return None
        entries = []
        append = entries.append
        for _ in range(n):
            if data[pos : pos + 3] != b"\xa4\x61k":
                return None
            ln = data[pos + 3] - 0x40
            pos += 4
            if ln > 23:
                if ln != 24 or data[pos] < 24:
                    return None
                ln = data[pos]
                pos += 1
            elif ln < 0:
                return None
            k = data[pos : pos + ln]
            pos += ln
            if data[pos : pos + 2] != b"\x61p":
                return None
            p = data[pos + 2]
            if p > 23:
                if p != 24 or data[pos + 3] < 24:
                    return None
                p = data[pos + 3]
                pos += 1
            pos += 3
            if data[pos : pos + 2] != b"\x61t":
                return None
            if data[pos + 2] == 0xF6:
                t = None
                pos += 3
            elif data[pos + 2 : pos + 11] in _CID_HEADS:
                t = _new_bytes(CID, data[pos + 7 : pos + 43])
                pos += 43
            else:
                return None
            if data[pos : pos + 2] != b"\x61v" or data[pos + 2 : pos + 11] not in _CID_HEADS:
                return None
            append((p, k, _new_bytes(CID, data[pos + 7 : pos + 43]), t))
            pos += 43
        if data[pos : pos + 2] != b"\x61l":
            return None
        if data[pos + 2] == 0xF6:
            left = None
            pos += 3
        elif data[pos + 2 : pos + 11] in _CID_HEADS:
            left = _new_bytes(CID, data[pos + 7 : pos + 43])
            pos += 43
        else:
            return None
        if pos != len(data):
            return None
        return left, entries
    except IndexError:
        return None


_LINKS = re.compile(rb"\x61t(?:\xf6|\xd8\x2a\x58\x25\x00(.{36}))\x61v\xd8\x2a\x58\x25\x00(.{36})", re.S)
_LEFT_LINK = b"\x61l\xd8\x2a\x58\x25\x00"


def node_links(data: bytes) -> tuple[bytes | None, list[tuple[bytes, bytes]]] | None:
    """(l, [(t or b"", v), ...]) of a canonical node, as raw CID bytes, without building keys
    (export walks 1M-record trees); None if the bytes are not the canonical layout this
    expects (then use decode_node). For stored (already verified) nodes only: key bytes are
    ASCII, so the entry pattern, which needs non-ASCII bytes after "at", cannot match inside
    one; the entry count is checked against the array header."""
    if data[:3] != b"\xa2\x61e":
        return None
    n = data[3] - 0x80
    if n > 23:
        if n != 24:
            return None
        n = data[4]
    elif n < 0:
        return None
    links = _LINKS.findall(data)
    if len(links) != n:
        return None
    if data[-43:-36] == _LEFT_LINK:  # first: a CID's last bytes could read "al\xf6"
        return data[-36:], links
    if data[-3:] == b"\x61l\xf6":
        return None, links
    return None


def _slow_parse(data: bytes, cid: CID | None, check: bool):
    try:
        obj = _cbor_decode(data, strict=False)
    except DagCborError as exc:
        raise _bad(cid, f"not DAG-CBOR: {exc}") from None
    try:
        if check and (type(obj) is not dict or len(obj) != 2 or type(obj["e"]) is not list):
            raise _bad(cid, "node must have exactly the fields l and e")
        entries = []
        for e in obj["e"]:
            if check and (type(e) is not dict or len(e) != 4):
                raise _bad(cid, "entry must have exactly the fields p, k, v, t")
            entries.append((e["p"], e["k"], e["v"], e["t"]))
        return obj["l"], entries
    except (KeyError, TypeError) as exc:
        raise _bad(cid, f"malformed node ({type(exc).__name__}: {exc})") from None


def decode_node(data: bytes, cid: CID | None = None, layer: int | None = None, check: bool = False) -> Node:
    """Decode a node block. `layer` is the expected layer (None for a root: taken from the keys).

    check=True also refuses anything non-canonical: field set and types, prefix
    compression, key order and syntax, key heights vs layer, subtrees on layer 0,
    and byte-for-byte canonical CBOR.
    """
    parsed = _fast_parse(data)
    canonical = parsed is not None
    if parsed is None:
        parsed = _slow_parse(data, cid, check)
    elif check:
        return _checked_canonical(data, cid, layer, *parsed)
    left, entries = parsed
    keys = []
    vals = []
    subs = [left]
    prev = b""
    try:
        for p, k, v, t in entries:
            key = prev[:p] + k if p else k
            if check:
                _check_entry(cid, prev, key, p, k, v, t, not keys)
            keys.append(key)
            vals.append(v)
            subs.append(t)
            prev = key
    except TypeError as exc:
        raise _bad(cid, f"malformed node (TypeError: {exc})") from None
    if layer is None:
        if keys:
            layer = key_height(keys[0])
    elif check and not keys and left is None:
        raise _bad(cid, "empty non-root node")  # a layer hint means a parent links to it
    node = Node(layer, tuple(keys), tuple(vals), tuple(subs), cid, data, False)
    if check:
        _check_node(node, canonical)
    return node


def _checked_canonical(data: bytes, cid: CID | None, layer: int | None, left, entries) -> Node:
    """decode_node(check=True) for bytes `_fast_parse` accepted, in one pass (imports walk
    every node): the parser already proved canonical CBOR and field types, so what is left
    is keys (syntax, order, prefix compression), heights against the layer, and links."""
    keys = []
    vals = []
    subs = [left]
    prev = b""
    fullmatch = _KEY_FULLMATCH
    sha256 = _sha256
    for p, k, v, t in entries:
        if p:
            if not keys:
                raise _bad(cid, "first entry must have p = 0")
            if p > len(prev):
                raise _bad(cid, f"prefix length {p} longer than the previous key")
            key = prev[:p] + k
        else:
            key = k
        if len(key) > MAX_KEY_LEN or fullmatch(key) is None:
            raise _bad(cid, f"invalid key {key!r}")
        if keys:
            if key <= prev:
                raise _bad(cid, f"keys not strictly increasing: {prev!r} then {key!r}")
            # key[:p] == prev[:p] by construction: p is the common prefix unless the next bytes match too
            if p < len(prev) and prev[p] == key[p]:
                raise _bad(cid, f"non-canonical prefix compression for key {key!r}")
        d = sha256(key).digest()
        h = 0 if d[0] >= 64 else (256 - int.from_bytes(d, "big").bit_length()) >> 1
        if layer is None:
            layer = h
        elif h != layer:
            raise _bad(cid, f"key {key!r} has height {h} but sits on layer {layer}")
        if t is not None and (layer == 0 or t[1] != DAG_CBOR):
            raise _bad(cid, "layer-0 node has a subtree" if layer == 0 else "subtree links must be dag-cbor CIDs or null")
        keys.append(key)
        vals.append(v)
        subs.append(t)
        prev = key
    if left is not None:
        if left[1] != DAG_CBOR:
            raise _bad(cid, "subtree links must be dag-cbor CIDs or null")
        if layer == 0:
            raise _bad(cid, "layer-0 node has a subtree")
    if not keys and left is None and layer is not None:
        raise _bad(cid, "empty non-root node")  # a layer hint means a parent links to it
    return Node(layer, tuple(keys), tuple(vals), tuple(subs), cid, data, False)


def _check_entry(cid, prev, key, p, k, v, t, first) -> None:
    if type(p) is not int or p < 0 or type(k) is not bytes:
        raise _bad(cid, "entry p must be an integer and k bytes")
    if first and p != 0:
        raise _bad(cid, "first entry must have p = 0")
    if p > len(prev):
        raise _bad(cid, f"prefix length {p} longer than the previous key")
    if type(v) is not CID or not (t is None or type(t) is CID):
        raise _bad(cid, "entry v must be a CID and t a CID or null")
    if not is_valid_key(key):
        raise _bad(cid, f"invalid key {key!r}")
    if prev:
        if key <= prev:
            raise _bad(cid, f"keys not strictly increasing: {prev!r} then {key!r}")
        if p != common_prefix_len(prev, key):
            raise _bad(cid, f"non-canonical prefix compression for key {key!r}")


def _check_node(node: Node, canonical: bool) -> None:
    cid = node.cid
    if node.subs[0] is not None and type(node.subs[0]) is not CID:
        raise _bad(cid, "l must be a CID or null")
    for s in node.subs:
        if s is not None and s.codec != DAG_CBOR:
            raise _bad(cid, "subtree links must be dag-cbor CIDs or null")
    layer = node.layer
    if layer is not None:
        for key in node.keys:
            h = key_height(key)
            if h != layer:
                raise _bad(cid, f"key {key!r} has height {h} but sits on layer {layer}")
        if layer == 0 and any(s is not None for s in node.subs):
            raise _bad(cid, "layer-0 node has a subtree")
    if not canonical and encode_node(node.keys, node.vals, node.subs) != node.data:
        raise _bad(cid, "non-canonical DAG-CBOR encoding")


def load_node(source: BlockSource, cid: CID, layer: int | None, cache: NodeCache | None, check: bool,
              hashed: bool = False) -> Node:
    """Read and decode one stored node (through `cache`); check=True also verifies its hash
    (unless hashed=True: the caller knows the source's blocks match their CIDs)."""
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
        if type(cid) is not CID or cid.codec != DAG_CBOR or not (hashed or cid.matches(data)):
            raise _bad(cid, "block does not match its CID")
    node = decode_node(data, cid, layer, check)
    if cache is not None:
        cache.put(cid, node)
    return node
