"""The local account row (one account per database): create, read, update status/handle.

Only SQL. Status values: active | deactivated | takendown | suspended | deleted |
offline-copy (a verified repo imported without its keys). Keys never live here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Conn = Any

STATUSES = ("active", "deactivated", "takendown", "suspended", "deleted", "offline-copy")


class AccountRow(NamedTuple):
    did: str
    handle: str | None
    email: str | None
    password_hash: str | None
    status: str
    created_at: str


_COLS = "did, handle, email, password_hash, status, created_at"


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
    if did is None:
        row = conn.execute(f"SELECT {_COLS} FROM account ORDER BY created_at LIMIT 1").fetchone()
    else:
        row = conn.execute(f"SELECT {_COLS} FROM account WHERE did = ?", (did,)).fetchone()
    return AccountRow(*row) if row else None


def set_status(conn: Conn, did: str, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown account status {status!r}")
    conn.execute("UPDATE account SET status = ? WHERE did = ?", (status, did))


def set_handle(conn: Conn, did: str, handle: str | None) -> None:
    conn.execute("UPDATE account SET handle = ? WHERE did = ?", (handle, did))
