"""The local account row (one account per database): create, read, update status/handle.

Only SQL. The email is kept as given (compared case-insensitively); changing it clears
`email_confirmed_at`. Status values: active | deactivated | takendown | suspended | deleted |
offline-copy (a verified repo imported without its keys). Keys never live here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import apsw

Conn = Any

STATUSES = ("active", "deactivated", "takendown", "suspended", "deleted", "offline-copy")


class AccountRow(NamedTuple):
    did: str
    handle: str | None
    email: str | None
    password_hash: str | None
    status: str
    created_at: str
    email_confirmed_at: str | None = None
    delete_after: str | None = None


_COLS = "did, handle, email, password_hash, status, created_at"
_READ_COLS = _COLS + ", email_confirmed_at, delete_after"


def create_account(
    conn: Conn, did: str, handle: str | None, created_at: str, *, email: str | None = None,
    password_hash: str | None = None, status: str = "active",
) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown account status {status!r}")
    conn.execute(
        f"INSERT INTO account ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
        (did, handle, email, password_hash, status, created_at),
    )


def get_account(conn: Conn, did: str | None = None) -> AccountRow | None:
    """The account with this DID, or (did=None) the database's one account."""
    where, args = ("ORDER BY created_at LIMIT 1", ()) if did is None else ("WHERE did = ?", (did,))
    try:
        row = conn.execute(f"SELECT {_READ_COLS} FROM account {where}", args).fetchone()
    except apsw.SQLError:  # a file not yet migrated to 0008, read without migrating (status, backups)
        row = conn.execute(f"SELECT {_COLS} FROM account {where}", args).fetchone()
    return AccountRow(*row) if row else None


def set_status(conn: Conn, did: str, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown account status {status!r}")
    conn.execute("UPDATE account SET status = ? WHERE did = ?", (status, did))


def set_handle(conn: Conn, did: str, handle: str | None) -> None:
    conn.execute("UPDATE account SET handle = ? WHERE did = ?", (handle, did))


def set_email(conn: Conn, did: str, email: str | None) -> None:
    """A new email address (or none): it is unconfirmed until confirmEmail."""
    conn.execute("UPDATE account SET email = ?, email_confirmed_at = NULL WHERE did = ?", (email, did))


def set_email_confirmed(conn: Conn, did: str, at: str | None) -> None:
    conn.execute("UPDATE account SET email_confirmed_at = ? WHERE did = ?", (at, did))


def set_password_hash(conn: Conn, did: str, password_hash: str) -> bool:
    conn.execute("UPDATE account SET password_hash = ? WHERE did = ?", (password_hash, did))
    return conn.changes() == 1


def set_delete_after(conn: Conn, did: str, delete_after: str | None) -> None:
    conn.execute("UPDATE account SET delete_after = ? WHERE did = ?", (delete_after, did))


_KEEP_TABLES = ("events", "meta")  # the event log (seq never goes back) and the counters stay
_CONTENT_FIRST = ("record_blobs", "records", "blob_parts", "blobs", "blocks")  # repo content, in trigger-safe order


def erase_account(conn: Conn, did: str) -> list[str]:
    """deleteAccount: remove everything the database holds (one account per file) except the
    event log's rows of OTHER DIDs and the meta counters; returns the tables emptied.

    Every table is emptied, including ones later migrations add (second factors, OAuth
    grants, ...), so nothing of the account is left behind by a table this list forgot."""
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall()]
    order = [t for t in _CONTENT_FIRST if t in tables] + sorted(t for t in tables if t not in _CONTENT_FIRST)
    emptied = []
    for table in order:
        if table in _KEEP_TABLES:
            continue
        conn.execute(f'DELETE FROM "{table}"')
        emptied.append(table)
    conn.execute("DELETE FROM events WHERE did = ?", (did,))
    return emptied
