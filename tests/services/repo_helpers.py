"""Shared helpers for repo tests: a temp data dir with a database, a sealed-file KeyStore and an account."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tinypds.core.crypto import K256PrivateKey
from tinypds.services.identity.create import create_local_account
from tinypds.services.identity.keys import KeyStore, SealedFileKeyring
from tinypds.services.repo.writes import RepoService
from tinypds.store import repo as repo_db
from tinypds.store.db import Database

DID = "did:plc:testaccount000000000000a"
OTHER_DID = "did:plc:someoneelse0000000000000"


def fixed_key(name: str = "k") -> K256PrivateKey:
    return K256PrivateKey.from_bytes(hashlib.sha256(name.encode()).digest())


def keystore(tmp: Path) -> KeyStore:
    return KeyStore(SealedFileKeyring(tmp / "keys" / "keys.json"))


@dataclass
class Env:
    dir: Path
    db: Database
    keys: KeyStore
    repo: RepoService | None


def open_env(tmp: Path, did: str | None = DID, key: K256PrivateKey | None = None, name: str = "data") -> Env:
    """A data dir; with `did`, an account with an empty signed repo and a RepoService."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    db = Database.open(d / "tinypds.sqlite")
    keys = keystore(tmp)
    repo = None
    if did is not None:
        create_local_account(db, keys, did, "alice.test", signing_key=key or fixed_key(did))
        repo = RepoService.from_keystore(db, did, keys)
    return Env(d, db, keys, repo)


def snapshot(db: Database) -> dict:
    """Row counts and the root: what 'database untouched' means in the tests."""
    def q(c):
        out = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
               for t in ("blocks", "records", "record_blobs", "repo_root", "account", "events")}
        root = repo_db.get_root(c)
        out["root"] = (root.commit_cid, root.rev) if root else None
        out["blocks_sum"] = c.execute("SELECT coalesce(sum(length(data)), 0) FROM blocks").fetchone()[0]
        return out
    return db.read(q)


# ---- building repo CARs in memory (small repos for tests) ------------------------------


def build_repo_blocks(n: int, key, did: str = DID, seed: int = 0, rev: str = "3m2qrrgwdsk2b"):
    """(commit_cid, [(cid, data), ...] with the commit first) for n generated records."""
    from tests.bench.gen_repo import generate_records
    from tinypds.core import dagcbor
    from tinypds.core.commit import build_commit_from_root
    from tinypds.core.mst import TreeBuilder

    blocks: list = []
    builder = TreeBuilder(lambda c, d: blocks.append((c, d)))
    seen = set()
    for collection, rkey, rec in generate_records(n, seed):
        cid, data = dagcbor.encode_with_cid(rec)
        if cid not in seen:
            seen.add(cid)
            blocks.append((cid, data))
        builder.add(f"{collection}/{rkey}", cid)
    root = builder.finish()
    commit_cid, commit_block = build_commit_from_root(did, root, rev, key.sign)
    return commit_cid, [(commit_cid, commit_block)] + blocks


def car_bytes(roots, blocks) -> bytes:
    from tinypds.core.car import write_car

    return b"".join(write_car(roots, blocks))
