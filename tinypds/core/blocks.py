"""Block sources and sinks: the three-method contract the MST and commits read through.

Owns `BlockSource` (get_block), `MemoryBlockStore`, `OverlayBlocks` and
`MissingBlockError`. Pure: must not import tinypds.store (the SQLite block table
implements the same protocol there). Tricky bits: a source never verifies hashes
(callers that read untrusted blocks do, see mst.verify); `get_block` returns None
for a missing block and only the MST layer turns that into MissingBlockError.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Protocol, runtime_checkable

from .cid import CID


class MissingBlockError(KeyError):
    """A block needed to read a structure is not in the source."""

    def __init__(self, cid: CID, what: str = "block"):
        super().__init__(f"missing {what}: {cid}")
        self.cid = cid
        self.what = what

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@runtime_checkable
class BlockSource(Protocol):
    def get_block(self, cid: CID) -> bytes | None:
        """Bytes of the block, or None if this source does not hold it."""


@runtime_checkable
class BlockSink(Protocol):
    def put_block(self, cid: CID, data: bytes) -> None:
        """Store a block; storing the same block twice is harmless."""


class MemoryBlockStore:
    """A dict-backed block store (tests, proofs, firehose slices)."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: Mapping[CID, bytes] | Iterable[tuple[CID, bytes]] | None = None):
        self._blocks: dict[CID, bytes] = {}
        if blocks is not None:
            items = blocks.items() if isinstance(blocks, Mapping) else blocks
            for cid, data in items:
                self._blocks[CID(cid)] = bytes(data)

    def get_block(self, cid: CID) -> bytes | None:
        return self._blocks.get(cid)

    def put_block(self, cid: CID, data: bytes) -> None:
        self._blocks[cid] = data

    def has(self, cid: CID) -> bool:
        return cid in self._blocks

    def __contains__(self, cid: object) -> bool:
        return cid in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def items(self) -> Iterator[tuple[CID, bytes]]:
        return iter(list(self._blocks.items()))

    def cids(self) -> set[CID]:
        return set(self._blocks)


class OverlayBlocks:
    """New blocks in memory on top of a read-only base; reads look at the new blocks first."""

    __slots__ = ("base", "new")

    def __init__(self, base: BlockSource):
        self.base = base
        self.new: dict[CID, bytes] = {}

    def get_block(self, cid: CID) -> bytes | None:
        data = self.new.get(cid)
        if data is None:
            data = self.base.get_block(cid)
        return data

    def put_block(self, cid: CID, data: bytes) -> None:
        self.new[cid] = data

    def has(self, cid: CID) -> bool:
        return self.get_block(cid) is not None
