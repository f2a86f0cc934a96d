"""Schema migrations: an older database migrates forward in one transaction; a newer one is refused.

The "older release" database is built the way that release did: its migrations applied,
user_version and application_id stamped, rows written. A failing migration must leave
the file exactly as it was (nothing half-applied).
"""

from __future__ import annotations

import apsw
import pytest

from tinypds.store import schema
from tinypds.store.db import APPLICATION_ID, Database, DatabaseError

OLD = 2  # schema version of the "older release" (repo + auth tables only)


def _old_database(path) -> None:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    for version, _name, sql in schema.migrations():
        if version > OLD:
            break
        conn.execute(sql)
    conn.execute(f"PRAGMA user_version={OLD}")
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("INSERT INTO account (did, handle, status, created_at) VALUES ('did:plc:old', 'old.test', 'active', 'x')")
    conn.execute("INSERT INTO meta (key, value) VALUES ('seq', 41)")
    conn.close()


def _tables(path) -> set[str]:
    conn = apsw.Connection(str(path))
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    finally:
        conn.close()


def _version(path) -> int:
    conn = apsw.Connection(str(path))
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_older_database_migrates_forward_keeping_its_rows(tmp_path):
    assert schema.latest_version() > OLD
    path = tmp_path / "tinypds.sqlite"
    _old_database(path)
    assert "blobs" not in _tables(path)
    with Database.open(path) as db:
        assert db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == schema.latest_version()
        assert db.read(lambda c: c.execute("SELECT handle FROM account").fetchone()[0]) == "old.test"
        assert db.read(lambda c: c.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]) == 41
    assert {"blobs", "identity", "preference"} <= _tables(path)


def test_a_failing_migration_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "tinypds.sqlite"
    _old_database(path)
    real = schema.migrations()
    broken = real + [(real[-1][0] + 1, f"{real[-1][0] + 1:04d}_broken.sql", "CREATE TABLE ok_so_far (x); THIS IS NOT SQL;")]
    monkeypatch.setattr(schema, "migrations", lambda: broken)
    before = _tables(path)
    with pytest.raises(DatabaseError, match="broken"):
        Database.open(path)
    assert _version(path) == OLD
    assert _tables(path) == before, "a failed migration left some of its tables behind"


def test_newer_schema_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "tinypds.sqlite"
    Database.open(path).close()
    conn = apsw.Connection(str(path))
    conn.execute(f"PRAGMA user_version={schema.latest_version() + 3}")
    conn.close()
    with pytest.raises(DatabaseError) as err:
        Database.open(path)
    assert "newer than this tinypds knows" in str(err.value)
    assert "upgrade tinypds" in str(err.value)
    assert _version(path) == schema.latest_version() + 3  # untouched
