"""RepoService: the account's repository — apply writes (group commit), read records.

Async, no HTTP types, no SQL (store.* does that). A batch of writes is checked (swapCommit,
swapRecord, create-exists / update-missing), turned into a new MST + signed commit by
core.commit.build_commit and persisted with its #commit event by store.repo.apply_commit
on the database's writer thread, so the event loop stays free. Listeners hear of a commit
only after it is durable, in seq order.
Tricky bits (group commit): calls queue up while the writer is busy; the next flush builds
each queued call's commit in turn, on top of the one before (own signed commit, own rev via
TidClock.next_after(current rev), own #commit seq, own swap checks against the state the
previous one left) and persists the whole group in ONE transaction (one fsync). A call that
fails while being built (validation, swap, missing repo) fails alone; building reads only,
so nothing of it is written. A failure while persisting or committing rolls the whole group
back and every caller of the group gets it: nobody is acknowledged before COMMIT returns.
Record CIDs are content hashes, so two records may share a block.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ... import errors
from ...core import commit as commit_core
from ...core import dagcbor
from ...core import events as events_core
from ...core.cid import CID, cid_for_dagcbor
from ...core.mst import MST
from ...core.syntax import is_valid_nsid, is_valid_rkey
from ...core.tid import TidClock
from ...store import records as records_db
from ...store import repo as repo_db
from ...store.blocks import SqliteBlocks
from ...store.db import Database

log = logging.getLogger("tinypds.repo")

MAX_WRITES = 200  # per applyWrites batch, as the reference PDS
MAX_GROUP_CALLS = 64  # group commit: at most this many calls per transaction ...
MAX_GROUP_WRITES = 1000  # ... and about this many writes (a larger single call still goes alone)


class _MustNotExist:
    def __repr__(self) -> str:
        return "MUST_NOT_EXIST"


MUST_NOT_EXIST: Any = _MustNotExist()  # swap_record value: "the record must not exist yet"


@dataclass(frozen=True)
class Write:
    """One write. action: create | update | delete. rkey None on create = a fresh TID."""

    action: str
    collection: str
    rkey: str | None = None
    record: dict | None = None  # data-model value (dagcbor.from_json already applied)
    swap_record: CID | None | Any = None  # expected current CID, or MUST_NOT_EXIST


@dataclass(frozen=True)
class WriteResult:
    action: str
    uri: str
    cid: CID | None  # None for delete


@dataclass(frozen=True)
class CommitResult:
    commit_cid: CID
    rev: str
    seq: int | None
    results: list[WriteResult]
    commit: Any = field(repr=False, default=None)  # the CommitData (for the firehose)


@dataclass(frozen=True)
class RecordView:
    uri: str
    cid: CID
    value: Any  # decoded data-model value


@dataclass
class _Call:
    """One queued apply_writes/put_record call waiting for a group commit."""

    prepared: list
    swap_commit: CID | None
    upsert: bool
    future: asyncio.Future
    result: Any = None  # set on the writer thread: a CommitResult or the exception for this call


def read_only_signer(did: str) -> Callable[[], Any]:
    """The signer of an offline copy (a repo imported without keys): every write is refused, no key is looked up."""
    def refuse() -> Any:
        raise errors.RepoReadOnly(f"{did} is a read-only offline copy here (no signing key); it cannot be written to")
    return refuse


def iso_now(now: float | None = None) -> str:
    t = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def default_clock() -> TidClock:
    return TidClock(lambda: time.time_ns() // 1000, random.randrange(1024))


class RepoService:
    """The one account's repo. `signer()` returns the signing PrivateKey (e.g. from KeyStore)."""

    def __init__(self, db: Database, did: str, signer: Callable[[], Any], *, clock: TidClock | None = None,
                 now: Callable[[], float] = time.time):
        self.db = db
        self.did = did
        self._signer = signer
        self.clock = clock or default_clock()
        self._now = now
        self._queue: deque[_Call] = deque()  # calls waiting for the next group commit
        self._flusher: asyncio.Task | None = None  # the task draining _queue (one at a time)
        self._listeners: list[Callable[[int | None, Any], None]] = []
        self._source: SqliteBlocks | None = None  # writer-thread block cache (content-addressed: never stale)

    @classmethod
    def from_keystore(cls, db: Database, did: str, keys: Any, **kw: Any) -> "RepoService":
        return cls(db, did, lambda: keys.get_key(did, "signing"), **kw)

    # ---- listeners ----------------------------------------------------------------
    def add_listener(self, fn: Callable[[int | None, Any], None]) -> Callable[[], None]:
        """fn(seq, commit_data) runs on the event loop after each durable commit; returns an unsubscribe."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def _notify(self, seq: int | None, commit: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(seq, commit)
            except Exception:  # a listener must never undo a durable commit
                log.exception("repo listener failed")

    # ---- writes -------------------------------------------------------------------
    async def apply_writes(self, writes: list[Write], swap_commit: CID | None = None) -> CommitResult:
        if not writes:
            raise errors.InvalidRequest("no writes given")
        if len(writes) > MAX_WRITES:
            raise errors.InvalidRequest(f"too many writes: {len(writes)} (at most {MAX_WRITES} per batch)")
        return await self._submit([self._prepare(w) for w in writes], swap_commit, upsert=False)

    async def create_record(self, collection: str, record: dict, rkey: str | None = None,
                            swap_commit: CID | None = None) -> CommitResult:
        return await self.apply_writes([Write("create", collection, rkey, record)], swap_commit)

    async def put_record(self, collection: str, rkey: str, record: dict, swap_record: Any = None,
                         swap_commit: CID | None = None) -> CommitResult:
        """Create or update (decided when the commit is built, like putRecord)."""
        w = self._prepare(Write("update", collection, rkey, record, swap_record))
        return await self._submit([w], swap_commit, upsert=True)

    async def delete_record(self, collection: str, rkey: str, swap_record: CID | None = None,
                            swap_commit: CID | None = None) -> CommitResult:
        return await self.apply_writes([Write("delete", collection, rkey, None, swap_record)], swap_commit)

    async def aclose(self) -> None:
        """Wait until every queued call has been committed (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])

    # ---- group commit ----------------------------------------------------------------
    async def _submit(self, prepared: list, swap_commit: CID | None, upsert: bool) -> CommitResult:
        """Queue one call; the flusher task commits it with whatever else is queued."""
        loop = asyncio.get_running_loop()
        call = _Call(prepared, swap_commit, upsert, loop.create_future())
        self._queue.append(call)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="tinypds-repo-group-commit")
        return await call.future

    def _take_group(self) -> list[_Call]:
        group: list[_Call] = []
        writes = 0
        while self._queue and len(group) < MAX_GROUP_CALLS:
            call = self._queue[0]
            if group and writes + len(call.prepared) > MAX_GROUP_WRITES:
                break
            self._queue.popleft()
            if call.future.done():  # the caller went away before its commit was built: skip it
                continue
            group.append(call)
            writes += len(call.prepared)
        return group

    async def _flush(self) -> None:
        """Drain the queue, one transaction per group; runs until the queue is empty."""
        while self._queue:
            group = self._take_group()
            if not group:
                continue
            try:
                await self.db.awrite(lambda conn: self._commit_group(conn, group))
            except Exception as exc:  # the transaction did not commit: nobody is acknowledged
                for call in group:
                    if not call.future.done():
                        call.future.set_exception(exc)
                continue
            except BaseException:  # cancelled (loop shutdown): cancel the waiting calls (a transaction
                # already on the writer thread still finishes; the firehose reads events from the table)
                for call in [*group, *self._queue]:
                    call.future.cancel()
                self._queue.clear()
                raise
            for call in group:  # in seq order: listeners first, then the caller
                if isinstance(call.result, CommitResult):
                    self._notify(call.result.seq, call.result.commit)
                    if not call.future.done():
                        call.future.set_result(call.result)
                elif not call.future.done():
                    call.future.set_exception(call.result)

    def _commit_group(self, conn: Any, group: list[_Call]) -> None:
        """Writer thread, inside one write transaction: build and persist each call in turn."""
        keys: list = []  # the signing key, looked up once per group (not once per commit)

        def signer() -> Any:
            if not keys:
                keys.append(self._signer())
            return keys[0]

        for call in group:
            try:
                commit, results = self._build(conn, call.prepared, call.swap_commit, call.upsert, signer)
            except Exception as exc:  # this call only: building wrote nothing
                call.result = exc
                continue
            now = iso_now(self._now())
            body = events_core.encode_body(events_core.commit_body(commit, now))
            seq = repo_db.apply_commit(conn, commit, body, now)  # SQL errors: the group fails
            call.result = CommitResult(commit.cid, commit.rev, seq, results, commit)

    def _prepare(self, w: Write) -> tuple[Write, bytes | None, CID | None]:
        """Validate shape and encode the record (on the caller's side: cheap, no I/O)."""
        if w.action not in ("create", "update", "delete"):
            raise errors.InvalidRequest(f"unknown write action {w.action!r}")
        if w.action != "create" and not w.rkey:
            raise errors.InvalidRequest(f"{w.action} needs a record key")
        if not is_valid_nsid(w.collection):
            raise errors.InvalidRequest(f"invalid collection NSID: {w.collection!r}")
        if w.rkey is not None and not is_valid_rkey(w.rkey):
            raise errors.InvalidRequest(f"invalid record key: {w.rkey!r}")
        if w.action == "delete":
            return w, None, None
        if not isinstance(w.record, dict):
            raise errors.InvalidRequest("record must be an object")
        try:
            dagcbor.validate_record(w.record)
            data = dagcbor.encode(w.record)
        except dagcbor.DagCborError as exc:
            raise errors.InvalidRequest(f"invalid record: {exc}") from exc
        if w.record.get("$type") != w.collection:
            raise errors.InvalidRequest(f"record $type {w.record.get('$type')!r} does not match collection {w.collection!r}")
        return w, data, cid_for_dagcbor(data)

    def _blocks(self, conn: Any) -> SqliteBlocks:
        if self._source is None or self._source.conn is not conn:
            self._source = SqliteBlocks(conn, cache_size=4096)
        return self._source

    def _uri(self, collection: str, rkey: str) -> str:
        return f"at://{self.did}/{collection}/{rkey}"

    def _build(self, conn: Any, prepared: list, swap_commit: CID | None, upsert: bool,
               signer: Callable[[], Any]) -> tuple[Any, list[WriteResult]]:
        """The call's CommitData on top of the current root (writer thread; reads only)."""
        root = repo_db.get_root(conn, self.did)
        if root is None:
            raise errors.RepoNotFound(f"no repository for {self.did}")
        if swap_commit is not None and CID(swap_commit) != root.commit_cid:
            raise errors.InvalidSwap(f"Commit was at {root.commit_cid}")
        source = self._blocks(conn)
        current: dict[str, CID | None] = {}  # batch-local view of keys touched so far
        rec_writes = []
        results = []
        for w, data, cid in prepared:
            rkey = w.rkey or self.clock.next()
            key = f"{w.collection}/{rkey}"
            if key in current:
                existing = current[key]
            else:
                existing = records_db.get_record_cid(conn, w.collection, rkey)
            action = w.action
            if upsert and action == "update" and existing is None:
                action = "create"
            uri = self._uri(w.collection, rkey)
            if w.swap_record is MUST_NOT_EXIST:
                if existing is not None:
                    raise errors.InvalidSwap(f"Record was at {existing}")
            elif w.swap_record is not None and existing != CID(w.swap_record):
                raise errors.InvalidSwap(f"Record was at {existing}" if existing else f"Record was absent: {uri}")
            if action == "create" and existing is not None:
                raise errors.InvalidRequest(f"Record already exists: {uri}")
            if action in ("update", "delete") and existing is None:
                raise errors.InvalidRequest(f"Could not locate record: {uri}")
            current[key] = cid
            rec_writes.append(commit_core.RecordWrite(action, w.collection, rkey, cid, data))
            results.append(WriteResult(action, uri, cid))
        rev = self.clock.next_after(root.rev)
        key = signer()
        try:
            commit = commit_core.build_commit(
                source, self.did, (root.commit_cid, root.data_cid, root.rev), rec_writes, rev, key.sign
            )
        except commit_core.CommitError as exc:  # our checks above should have caught these
            raise errors.InvalidRequest(str(exc)) from exc
        return commit, results

    # ---- reads (short, index-bounded: inline) ----------------------------------------
    def get_root(self) -> repo_db.RepoRoot | None:
        return self.db.read(lambda c: repo_db.get_root(c, self.did))

    def get_record(self, collection: str, rkey: str, cid: CID | None = None) -> RecordView | None:
        found = self.db.read(lambda c: records_db.get_record(c, collection, rkey))
        if found is None or (cid is not None and found[0] != CID(cid)):
            return None
        return RecordView(self._uri(collection, rkey), found[0], dagcbor.decode(found[1], strict=False))

    def list_records(self, collection: str, limit: int = 50, cursor: str | None = None,
                     reverse: bool = False) -> tuple[list[RecordView], str | None]:
        """A page of records (newest first unless reverse) and the cursor for the next page."""
        limit = max(1, min(int(limit), 100))
        rows = self.db.read(lambda c: records_db.list_records(c, collection, limit, cursor, reverse))
        views = [RecordView(self._uri(collection, rkey), cid, dagcbor.decode(data, strict=False)) for rkey, cid, data in rows]
        next_cursor = rows[-1][0] if len(rows) == limit else None
        return views, next_cursor

    def list_collections(self) -> list[str]:
        return self.db.read(records_db.list_collections)

    def count_records(self) -> int:
        return self.db.read(records_db.count_records)

