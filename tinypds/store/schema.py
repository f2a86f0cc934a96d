"""Schema migrations: tinypds/store/migrations/NNNN_name.sql applied in order, all-or-nothing.

The schema version is `PRAGMA user_version` (= the highest applied NNNN); the file is
stamped with `PRAGMA application_id` in the same transaction. A database newer than this
code knows is refused. Tricky bit: both pragmas live in the file header and roll back
with the transaction, so a failed migration leaves the file exactly as it was.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_DIR = Path(__file__).with_name("migrations")  # shipped as package data beside this module


class SchemaError(Exception):
    """The schema cannot be brought to the version this code expects."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, sql) for every migration file, in version order."""
    out = []
    for entry in _DIR.iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(set(versions)) != len(versions):
        raise SchemaError(f"two migration files share a number: {versions}")
    return out


def latest_version() -> int:
    found = migrations()
    return found[-1][0] if found else 0


def current_version(conn: Any) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def check_version(conn: Any) -> int:
    version = current_version(conn)
    latest = latest_version()
    if version > latest:
        raise SchemaError(
            f"database schema version {version} is newer than this tinypds knows ({latest}); upgrade tinypds"
        )
    return version


_MARKER = re.compile(r"^-- marker: ([a-z_][a-z0-9_]*)$", re.M)


def _skipped(conn: Any, version: int, sql: str) -> bool:
    """A migration whose `-- marker: TABLE` line names a table the file lacks although its
    version is past this one: numbers are handed out ahead, so a file migrated by a
    development tree that had a later number first skipped it. It runs now."""
    m = _MARKER.search(sql)
    if m is None or version > current_version(conn):
        return False
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (m.group(1),)).fetchone() is None


def migrate(conn: Any, application_id: int) -> list[str]:
    """Apply pending migrations in one transaction; return the names applied."""
    from .db import DatabaseError  # local: db imports this module

    try:
        version = check_version(conn)
    except SchemaError as exc:
        raise DatabaseError(str(exc)) from exc
    pending = [(v, name, sql) for v, name, sql in migrations() if v > version or _skipped(conn, v, sql)]
    if not pending:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for v, name, sql in pending:
            try:
                conn.execute(sql)
            except Exception as exc:
                raise DatabaseError(f"migration {name} failed: {exc}") from exc
            conn.execute(f"PRAGMA user_version={max(v, current_version(conn))}")
        conn.execute(f"PRAGMA application_id={application_id}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [name for _, name, _ in pending]
