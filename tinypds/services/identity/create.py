"""Local account creation: the account row, its signing key in the KeyStore, and the first commit.

No HTTP types, no SQL (store.accounts / store.repo). `create_local_account` is used by tests
and the `init` command: it stores the signing key through the KeyStore (never in the
database) and writes, in ONE transaction, the account row, the empty repo's signed commit
(the empty MST node included) and the #identity, #account and #commit events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import errors
from ...core import events as events_core
from ...core.blocks import MemoryBlockStore
from ...core.cid import CID
from ...core.commit import build_commit
from ...core.crypto import K256PrivateKey, PrivateKey, format_did_key
from ...core.mst.codec import encode_node
from ...core.tid import TidClock
from ...store import accounts as accounts_db
from ...store import events as events_db
from ...store import repo as repo_db
from ...store.db import Database
from ..repo.writes import default_clock, iso_now

EMPTY_NODE = encode_node((), (), (None,))


@dataclass(frozen=True)
class AccountInfo:
    did: str
    handle: str | None
    signing_did_key: str
    commit_cid: CID
    rev: str


def create_local_account(
    db: Database,
    keys: Any,
    did: str,
    handle: str | None,
    *,
    signing_key: PrivateKey | None = None,
    email: str | None = None,
    password_hash: str | None = None,
    status: str = "active",
    clock: TidClock | None = None,
    now: float | None = None,
) -> AccountInfo:
    """Create the account with an empty signed repo. Refuses if the database has an account."""
    key = signing_key or K256PrivateKey.generate()
    clock = clock or default_clock()
    time = iso_now(now)

    def _create(conn: Any) -> Any:
        existing = accounts_db.get_account(conn)
        if existing is not None:
            raise errors.AccountAlreadyExists(
                f"this database already holds the account {existing.did}; one database holds one account"
            )
        commit = build_commit(MemoryBlockStore(), did, None, [], clock.next(), key.sign)
        new_blocks = dict(commit.new_blocks)
        new_blocks[commit.data] = EMPTY_NODE  # the empty tree's one node (not a "new" diff node)
        commit = _with_blocks(commit, new_blocks)
        accounts_db.create_account(conn, did, handle, time, email=email, password_hash=password_hash, status=status)
        if status == "active":
            events_db.append_event(conn, events_core.IDENTITY, did, time,
                                   events_core.encode_body(events_core.identity_body(did, time, handle)))
            events_db.append_event(conn, events_core.ACCOUNT, did, time,
                                   events_core.encode_body(events_core.account_body(did, time, True)))
            body = events_core.encode_body(events_core.commit_body(commit, time))
        else:
            body = None
        repo_db.apply_commit(conn, commit, body, time)
        return commit

    existing = get_account(db)
    if existing is not None:  # checked before touching the key store (and again in the transaction)
        raise errors.AccountAlreadyExists(
            f"this database already holds the account {existing.did}; one database holds one account"
        )
    # the key goes into the key store first: an account row without its key would be unusable
    keys.put_key(did, "signing", key)
    commit = db.write(_create)
    return AccountInfo(did, handle, format_did_key(key), commit.cid, commit.rev)


def _with_blocks(commit: Any, new_blocks: dict) -> Any:
    from dataclasses import replace

    relevant = dict(commit.relevant_blocks)
    relevant.update(new_blocks)
    return replace(commit, new_blocks=new_blocks, relevant_blocks=relevant)


def get_account(db: Database, did: str | None = None) -> accounts_db.AccountRow | None:
    return db.read(lambda c: accounts_db.get_account(c, did))
