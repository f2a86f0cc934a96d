"""Repo CAR import and deep verification (export: repo_export, re-exported here), memory flat in repo size.

No HTTP types, no SQL (store.*). Import runs in ONE write transaction on the writer thread:
a full import empties the blocks table, drops its CID index and appends the CAR's blocks
(hash-checked; blob refs staged by block id), builds the index in one sorted pass
(duplicates refused), checks the commit, then verifies the MST by a streaming walk
(core.mst.verify_tree) over SQLite while the record index is rebuilt; any problem raises
RepoIOError (one line) and rolls everything back, indexes included. The cost per block
stays flat with repo size (no random-key index grows while blocks stream in). Tricky bits: into an empty data dir the repo is kept exactly as signed (an offline copy);
into the same DID's account it is re-signed with the account key and a higher rev; the
blocks table then holds exactly the imported repo (plus unreferenced CAR blocks, counted).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

from ...core import car as car_core
from ...core import dagcbor
from ...core import events as events_core
from ...core.blocks import MissingBlockError
from ...core.cid import CID
from ...core.commit import CommitError, build_commit_from_root, verify_commit
from ...core.crypto import parse_did_key
from ...core.mst import MstError, verify_tree
from ...core.syntax import is_valid_did, is_valid_tid
from ...core.tid import TidClock
from ...store import accounts as accounts_db
from ...store import blocks as blocks_db
from ...store import events as events_db
from ...store import records as records_db
from ...store import repo as repo_db
from ...store.blocks import SqliteBlocks
from ...store.db import Database, bulk_cache
from .writes import default_clock, iso_now
from .export import Progress, RepoIOError, no_progress, aiter_export, export_car, iter_export  # noqa: F401 (re-exported)

BATCH = 4000
BLOCK_BATCH = 10000  # bigger sorted batches visit each index page fewer times (random CIDs)


@dataclass(frozen=True)
class RepoSummary:
    did: str
    commit_cid: CID
    rev: str
    data_cid: CID
    records: int
    blocks: int
    bytes: int
    signature: str  # how the commit signature was checked (or why it could not be)


@dataclass(frozen=True)
class ImportResult(RepoSummary):
    imported_commit: CID | None = None
    imported_rev: str = ""
    resigned: bool = False
    unreferenced_blocks: int = 0


# ---- verification shared by import and verify ----------------------------------------


def _check_commit(commit_bytes: bytes, did_key: str | None, fallback_keys: list[tuple[str, Any]]) -> tuple[dict, str]:
    """Verify the commit's shape and, when a key is known, its signature. Returns (commit, how)."""
    if did_key is not None:
        try:
            pub = parse_did_key(did_key)
        except ValueError as exc:
            raise RepoIOError(f"--did-key is not a valid did:key: {exc}") from None
        try:
            return verify_commit(commit_bytes, pub.verify), f"valid (signed by {did_key})"
        except CommitError as exc:
            raise RepoIOError(f"{exc} with {did_key}") from None
    try:
        obj = verify_commit(commit_bytes, lambda msg, sig: True)  # shape only
    except CommitError as exc:
        raise RepoIOError(str(exc)) from None
    unsigned = dict(obj)
    sig = unsigned.pop("sig")
    msg = dagcbor.encode(unsigned)
    for label, pub in fallback_keys:
        if pub.verify(msg, sig):
            return obj, f"valid (signed by {label})"
    return obj, "NOT CHECKED: no key to check it with (pass --did-key did:key:...; DID resolution comes later)"


def _walk_index(conn: Any, data_root: CID, rev: str | None, progress: Progress, hashed: bool = False,
                staged: bool = False) -> tuple[int, int]:
    """Verify the MST from SQLite and (re)build the record index + record_blobs.

    The walk only reads MST nodes; record blocks are then scanned for blob refs by one
    set-wise SQL pass (C speed, no Python round trip per record). Returns (records, MST nodes)."""
    source = SqliteBlocks(conn, cache_size=0)
    rows: list[tuple[bytes, int, str, str | None]] = []  # (cid, collection id, rkey, rev)
    colls: dict[str, int] = {}
    n = 0

    def flush() -> None:
        nonlocal n
        missing = records_db.put_index_rows(conn, rows)
        if missing is not None:
            name = next(k for k, v in colls.items() if v == missing[0])
            raise RepoIOError(f"missing record block {missing[2]} for {name}/{missing[1]}")
        progress("records", len(rows))
        n += len(rows)
        rows.clear()
    try:
        for key, cid in verify_tree(source, data_root, hashed=hashed):
            collection, _, rkey = key.partition("/")
            coll = colls.get(collection)
            if coll is None:
                coll = colls[collection] = records_db.collection_id(conn, collection, create=True)
            rows.append((cid, coll, rkey, rev))
            if len(rows) >= BATCH:
                flush()
    except MstError as exc:
        raise RepoIOError(f"invalid MST: {exc}") from None
    except MissingBlockError as exc:
        raise RepoIOError(str(exc)) from None
    flush()
    records_db.build_record_index_block(conn)
    if staged:  # blob refs found while the blocks streamed in (full import)
        records_db.end_blob_staging(conn)
        return n, source.reads
    blob_rows = []
    for collection, rkey, cid, data in records_db.iter_records_mentioning(conn, b"mimeType"):
        if data is None:
            raise RepoIOError(f"missing record block for {collection}/{rkey}")
        blob_rows.extend((collection, rkey, bytes(b)) for b in repo_db.blob_refs(data))
        if len(blob_rows) >= BATCH:
            records_db.put_record_blobs(conn, blob_rows)
            blob_rows.clear()
    records_db.put_record_blobs(conn, blob_rows)
    return n, source.reads


