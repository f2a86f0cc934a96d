"""Identity tables: the local DID's record, its PLC operation log, single-use action tokens.

Only SQL (call inside `Database.write` / `read`). Ops are stored as JSON text exactly as
signed; the caller computes and checks the CID. Tokens are stored as a hash only, one
outstanding token per (did, purpose); taking a token deletes it (single use).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

Conn = Any


class IdentityRow(NamedTuple):
    did: str
    method: str  # 'plc' | 'web'
    plc_url: str | None  # None: ops kept in the local log only
    signing_key: str
    rotation_key: str | None
    created_at: str


class PlcLogRow(NamedTuple):
    seq: int
    cid: str
    operation: dict
    created_at: str


_COLS = "did, method, plc_url, signing_key, rotation_key, created_at"


def create_identity(
    conn: Conn, did: str, method: str, signing_key: str, created_at: str,
    *, plc_url: str | None = None, rotation_key: str | None = None,
) -> None:
    conn.execute(
        f"INSERT INTO identity ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
        (did, method, plc_url, signing_key, rotation_key, created_at),
    )


def get_identity(conn: Conn, did: str | None = None) -> IdentityRow | None:
    """The identity of `did`, or (did=None) the database's one local identity."""
    if did is None:
        row = conn.execute(f"SELECT {_COLS} FROM identity ORDER BY created_at LIMIT 1").fetchone()
    else:
        row = conn.execute(f"SELECT {_COLS} FROM identity WHERE did = ?", (did,)).fetchone()
    return IdentityRow(*row) if row else None


def set_keys(conn: Conn, did: str, *, signing_key: str | None = None, rotation_key: str | None = None) -> None:
    if signing_key is not None:
        conn.execute("UPDATE identity SET signing_key = ? WHERE did = ?", (signing_key, did))
    if rotation_key is not None:
        conn.execute("UPDATE identity SET rotation_key = ? WHERE did = ?", (rotation_key, did))


# ---- the PLC log -------------------------------------------------------------------


def append_plc_op(conn: Conn, did: str, cid: str, operation: dict, created_at: str) -> int:
    """Append the next op of `did`'s log; returns its seq (0 for the genesis)."""
    row = conn.execute("SELECT max(seq) FROM plc_log WHERE did = ?", (did,)).fetchone()
    seq = 0 if row[0] is None else row[0] + 1
    conn.execute(
        "INSERT INTO plc_log (did, seq, cid, operation, created_at) VALUES (?, ?, ?, ?, ?)",
        (did, seq, cid, json.dumps(operation, separators=(",", ":"), sort_keys=True), created_at),
    )
    return seq


def plc_ops(conn: Conn, did: str) -> list[PlcLogRow]:
    rows = conn.execute(
        "SELECT seq, cid, operation, created_at FROM plc_log WHERE did = ? ORDER BY seq", (did,)
    ).fetchall()
    return [PlcLogRow(seq, cid, json.loads(op), created) for seq, cid, op, created in rows]


def last_plc_op(conn: Conn, did: str) -> PlcLogRow | None:
    row = conn.execute(
        "SELECT seq, cid, operation, created_at FROM plc_log WHERE did = ? ORDER BY seq DESC LIMIT 1", (did,)
    ).fetchone()
    return PlcLogRow(row[0], row[1], json.loads(row[2]), row[3]) if row else None


# ---- single-use tokens -------------------------------------------------------------------


def put_token(conn: Conn, did: str, purpose: str, token_hash: bytes, expires_at: int) -> None:
    """Store a token hash, replacing any outstanding token of the same purpose."""
    conn.execute(
        "INSERT INTO action_tokens (did, purpose, token_hash, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (did, purpose) DO UPDATE SET token_hash = excluded.token_hash, expires_at = excluded.expires_at",
        (did, purpose, bytes(token_hash), int(expires_at)),
    )


def take_token(conn: Conn, did: str, purpose: str) -> tuple[bytes, int] | None:
    """(hash, expires_at) of the outstanding token, deleting it (call in a write)."""
    row = conn.execute(
        "DELETE FROM action_tokens WHERE did = ? AND purpose = ? RETURNING token_hash, expires_at", (did, purpose)
    ).fetchone()
    return (bytes(row[0]), int(row[1])) if row else None


def peek_token(conn: Conn, did: str, purpose: str) -> tuple[bytes, int] | None:
    row = conn.execute(
        "SELECT token_hash, expires_at FROM action_tokens WHERE did = ? AND purpose = ?", (did, purpose)
    ).fetchone()
    return (bytes(row[0]), int(row[1])) if row else None
