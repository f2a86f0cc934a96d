"""RecordService: the write-preparation layer between the repo API handlers and RepoService.

Turns lexicon-shaped requests (JSON record values, `validate`, swaps) into RepoService writes
and shapes results back; reads records for getRecord/listRecords. No HTTP types, no SQL.
Tricky bits: `validate` is tri-state (True: the type must be known and valid; False: skip;
None: validate known types, unknown ones pass as "unknown"); `$type` is filled in from the
collection when absent and must equal it otherwise; a singleton type (record key
`literal:self`) gets that key by default, other types a TID (chosen by RepoService);
deleting an absent record without swapRecord, putting an unchanged record and an empty
applyWrites are no-ops without a commit (the reference PDS likewise skips the first two).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import errors
from ...core import dagcbor
from ...core import syntax as sx
from ...core.cid import CID, cid_for_dagcbor
from ...core.lexicon import LexiconCatalog, LexiconValidationError
from ...lexicons import default_catalog
from .writes import MAX_WRITES, MUST_NOT_EXIST, CommitResult, RecordView, RepoService, Write

VALID = "valid"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class WriteOp:
    """One requested write, as it arrives (record in JSON form, CIDs as strings).

    swap_record: None = no check; MUST_NOT_EXIST = the record must be absent; else a CID string.
    """

    action: str  # create | update | delete
    collection: str
    rkey: str | None = None
    value: Any = None
    swap_record: Any = None


@dataclass(frozen=True)
class BlobRef:
    cid: CID
    mime_type: str | None
    size: int | None


@dataclass(frozen=True)
class PreparedWrite:
    write: Write
    validation_status: str | None  # "valid" | "unknown" | None (validation skipped, or delete)
    blobs: tuple[BlobRef, ...] = ()


@dataclass(frozen=True)
class WriteOutcome:
    action: str  # create | update | delete (update may become create for putRecord)
    uri: str
    cid: str | None
    validation_status: str | None


@dataclass(frozen=True)
class CommitOutcome:
    commit_cid: str | None  # None: nothing was written (deleting an absent record)
    rev: str | None
    results: list[WriteOutcome]

    def commit_meta(self) -> dict[str, str] | None:
        return None if self.commit_cid is None else {"cid": self.commit_cid, "rev": self.rev}


def parse_cid(value: Any, what: str) -> CID:
    """A CID string from a request, or InvalidRequest naming the field."""
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{what} must be a CID string")
    try:
        return CID.parse(value)
    except ValueError:
        raise errors.InvalidRequest(f"{what} is not a valid CID: {value[:100]}") from None


def parse_collection(value: Any) -> str:
    try:
        return sx.parse_nsid(value)
    except sx.InvalidSyntax:
        raise errors.InvalidRequest(f"Invalid collection NSID: {str(value)[:300]}") from None


def parse_rkey(value: Any) -> str:
    try:
        return sx.parse_rkey(value)
    except sx.InvalidSyntax:
        raise errors.InvalidRequest(f"Invalid record key: {str(value)[:600]}") from None


class RecordService:
    """Records of the one account, validated against `catalog` (default: the project's schemas).

    `blobs` (optional, a BlobService) lets writes refuse records that reference blobs this
    server never received.
    """

    def __init__(self, repo: RepoService, *, catalog: LexiconCatalog | None = None, blobs: Any = None):
        self.repo = repo
        self.catalog = catalog if catalog is not None else default_catalog()
        self.blobs = blobs

    @property
    def did(self) -> str:
        return self.repo.did

    def uri(self, collection: str, rkey: str) -> str:
        return f"at://{self.repo.did}/{collection}/{rkey}"

    # ---- preparation (pure apart from the catalog) -------------------------------------------
    def default_rkey(self, collection: str) -> str | None:
        """The literal key of a singleton type (e.g. "self"); None = a fresh TID."""
        if not self.catalog.has_record(collection):
            return None
        key = self.catalog.get_def(collection).get("key", "")
        return key[len("literal:"):] if key.startswith("literal:") else None

    def prepare(self, op: WriteOp, validate: bool | None = None) -> PreparedWrite:
        """Check one write and encode its record. Raises InvalidRequest naming the problem."""
        if op.action not in ("create", "update", "delete"):
            raise errors.InvalidRequest(f"Unknown write action: {op.action!r}")
        collection = parse_collection(op.collection)
        rkey = parse_rkey(op.rkey) if op.rkey is not None else None
        swap = op.swap_record
        if swap is not None and swap is not MUST_NOT_EXIST:
            swap = parse_cid(swap, "swapRecord")
        if op.action == "delete":
            if rkey is None:
                raise errors.InvalidRequest("A record key is required to delete a record")
            return PreparedWrite(Write("delete", collection, rkey, None, swap), None)
        if rkey is None:
            if op.action == "update":
                raise errors.InvalidRequest("A record key is required to update a record")
            rkey = self.default_rkey(collection)
        record, status = self.check_record(collection, op.value, rkey, validate)
        refs = tuple(BlobRef(c, m, s) for c, m, s in dagcbor.iter_blob_refs(record))
        return PreparedWrite(Write(op.action, collection, rkey, record, swap), status, refs)

    def check_record(self, collection: str, value: Any, rkey: str | None,
                     validate: bool | None) -> tuple[dict, str | None]:
        """The record in data-model form and its validationStatus (None when skipped)."""
        if type(value) is not dict:
            raise errors.InvalidRequest("Invalid record: must be an object")
        typ = value.get("$type")
        if typ is None:
            value = {"$type": collection, **value}
        elif typ != collection:
            raise errors.InvalidRequest(f"Invalid $type: expected {collection}, got {typ}")
        try:
            record = dagcbor.from_json(value)
        except dagcbor.DagCborError as exc:
            raise errors.InvalidRequest(f"Invalid record: {exc}") from None
        if validate is False:
            return record, None
        if not self.catalog.has_record(collection):
            if validate is True:
                raise errors.InvalidRequest(f"Unknown lexicon type: {collection}")
            return record, UNKNOWN
        if rkey is not None:
            self.check_rkey_type(collection, rkey)
        try:
            self.catalog.validate_record(collection, record)
        except LexiconValidationError as exc:
            raise errors.InvalidRequest(f"Invalid {collection} record: {exc}") from None
        return record, VALID

    def check_rkey_type(self, collection: str, rkey: str) -> None:
        """The schema's record-key type (tid, nsid, literal:self, any), worded like the reference PDS."""
        key = self.catalog.get_def(collection).get("key", "any")
        if key == "tid" and not sx.is_valid_tid(rkey):
            reason = f'Invalid TID string (got "{rkey}")'
        elif key == "nsid" and not sx.is_valid_nsid(rkey):
            reason = f'Invalid NSID (got "{rkey}")'
        elif key.startswith("literal:") and rkey != key[len("literal:"):]:
            reason = f'Expected "{key[len("literal:"):]}" (got "{rkey}")'
        else:
            return
        raise errors.InvalidRequest(f"Invalid record key for {collection}: {reason}")

    def check_blobs(self, prepared: list[PreparedWrite]) -> None:
        """Every referenced blob must have been uploaded here (BlobNotFound otherwise), and the
        ref must describe it truly: its mimeType and size are what the schema's limits were checked on."""
        if self.blobs is None:
            return
        for p in prepared:
            for ref in p.blobs:
                meta = self.blobs.blob_meta(ref.cid)
                if meta is None:
                    raise errors.BlobNotFound(f"Could not find blob: {ref.cid}")
                if ref.mime_type != meta.mime:
                    raise errors.InvalidRequest(
                        f"Referenced Mimetype does not match stored blob. Expected: {meta.mime}, Got: {ref.mime_type}")
                if ref.size is not None and ref.size != meta.size:
                    raise errors.InvalidRequest(
                        f"Referenced size does not match stored blob. Expected: {meta.size}, Got: {ref.size}")

    # ---- writes ---------------------------------------------------------------------------------
    def _outcome(self, result: CommitResult, prepared: list[PreparedWrite]) -> CommitOutcome:
        outs = [
            WriteOutcome(r.action, r.uri, str(r.cid) if r.cid is not None else None, p.validation_status)
            for r, p in zip(result.results, prepared)
        ]
        return CommitOutcome(str(result.commit_cid), result.rev, outs)

    async def apply_writes(self, ops: list[WriteOp], *, validate: bool | None = None,
                           swap_commit: str | None = None) -> CommitOutcome:
        """Apply up to 200 writes as ONE commit (all or nothing)."""
        if not ops:  # nothing to commit: an empty result (the reference makes an empty commit)
            return CommitOutcome(None, None, [])
        if len(ops) > MAX_WRITES:
            raise errors.InvalidRequest(f"Too many writes. Max: {MAX_WRITES}")
        swap = parse_cid(swap_commit, "swapCommit") if swap_commit is not None else None
        prepared = [self.prepare(op, validate) for op in ops]
        self.check_blobs(prepared)
        result = await self.repo.apply_writes([p.write for p in prepared], swap)
        return self._outcome(result, prepared)

    async def create(self, collection: str, record: Any, *, rkey: str | None = None,
                     validate: bool | None = None, swap_commit: str | None = None) -> CommitOutcome:
        return await self.apply_writes([WriteOp("create", collection, rkey, record)],
                                       validate=validate, swap_commit=swap_commit)

    async def put(self, collection: str, rkey: str, record: Any, *, validate: bool | None = None,
                  swap_record: Any = None, swap_commit: str | None = None) -> CommitOutcome:
        """Create or replace the record at collection/rkey (putRecord)."""
        p = self.prepare(WriteOp("update", collection, rkey, record, swap_record), validate)
        self.check_blobs([p])
        swap = parse_cid(swap_commit, "swapCommit") if swap_commit is not None else None
        w = p.write
        if swap is None and w.swap_record is not MUST_NOT_EXIST:  # unchanged record: no commit (as the reference)
            current = self.repo.get_record(w.collection, w.rkey)
            if current is not None and (w.swap_record is None or w.swap_record == current.cid):
                if current.cid == cid_for_dagcbor(dagcbor.encode(w.record)):
                    return CommitOutcome(None, None, [WriteOutcome("update", current.uri, str(current.cid), p.validation_status)])
        result = await self.repo.put_record(w.collection, w.rkey, w.record, w.swap_record, swap)
        return self._outcome(result, [p])

    async def delete(self, collection: str, rkey: str, *, swap_record: str | None = None,
                     swap_commit: str | None = None) -> CommitOutcome:
        """Delete a record; an absent one (and no swapRecord) is a no-op without a commit."""
        p = self.prepare(WriteOp("delete", collection, rkey, None, swap_record))
        swap = parse_cid(swap_commit, "swapCommit") if swap_commit is not None else None
        if p.write.swap_record is None and self.repo.get_record(p.write.collection, p.write.rkey) is None:
            if swap is not None:  # still honour swapCommit, as a write would
                root = self.repo.get_root()
                if root is None or root.commit_cid != swap:
                    raise errors.InvalidSwap(f"Commit was at {root.commit_cid if root else None}")
            return CommitOutcome(None, None, [])
        result = await self.repo.apply_writes([p.write], swap)
        return self._outcome(result, [p])

    # ---- reads ----------------------------------------------------------------------------------
    def get_record(self, collection: str, rkey: str, cid: str | None = None) -> RecordView:
        """The record, or RecordNotFound("Could not locate record: <at-uri>")."""
        collection, rkey = parse_collection(collection), parse_rkey(rkey)
        want = parse_cid(cid, "cid") if cid is not None else None
        view = self.repo.get_record(collection, rkey, want)
        if view is None:
            raise errors.RecordNotFound(f"Could not locate record: {self.uri(collection, rkey)}")
        return view

    def list_records(self, collection: str, *, limit: int = 50, cursor: str | None = None,
                     reverse: bool = False) -> tuple[list[RecordView], str | None]:
        collection = parse_collection(collection)
        if not 1 <= limit <= 100:
            raise errors.InvalidRequest("limit must be between 1 and 100")
        return self.repo.list_records(collection, limit, cursor, reverse)

    def collections(self) -> list[str]:
        return self.repo.list_collections()
