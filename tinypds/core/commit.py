"""Repo commits as data: build a signed v3 commit from record writes, verify commits and diffs.

Owns RecordWrite/RecordOp/CommitData, `build_commit`, `build_commit_from_root`,
`verify_commit` and the sync v1.1 consumer check `verify_inductive`. Pure: signing and
verification are injected callables; must not import tinypds.store or services.
Tricky bits: the signature covers the DAG-CBOR of the commit *without* `sig`;
`relevant_blocks` = new blocks + covering proofs of every written key on the new tree, so
a consumer can invert the ops and reach `prev_data` with nothing else; `removed` lists
candidates only (a record CID may still be used by another key: the store must check).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .blocks import BlockSource, MemoryBlockStore, MissingBlockError
from .cid import CID, cid_for_dagcbor
from .dagcbor import DagCborError, decode, encode, iter_blob_refs
from .mst import MST, MstError, mst_diff
from .mst.proof import proof_blocks_for_keys

ACTIONS = ("create", "update", "delete")


class CommitError(ValueError):
    """A commit cannot be built or does not verify."""


class InvalidWriteError(CommitError):
    """A write is malformed (action, path, missing or mismatched record block, duplicate path)."""


class RecordAlreadyExistsError(CommitError):
    """A create targets a path that already holds a record."""


class RecordNotFoundError(CommitError):
    """An update or delete targets a path with no record."""


class InvalidCommitError(CommitError):
    """A commit block has a bad shape, version or signature."""


class InductiveProofError(CommitError):
    """Inverting a commit's ops on its partial tree does not give the previous data root."""


@dataclass(frozen=True)
class RecordWrite:
    action: str  # "create" | "update" | "delete"
    collection: str
    rkey: str
    cid: CID | None = None
    block: bytes | None = None  # the record's DAG-CBOR, already encoded by the caller

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True)
class RecordOp:
    action: str
    path: str
    cid: CID | None
    prev: CID | None


class PrevCommit(NamedTuple):
    cid: CID
    data: CID
    rev: str


@dataclass(frozen=True)
class CommitData:
    did: str
    cid: CID
    rev: str
    since: str | None
    prev_data: CID | None
    data: CID
    commit_block: bytes
    new_blocks: dict[CID, bytes]
    removed: frozenset[CID]
    ops: tuple[RecordOp, ...]
    relevant_blocks: dict[CID, bytes]
    blobs: tuple[CID, ...]


def _sign_commit(did: str, data: CID, rev: str, sign: Callable[[bytes], bytes]) -> tuple[CID, bytes]:
    unsigned = {"did": did, "version": 3, "data": data, "rev": rev, "prev": None}
    sig = sign(encode(unsigned))
    if type(sig) is not bytes or len(sig) != 64:
        raise CommitError("sign() must return a 64-byte compact signature")
    block = encode({**unsigned, "sig": sig})
    return cid_for_dagcbor(block), block


def build_commit_from_root(did: str, data_root: CID, rev: str, sign: Callable[[bytes], bytes]) -> tuple[CID, bytes]:
    """A signed commit over an existing tree (imports, key rotation re-signs)."""
    return _sign_commit(did, CID(data_root), rev, sign)


def _blob_cids(blocks: Iterable[bytes]) -> tuple[CID, ...]:
    seen: dict[CID, None] = {}
    for block in blocks:
        try:
            record = decode(block, strict=False)
        except DagCborError:
            continue
        for cid, _mime, _size in iter_blob_refs(record):
            seen[cid] = None
    return tuple(seen)


def build_commit(
    source: BlockSource,
    did: str,
    prev: tuple[CID, CID, str] | None,
    writes: Sequence[RecordWrite],
    rev: str,
    sign: Callable[[bytes], bytes],
    blobs: Iterable[CID] | None = None,
) -> CommitData:
    """Apply `writes` to the tree of `prev` (commit_cid, data_root, rev) and sign the result.

    Swap checks (swapRecord/swapCommit) are the caller's. `blobs` defaults to the blob
    refs found in the new record blocks.
    """
    if prev is not None:
        prev = PrevCommit(CID(prev[0]), CID(prev[1]), prev[2])
        if rev <= prev.rev:
            raise CommitError(f"rev {rev} is not after the previous rev {prev.rev}")
        old = MST.load(source, prev.data)
    else:
        old = MST.empty(source)
    tree = old
    ops: list[RecordOp] = []
    records: dict[CID, bytes] = {}
    seen: set[str] = set()
    for w in writes:
        path = w.path
        if w.action not in ACTIONS:
            raise InvalidWriteError(f"unknown write action {w.action!r} for {path}")
        if path in seen:
            raise InvalidWriteError(f"more than one write to {path} in one commit")
        seen.add(path)
        try:
            existing = tree.get(path)
        except MstError as exc:
            raise InvalidWriteError(f"invalid record path {path!r}: {exc}") from None
        if w.action == "delete":
            if existing is None:
                raise RecordNotFoundError(f"cannot delete missing record {path}")
            tree = tree.delete(path)
            ops.append(RecordOp("delete", path, None, existing))
            continue
        if w.cid is None or w.block is None:
            raise InvalidWriteError(f"{w.action} of {path} needs the record cid and block")
        cid = CID(w.cid)
        if not cid.matches(w.block):
            raise InvalidWriteError(f"record block for {path} does not match cid {cid}")
        if w.action == "create" and existing is not None:
            raise RecordAlreadyExistsError(f"record already exists: {path}")
        if w.action == "update" and existing is None:
            raise RecordNotFoundError(f"cannot update missing record {path}")
        try:
            tree = tree.put(path, cid)
        except MstError as exc:
            raise InvalidWriteError(f"invalid record path {path!r}: {exc}") from None
        records[cid] = bytes(w.block)
        ops.append(RecordOp(w.action, path, cid, existing))

    data = tree.root_cid()
    diff = mst_diff(old if prev is not None else None, tree)
    commit_cid, commit_block = _sign_commit(did, data, rev, sign)

    new_blocks: dict[CID, bytes] = {commit_cid: commit_block}
    new_blocks.update(diff.new_nodes)
    new_blocks.update(records)

    removed = set(diff.removed_node_cids)
    removed.update(op.prev for op in ops if op.prev is not None)
    if prev is not None:
        removed.add(prev.cid)
    removed.difference_update(new_blocks)

    relevant = dict(new_blocks)
    for cid, block in proof_blocks_for_keys(tree, [op.path for op in ops]).items():
        relevant.setdefault(cid, block)

    return CommitData(
        did=did,
        cid=commit_cid,
        rev=rev,
        since=prev.rev if prev is not None else None,
        prev_data=prev.data if prev is not None else None,
        data=data,
        commit_block=commit_block,
        new_blocks=new_blocks,
        removed=frozenset(removed),
        ops=tuple(ops),
        relevant_blocks=relevant,
        blobs=tuple(blobs) if blobs is not None else _blob_cids(records.values()),
    )


