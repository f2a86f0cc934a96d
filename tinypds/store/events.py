"""The firehose event log: append (inside a commit transaction), read after a cursor, prune.

Only SQL. Sequence numbers come from meta('seq'), a high-water mark bumped in the same
transaction as the event row, so seq never goes backwards even after old events are pruned.
Bodies are stored as DAG-CBOR without `seq`; the framer adds it (core.events).
"""

from __future__ import annotations

from typing import Any, NamedTuple

Conn = Any


class EventRow(NamedTuple):
    seq: int
    type: str
    did: str
    time: str
    body: bytes


def next_seq(conn: Conn) -> int:
    return conn.execute(
        "INSERT INTO meta (key, value) VALUES ('seq', 1) "
        "ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value"
    ).fetchone()[0]


def append_event(conn: Conn, type: str, did: str, time: str, body: bytes) -> int:
    """Append one event row and return its seq (call inside the write transaction)."""
    seq = next_seq(conn)
    conn.execute("INSERT INTO events (seq, type, did, time, body) VALUES (?, ?, ?, ?, ?)", (seq, type, did, time, body))
    return seq


def last_seq(conn: Conn) -> int:
    """The highest seq ever handed out (0 if none)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
    return int(row[0]) if row else 0


def first_seq(conn: Conn) -> int | None:
    row = conn.execute("SELECT min(seq) FROM events").fetchone()
    return row[0]


def events_after(conn: Conn, cursor: int, limit: int = 500, max_bytes: int | None = None) -> list[EventRow]:
    """Up to `limit` events after `cursor`, stopping once their bodies pass `max_bytes`
    (at least one event is returned when there is one)."""
    out: list[EventRow] = []
    total = 0
    for r in conn.execute(
        "SELECT seq, type, did, time, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit)
    ):
        out.append(EventRow(*r))
        total += len(r[4])
        if max_bytes is not None and total >= max_bytes:
            break
    return out


def prune_events(conn: Conn, before_time: str) -> int:
    """Delete events older than `before_time` (ISO string); returns rows deleted."""
    before = conn.total_changes()
    conn.execute("DELETE FROM events WHERE time < ?", (before_time,))
    return conn.total_changes() - before
