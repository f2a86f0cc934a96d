"""Sequence-number guard rows in `meta`: the reservation that keeps seq moving forward.

Only SQL. `meta('seq')` (owned by store.events) is the last seq handed out;
`meta('seq_reserved')` is the highest seq this database has promised not to exceed
without first recording a higher reservation outside the file (services.sync.firehose writes
the same number to a sidecar file). Tricky bit: a restored older backup carries an older
reservation than the sidecar file, which is how a restore is detected.
"""

from __future__ import annotations

from typing import Any

Conn = Any


def get_meta_int(conn: Conn, key: str) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def set_meta_int(conn: Conn, key: str, value: int) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, int(value)),
    )


def raise_seq_floor(conn: Conn, floor: int) -> int:
    """Make the next seq handed out greater than `floor` (never lowers it). Returns the last seq."""
    current = get_meta_int(conn, "seq") or 0
    if floor > current:
        set_meta_int(conn, "seq", floor)
        return floor
    return current


def get_reserved(conn: Conn) -> int:
    return get_meta_int(conn, "seq_reserved") or 0


def set_reserved(conn: Conn, value: int) -> None:
    set_meta_int(conn, "seq_reserved", value)


def max_event_seq(conn: Conn) -> int | None:
    return conn.execute("SELECT max(seq) FROM events").fetchone()[0]
