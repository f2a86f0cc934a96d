"""CAR v1: streaming reader (push parser) and writer.

Pure: the parser is fed bytes (`CarParser.feed`) and hands back verified blocks, so
callers can drive it from a file, an HTTP body or a socket with bounded memory.
Layout: varint(len) + DAG-CBOR header {version: 1, roots: [CID...]}, then blocks
varint(len) | binary CID | data. Tricky bits: every block's sha2-256 is checked
against its CID (unless verify=False); a block length is capped (MAX_BLOCK) so a
corrupt varint cannot make us allocate gigabytes; truncation is an error on close().
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO, Iterable, Iterator

from . import dagcbor
from .cid import CID, SHA2_256, cid_length

MAX_HEADER = 64 * 1024
MAX_BLOCK = 4 * 1024 * 1024  # records are far smaller; MST nodes too
_FAST_CODECS = (0x71, 0x55)  # dag-cbor, raw: one-byte codec varints


class CarError(ValueError):
    """The CAR stream is malformed; the message names the problem."""


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _try_varint(buf: bytearray | bytes, pos: int) -> tuple[int, int] | None:
    """(value, new_pos) or None if the buffer ends inside the varint."""
    value = 0
    shift = 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CarError("varint too long")
    return None


def encode_header(roots: Iterable[CID]) -> bytes:
    header = dagcbor.encode({"version": 1, "roots": [CID(r) for r in roots]})
    return encode_varint(len(header)) + header


def encode_block(cid: CID, data: bytes) -> bytes:
    return encode_varint(len(cid) + len(data)) + bytes(cid) + data


def write_car(roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]], chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """Yield a CAR file in chunks of roughly chunk_size bytes (streaming)."""
    buf = bytearray(encode_header(roots))
    for cid, data in blocks:
        buf += encode_varint(len(cid) + len(data))
        buf += cid
        buf += data
        if len(buf) >= chunk_size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


class CarParser:
    """Push parser. feed(chunk) -> list of (cid, data); close() checks for truncation."""

    def __init__(self, verify: bool = True, max_block: int = MAX_BLOCK):
        self.verify = verify
        self.max_block = max_block
        self.roots: list[CID] | None = None
        self.blocks_read = 0
        self.bytes_read = 0
        self._buf = bytearray()

    @property
    def header_done(self) -> bool:
        return self.roots is not None

    def feed(self, chunk: bytes) -> list[tuple[CID, bytes]]:
        self._buf += chunk
        self.bytes_read += len(chunk)
        out: list[tuple[CID, bytes]] = []
        buf = self._buf
        pos = 0
        if self.roots is None:
            r = _try_varint(buf, 0)
            if r is None:
                return out
            hlen, p = r
            if hlen == 0 or hlen > MAX_HEADER:
                raise CarError(f"CAR header length {hlen} is invalid")
            if len(buf) < p + hlen:
                return out
            self.roots = self._parse_header(bytes(buf[p : p + hlen]))
            pos = p + hlen
        # parse from an immutable copy (slices are then one copy each), but only once it holds
        # a whole block: small chunks of a big block keep accumulating in the bytearray
        r = _try_varint(buf, pos)
        if r is None or (0 < r[0] <= self.max_block and len(buf) < r[1] + r[0]):
            if pos:
                del buf[:pos]
            return out
        buf = bytes(buf)
        n = len(buf)
        verify = self.verify
        sha256 = hashlib.sha256
        new_cid = bytes.__new__
        while pos < n:
            b0 = buf[pos]
            if b0 < 0x80:  # one- and two-byte lengths inline (nearly every block)
                blen, p = b0, pos + 1
            elif pos + 1 < n and buf[pos + 1] < 0x80 and buf[pos + 1]:
                blen, p = (b0 & 0x7F) | (buf[pos + 1] << 7), pos + 2
            else:
                r = _try_varint(buf, pos)
                if r is None:
                    break
                blen, p = r
            end = p + blen
            # fast path: a 36-byte CIDv1 sha2-256 (dag-cbor or raw), the shape atproto writes
            if 36 < blen <= self.max_block and end <= n and buf[p] == 1 and buf[p + 2] == 0x12 and buf[p + 3] == 0x20 and buf[p + 1] in _FAST_CODECS:
                data = buf[p + 36 : end]
                if verify and sha256(data).digest() != buf[p + 4 : p + 36]:
                    raise CarError(f"block {CID(buf[p : p + 36])} does not match its hash (corrupt data)")
                out.append((new_cid(CID, buf[p : p + 36]), data))
                self.blocks_read += 1
                pos = end
                continue
            if blen == 0:
                raise CarError(f"empty block section at byte {self.bytes_read - n + pos}")
            if blen > self.max_block:
                raise CarError(f"block of {blen} bytes exceeds the {self.max_block}-byte limit (corrupt length?)")
            if n < p + blen:
                break
            section = buf[p : p + blen]
            try:
                clen = cid_length(section)
            except ValueError as exc:
                raise CarError(f"bad CID in block {self.blocks_read}: {exc}") from exc
            cid = CID(section[:clen])
            data = section[clen:]
            if self.verify:
                if cid.hash_code != SHA2_256:
                    raise CarError(f"block {cid} uses an unsupported hash function")
                if not cid.matches(data):
                    raise CarError(f"block {cid} does not match its hash (corrupt data)")
            out.append((cid, data))
            self.blocks_read += 1
            pos = p + blen
        self._buf = bytearray(buf[pos:])
        return out

    def close(self) -> None:
        if self.roots is None:
            raise CarError("truncated CAR: no complete header")
        if self._buf:
            raise CarError(f"truncated CAR: {len(self._buf)} trailing bytes do not form a complete block")

    @staticmethod
    def _parse_header(raw: bytes) -> list[CID]:
        try:
            header = dagcbor.decode(raw, strict=False)
        except dagcbor.DagCborError as exc:
            raise CarError(f"CAR header is not valid CBOR: {exc}") from exc
        if not isinstance(header, dict) or header.get("version") != 1:
            raise CarError("not a CAR v1 file (header version must be 1)")
        roots = header.get("roots")
        if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
            raise CarError("CAR header roots must be a list of CIDs")
        return list(roots)


def read_car_batches(fh: BinaryIO, verify: bool = True, chunk_size: int = 256 * 1024) -> tuple[list[CID], Iterator[list[tuple[CID, bytes]]]]:
    """Read the header from a binary stream, then lazily yield the blocks of each chunk read
    as one list (bulk loaders handle a list at a time; memory stays one chunk)."""
    parser = CarParser(verify=verify)
    pending: list[tuple[CID, bytes]] = []
    while parser.roots is None:
        chunk = fh.read(chunk_size)
        if not chunk:
            parser.close()
        pending.extend(parser.feed(chunk))

    def batches() -> Iterator[list[tuple[CID, bytes]]]:
        if pending:
            yield pending
        while True:
            chunk = fh.read(chunk_size)
            if not chunk:
                parser.close()
                return
            found = parser.feed(chunk)
            if found:
                yield found

    return list(parser.roots), batches()


def read_car_stream(fh: BinaryIO, verify: bool = True, chunk_size: int = 256 * 1024) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Read the header from a binary stream, then lazily yield blocks."""
    roots, batches = read_car_batches(fh, verify, chunk_size)

    def blocks() -> Iterator[tuple[CID, bytes]]:
        for batch in batches:
            yield from batch

    return roots, blocks()


def read_car_bytes(data: bytes, verify: bool = True) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    parser = CarParser(verify=verify)
    blocks = parser.feed(data)
    parser.close()
    return list(parser.roots or []), blocks
