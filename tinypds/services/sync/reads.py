"""SyncService: the read side of com.atproto.sync — repo diffs, record proofs, blocks, repo status.

No HTTP types, no SQL (store.*). Everything reads one snapshot. `repo_since(rev)` streams
the commit plus every block introduced after `rev` (a CAR a holder of the earlier export
can merge) from a worker thread through a bounded queue, so memory stays flat; a record
proof is the commit, the MST covering proof of the key (its path plus both neighbours'
paths, which also proves absence) and the record. Tricky bit: the blocks table holds exactly
the current repo, each block stamped with the rev that introduced it, so `rev > since` is
precisely what changed.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Iterator

from ... import errors
from ...core import car as car_core
from ...core.cid import CID
from ...core.mst import MST, proof_blocks
from ...store import accounts as accounts_db
from ...store import blocks as blocks_db
from ...store import repo as repo_db
from ...store.blocks import SqliteBlocks
from ..repo.thread_stream import aiter_thread

CAR_MEDIA_TYPE = "application/vnd.ipld.car"
MAX_GET_BLOCKS = 1000

_UNAVAILABLE = {
    "deactivated": errors.RepoDeactivated,
    "takendown": errors.RepoTakendown,
    "suspended": errors.RepoSuspended,
}


def status_fields(status: str) -> dict[str, Any]:
    """{active, status?} as listRepos / getRepoStatus / #account spell them."""
    if status == "active":
        return {"active": True}
    return {"active": False, "status": {"offline-copy": "desynchronized"}.get(status, status)}


class SyncService:
    """Sync reads for the database's one account."""

    def __init__(self, db: Any):
        self.db = db

    # ---- who is hosted -------------------------------------------------------------------
    def _account(self, conn: Any, did: str) -> Any:
        acct = accounts_db.get_account(conn, did)
        if acct is None or acct.status == "deleted" or repo_db.get_root(conn, did) is None:
            raise errors.RepoNotFound(f"Could not find repo for DID: {did}")
        return acct

    def _available(self, conn: Any, did: str) -> Any:
        acct = self._account(conn, did)
        err = _UNAVAILABLE.get(acct.status)
        if err is not None:
            raise err(f"Repo has been {acct.status}: {did}")
        return repo_db.get_root(conn, did)

    async def check_available(self, did: str) -> repo_db.RepoRoot:
        """The repo root, or RepoNotFound / RepoDeactivated / RepoTakendown / RepoSuspended."""
        return await self.db.aread(lambda c: self._available(c, did))

    async def repo_status(self, did: str) -> dict[str, Any]:
        def run(conn: Any) -> dict[str, Any]:
            acct = self._account(conn, did)
            out = {"did": did, **status_fields(acct.status)}
            if out["active"]:
                out["rev"] = repo_db.get_root(conn, did).rev
            return out
        return await self.db.aread(run)

    async def list_repos(self, limit: int = 500, cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        def run(conn: Any) -> list[dict[str, Any]]:
            acct = accounts_db.get_account(conn)
            if acct is None or acct.status == "deleted" or (cursor is not None and acct.did <= cursor):
                return []
            root = repo_db.get_root(conn, acct.did)
            if root is None:
                return []
            return [{"did": acct.did, "head": str(root.commit_cid), "rev": root.rev, **status_fields(acct.status)}]
        repos = await self.db.aread(run)
        return repos[:limit], None

    # ---- repo contents -------------------------------------------------------------------
    def _iter_since(self, did: str, since: str | None, chunk_size: int) -> Iterator[bytes]:
        with self.db.reader() as conn:
            conn.execute("PRAGMA cache_size=-1024")  # a one-pass scan: a big page cache would only grow RSS
            root = self._available(conn, did)
            commit = blocks_db.get_block(conn, root.commit_cid)
            if commit is None:
                raise errors.RepoNotFound(f"repo {did} is missing its commit block")

            def blocks() -> Iterator[tuple[CID, bytes]]:
                yield root.commit_cid, commit
                for cid, data in blocks_db.blocks_since(conn, since):
                    if cid != root.commit_cid:
                        yield cid, data

            yield from car_core.write_car([root.commit_cid], blocks(), chunk_size)

    async def repo_car(self, did: str, since: str | None = None, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """CAR chunks: the commit and every block newer than `since` (all blocks if None).

        Availability is checked before the first chunk, so errors are still HTTP errors."""
        await self.check_available(did)
        return aiter_thread(lambda: self._iter_since(did, since, chunk_size))

    async def record_proof(self, did: str, collection: str, rkey: str) -> tuple[bytes, CID | None]:
        """(CAR bytes, record cid or None): commit + MST covering proof (+ the record if present)."""
        key = f"{collection}/{rkey}"

        def run(conn: Any) -> tuple[bytes, CID | None]:
            root = self._available(conn, did)
            source = SqliteBlocks(conn, cache_size=64)
            commit = source.get_block(root.commit_cid)
            tree = MST.load(source, root.data_cid)
            out: dict[CID, bytes] = {root.commit_cid: commit}
            proof_blocks(tree, key, out)
            value = tree.get(key)
            if value is not None:
                record = source.get_block(value)
                if record is not None:
                    out[value] = record
            return b"".join(car_core.write_car([root.commit_cid], out.items(), 1 << 30)), value

        return await self.db.aread(run)

    async def blocks_car(self, did: str, cids: Iterable[CID]) -> bytes:
        """A CAR (no roots) of the requested blocks; BlockNotFound names the first missing one."""
        wanted = list(dict.fromkeys(CID(c) for c in cids))
        if len(wanted) > MAX_GET_BLOCKS:
            raise errors.InvalidRequest(f"at most {MAX_GET_BLOCKS} cids per request")

        def run(conn: Any) -> bytes:
            self._available(conn, did)
            found = []
            for cid in wanted:
                data = blocks_db.get_block(conn, cid)
                if data is None:
                    raise errors.BlockNotFound(f"Could not find block: {cid}")
                found.append((cid, data))
            return b"".join(car_core.write_car([], found, 1 << 30))

        return await self.db.aread(run)
