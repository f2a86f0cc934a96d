"""Sessions and app passwords (SQL only; schema in migrations/0002_auth.sql).

Every function takes a connection: writes run inside `Database.write`/`awrite`, reads
inside `Database.read`. Must not import services. Tricky bit: refresh rotation is a
compare-and-swap on `refresh_jti` (`rotate_refresh` returns False when the presented
token is no longer the current one), so two racing refreshes cannot both win.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Conn = Any  # an apsw.Connection


class SessionRow(NamedTuple):
    id: str
    did: str
    app_password_name: str | None
    privileged: bool
    refresh_jti: str
    created_at: int
    refreshed_at: int
    expires_at: int


class AppPasswordRow(NamedTuple):
    name: str
    password_hash: str
    privileged: bool
    created_at: str


_SESSION_COLS = "id, did, app_password_name, privileged, refresh_jti, created_at, refreshed_at, expires_at"


def _session(row: tuple | None) -> SessionRow | None:
    if row is None:
        return None
    r = list(row)
    r[3] = bool(r[3])
    return SessionRow(*r)


# ---- sessions ---------------------------------------------------------------------------


def insert_session(conn: Conn, s: SessionRow) -> None:
    conn.execute(
        f"INSERT INTO session ({_SESSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (s.id, s.did, s.app_password_name, int(s.privileged), s.refresh_jti, s.created_at, s.refreshed_at, s.expires_at),
    )


def get_session(conn: Conn, session_id: str) -> SessionRow | None:
    return _session(conn.execute(f"SELECT {_SESSION_COLS} FROM session WHERE id = ?", (session_id,)).fetchone())


def session_exists(conn: Conn, session_id: str, now: int) -> bool:
    row = conn.execute("SELECT 1 FROM session WHERE id = ? AND expires_at > ?", (session_id, now)).fetchone()
    return row is not None


def rotate_refresh(conn: Conn, session_id: str, old_jti: str, new_jti: str, now: int, expires_at: int) -> bool:
    """Replace the session's refresh token iff `old_jti` is the current one."""
    conn.execute(
        "UPDATE session SET refresh_jti = ?, refreshed_at = ?, expires_at = ? WHERE id = ? AND refresh_jti = ? AND expires_at > ?",
        (new_jti, now, expires_at, session_id, old_jti, now),
    )
    return conn.changes() == 1


def delete_session(conn: Conn, session_id: str) -> bool:
    conn.execute("DELETE FROM session WHERE id = ?", (session_id,))
    return conn.changes() == 1


def delete_sessions(conn: Conn, did: str, app_password_name: str | None = None, *, all_sessions: bool = False) -> int:
    """Sessions of one app password (or, with all_sessions, every session of the DID)."""
    if all_sessions:
        conn.execute("DELETE FROM session WHERE did = ?", (did,))
    else:
        conn.execute("DELETE FROM session WHERE did = ? AND app_password_name = ?", (did, app_password_name))
    return conn.changes()


def end_every_session(conn: Conn, did: str) -> int:
    """After a password change: the account's password/app-password sessions, its OAuth
    sessions and its remembered OAuth sign-in devices all go. Returns how many sessions ended."""
    ended = delete_sessions(conn, did, all_sessions=True)
    for table in ("oauth_session", "oauth_device"):
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)).fetchone():
            conn.execute(f"DELETE FROM {table} WHERE did = ?", (did,))
            if table == "oauth_session":
                ended += conn.changes()
    return ended


def delete_expired_sessions(conn: Conn, now: int) -> int:
    conn.execute("DELETE FROM session WHERE expires_at <= ?", (now,))
    return conn.changes()


def list_sessions(conn: Conn, did: str, now: int) -> list[SessionRow]:
    """The DID's live sessions, newest first (the account page's device list)."""
    rows = conn.execute(f"SELECT {_SESSION_COLS} FROM session WHERE did = ? AND expires_at > ? ORDER BY refreshed_at DESC",
                        (did, now)).fetchall()
    return [_session(r) for r in rows]  # type: ignore[misc]


def delete_did_session(conn: Conn, did: str, session_id: str) -> bool:
    conn.execute("DELETE FROM session WHERE id = ? AND did = ?", (session_id, did))
    return conn.changes() == 1


def count_sessions(conn: Conn, did: str) -> int:
    return conn.execute("SELECT count(*) FROM session WHERE did = ?", (did,)).fetchone()[0]


# ---- app passwords ----------------------------------------------------------------------


def insert_app_password(conn: Conn, did: str, row: AppPasswordRow) -> bool:
    """False if the DID already has an app password of that name."""
    conn.execute(
        "INSERT OR IGNORE INTO app_password (did, name, password_hash, privileged, created_at) VALUES (?, ?, ?, ?, ?)",
        (did, row.name, row.password_hash, int(row.privileged), row.created_at),
    )
    return conn.changes() == 1


def list_app_passwords(conn: Conn, did: str) -> list[AppPasswordRow]:
    rows = conn.execute(
        "SELECT name, password_hash, privileged, created_at FROM app_password WHERE did = ? ORDER BY created_at, name",
        (did,),
    ).fetchall()
    return [AppPasswordRow(n, h, bool(p), c) for n, h, p, c in rows]


def count_app_passwords(conn: Conn, did: str) -> int:
    return conn.execute("SELECT count(*) FROM app_password WHERE did = ?", (did,)).fetchone()[0]


def delete_app_password(conn: Conn, did: str, name: str) -> bool:
    """Delete the app password and every session signed in with it."""
    conn.execute("DELETE FROM app_password WHERE did = ? AND name = ?", (did, name))
    deleted = conn.changes() == 1
    conn.execute("DELETE FROM session WHERE did = ? AND app_password_name = ?", (did, name))
    return deleted


# ---- account lookup for sign-in -----------------------------------------------------------


def find_account_for_login(conn: Conn, identifier: str) -> tuple[str, str | None, str | None, str | None, str] | None:
    """(did, handle, email, password_hash, status) by DID, handle or email (case-insensitive)."""
    ident = identifier.lower()
    if ident.startswith("did:"):
        sql, arg = "SELECT did, handle, email, password_hash, status FROM account WHERE did = ?", identifier
    elif "@" in ident:
        sql, arg = "SELECT did, handle, email, password_hash, status FROM account WHERE lower(email) = ?", ident
    else:
        sql, arg = "SELECT did, handle, email, password_hash, status FROM account WHERE lower(handle) = ?", ident
    row = conn.execute(sql, (arg,)).fetchone()
    return tuple(row) if row else None