# ---- import ------------------------------------------------------------------------------


def _maybe_blob_blocks(batch: list[tuple[bytes, bytes]], step: int = 2048) -> list[int]:
    """Positions in `batch` of the blocks whose bytes hold b"mimeType" (only those can
    reference a blob; ~5% of a typical repo's blocks): one search over each `step` blocks'
    joined bytes (~0.6 MB) instead of a Python step per block. A match across two blocks
    only adds a block that blob_refs then finds nothing in."""
    found = []
    for base in range(0, len(batch), step):
        datas = [data for _, data in batch[base:base + step]]
        joined = b"".join(datas)
        ends = list(accumulate(map(len, datas)))
        find = joined.find
        pos = find(b"mimeType")
        while pos >= 0:
            i = bisect_right(ends, pos)
            found.append(base + i)
            pos = find(b"mimeType", ends[i])  # on from the next block
    return found


def _stream_blocks_in(conn: Any, fh: BinaryIO, progress: Progress, bulk: bool = True) -> tuple[CID, bytes, int, int]:
    """Stream CAR blocks into the blocks table. Returns (root, commit bytes, blocks, bytes).

    bulk=True (a full import; the table was emptied by begin_bulk_load): rows append in CAR
    order with a NULL rev and the indexes are built once at the end, in one sorted pass, so
    the cost per block does not grow with the repo. bulk=False (a diff on top of the stored
    blocks): blocks already stored are skipped; new ones get the commit's rev."""
    try:
        roots, batches = car_core.read_car_batches(fh)
    except car_core.CarError as exc:
        raise RepoIOError(f"corrupt CAR: {exc}") from None
    if not roots:
        raise RepoIOError("the CAR has no root (a repo CAR's first root must be its commit)")
    root = CID(roots[0])
    commit_bytes: bytes | None = None
    rev = ""
    batch: list[tuple[bytes, bytes]] = []
    count = size = 0

    if bulk:
        records_db.begin_blob_staging(conn)
    blob_refs = repo_db.blob_refs

    def put() -> None:
        if bulk:
            first = blocks_db.append_blocks(conn, batch)
            staged = [(first + i, bytes(ref)) for i in _maybe_blob_blocks(batch) for ref in blob_refs(batch[i][1])]
            if staged:
                records_db.stage_blob_refs(conn, staged)
        else:
            blocks_db.put_blocks(conn, batch, rev)
        progress("blocks", len(batch))
        batch.clear()
    try:
        for found in batches:  # the blocks of one chunk read (no per-block Python work here)
            if commit_bytes is None and root in [cid for cid, _ in found]:
                commit_bytes = next(data for cid, data in found if cid == root)
                rev = _peek_rev(commit_bytes)
            batch.extend(found)
            count += len(found)
            size += sum([len(data) for _, data in found])
            if len(batch) >= BLOCK_BATCH:
                put()
        put()
    except car_core.CarError as exc:
        raise RepoIOError(f"corrupt CAR after {count} blocks: {exc}") from None
    if bulk:
        dup = blocks_db.end_bulk_load(conn)
        if dup is not None:
            raise RepoIOError(f"the CAR holds block {dup} more than once")
    if commit_bytes is None:
        raise RepoIOError(f"the CAR's root commit block {root} is missing")
    return root, commit_bytes, count, size


def _peek_rev(commit_bytes: bytes) -> str:
    try:
        obj = dagcbor.decode(commit_bytes, strict=False)
        rev = obj.get("rev") if isinstance(obj, dict) else None
    except dagcbor.DagCborError:
        rev = None
    return rev if isinstance(rev, str) else ""


