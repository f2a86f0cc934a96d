"""SQL for account migration: wiping a moved-away account's data (deleteAccount).

Only SQL (call inside `Database.write`). The account row stays (status 'deleted') so the
DID is never silently re-created here and `createAccount` stays refused; everything the
account held (repo, record index, blobs, sessions, app passwords, preferences, tokens) goes.
"""

from __future__ import annotations

from typing import Any

Conn = Any

_TABLES_BY_DID = ("session", "app_password", "preference", "action_tokens", "repo_root")
_TABLES_ALL = ("record_blobs", "records", "blob_parts", "blobs", "blocks")


def wipe_account_data(conn: Conn, did: str) -> None:
    """Delete everything the account held except its row and the event log."""
    for table in _TABLES_ALL:
        conn.execute(f"DELETE FROM {table}")
    for table in _TABLES_BY_DID:
        conn.execute(f"DELETE FROM {table} WHERE did = ?", (did,))
