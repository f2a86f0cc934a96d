"""Firehose (com.atproto.sync.subscribeRepos) event bodies and frames. Pure.

Builds the `#commit`, `#sync`, `#identity` and `#account` bodies (dicts, then DAG-CBOR)
from a CommitData or plain values; the store keeps bodies WITHOUT `seq`, and `frame()`
adds seq when an event is sent. Tricky bits: a frame is two concatenated DAG-CBOR values
(header {op: 1, t: "#commit"} then the body); error frames are {op: -1} + {error, message};
`#commit.blocks` is a CAR slice whose first root is the commit and which holds the commit
block plus every block a consumer needs to check the change on its own (sync v1.1).
Must not import tinypds.store / services.
"""

from __future__ import annotations

from typing import Any, Iterable

from . import dagcbor
from .car import write_car
from .cid import CID

COMMIT = "#commit"
SYNC = "#sync"
IDENTITY = "#identity"
ACCOUNT = "#account"
INFO = "#info"


def car_slice(root: CID, blocks: Iterable[tuple[CID, bytes]]) -> bytes:
    """A small in-memory CAR (roots=[root]) for event bodies."""
    return b"".join(write_car([root], blocks, chunk_size=1 << 30))


def _op(op: Any) -> dict:
    out: dict[str, Any] = {"action": op.action, "path": op.path, "cid": op.cid}
    if getattr(op, "prev", None) is not None:
        out["prev"] = op.prev
    return out


def commit_body(commit: Any, time: str) -> dict:
    """The #commit body (without seq) for a CommitData."""
    blocks: dict[CID, bytes] = {commit.cid: commit.commit_block}
    for cid, data in _block_items(commit.relevant_blocks):
        blocks.setdefault(cid, data)
    body: dict[str, Any] = {
        "repo": commit.did,
        "commit": commit.cid,
        "rev": commit.rev,
        "since": commit.since,
        "blocks": car_slice(commit.cid, blocks.items()),
        "ops": [_op(op) for op in commit.ops],
        "blobs": [CID(b) for b in (getattr(commit, "blobs", None) or [])],
        "rebase": False,
        "tooBig": False,
        "time": time,
    }
    if commit.prev_data is not None:
        body["prevData"] = commit.prev_data
    return body


def _block_items(blocks: Any) -> Iterable[tuple[CID, bytes]]:
    if blocks is None:
        return ()
    if hasattr(blocks, "items"):
        return blocks.items()
    return blocks


def sync_body(did: str, commit_cid: CID, commit_block: bytes, rev: str, time: str) -> dict:
    """The #sync body: 'this is my current commit' (after an import or a recovery)."""
    return {"did": did, "blocks": car_slice(commit_cid, [(commit_cid, commit_block)]), "rev": rev, "time": time}


def identity_body(did: str, time: str, handle: str | None = None) -> dict:
    body: dict[str, Any] = {"did": did, "time": time}
    if handle is not None:
        body["handle"] = handle
    return body


def account_body(did: str, time: str, active: bool, status: str | None = None) -> dict:
    """#account: active flag, and when inactive a status (takendown|suspended|deleted|deactivated|...)."""
    body: dict[str, Any] = {"did": did, "time": time, "active": bool(active)}
    if not active and status is not None:
        body["status"] = status
    return body


def encode_body(body: dict) -> bytes:
    return dagcbor.encode(body)


def frame(seq: int, type: str, body: bytes | dict) -> bytes:
    """One websocket binary message: header {op: 1, t} + body with `seq` set."""
    obj = dagcbor.decode(body, strict=False) if isinstance(body, (bytes, bytearray)) else dict(body)
    obj["seq"] = seq
    return dagcbor.encode({"op": 1, "t": type}) + dagcbor.encode(obj)


def info_frame(name: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"name": name}
    if message is not None:
        body["message"] = message
    return dagcbor.encode({"op": 1, "t": INFO}) + dagcbor.encode(body)


def error_frame(error: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if message is not None:
        body["message"] = message
    return dagcbor.encode({"op": -1}) + dagcbor.encode(body)


def parse_frame(data: bytes) -> tuple[dict, dict]:
    """(header, body) of one frame, both decoded strictly (consumers, tests, benchmarks).

    The header is a tiny map, so its end is found by trying the few possible lengths."""
    for end in range(1, min(len(data), 64)):
        try:
            header = dagcbor.decode(data[:end])
        except (dagcbor.DagCborError, ValueError):
            continue
        if isinstance(header, dict) and "op" in header:
            return header, dagcbor.decode(data[end:])
    raise dagcbor.DagCborError("frame has no valid header")