def import_car(db: Database, fh: BinaryIO, *, did_key: str | None = None, keys: Any = None,
               clock: TidClock | None = None, progress: Progress | None = None,
               now: float | None = None, diff: bool = False) -> ImportResult:
    """Import a repo CAR (see module docstring). Raises RepoIOError; the database is then untouched.

    diff=True: the CAR may hold only the blocks changed since an earlier import (getRepo?since=);
    the stored blocks stay and the new commit's tree is verified over both."""
    progress = progress or no_progress
    clock = clock or default_clock()

    def run(conn: Any) -> ImportResult:
        with bulk_cache(conn):  # the small steady-state cache would slow the bulk writes
            return _import(conn, fh, did_key, keys, clock, progress, now, diff)
    if diff:
        return db.write(run)
    with db.rollback_journal():  # only when nothing else has the file open (CLI import)
        return db.write(run)


def _import(conn: Any, fh: BinaryIO, did_key: str | None, keys: Any, clock: TidClock,
            progress: Progress, now: float | None, diff: bool = False) -> ImportResult:
    account = accounts_db.get_account(conn)
    before = repo_db.get_root(conn, account.did) if account else None
    records_db.delete_all_records(conn)
    records_db.drop_record_index_block(conn)  # rebuilt in one sorted pass after the walk
    if not diff:
        blocks_db.begin_bulk_load(conn)

    root, commit_bytes, nblocks, nbytes = _stream_blocks_in(conn, fh, progress, bulk=not diff)
    fallback = []
    signer = None
    if account is not None and account.status != "offline-copy" and keys is not None:
        try:
            signer = keys.get_key(account.did, "signing")
        except Exception as exc:
            raise RepoIOError(f"cannot re-sign the imported repo: {exc}") from None
        fallback.append(("this account's signing key", signer.public_key()))
    commit, how = _check_commit(commit_bytes, did_key, fallback)
    did, rev, data_root = commit["did"], commit["rev"], commit["data"]
    if not is_valid_did(did):
        raise RepoIOError(f"the commit's did {did!r} is not a valid DID")
    if not is_valid_tid(rev):
        raise RepoIOError(f"the commit's rev {rev!r} is not a TID")
    if account is not None and account.did != did:
        raise RepoIOError(f"the CAR is the repo of {did}, but this data directory holds {account.did}; refusing to mix accounts")
    if diff:
        blocks_db.set_missing_rev(conn, rev)
        nrecords, nnodes = _walk_index(conn, data_root, rev, progress)
    else:  # every block and record of a full import came with rev: NULL rows, one meta value
        blocks_db.set_base_rev(conn, rev)
        # every block was hash-checked as it came from the CAR; blob refs were staged then
        nrecords, nnodes = _walk_index(conn, data_root, None, progress, hashed=True, staged=True)

    time = iso_now(now)
    resigned = False
    commit_cid, commit_rev = root, rev
    if account is None:
        accounts_db.create_account(conn, did, None, time, status="offline-copy")
    elif account.status == "offline-copy":
        if before is not None and rev < before.rev:
            raise RepoIOError(f"the CAR (rev {rev}) is older than the stored copy (rev {before.rev}); refusing to go back")
    else:
        if signer is None:
            raise RepoIOError(f"no key store to re-sign the repo of {did} with")
        floor = max(rev, before.rev) if before is not None else rev
        commit_rev = clock.next_after(floor)
        commit_cid, block = build_commit_from_root(did, data_root, commit_rev, signer.sign)
        blocks_db.put_blocks(conn, [(commit_cid, block)], commit_rev)
        blocks_db.delete_blocks(conn, [root])
        if account.status == "active":  # a deactivated (migrating-in) account emits nothing until activated
            body = events_core.encode_body(events_core.sync_body(did, commit_cid, block, commit_rev, time))
            events_db.append_event(conn, events_core.SYNC, did, time, body)
        resigned = True
    repo_db.set_root(conn, did, commit_cid, commit_rev, data_root)
    total_blocks, total_bytes = blocks_db.count_blocks(conn) if diff else (nblocks, nbytes)
    if resigned:
        total_bytes += len(block) - len(commit_bytes)
    distinct_records = records_db.count_distinct_record_blocks(conn)
    referenced = 1 + nnodes + distinct_records
    return ImportResult(did, commit_cid, commit_rev, data_root, nrecords, total_blocks, total_bytes, how,
                        imported_commit=root, imported_rev=rev, resigned=resigned,
                        unreferenced_blocks=max(0, total_blocks - referenced))


# ---- verify ------------------------------------------------------------------------------


