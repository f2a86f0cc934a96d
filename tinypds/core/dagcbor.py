"""Strict DAG-CBOR for the atproto data model, and JSON <-> data model.

Sole importer of `cbor2`. Python values: dict (str keys), list, str, int, bool,
None, bytes, CID. Floats are refused everywhere (atproto forbids them).
Tricky bits: cbor2's decoder is lenient (unsorted keys, non-minimal ints, float16,
indefinite lengths, trailing bytes), so `decode()` re-encodes and compares bytes;
`decode(strict=False)` skips that for blocks whose CID was already checked and
that we only read. CIDs are tag 42 over b"\\x00" + binary CID.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import cbor2

from .cid import CID, cid_for_dagcbor

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class DagCborError(ValueError):
    """Input is not valid (canonical) DAG-CBOR or not valid atproto data."""


def _encode_cid(encoder: Any, value: CID) -> None:
    encoder.encode(cbor2.CBORTag(42, b"\x00" + bytes(value)))


def _refuse_float(encoder: Any, value: float) -> None:
    raise DagCborError("floats are not allowed in atproto data")


def _refuse(encoder: Any, value: Any) -> None:
    raise DagCborError(f"value of type {type(value).__name__} is not allowed in DAG-CBOR")


_ENCODERS = {
    CID: _encode_cid,
    float: _refuse_float,
    type(cbor2.undefined): _refuse,
    cbor2.CBORSimpleValue: _refuse,
    tuple: _refuse,
    set: _refuse,
    frozenset: _refuse,
}


def encode(obj: Any) -> bytes:
    """Canonical DAG-CBOR bytes of a data-model value."""
    try:
        return cbor2.dumps(obj, canonical=True, encoders=_ENCODERS)
    except DagCborError:
        raise
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise DagCborError(f"cannot encode as DAG-CBOR: {exc}") from exc


def encode_with_cid(obj: Any) -> tuple[CID, bytes]:
    data = encode(obj)
    return cid_for_dagcbor(data), data


def _tag_hook(a: Any, b: Any) -> Any:
    # cbor2 5.x calls hook(decoder, tag); cbor2 6.x calls hook(tag, immutable)
    tag = a if isinstance(a, cbor2.CBORTag) else b
    if tag.tag != 42:
        raise DagCborError(f"CBOR tag {tag.tag} is not allowed in DAG-CBOR")
    value = tag.value
    if not isinstance(value, bytes) or len(value) < 2 or value[0] != 0:
        raise DagCborError("malformed CID link (tag 42 must hold 0x00 + binary CID)")
    try:
        return CID(value[1:])
    except ValueError as exc:
        raise DagCborError(f"malformed CID link: {exc}") from exc


def _check_types(obj: Any, depth: int = 0) -> None:
    """Only data-model types survive a strict decode (cbor2 may produce datetimes, bignums...)."""
    if depth > 128:
        raise DagCborError("data nested too deeply")
    t = type(obj)
    if t is dict:
        for k, v in obj.items():
            if type(k) is not str:
                raise DagCborError("map keys must be strings")
            _check_types(v, depth + 1)
    elif t is list:
        for v in obj:
            _check_types(v, depth + 1)
    elif t is int:
        if obj < INT_MIN or obj > INT_MAX:
            raise DagCborError("integer out of 64-bit range")
    elif t is float:
        raise DagCborError("floats are not allowed in atproto data")
    elif not (t is str or t is bytes or t is CID or t is bool or obj is None):
        raise DagCborError(f"value of type {t.__name__} is not allowed in DAG-CBOR")


def decode(data: bytes, strict: bool = True) -> Any:
    """Decode one DAG-CBOR value. strict=True also refuses any non-canonical encoding."""
    try:
        obj = cbor2.loads(
            data,
            tag_hook=_tag_hook,
            allow_duplicate_keys=False,
        )
    except DagCborError:
        raise
    except Exception as exc:  # cbor2 raises many types on garbage
        if isinstance(exc.__cause__, DagCborError):
            raise exc.__cause__ from None
        raise DagCborError(f"invalid CBOR: {exc}") from exc
    if strict:
        _check_types(obj)
        try:
            again = encode(obj)
        except DagCborError as exc:
            raise DagCborError(f"not DAG-CBOR: {exc}") from exc
        if again != bytes(data):
            raise DagCborError("non-canonical DAG-CBOR encoding")
    return obj


# ---------------------------------------------------------------------------
# JSON <-> data model
# ---------------------------------------------------------------------------


def _b64_decode(s: str) -> bytes:
    s = s.rstrip("=")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DagCborError("invalid $bytes base64") from exc


def to_json(obj: Any) -> Any:
    """Data-model value -> JSON-ready value ($link, $bytes)."""
    t = type(obj)
    if t is dict:
        return {k: to_json(v) for k, v in obj.items()}
    if t is list:
        return [to_json(v) for v in obj]
    if t is CID:
        return {"$link": str(obj)}
    if t is bytes:
        return {"$bytes": base64.b64encode(obj).decode("ascii").rstrip("=")}
    return obj


def from_json(obj: Any, _depth: int = 0) -> Any:
    """JSON value -> data-model value. Validates $link, $bytes, $type and blob refs."""
    if _depth > 128:
        raise DagCborError("data nested too deeply")
    t = type(obj)
    if t is dict:
        if "$link" in obj:
            link = obj["$link"]
            if len(obj) != 1:
                raise DagCborError("$link object must have no other fields")
            if not isinstance(link, str):
                raise DagCborError("$link must be a string")
            try:
                return CID.parse(link)
            except ValueError as exc:
                raise DagCborError(f"invalid $link CID: {link!r}") from exc
        if "$bytes" in obj:
            raw = obj["$bytes"]
            if len(obj) != 1:
                raise DagCborError("$bytes object must have no other fields")
            if not isinstance(raw, str):
                raise DagCborError("$bytes must be a string")
            return _b64_decode(raw)
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise DagCborError("object keys must be strings")
            out[k] = from_json(v, _depth + 1)
        if "$type" in out:
            check_type_field(out)
        return out
    if t is list:
        return [from_json(v, _depth + 1) for v in obj]
    if t is float:
        if obj.is_integer():
            return int(obj)
        raise DagCborError("floats are not allowed in atproto data")
    if t is int:
        if obj < INT_MIN or obj > INT_MAX:
            raise DagCborError("integer out of 64-bit range")
        return obj
    if obj is None or t in (str, bool):
        return obj
    raise DagCborError(f"unsupported JSON value of type {t.__name__}")


def check_type_field(obj: dict) -> None:
    """Validate `$type` and, for `$type: blob`, the blob ref shape."""
    typ = obj["$type"]
    if not isinstance(typ, str) or not typ:
        raise DagCborError("$type must be a non-empty string")
    if typ == "blob":
        ref = obj.get("ref")
        if not isinstance(ref, CID):
            raise DagCborError("blob ref must be a $link")
        if not isinstance(obj.get("mimeType"), str) or not obj["mimeType"]:
            raise DagCborError("blob mimeType must be a non-empty string")
        size = obj.get("size")
        if type(size) is not int or size < 0:
            raise DagCborError("blob size must be a non-negative integer")


def validate_record(obj: Any) -> None:
    """A record is a map with a non-empty string `$type` (atproto data model rule)."""
    if type(obj) is not dict:
        raise DagCborError("record must be an object")
    if "$type" not in obj:
        raise DagCborError("record must have a $type")
    check_type_field(obj)


def validate_data(obj: Any, _depth: int = 0) -> None:
    """Walk decoded DAG-CBOR and apply the atproto data-model rules ($type, blobs)."""
    if _depth > 128:
        raise DagCborError("data nested too deeply")
    t = type(obj)
    if t is dict:
        if "$type" in obj:
            check_type_field(obj)
        for v in obj.values():
            validate_data(v, _depth + 1)
    elif t is list:
        for v in obj:
            validate_data(v, _depth + 1)


def iter_blob_refs(obj: Any):
    """Yield (cid, mimeType, size) for every blob ref in a record (both current and legacy shapes)."""
    t = type(obj)
    if t is dict:
        if obj.get("$type") == "blob" and type(obj.get("ref")) is CID:
            yield obj["ref"], obj.get("mimeType"), obj.get("size")
            return
        if set(obj) == {"cid", "mimeType"} and isinstance(obj["cid"], str):
            try:
                yield CID.parse(obj["cid"]), obj["mimeType"], None
            except ValueError:
                pass
            return
        for v in obj.values():
            yield from iter_blob_refs(v)
    elif t is list:
        for v in obj:
            yield from iter_blob_refs(v)