def verify_commit(commit_bytes: bytes, verify: Callable[[bytes, bytes], bool]) -> dict:
    """Decode a commit block strictly, check its v3 shape and signature; returns the commit."""
    try:
        obj = decode(commit_bytes)
    except DagCborError as exc:
        raise InvalidCommitError(f"commit is not valid DAG-CBOR: {exc}") from None
    if type(obj) is not dict:
        raise InvalidCommitError("commit must be a map")
    if obj.get("version") != 3 or type(obj.get("version")) is not int:
        raise InvalidCommitError(f"unsupported commit version {obj.get('version')!r}")
    did = obj.get("did")
    if type(did) is not str or not did.startswith("did:"):
        raise InvalidCommitError("commit did must be a DID string")
    if type(obj.get("data")) is not CID:
        raise InvalidCommitError("commit data must be a CID link")
    if type(obj.get("rev")) is not str:
        raise InvalidCommitError("commit rev must be a string")
    if "prev" in obj and obj["prev"] is not None and type(obj["prev"]) is not CID:
        raise InvalidCommitError("commit prev must be null or a CID link")
    sig = obj.get("sig")
    if type(sig) is not bytes:
        raise InvalidCommitError("commit sig must be bytes")
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    if not verify(encode(unsigned), sig):
        raise InvalidCommitError("commit signature does not verify")
    return obj


def _op_fields(op: Any) -> tuple[str, str, CID | None, CID | None]:
    if isinstance(op, Mapping):
        return op.get("action"), op.get("path"), op.get("cid"), op.get("prev")
    return op.action, op.path, op.cid, op.prev


EMPTY_TREE_ROOT = MST.empty(MemoryBlockStore()).root_cid()


def verify_inductive(new_root: CID, ops: Sequence[Any], prev_data: CID | None, blocks: BlockSource) -> None:
    """Check (sync v1.1) that undoing `ops` on the tree at `new_root`, reading only `blocks`,
    gives `prev_data` (None = the empty tree). Ops are RecordOp or firehose op dicts."""
    tree = MST.load(blocks, new_root, check=True)
    try:
        for op in reversed(ops):
            action, path, cid, prev = _op_fields(op)
            current = tree.get(path)
            if action == "create":
                if cid is None or prev is not None or current != cid:
                    raise InductiveProofError(f"create of {path}: tree holds {current}, op says {cid}")
                tree = tree.delete(path)
            elif action == "update":
                if cid is None or prev is None or current != cid:
                    raise InductiveProofError(f"update of {path}: tree holds {current}, op says {cid}")
                tree = tree.put(path, prev)
            elif action == "delete":
                if cid is not None or prev is None or current is not None:
                    raise InductiveProofError(f"delete of {path}: tree still holds {current} or op is malformed")
                tree = tree.put(path, prev)
            else:
                raise InductiveProofError(f"unknown op action {action!r}")
        got = tree.root_cid()
    except MissingBlockError as exc:
        raise InductiveProofError(f"proof is incomplete: {exc}") from None
    except (MstError, KeyError, TypeError) as exc:
        raise InductiveProofError(f"cannot invert ops: {exc}") from None
    expected = EMPTY_TREE_ROOT if prev_data is None else prev_data
    if got != expected:
        raise InductiveProofError(f"inverted tree root {got} does not match prevData {expected}")


def invert_and_check(commit: CommitData) -> None:
    """verify_inductive over a CommitData's own relevant_blocks (what a firehose consumer sees)."""
    verify_inductive(commit.data, commit.ops, commit.prev_data, MemoryBlockStore(commit.relevant_blocks))
