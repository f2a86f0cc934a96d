"""Repo CAR export: the current repo as a CAR v1 stream, from one read snapshot.

No HTTP types, no SQL (store.*). Order: commit, then each MST node followed by its
entries' records and subtrees (depth-first, key order), so a reader can verify as it
streams. Tricky bits: nodes are point lookups, records stream from the record index in
the same key order (one joined query per collection) and are checked against the nodes'
entries; `aiter_export` runs the generator on a worker thread (services.repo.thread_stream) and
stops it when the consumer goes away. Also home of RepoIOError (shared with repo_io).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, BinaryIO, Callable, Iterator, NoReturn

from ...core import car as car_core
from ...core.cid import CID
from ...core.mst.codec import decode_node, node_links
from ...store import blocks as blocks_db
from ...store import records as records_db
from ...store import repo as repo_db
from ...store.db import Database
from .thread_stream import aiter_thread

Progress = Callable[[str, int], None]  # (phase, items done since last call)


class RepoIOError(Exception):
    """Import/export/verify failed; the message is one line naming the problem."""


def no_progress(phase: str, n: int) -> None:
    pass


class _Varints(dict):
    """`varints[n]` is varint(n), memoised for one export: block sizes repeat (~1.7k distinct in
    a 100k-record repo), so nearly every lookup is a hit, as fast as a prebuilt table, and the
    memo goes away with the export (no 16k-entry table held by an idle server)."""

    def __missing__(self, n: int) -> bytes:
        value = self[n] = car_core.encode_varint(n)
        return value


def _links(data: bytes, cid: bytes) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
    """(l, [(t or b"", v)...]) of a stored node: the regex fast path, else a full decode."""
    found = node_links(data)
    if found is not None:
        return found
    node = decode_node(data, CID(cid))
    return (bytes(node.subs[0]) if node.subs[0] is not None else None,
            [(bytes(t) if t is not None else b"", bytes(v)) for t, v in zip(node.subs[1:], node.vals)])


def _mismatch(conn: Any, entry: tuple[bytes | None, bytes | None] | None, want: bytes, at: int) -> NoReturn:
    """Raise the error for the record index disagreeing with the MST at record `at`."""
    where = records_db.record_at(conn, at) if entry is not None else None
    where_s = f"{where[0]}/{where[1]}" if where else "the end of the index"
    if entry is not None and entry[1] is None:
        raise RepoIOError(f"stored repo is missing record {where_s} ({CID(want)}); run `tinypds verify`")
    raise RepoIOError(f"the record index disagrees with the MST at {where_s}; run `tinypds verify`")


def iter_export(db: Database, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
    """The current repo as CAR v1 chunks, from one read snapshot (sync generator).

    Order: commit, then the MST depth first (node, left subtree, then per entry: its
    record, its right subtree). Nodes are point lookups; records stream from the record
    index in the same key order (one joined query per collection) and each is checked
    against its node's entry, so a disagreeing index is an error, never a wrong CAR."""
    with db.reader() as conn:
        root = repo_db.get_root(conn)
        if root is None:
            raise RepoIOError("this data directory holds no repo yet (run `tinypds import FILE.car` or create an account)")
        commit = blocks_db.get_block(conn, root.commit_cid)
        if commit is None:
            raise RepoIOError(f"stored repo is missing its commit block {root.commit_cid}; run `tinypds verify`")
        varint = _Varints()
        parts = [car_core.encode_header([root.commit_cid]), varint[len(root.commit_cid) + len(commit)],
                 bytes(root.commit_cid), commit]
        append = parts.append
        size = 0
        read_block = blocks_db.block_reader(conn)
        records = records_db.iter_record_blocks_in_mst_order(conn)
        pushed = 0  # entries of every node opened so far (less those still on the stack: records taken)
        shared = records_db.shared_record_cids(conn)  # memory grows with shared CIDs only, not the repo
        sent: set[bytes] = set()
        stack: list[Iterator[tuple[bytes, bytes]]] = []  # per open node: its entries still to visit
        cid: bytes | None = bytes(root.data_cid)
        while True:
            while cid:  # descend: emit the node, then its left subtree first
                data = read_block(cid)
                if data is None:
                    raise RepoIOError(f"stored repo is missing MST node {CID(cid)}; run `tinypds verify`")
                n = len(data)
                append(varint[len(cid) + n])
                append(cid)
                append(data)
                size += n
                found = node_links(data)
                left, entries = found if found is not None else _links(data, cid)
                pushed += len(entries)
                stack.append(iter(entries))
                cid = left
            if size >= chunk_size:
                yield b"".join(parts)
                parts.clear()
                size = 0
            if not stack:
                break
            # the open node's remaining entries, in one loop until one has a right subtree
            # (most entries have none: a leaf's whole run goes without the outer loop's checks)
            for cid, want in stack[-1]:  # cid: the entry's right subtree (b"" if none)
                entry = next(records, None)
                if entry is None or entry[0] != want:
                    _mismatch(conn, entry, want, pushed - sum(len(list(it)) for it in stack) - 1)
                if shared and want in shared:  # one block serves several keys: a CAR holds each block once
                    if want in sent:
                        if cid:
                            break
                        continue
                    sent.add(want)
                data = entry[1]
                n = len(data)
                append(varint[len(want) + n])
                append(want)
                append(data)
                size += n
                if cid:
                    break  # descend into it; this node's later entries stay on the stack
            else:
                stack.pop()
                cid = None
        if next(records, None) is not None:
            raise RepoIOError("the record index holds records that are not in the MST; run `tinypds verify`")
        yield b"".join(parts)


def export_car(db: Database, out: BinaryIO, progress: Progress | None = None) -> int:
    """Write the repo CAR to a binary stream; returns bytes written."""
    progress = progress or no_progress
    total = 0
    for chunk in iter_export(db):
        out.write(chunk)
        total += len(chunk)
        progress("bytes", len(chunk))
    return total


def aiter_export(db: Database, queue_size: int = 4, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
    """iter_export on a worker thread, handed to the event loop through a bounded queue.

    If the consumer stops early (client went away), the producer notices within ~0.2 s,
    stops reading and closes its snapshot."""
    return aiter_thread(lambda: iter_export(db, chunk_size), queue_size)
