"""BlobService: streamed blob upload/download, listings, GC. No HTTP types; no apsw (SQL is in store/blobs.py).

Memory is flat: uploads are hashed incrementally and written as 64 KiB parts in ~1 MiB
transactions; downloads read ~1 MiB of parts per off-loop read. Lifecycle needs no hook from
the repo service: triggers on record_blobs (migration 0003) mark blobs permanent/orphan inside
the commit's own transaction; `gc_blobs` (startup + periodic) deletes orphans, expired temp
uploads and interrupted uploads in bounded batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any, AsyncIterable, AsyncIterator, Callable

from ...config import Settings
from ...core.cid import RAW, CID, cid_for_raw_digest
from ...core.mime import SNIFF_BYTES, choose_mime
from ...errors import BlobNotFound, BlobTooLarge, InvalidRequest, RepoNotFound
from ...store import blobs as store
from ...store.blobs import PART_SIZE, BlobMeta

log = logging.getLogger("tinypds.blobs")

WRITE_BATCH_PARTS = 16  # 1 MiB per write transaction
READ_BATCH_PARTS = 16  # 1 MiB per off-loop read
DELETE_BATCH_PARTS = 64  # 4 MiB of parts freed per write transaction


class BlobService:
    """Blobs of the one account. `db` is a store.db.Database; `clock()` returns epoch seconds."""

    def __init__(self, db: Any, settings: Settings, clock: Callable[[], float] = time.time):
        self.db = db
        self.max_bytes = settings.blob_max_bytes
        self.temp_ttl = settings.blob_temp_ttl_seconds
        self.clock = clock
        self.started_at = clock()  # uploads older than this belong to a previous process
        self._gc_task: asyncio.Task | None = None

    async def start(self, gc_interval_seconds: float = 600.0) -> None:
        """Collect what a previous process left behind, then run gc_blobs periodically."""
        await self.gc_blobs(startup=True)
        if self._gc_task is None:
            self._gc_task = asyncio.create_task(self.gc_forever(gc_interval_seconds), name="tinypds-blob-gc")

    async def aclose(self) -> None:
        """Stop the periodic GC (an interrupted batch is finished by the next start)."""
        task, self._gc_task = self._gc_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # ---- upload ----------------------------------------------------------------------
    async def upload(
        self, chunks: AsyncIterable[bytes], declared_mime: str | None = None, expected_size: int | None = None
    ) -> BlobMeta:
        """Store a streamed blob; returns its metadata (`.ref()` is the lexicon blob object).

        Raises BlobTooLarge past the size limit, InvalidRequest if `expected_size` (the
        Content-Length) does not match. On any failure nothing of the upload remains.
        One batch of parts is written while the next is received (at most one in flight).
        """
        if expected_size is not None and expected_size > self.max_bytes:
            raise BlobTooLarge(f"This file is too large. It is {expected_size} bytes but the maximum is {self.max_bytes}.")
        key = secrets.token_hex(16)  # finds the row on failure, even if no write reported back
        hasher = hashlib.sha256()
        buf = bytearray()
        pending: list[bytes] = []
        head = b""
        total = 0
        queued = 0  # parts handed to the writer so far
        inflight: asyncio.Future | None = None
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                total += len(chunk)
                if total > self.max_bytes:
                    raise BlobTooLarge(f"This file is too large. The maximum is {self.max_bytes} bytes.")
                if expected_size is not None and total > expected_size:
                    raise InvalidRequest("Request body is longer than its Content-Length")
                hasher.update(chunk)
                if len(head) < SNIFF_BYTES:
                    head += bytes(chunk[: SNIFF_BYTES - len(head)])
                view = memoryview(chunk)
                pos = 0
                while pos < len(view):
                    take = min(PART_SIZE - len(buf), len(view) - pos)
                    buf += view[pos : pos + take]
                    pos += take
                    if len(buf) == PART_SIZE:
                        pending.append(bytes(buf))
                        buf.clear()
                if len(pending) >= WRITE_BATCH_PARTS:
                    if inflight is not None:
                        await inflight
                    inflight = asyncio.ensure_future(self.db.awrite(self._write_parts(key, queued, pending)))
                    queued += len(pending)
                    pending = []
            if expected_size is not None and total != expected_size:
                raise InvalidRequest("Request body is shorter than its Content-Length")
            if buf:
                pending.append(bytes(buf))
                buf.clear()
            if inflight is not None:
                await inflight
            cid = cid_for_raw_digest(hasher.digest())
            mime = choose_mime(head, declared_mime)
            write_rest = self._write_parts(key, queued, pending)
            now = store.iso_time(self.clock())

            def finish(conn: Any) -> tuple[int, BlobMeta, bool]:
                blob_id = write_rest(conn)
                meta, dedup = store.finish_upload(conn, blob_id, cid, mime, total, now)
                return blob_id, meta, dedup

            blob_id, meta, dedup = await self.db.awrite(finish)
        except BaseException:
            await self._discard(key, inflight)
            raise
        if dedup:
            await self._purge(blob_id)  # the duplicate upload's parts
        return meta

    def _write_parts(self, key: str, first_idx: int, parts: list[bytes]) -> Callable[[Any], int]:
        """A write function appending `parts` to the upload `key` (creating its row first)."""

        def run(conn: Any) -> int:
            blob_id = store.upload_id(conn, key)
            if blob_id is None:
                blob_id = store.begin_upload(conn, store.iso_time(self.clock()), key)
            if parts:
                store.put_parts(conn, blob_id, first_idx, parts)
            return blob_id

        return run

    async def _discard(self, key: str, inflight: asyncio.Future | None) -> None:
        """Remove a failed upload. The writer runs writes in order, so this runs after any
        write still in flight; leftovers (e.g. at shutdown) are collected by the GC."""
        try:
            if inflight is not None:
                await asyncio.gather(inflight, return_exceptions=True)
            blob_id = await self.db.awrite(lambda conn: store.kill_upload(conn, key))
            if blob_id is not None:
                await self._purge(blob_id)
        except BaseException:  # the original error matters more; GC will finish the job
            log.warning("could not discard an interrupted upload; the blob GC will collect it")

    async def _purge(self, blob_id: int) -> None:
        """Delete a dead blob's parts in bounded write transactions, then its row."""
        while not await self.db.awrite(lambda conn: store.delete_dead_parts(conn, blob_id, DELETE_BATCH_PARTS)):
            await asyncio.sleep(0)

    # ---- download ----------------------------------------------------------------------
    def blob_meta(self, cid: CID) -> BlobMeta | None:
        """Metadata of a stored blob in any state (a short inline point read)."""
        return self.db.read(lambda conn: store.get_meta(conn, cid))

    async def open_blob(
        self, cid: CID | str, *, did: str | None = None, include_temp: bool = False
    ) -> tuple[str, int, AsyncIterator[bytes]]:
        """(mime, size, chunks) of a stored blob; BlobNotFound unless it is permanent
        (temp uploads are not served until a record references them). `did` (getBlob's
        parameter) must be this server's account, else RepoNotFound."""
        if did is not None and did != self.db.read(store.repo_did):
            raise RepoNotFound(f"Could not find repo for DID: {did}")
        cid = _parse_cid(cid)
        meta = self.blob_meta(cid)
        allowed = ("permanent", "temp") if include_temp else ("permanent",)
        if meta is None or meta.status not in allowed:
            raise BlobNotFound("Blob not found")
        return meta.mime, meta.size, self._stream(cid, meta.size)

    async def _stream(self, cid: CID, size: int) -> AsyncIterator[bytes]:
        total_parts = store.part_count(size)
        idx = 0
        sent = 0
        while idx < total_parts:
            first = idx
            parts = await self.db.aread(lambda conn: store.read_parts(conn, cid, first, READ_BATCH_PARTS))
            if not parts:
                raise BlobNotFound(f"Blob {cid} was deleted while being read")
            for part in parts:
                sent += len(part)
                yield part
            idx += len(parts)
        if sent != size:
            raise BlobNotFound(f"Blob {cid} changed while being read")

    async def read_all(self, cid: CID | str, *, include_temp: bool = False) -> bytes:
        """The whole blob (tests and small blobs only; streaming callers use open_blob)."""
        _mime, _size, chunks = await self.open_blob(cid, include_temp=include_temp)
        return b"".join([c async for c in chunks])

    # ---- listing -----------------------------------------------------------------------
    async def list_blobs(
        self, since_rev: str | None = None, cursor: str | None = None, limit: int = 500
    ) -> tuple[list[str], str | None]:
        """com.atproto.sync.listBlobs: CIDs referenced by records (changed after since_rev)."""
        after = _parse_cursor(cursor)
        cids = await self.db.aread(lambda conn: store.list_referenced(conn, since_rev, after, limit))
        out = [str(c) for c in cids]
        return out, (out[-1] if len(out) == limit else None)

    async def list_missing_blobs(self, cursor: str | None = None, limit: int = 500) -> tuple[list[dict[str, str]], str | None]:
        """com.atproto.repo.listMissingBlobs: [{cid, recordUri}] referenced but not stored."""
        after = _parse_cursor(cursor)

        def run(conn: Any) -> tuple[str | None, list[tuple[CID, str, str]]]:
            return store.repo_did(conn), store.list_missing(conn, after, limit)

        did, rows = await self.db.aread(run)
        out = [{"cid": str(cid), "recordUri": f"at://{did}/{coll}/{rkey}"} for cid, coll, rkey in rows]
        return out, (out[-1]["cid"] if len(out) == limit else None)

    # ---- garbage collection -----------------------------------------------------------
    async def gc_blobs(self, now: float | None = None, *, startup: bool = False) -> int:
        """Delete orphans, temp uploads older than the TTL and stale uploads; returns how many.

        `startup=True` also removes every upload begun before this service was created
        (no upload survives a restart), without touching uploads already running now.
        """
        now = self.clock() if now is None else now
        temp_before = store.iso_time(now - self.temp_ttl)
        uploading_before = store.iso_time(self.started_at) if startup else temp_before
        dead = await self.db.awrite(lambda conn: store.collect(conn, temp_before, uploading_before))
        for blob_id in dead:
            await self._purge(blob_id)
        if dead:
            log.info("blob gc removed %d blob(s)", len(dead))
        return len(dead)

    async def gc_forever(self, interval_seconds: float = 600.0) -> None:
        """Run gc_blobs every `interval_seconds` (start as a task from the app lifespan)."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.gc_blobs()
            except Exception:
                log.exception("blob gc failed")

    def counts(self) -> dict[str, int]:
        """{status: blobs} and 'parts' (admin and tests)."""
        return self.db.read(store.status_counts)


def _parse_cid(cid: CID | str) -> CID:
    if isinstance(cid, CID):
        return cid
    try:
        parsed = CID.parse(cid)
    except ValueError:
        raise InvalidRequest(f"Invalid CID: {cid!r}") from None
    if parsed.codec != RAW:
        raise BlobNotFound("Blob not found")
    return parsed


def _parse_cursor(cursor: str | None) -> CID | None:
    if not cursor:
        return None
    try:
        return CID.parse(cursor)
    except ValueError:
        raise InvalidRequest("Invalid cursor") from None
