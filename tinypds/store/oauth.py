"""OAuth authorization-server rows (SQL only; schema in migrations/0006_oauth.sql).

Every function takes a connection (inside `Database.write`/`read`). Must not import
services. Secrets arrive already hashed. Tricky bits: code redemption and refresh rotation
are compare-and-swap updates (`redeem_code`, `rotate_tokens` return None/False when the
presented secret is no longer current), so two racing requests cannot both win.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

Conn = Any  # an apsw.Connection


class RequestRow(NamedTuple):
    id: str
    client_id: str
    client_auth: dict
    params: dict
    code_challenge: str
    dpop_jkt: str | None
    created_at: int
    expires_at: int
    did: str | None
    code_hash: str | None
    code_expires_at: int | None
    session_id: str | None


class SessionRow(NamedTuple):
    id: str
    did: str
    client_id: str
    client_auth: dict
    dpop_jkt: str
    scope: str
    created_at: int
    updated_at: int
    expires_at: int
    refresh_hash: str
    refresh_expires_at: int
    access_hash: str
    access_expires_at: int


_REQ_COLS = "id, client_id, client_auth, params, code_challenge, dpop_jkt, created_at, expires_at, did, code_hash, code_expires_at, session_id"
_SES_COLS = (
    "id, did, client_id, client_auth, dpop_jkt, scope, created_at, updated_at, expires_at, "
    "refresh_hash, refresh_expires_at, access_hash, access_expires_at"
)


def _req(row: Any) -> RequestRow | None:
    if row is None:
        return None
    r = list(row)
    r[2], r[3] = json.loads(r[2]), json.loads(r[3])
    return RequestRow(*r)


def _ses(row: Any) -> SessionRow | None:
    if row is None:
        return None
    r = list(row)
    r[3] = json.loads(r[3])
    return SessionRow(*r)


# ---- authorization requests ------------------------------------------------------------


def insert_request(conn: Conn, r: RequestRow) -> bool:
    """False if the PKCE challenge was already used by another request."""
    conn.execute(
        f"INSERT OR IGNORE INTO oauth_request ({_REQ_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (r.id, r.client_id, json.dumps(r.client_auth), json.dumps(r.params), r.code_challenge, r.dpop_jkt,
         r.created_at, r.expires_at, r.did, r.code_hash, r.code_expires_at, r.session_id),
    )
    return conn.changes() == 1


def get_request(conn: Conn, request_id: str) -> RequestRow | None:
    return _req(conn.execute(f"SELECT {_REQ_COLS} FROM oauth_request WHERE id = ?", (request_id,)).fetchone())


def request_by_code(conn: Conn, code_hash: str) -> RequestRow | None:
    return _req(conn.execute(f"SELECT {_REQ_COLS} FROM oauth_request WHERE code_hash = ?", (code_hash,)).fetchone())


def set_request_code(conn: Conn, request_id: str, did: str, code_hash: str, code_expires_at: int, now: int) -> bool:
    """Attach the account and a code to a still-pending request (once)."""
    conn.execute(
        "UPDATE oauth_request SET did = ?, code_hash = ?, code_expires_at = ? "
        "WHERE id = ? AND code_hash IS NULL AND expires_at > ?",
        (did, code_hash, code_expires_at, request_id, now),
    )
    return conn.changes() == 1


def redeem_code(conn: Conn, request_id: str, session_id: str) -> bool:
    """Mark the code used (compare-and-swap: False if it already was)."""
    conn.execute("UPDATE oauth_request SET session_id = ? WHERE id = ? AND session_id IS NULL", (session_id, request_id))
    return conn.changes() == 1


def delete_request(conn: Conn, request_id: str) -> None:
    conn.execute("DELETE FROM oauth_request WHERE id = ?", (request_id,))


def delete_expired(conn: Conn, now: int, keep_requests: int) -> None:
    """Housekeeping: stale requests (kept `keep_requests` s past expiry, so replayed codes and
    reused PKCE challenges are still recognised), sessions, used refresh tokens, devices."""
    conn.execute("DELETE FROM oauth_request WHERE expires_at <= ?", (now - keep_requests,))
    conn.execute("DELETE FROM oauth_session WHERE expires_at <= ? OR refresh_expires_at <= ?", (now, now))
    conn.execute("DELETE FROM oauth_used_refresh WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM oauth_device WHERE expires_at <= ?", (now,))


# ---- sessions (grants) -----------------------------------------------------------------


def insert_session(conn: Conn, s: SessionRow) -> None:
    conn.execute(
        f"INSERT INTO oauth_session ({_SES_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (s.id, s.did, s.client_id, json.dumps(s.client_auth), s.dpop_jkt, s.scope, s.created_at, s.updated_at,
         s.expires_at, s.refresh_hash, s.refresh_expires_at, s.access_hash, s.access_expires_at),
    )


def get_session(conn: Conn, session_id: str) -> SessionRow | None:
    return _ses(conn.execute(f"SELECT {_SES_COLS} FROM oauth_session WHERE id = ?", (session_id,)).fetchone())


def session_by_access(conn: Conn, access_hash: str) -> SessionRow | None:
    return _ses(conn.execute(f"SELECT {_SES_COLS} FROM oauth_session WHERE access_hash = ?", (access_hash,)).fetchone())


def session_by_refresh(conn: Conn, refresh_hash: str) -> SessionRow | None:
    return _ses(conn.execute(f"SELECT {_SES_COLS} FROM oauth_session WHERE refresh_hash = ?", (refresh_hash,)).fetchone())


def used_refresh_session(conn: Conn, refresh_hash: str) -> str | None:
    row = conn.execute("SELECT session_id FROM oauth_used_refresh WHERE hash = ?", (refresh_hash,)).fetchone()
    return row[0] if row else None


def rotate_tokens(conn: Conn, session_id: str, old_refresh: str, new_refresh: str, refresh_expires_at: int,
                  new_access: str, access_expires_at: int, now: int) -> bool:
    """Replace both tokens iff `old_refresh` is current; remember the old one as used."""
    conn.execute(
        "UPDATE oauth_session SET refresh_hash = ?, refresh_expires_at = ?, access_hash = ?, access_expires_at = ?, "
        "updated_at = ? WHERE id = ? AND refresh_hash = ?",
        (new_refresh, refresh_expires_at, new_access, access_expires_at, now, session_id, old_refresh),
    )
    if conn.changes() != 1:
        return False
    conn.execute(
        "INSERT OR IGNORE INTO oauth_used_refresh (hash, session_id, expires_at) VALUES (?, ?, ?)",
        (old_refresh, session_id, refresh_expires_at),
    )
    return True


def delete_session(conn: Conn, session_id: str) -> bool:
    conn.execute("DELETE FROM oauth_session WHERE id = ?", (session_id,))
    deleted = conn.changes() == 1
    conn.execute("DELETE FROM oauth_used_refresh WHERE session_id = ?", (session_id,))
    return deleted


def delete_client_sessions(conn: Conn, did: str, client_id: str) -> int:
    ids = [r[0] for r in conn.execute("SELECT id FROM oauth_session WHERE did = ? AND client_id = ?", (did, client_id))]
    for sid in ids:
        delete_session(conn, sid)
    return len(ids)


# ---- devices and authorized apps ---------------------------------------------------------


def insert_device(conn: Conn, id_hash: str, did: str, now: int, expires_at: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO oauth_device (id_hash, did, created_at, expires_at) VALUES (?, ?, ?, ?)",
        (id_hash, did, now, expires_at),
    )


def device_did(conn: Conn, id_hash: str, now: int) -> str | None:
    row = conn.execute("SELECT did FROM oauth_device WHERE id_hash = ? AND expires_at > ?", (id_hash, now)).fetchone()
    return row[0] if row else None


def delete_device(conn: Conn, id_hash: str) -> None:
    conn.execute("DELETE FROM oauth_device WHERE id_hash = ?", (id_hash,))


def upsert_authorization(conn: Conn, did: str, client_id: str, client_name: str | None, scope: str, now: int) -> None:
    conn.execute(
        "INSERT INTO oauth_authorization (did, client_id, client_name, scope, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (did, client_id) DO UPDATE SET "
        "client_name = excluded.client_name, scope = excluded.scope, updated_at = excluded.updated_at",
        (did, client_id, client_name, scope, now, now),
    )


def list_authorizations(conn: Conn, did: str) -> list[tuple[str, str | None, str, int, int]]:
    """(client_id, client_name, scope, created_at, updated_at), newest first."""
    return [tuple(r) for r in conn.execute(
        "SELECT client_id, client_name, scope, created_at, updated_at FROM oauth_authorization "
        "WHERE did = ? ORDER BY updated_at DESC", (did,))]


def delete_authorization(conn: Conn, did: str, client_id: str) -> int:
    """Forget the app and end every session it holds; returns the sessions ended."""
    conn.execute("DELETE FROM oauth_authorization WHERE did = ? AND client_id = ?", (did, client_id))
    return delete_client_sessions(conn, did, client_id)
