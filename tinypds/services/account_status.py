"""checkAccountStatus figures for the one account: repo root, block/record counts, and blobs
referenced by records vs blobs actually stored (migration progress).

Services layer: store reads only, on the read pool (the counts scan). No HTTP types.
"""

from __future__ import annotations

from typing import Any

from ..store import blobs as blobs_db
from ..store import blocks as blocks_db
from ..store import records as records_db
from ..store import repo as repo_db

_PAGE = 1000


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
