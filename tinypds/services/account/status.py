"""checkAccountStatus for the one account: repo root, block/record counts, blobs referenced
vs stored (migration progress), and `validDid`: does the DID document the directory serves
NOW name this server and its signing key (DidTruth).

Services layer: store reads on the read pool (the counts scan); no HTTP types. Tricky bits:
DidTruth first lets the local PLC log learn the directory's newer ops (verified op by op,
services.identity.plc), caches the answer for minutes, waits on the network at most a few seconds
(then answers from the local log) and holds no lock a write needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from ...store import blobs as blobs_db
from ...store import blocks as blocks_db
from ...store import records as records_db
from ...store import repo as repo_db

log = logging.getLogger("tinypds.status")

_PAGE = 1000
TRUTH_TTL_SECONDS = 300.0
RESOLVE_TIMEOUT = 5.0


def _figures(conn: Any) -> dict:
    root = repo_db.get_root(conn)
    n_blocks, _ = blocks_db.count_blocks(conn)
    expected = missing = 0
    after: bytes | None = None
    while True:
        page = blobs_db.list_referenced(conn, None, after, _PAGE)
        expected += len(page)
        if len(page) < _PAGE:
            break
        after = bytes(page[-1])
    after = None
    while True:
        rows = blobs_db.list_missing(conn, after, _PAGE)
        missing += len(rows)
        if len(rows) < _PAGE:
            break
        after = bytes(rows[-1][0])
    return {
        "repoCommit": str(root.commit_cid) if root else "",
        "repoRev": root.rev if root else "",
        "repoBlocks": n_blocks,
        "indexedRecords": records_db.count_records(conn),
        "privateStateValues": 0,
        "expectedBlobs": expected,
        "importedBlobs": expected - missing,
    }


async def account_status(db: Any, *, active: bool, valid_did: bool) -> dict:
    """The com.atproto.server.checkAccountStatus output."""
    figures = await db.aread(_figures)
    return {"activated": active, "validDid": valid_did, **figures}


class DidTruth:
    """`valid(did)`: the account's DID document, as the world sees it now, names this PDS
    (`settings.public_url`) and the signing key this server holds.

    `identity`: services.identity.local.LocalIdentity (its PlcService learns the directory's
    ops; its resolver reads did:web documents); `signing_key(did)` -> our did:key.
    """

    def __init__(self, settings: Any, identity: Any, signing_key: Callable[[str], str | None], *,
                 ttl: float = TRUTH_TTL_SECONDS, timeout: float = RESOLVE_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.identity = identity
        self.signing_key = signing_key
        self.ttl = ttl
        self.timeout = timeout
        self.clock = clock
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = asyncio.Lock()

    def forget(self, did: str | None = None) -> None:
        """Drop the cached answer (after our own identity or status changes)."""
        if did is None:
            self._cache.clear()
        else:
            self._cache.pop(did, None)

    async def valid(self, did: str) -> bool:
        hit = self._cache.get(did)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            return hit[1]
        async with self._lock:  # one resolution at a time; the others get its answer
            hit = self._cache.get(did)
            if hit is not None and self.clock() - hit[0] < self.ttl:
                return hit[1]
            answer = await self._check(did)
            self._cache[did] = (self.clock(), answer)
            return answer

    async def current_doc(self, did: str) -> dict | None:
        """The DID document as the directory (or did:web host) serves it now; the local
        log's when the network does not answer in time; None when there is none."""
        from ...core import plc as core_plc

        ident = self.identity.identity()
        if ident is None or ident.did != did:
            return None
        if ident.method == "plc":
            try:
                state = await asyncio.wait_for(self.identity.plc.learn_from_directory(did), self.timeout)
            except Exception as exc:  # noqa: BLE001 - unreachable or bad directory: the local log answers
                log.info("the directory's log of %s was not read (%s: %s); using the local log",
                         did, type(exc).__name__, exc)
                state = None
            if state is None:
                try:
                    state = self.identity.plc.state(did)
                except Exception:  # noqa: BLE001
                    return None
            return core_plc.doc_from_state(did, state)
        if did == self.settings.service_did:
            return self.identity.own_doc()  # a did:web on this very host: we serve it
        try:
            return await asyncio.wait_for(self.identity.resolver.dids.resolve(did, fresh=True), self.timeout)
        except Exception:  # noqa: BLE001
            return None

    async def _check(self, did: str) -> bool:
        from ..identity.resolver import doc_pds_endpoint, doc_signing_key

        doc = await self.current_doc(did)
        if doc is None:
            return False
        try:
            ours = self.signing_key(did)
        except Exception:  # noqa: BLE001 - no key here: not valid for this server
            return False
        return doc_pds_endpoint(doc) == self.settings.public_url and ours is not None and doc_signing_key(doc) == ours
