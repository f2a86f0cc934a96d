"""Account preferences (SQL only; schema in migrations/0005_preferences.sql).

Every function takes a connection: `replace_preferences` runs inside `Database.write`,
`list_preferences` inside `Database.read`. Must not import services. Which rows a caller
may replace (namespace, full-access-only types) is decided by services.account.preferences and
passed in as a predicate on the stored name.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

Conn = Any  # an apsw.Connection


def list_preferences(conn: Conn, did: str) -> list[tuple[str, str]]:
    """(name, value_json) for every stored preference of `did`, in put order."""
    return [(name, value) for name, value in conn.execute(
        "SELECT name, value_json FROM preference WHERE did = ? ORDER BY id", (did,)
    )]


def replace_preferences(conn: Conn, did: str, replaceable: Callable[[str], bool],
                        rows: Iterable[tuple[str, str]]) -> None:
    """Delete `did`'s preferences whose name is `replaceable`, then append `rows` (name, value_json)."""
    doomed = [(row_id,) for row_id, name in conn.execute("SELECT id, name FROM preference WHERE did = ?", (did,))
              if replaceable(name)]
    if doomed:
        conn.executemany("DELETE FROM preference WHERE id = ?", doomed)
    conn.executemany(
        "INSERT INTO preference (did, name, value_json) VALUES (?, ?, ?)",
        [(did, name, value) for name, value in rows],
    )
