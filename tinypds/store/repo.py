"""Persist a commit: new blocks, record index, removed blocks, repo root and event, in ONE transaction.

Only SQL plus reading the CommitData (core.commit) it is given; no MST logic here.
Call `apply_commit` inside `Database.write`. Tricky bits: blocks are inserted before any
delete (a commit may re-add a block it removes); a removed block is deleted only if no
current record still points at it (two records may share a CID); the previous commit
block is dropped too, so the blocks table holds exactly the current repo.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from ..core import dagcbor
from ..core.cid import CID
from . import blocks as blocks_db
from . import events as events_db
from . import records as records_db

Conn = Any


class RepoRoot(NamedTuple):
    did: str
    commit_cid: CID
    rev: str
    data_cid: CID


def get_root(conn: Conn, did: str | None = None) -> RepoRoot | None:
    if did is None:
        row = conn.execute("SELECT did, commit_cid, rev, data_cid FROM repo_root LIMIT 1").fetchone()
    else:
        row = conn.execute("SELECT did, commit_cid, rev, data_cid FROM repo_root WHERE did = ?", (did,)).fetchone()
    return RepoRoot(row[0], CID(row[1]), row[2], CID(row[3])) if row else None


def set_root(conn: Conn, did: str, commit_cid: bytes, rev: str, data_cid: bytes) -> None:
    conn.execute(
        "INSERT INTO repo_root (did, commit_cid, rev, data_cid) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (did) DO UPDATE SET commit_cid = excluded.commit_cid, rev = excluded.rev, data_cid = excluded.data_cid",
        (did, bytes(commit_cid), rev, bytes(data_cid)),
    )


def delete_root(conn: Conn, did: str) -> None:
    conn.execute("DELETE FROM repo_root WHERE did = ?", (did,))


def split_path(path: str) -> tuple[str, str]:
    collection, sep, rkey = path.partition("/")
    if not sep or not collection or not rkey or "/" in rkey:
        raise ValueError(f"invalid record path {path!r}")
    return collection, rkey


# A blob ref as canonical DAG-CBOR: {ref: cid, size: n, $type: "blob", mimeType: ...} (keys by
# length, then bytewise). Each match holds one "mimeType"; when every occurrence of it in a
# record is inside a match, the matches are all the record's blob refs and the decode is
# skipped (~1 us instead of ~40 us; imports scan ~70k such records per 1M). Anything else
# (the legacy {cid, mimeType} shape, other key orders, the word in text) takes the decode.
_BLOB_REF = re.compile(
    rb"\xa4\x63ref\xd8\x2a\x58\x25\x00(\x01\x55\x12\x20.{32})\x64size(?:[\x00-\x17]|\x18.|\x19..|\x1a....|\x1b.{8})"
    rb"\x65\$type\x64blob\x68mimeType", re.S)


def blob_refs(record_data: bytes) -> list[CID]:
    """CIDs of the blobs a record (DAG-CBOR bytes) references, deduplicated and sorted."""
    if b"mimeType" not in record_data:  # both blob ref shapes carry mimeType: skip the decode
        return []
    found = _BLOB_REF.findall(record_data)
    if len(found) == record_data.count(b"mimeType"):
        return sorted({bytes.__new__(CID, c) for c in found})
    try:
        obj = dagcbor.decode(record_data, strict=False)
    except dagcbor.DagCborError:
        return []
    return sorted({CID(c) for c, _mime, _size in dagcbor.iter_blob_refs(obj)})


def _items(blocks: Any) -> list[tuple[bytes, bytes]]:
    if blocks is None:
        return []
    if hasattr(blocks, "items"):
        return list(blocks.items())
    return list(blocks)


def apply_commit(conn: Conn, commit: Any, event_body: bytes | None, time: str, event_type: str = "#commit") -> int | None:
    """Persist a CommitData (call inside a write transaction). Returns the event seq (or None)."""
    prev = get_root(conn, commit.did)
    new_blocks = dict(_items(commit.new_blocks))
    new_blocks[commit.cid] = commit.commit_block
    blocks_db.put_blocks(conn, new_blocks.items(), commit.rev)

    for op in commit.ops:
        collection, rkey = split_path(op.path)
        if op.action == "delete":
            records_db.delete_record(conn, collection, rkey)
            continue
        records_db.put_record(conn, collection, rkey, op.cid, commit.rev)
        data = new_blocks.get(op.cid)
        if data is None:
            data = blocks_db.get_block(conn, op.cid)
        records_db.set_record_blobs(conn, collection, rkey, blob_refs(data) if data is not None else [])

    removed = {bytes(c) for c in (commit.removed or ())}
    if prev is not None and prev.commit_cid != commit.cid:
        removed.add(bytes(prev.commit_cid))
    # only record blocks can be shared (by two keys); MST nodes and commits never are
    record_cids = {bytes(op.prev) for op in commit.ops if getattr(op, "prev", None) is not None}
    garbage = [c for c in removed if c not in new_blocks
               and not (c in record_cids and records_db.cid_in_use(conn, c))]
    if garbage:
        blocks_db.delete_blocks(conn, garbage)

    set_root(conn, commit.did, commit.cid, commit.rev, commit.data)
    if event_body is None:
        return None
    return events_db.append_event(conn, event_type, commit.did, time, event_body)
