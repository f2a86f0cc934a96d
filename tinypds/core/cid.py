"""CIDs as raw bytes inside the process; strings only at the edges.

Owns the binary CID type (`CID`, a bytes subclass holding the binary CIDv1:
version, codec, multihash) and the sole import of `multiformats`, which is used
only to parse/print non-base32 strings. Hot paths build CIDs with hashlib plus a
4-byte prefix (~0.6 µs) instead of multiformats (~170 µs).
Tricky bits: a CID in DAG-CBOR is tag 42 over b"\\x00" + these bytes (see
dagcbor.py); CIDv0 ("Qm...") is refused; only sha2-256 is accepted for hashing
checks, other multihashes parse but never verify.
"""

from __future__ import annotations

import base64
import hashlib

DAG_CBOR = 0x71
RAW = 0x55
SHA2_256 = 0x12

_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = [a + b for a in _B32 for b in _B32]  # 10 bits -> two base32 characters


def b32_lower(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (~1.6x faster than b32encode().lower().rstrip("="))."""
    n = len(data)
    pad = -n % 5
    v = int.from_bytes(data, "big") << (pad * 8)
    pairs = _B32_PAIRS
    return "".join([pairs[(v >> s) & 0x3FF] for s in range((n + pad) * 8 - 10, -1, -10)])[: (n * 8 + 4) // 5]


_PREFIX_DAG_CBOR = bytes([0x01, DAG_CBOR, SHA2_256, 0x20])
_PREFIX_RAW = bytes([0x01, RAW, SHA2_256, 0x20])


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift > 0:
                raise ValueError("non-minimal varint")
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def cid_length(buf: bytes, pos: int = 0) -> int:
    """Length in bytes of the binary CIDv1 starting at buf[pos] (for CAR parsing)."""
    start = pos
    version, pos = _read_varint(buf, pos)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    _codec, pos = _read_varint(buf, pos)
    _hash_code, pos = _read_varint(buf, pos)
    digest_len, pos = _read_varint(buf, pos)
    end = pos + digest_len
    if end > len(buf):
        raise ValueError("truncated CID")
    return end - start


class CID(bytes):
    """A binary CIDv1. Construct with CID(raw_bytes) (validated) or the helpers below."""

    __slots__ = ()

    def __new__(cls, raw: bytes) -> "CID":
        if type(raw) is CID:
            return raw  # type: ignore[return-value]
        # fast path: the only shape atproto produces
        if len(raw) == 36 and raw[2:4] == b"\x12\x20" and raw[0] == 1 and raw[1] in (DAG_CBOR, RAW):
            return bytes.__new__(cls, raw)
        raw = bytes(raw)
        if not raw:
            raise ValueError("empty CID")
        if cid_length(raw) != len(raw):
            raise ValueError("trailing bytes after CID")
        return bytes.__new__(cls, raw)

    # ---- properties ------------------------------------------------------
    @property
    def version(self) -> int:
        return 1

    @property
    def codec(self) -> int:
        return _read_varint(self, 1)[0]

    @property
    def hash_code(self) -> int:
        _, pos = _read_varint(self, 1)
        return _read_varint(self, pos)[0]

    @property
    def digest(self) -> bytes:
        _, pos = _read_varint(self, 1)
        _, pos = _read_varint(self, pos)
        n, pos = _read_varint(self, pos)
        return bytes(self[pos : pos + n])

    # ---- strings -----------------------------------------------------------
    def __str__(self) -> str:
        return "b" + b32_lower(self)

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def encode(self) -> str:  # type: ignore[override]
        """The canonical string form (base32 lower, multibase prefix 'b')."""
        return str(self)

    @classmethod
    def parse(cls, s: str) -> "CID":
        """Parse a CID string (CIDv1, any multibase). Raises ValueError."""
        if not isinstance(s, str) or len(s) < 2:
            raise ValueError(f"invalid CID string: {s!r}")
        if s.startswith("Qm"):
            raise ValueError("CIDv0 is not supported")
        if s[0] == "b":
            body = s[1:]
            if body != body.lower() or not body.isascii():
                raise ValueError(f"invalid base32 CID: {s!r}")
            try:
                raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            except Exception as exc:
                raise ValueError(f"invalid base32 CID: {s!r}") from exc
            if str(cls(raw)) != s:
                raise ValueError(f"non-canonical CID string: {s!r}")
            return cls(raw)
        try:
            from multiformats import CID as _MfCID  # edge only

            mf = _MfCID.decode(s)
        except Exception as exc:
            raise ValueError(f"invalid CID string: {s!r}") from exc
        if mf.version != 1:
            raise ValueError("CIDv0 is not supported")
        return cls(bytes(mf))

    # ---- hashing -----------------------------------------------------------
    def matches(self, data: bytes) -> bool:
        """True if `data` hashes to this CID (sha2-256 only)."""
        if len(self) == 36 and self[2] == SHA2_256:
            return hashlib.sha256(data).digest() == self[4:]
        return False


def cid_for_dagcbor(data: bytes) -> CID:
    """CIDv1 dag-cbor sha2-256 of already-encoded DAG-CBOR bytes."""
    return bytes.__new__(CID, _PREFIX_DAG_CBOR + hashlib.sha256(data).digest())


def cid_for_raw(data: bytes) -> CID:
    """CIDv1 raw sha2-256 (blobs)."""
    return bytes.__new__(CID, _PREFIX_RAW + hashlib.sha256(data).digest())


def cid_for_raw_digest(digest: bytes) -> CID:
    """CIDv1 raw from a sha256 digest computed incrementally (streamed blobs)."""
    if len(digest) != 32:
        raise ValueError("sha256 digest must be 32 bytes")
    return bytes.__new__(CID, _PREFIX_RAW + digest)


def parse_cid(s: str) -> CID:
    return CID.parse(s)
