"""Read-side figures for the owner's page: the account overview and the live handle check.

No HTTP types, no SQL of its own (store.ops.figures, store.repo.get_root on a reader thread).
The figures scan the block table, so they run off the event loop and are cached briefly.
"""

from __future__ import annotations

import time
from typing import Any

from ...store import ops as store_ops
from ...store import repo as repo_db

_CACHE_SECONDS = 30.0
_cache: dict[int, tuple[float, dict]] = {}


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


async def overview(db: Any, account: Any, public_url: str, health: Any = None) -> dict:
    """DID, handle, server URL, record/blob counts and sizes, last commit, firehose seq, health lines."""
    now = time.monotonic()
    hit = _cache.get(id(db))
    if hit is None or now - hit[0] > _CACHE_SECONDS:
        def read(conn: Any) -> dict:
            fig = store_ops.figures(conn)
            root = repo_db.get_root(conn)
            return {
                "records": fig.records, "collections": fig.collections,
                "repo_bytes": fig.block_bytes, "blobs": fig.blobs, "blob_bytes": fig.blob_bytes,
                "seq": fig.last_seq, "db_bytes": fig.page_size * fig.page_count,
                "last_commit": f"rev {root.rev}" if root else "none",
            }
        figures = await db.aread(read)
        _cache.clear()
        _cache[id(db)] = (now, figures)
    else:
        figures = hit[1]
    return {
        "did": account.did, "handle": account.handle or "handle.invalid", "status": account.status,
        "pds_url": public_url, "records": f"{figures['records']} in {figures['collections']} collections",
        "repo_size": human_size(figures["repo_bytes"]), "repo_bytes": figures["repo_bytes"],
        "blobs": figures["blobs"], "blob_size": human_size(figures["blob_bytes"]),
        "last_commit": figures["last_commit"], "seq": figures["seq"],
        "db_size": human_size(figures["db_bytes"]), "health": health_lines(health),
    }


def forget_figures() -> None:
    _cache.clear()


def health_lines(health: Any) -> list[str]:
    """Lines from the relay/AppView watcher (issue 15) when it runs; [] when it does not."""
    if health is None:
        return []
    try:
        from ..sync.health_report import report_lines

        report = health.report()  # services.sync.health.HealthWatcher: the last round's facts
        return [f"{label}: {value}" for label, value, _ok in report_lines(report)]
    except Exception:  # noqa: BLE001  (the watcher is optional and may be mid-change)
        return []


async def check_handle(identity: Any, did: str, handle: str) -> tuple[bool, str]:
    """Does `handle` resolve to `did` right now (DNS TXT or /.well-known)? (ok, message)."""
    from ..identity.local import check_new_handle

    try:
        handle = check_new_handle(handle)
    except Exception as exc:  # noqa: BLE001  (InvalidHandle and friends carry a readable message)
        return False, getattr(exc, "message", None) or str(exc)
    if identity.serves_handle(handle):
        return True, f"@{handle} is a name this server gives out: it will work at once."
    try:
        identity.resolver.handles.invalidate(handle)  # a live check: never a cached answer
        found = await identity.resolver.handles.resolve(handle)
    except Exception as exc:  # noqa: BLE001
        found = None
        reason = getattr(exc, "message", None) or type(exc).__name__
    else:
        reason = ""
    if found == did:
        return True, f"@{handle} resolves to your DID: ready to change."
    if found:
        return False, f"@{handle} resolves to another DID ({found})."
    return False, f"@{handle} does not resolve to your DID yet{': ' + reason if reason else ''}. Add the DNS TXT record and check again."


async def change_password(db: Any, auth: Any, did: str, current: str, new: str, ip: str) -> int:
    """The current password (throttled like sign-in) -> the new one; every session ends. Returns
    how many sessions ended."""
    from ...store import accounts as accounts_db
    from ...store import auth as auth_db
    from .life import NEW_PASSWORD_MAX_LENGTH

    if not new or len(new) > NEW_PASSWORD_MAX_LENGTH:
        raise ValueError(f"the new password must be 1 to {NEW_PASSWORD_MAX_LENGTH} characters")
    await auth.check_password(did, current, ip)
    password_hash = await auth.hash_password(new)

    def txn(conn: Any) -> int:
        accounts_db.set_password_hash(conn, did, password_hash)
        return auth_db.delete_sessions(conn, did, all_sessions=True)

    return await db.awrite(txn)


def email_view(account: Any) -> dict:
    return {"email": getattr(account, "email", None) or "",
            "confirmed": getattr(account, "email_confirmed_at", None) is not None}



def account_life_for(svc: Any, state: Any) -> Any:
    """The app's AccountLife and DidTruth, kept on `state` (app.state) under the same names
    xrpc/server.py uses, so the page and the XRPC methods share one of each."""
    truth = getattr(state, "did_truth", None)
    if truth is None:
        from .status import DidTruth

        def signing_key(did: str) -> str | None:
            ident = svc.identity.identity() if svc.identity is not None else None
            if ident is not None and ident.did == did:
                return ident.signing_key
            return svc.keys.get_key(did, "signing").public_key().did_key() if svc.keys is not None else None

        truth = state.did_truth = DidTruth(svc.settings, svc.identity, signing_key)
    life = getattr(state, "account_life", None)
    if life is None:
        from .life import AccountLife

        life = state.account_life = AccountLife(svc.settings, svc.db, svc.keys, svc.auth, did_truth=truth,
                                                on_event=svc.notify_event, on_account_change=svc.attach_account)
    return life