def verify_stored(db: Database, *, did_key: str | None = None, keys: Any = None,
                  progress: Progress | None = None, check_records: bool = False) -> RepoSummary:
    """Deep-verify the stored repo (read-only): block hashes, commit, MST, index == MST, and
    with check_records every record strictly decoded (~20 µs each). Raises RepoIOError."""
    progress = progress or no_progress
    with db.reader() as conn:
        root = repo_db.get_root(conn)
        if root is None:
            raise RepoIOError("this data directory holds no repo to verify")
        account = accounts_db.get_account(conn, root.did)
        nblocks = nbytes = 0
        for cid, data in blocks_db.iter_blocks(conn):
            if not cid.matches(data):
                raise RepoIOError(f"stored block {cid} does not match its hash (corrupt database)")
            nblocks += 1
            nbytes += len(data)
            if nblocks % BATCH == 0:
                progress("blocks", BATCH)
        progress("blocks", nblocks % BATCH)
        commit_bytes = blocks_db.get_block(conn, root.commit_cid)
        if commit_bytes is None:
            raise RepoIOError(f"the commit block {root.commit_cid} is missing")
        fallback = []
        if keys is not None and account is not None and account.status != "offline-copy":
            try:
                fallback.append(("this account's signing key", keys.get_key(root.did, "signing").public_key()))
            except Exception as exc:  # a missing key is reported, not fatal to verification
                raise RepoIOError(f"cannot check the signature: {exc}") from None
        commit, how = _check_commit(commit_bytes, did_key, fallback)
        if commit["did"] != root.did or commit["rev"] != root.rev or commit["data"] != root.data_cid:
            raise RepoIOError("the commit block does not match the stored root (did/rev/data differ)")
        if fallback and did_key is None and not how.startswith("valid"):
            raise RepoIOError(f"commit signature does not verify with this account's signing key ({root.did})")
        nrecords = _compare_index(conn, root.data_cid, progress)
        if check_records:
            _check_records(conn, progress)
    return RepoSummary(root.did, root.commit_cid, root.rev, root.data_cid, nrecords, nblocks, nbytes, how)


def _compare_index(conn: Any, data_root: CID, progress: Progress) -> int:
    """Walk the MST (verifying it) in lockstep with the record index; both must list the same pairs."""
    source = SqliteBlocks(conn, cache_size=0)
    index = records_db.iter_index_in_mst_order(conn)
    n = 0
    try:
        for key, cid in verify_tree(source, data_root):
            entry = next(index, None)
            if entry is None or entry[0] > key:
                raise RepoIOError(f"record {key} is in the MST but not in the record index")
            if entry[0] < key:
                raise RepoIOError(f"record {entry[0]} is in the record index but not in the MST")
            if entry[1] is None:
                raise RepoIOError(f"missing record block {cid} for {key}")
            if entry[1] != cid:
                raise RepoIOError(f"record {key}: the index says {entry[1]}, the MST says {cid}")
            n += 1
            if n % BATCH == 0:
                progress("records", BATCH)
    except MstError as exc:
        raise RepoIOError(f"invalid MST: {exc}") from None
    except MissingBlockError as exc:
        raise RepoIOError(str(exc)) from None
    extra = next(index, None)
    if extra is not None:
        raise RepoIOError(f"record {extra[0]} is in the record index but not in the MST")
    progress("records", n % BATCH)
    missing = records_db.first_record_without_block(conn)  # index == MST here, so this covers the MST
    if missing is not None:
        raise RepoIOError(f"missing record block for {missing[0]}/{missing[1]}")
    return n


def _check_records(conn: Any, progress: Progress) -> None:
    """Every record block is canonical DAG-CBOR and a valid record (a map with a $type)."""
    n = 0
    for collection, rkey, data in records_db.iter_record_data(conn):
        if data is None:
            raise RepoIOError(f"missing record block for {collection}/{rkey}")
        try:
            dagcbor.validate_record(dagcbor.decode(data))
        except dagcbor.DagCborError as exc:
            raise RepoIOError(f"record {collection}/{rkey} is not a valid record: {exc}") from None
        n += 1
        if n % BATCH == 0:
            progress("record data", BATCH)
    progress("record data", n % BATCH)


def verify_car_file(path: str | Path, *, did_key: str | None = None, progress: Progress | None = None,
                    scratch_dir: str | Path | None = None, check_records: bool = False) -> ImportResult:
    """Deep-verify a CAR file: import it into a throwaway database (nothing else touched) and,
    with check_records, check every record strictly (canonical DAG-CBOR, a map with $type)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tinypds-verify-", dir=scratch_dir) as tmp:
        db = Database.open(Path(tmp) / "verify.sqlite")
        try:
            with open(path, "rb") as fh:
                result = import_car(db, fh, did_key=did_key, progress=progress)
            if check_records:
                db.read(lambda conn: _check_records(conn, progress or no_progress), snapshot=True)
            return result
        finally:
            db.close()
