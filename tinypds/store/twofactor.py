"""Second factors in SQL: the TOTP row, recovery-code hashes, passkeys (schema 0009_twofactor.sql).

Only SQL; values arrive already sealed or hashed (services/twofactor.py does the crypto).
Must not import services. Tricky bit: `advance_totp_step` is a compare-and-set, so one TOTP
code is accepted once even when two sign-ins race with it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

Conn = Any  # an apsw.Connection


class TotpRow(NamedTuple):
    secret_sealed: bytes
    confirmed: bool
    last_step: int
    created_at: int


class PasskeyRow(NamedTuple):
    credential_id: bytes
    name: str
    public_key: bytes
    sign_count: int
    transports: str
    created_at: int
    last_used_at: int | None


# ---- TOTP ---------------------------------------------------------------------------------


def get_totp(conn: Conn, did: str) -> TotpRow | None:
    row = conn.execute("SELECT secret_sealed, confirmed, last_step, created_at FROM totp WHERE did = ?", (did,)).fetchone()
    return TotpRow(bytes(row[0]), bool(row[1]), row[2], row[3]) if row else None


def put_pending_totp(conn: Conn, did: str, sealed: bytes, now: int) -> bool:
    """Start (or restart) enrolment; False if a confirmed authenticator is already there."""
    row = get_totp(conn, did)
    if row is not None and row.confirmed:
        return False
    conn.execute("INSERT OR REPLACE INTO totp (did, secret_sealed, confirmed, last_step, created_at) VALUES (?, ?, 0, 0, ?)",
                 (did, sealed, now))
    return True


def confirm_totp(conn: Conn, did: str, step: int) -> bool:
    conn.execute("UPDATE totp SET confirmed = 1, last_step = ? WHERE did = ? AND confirmed = 0", (step, did))
    return conn.changes() == 1


def advance_totp_step(conn: Conn, did: str, step: int) -> bool:
    """Record `step` as used iff it is newer than the last used one (replay guard)."""
    conn.execute("UPDATE totp SET last_step = ? WHERE did = ? AND confirmed = 1 AND last_step < ?", (step, did, step))
    return conn.changes() == 1


def delete_totp(conn: Conn, did: str) -> bool:
    conn.execute("DELETE FROM totp WHERE did = ?", (did,))
    return conn.changes() == 1


# ---- recovery codes -------------------------------------------------------------------------


def replace_recovery_codes(conn: Conn, did: str, codes: list[tuple[str, str]], now: int) -> None:
    """Drop the old codes and store (lookup, hash) pairs."""
    conn.execute("DELETE FROM recovery_code WHERE did = ?", (did,))
    for lookup, code_hash in codes:
        conn.execute("INSERT INTO recovery_code (did, lookup, code_hash, created_at) VALUES (?, ?, ?, ?)",
                     (did, lookup, code_hash, now))


def get_recovery_hash(conn: Conn, did: str, lookup: str) -> str | None:
    row = conn.execute("SELECT code_hash FROM recovery_code WHERE did = ? AND lookup = ?", (did, lookup)).fetchone()
    return row[0] if row else None


def use_recovery_code(conn: Conn, did: str, lookup: str, code_hash: str) -> bool:
    """Consume the code iff it is still there (single use even under a race)."""
    conn.execute("DELETE FROM recovery_code WHERE did = ? AND lookup = ? AND code_hash = ?", (did, lookup, code_hash))
    return conn.changes() == 1


def count_recovery_codes(conn: Conn, did: str) -> int:
    return conn.execute("SELECT count(*) FROM recovery_code WHERE did = ?", (did,)).fetchone()[0]


# ---- passkeys --------------------------------------------------------------------------------

_PK_COLS = "credential_id, name, public_key, sign_count, transports, created_at, last_used_at"


def _pk(row: tuple) -> PasskeyRow:
    r = list(row)
    r[0], r[2] = bytes(r[0]), bytes(r[2])
    return PasskeyRow(*r)


def add_passkey(conn: Conn, did: str, row: PasskeyRow) -> bool:
    conn.execute(f"INSERT OR IGNORE INTO passkey (did, {_PK_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (did, *row))
    return conn.changes() == 1


def list_passkeys(conn: Conn, did: str) -> list[PasskeyRow]:
    return [_pk(r) for r in conn.execute(f"SELECT {_PK_COLS} FROM passkey WHERE did = ? ORDER BY created_at", (did,)).fetchall()]


def get_passkey(conn: Conn, did: str, credential_id: bytes) -> PasskeyRow | None:
    row = conn.execute(f"SELECT {_PK_COLS} FROM passkey WHERE did = ? AND credential_id = ?", (did, credential_id)).fetchone()
    return _pk(row) if row else None


def touch_passkey(conn: Conn, credential_id: bytes, sign_count: int, now: int) -> None:
    conn.execute("UPDATE passkey SET sign_count = ?, last_used_at = ? WHERE credential_id = ?", (sign_count, now, credential_id))


def delete_passkey(conn: Conn, did: str, credential_id: bytes) -> bool:
    conn.execute("DELETE FROM passkey WHERE did = ? AND credential_id = ?", (did, credential_id))
    return conn.changes() == 1


def count_passkeys(conn: Conn, did: str) -> int:
    return conn.execute("SELECT count(*) FROM passkey WHERE did = ?", (did,)).fetchone()[0]


# ---- all at once --------------------------------------------------------------------------------


def delete_all(conn: Conn, did: str) -> int:
    """Every second factor of `did` (the owner's `tinypds account 2fa off`, account deletion)."""
    n = 0
    for table in ("totp", "recovery_code", "passkey"):
        conn.execute(f"DELETE FROM {table} WHERE did = ?", (did,))
        n += conn.changes()
    return n
