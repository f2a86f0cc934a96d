"""SQL for account migration: removing an account that moved away (or a half-made one).

Only SQL (call inside `Database.write`). Everything the account held goes (repo, record
index, blobs, sessions, app passwords, preferences, tokens, identity and PLC log, the
account row itself), so the one-account server is empty again; the event log stays (its
#account event says the account was deleted). Keys live in the key store, not here.
"""

from __future__ import annotations

from typing import Any

Conn = Any

_TABLES_BY_DID = ("session", "app_password", "preference", "action_tokens", "repo_root", "plc_log", "identity",
                  "account")
_TABLES_ALL = ("record_blobs", "record_index", "collections", "blob_parts", "blobs", "blocks")


def delete_account(conn: Conn, did: str) -> None:
    """Delete the account and everything it held, except the event log."""
    for table in _TABLES_ALL:
        conn.execute(f"DELETE FROM {table}")
    for table in _TABLES_BY_DID:
        conn.execute(f"DELETE FROM {table} WHERE did = ?", (did,))
