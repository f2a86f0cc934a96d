"""Database: pragmas, identity check, migrations, the single writer, readers, backup."""

from __future__ import annotations

import asyncio
import threading

import apsw
import pytest

from tinypds.store import schema
from tinypds.store.db import APPLICATION_ID, Database, DatabaseError


@pytest.fixture
def db(tmp_path):
    d = Database.open(tmp_path / "tinypds.sqlite")
    yield d
    d.close()


def test_fresh_file_is_stamped_and_migrated(db):
    assert db.read(lambda c: c.execute("PRAGMA application_id").fetchone()[0]) == APPLICATION_ID
    assert db.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0]) == schema.latest_version()
    assert db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    tables = set(db.read(lambda c: [r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type IN ('table', 'view')")]))
    assert {"blocks", "records", "repo_root", "account", "events", "meta", "record_blobs"} <= tables


def test_writer_pragmas(db):
    assert db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    assert db.write(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1


def test_tables_are_strict(db):
    with pytest.raises(apsw.ConstraintError):
        db.write(lambda c: c.execute("INSERT INTO blocks (cid, rev, data) VALUES (?, ?, ?)", (b"x", b"rev", b"y")))


def test_write_rolls_back_on_exception(db):
    def bad(c):
        c.execute("INSERT INTO meta (key, value) VALUES ('k', 1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        db.write(bad)
    assert db.read(lambda c: c.execute("SELECT count(*) FROM meta WHERE key='k'").fetchone()[0]) == 0


def test_writes_run_on_one_thread_and_nest(db):
    idents = []

    def w(c):
        idents.append(threading.get_ident())
        db.write(lambda c2: c2.execute("INSERT INTO meta (key, value) VALUES (?, 1)", (f"n{len(idents)}",)))
        return c.in_transaction

    threads = [threading.Thread(target=lambda: db.write(w)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.write(w) is True
    assert len(idents) == 5 and len(set(idents)) == 1 and threading.get_ident() not in idents
    assert db.read(lambda c: c.execute("SELECT count(*) FROM meta WHERE key LIKE 'n%'").fetchone()[0]) == 5


def test_nested_write_shares_the_outer_transaction(db):
    def outer(c):
        db.write(lambda c2: c2.execute("INSERT INTO meta (key, value) VALUES ('inner', 1)"))
        raise RuntimeError("abort outer")

    with pytest.raises(RuntimeError):
        db.write(outer)
    assert db.read(lambda c: c.execute("SELECT count(*) FROM meta WHERE key='inner'").fetchone()[0]) == 0


def test_async_write_and_read(db):
    async def main():
        await db.awrite(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('a', 7)"))
        return await db.aread(lambda c: c.execute("SELECT value FROM meta WHERE key='a'").fetchone()[0])

    assert asyncio.run(main()) == 7


def test_reader_snapshot_does_not_see_later_writes(db):
    db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('v', 1)"))
    with db.reader() as r:
        db.write(lambda c: c.execute("UPDATE meta SET value = 2 WHERE key='v'"))
        assert r.execute("SELECT value FROM meta WHERE key='v'").fetchone()[0] == 1
    assert db.read(lambda c: c.execute("SELECT value FROM meta WHERE key='v'").fetchone()[0]) == 2


def test_close_checkpoints_into_the_main_file(tmp_path):
    path = tmp_path / "t.sqlite"
    db = Database.open(path)
    db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')"))
    db.close()
    wal = tmp_path / "t.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(path.read_bytes())  # the main file alone is complete
    c = apsw.Connection(str(copy))
    assert c.execute("SELECT value FROM meta WHERE key='x'").fetchone()[0] == "y"


def test_wrong_files_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(DatabaseError, match="not an SQLite database"):
        Database.open(junk)
    other = tmp_path / "other.sqlite"
    c = apsw.Connection(str(other))
    c.execute("CREATE TABLE t (a)")
    c.close()
    with pytest.raises(DatabaseError, match="not a tinypds database"):
        Database.open(other)
    assert apsw.Connection(str(other)).execute("SELECT count(*) FROM sqlite_schema").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "t.sqlite"
    Database.open(path).close()
    c = apsw.Connection(str(path))
    c.execute(f"PRAGMA user_version={schema.latest_version() + 1}")
    c.close()
    with pytest.raises(DatabaseError, match="newer than this tinypds knows"):
        Database.open(path)


def test_failed_migration_leaves_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "t.sqlite"
    real = schema.migrations()
    broken = real + [(real[-1][0] + 1, "9999_broken.sql", "CREATE TABLE ok_table (a INTEGER) STRICT; THIS IS NOT SQL;")]
    Database.open(path).close()
    monkeypatch.setattr(schema, "migrations", lambda: broken)
    with pytest.raises(DatabaseError, match="9999_broken.sql"):
        Database.open(path)
    c = apsw.Connection(str(path))
    assert c.execute("PRAGMA user_version").fetchone()[0] == real[-1][0]
    assert c.execute("SELECT count(*) FROM sqlite_schema WHERE name='ok_table'").fetchone()[0] == 0


def test_backup_is_a_complete_single_file(db, tmp_path):
    db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('b', 42)"))
    seen = []
    dest = tmp_path / "backup.sqlite"
    db.backup_to(dest, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]
    assert not (tmp_path / "backup.sqlite-wal").exists()
    copy = Database.open(dest)
    try:
        assert copy.read(lambda c: c.execute("SELECT value FROM meta WHERE key='b'").fetchone()[0]) == 42
    finally:
        copy.close()
    with pytest.raises(DatabaseError, match="already exists"):
        db.backup_to(dest)


def test_closed_database_refuses_work(tmp_path):
    db = Database.open(tmp_path / "t.sqlite")
    db.close()
    with pytest.raises(DatabaseError):
        db.write(lambda c: None)


def test_close_does_not_wait_for_another_process_using_the_file(tmp_path):
    """A CLI command closing its handle on a live server's database must not stall the server:
    the final checkpoint reports busy at once instead of waiting out the busy timeout."""
    path = tmp_path / "tinypds.sqlite"
    server = Database.open(path)
    server.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('x', 1)"))
    other = apsw.Connection(str(path))  # stands for the server's reader mid-stream
    other.execute("BEGIN")
    other.execute("SELECT count(*) FROM meta").fetchall()
    cli = Database.open(path)
    done = threading.Event()
    threading.Thread(target=lambda: (cli.close(), done.set()), daemon=True).start()
    try:
        assert done.wait(5), "close() waited for the other connection (busy timeout is 10 s)"
    finally:
        other.execute("COMMIT")
        other.close()
        done.wait(15)
        server.close()
    check = Database.open(path)
    assert check.read(lambda c: c.execute("SELECT value FROM meta WHERE key='x'").fetchone()[0]) == 1
    check.close()


def _journal(db) -> str:
    return db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])


def test_rollback_journal_only_when_nothing_else_has_the_file_open(tmp_path):
    """A big write may run under a rollback journal (data written once), but only when no
    other connection could see the switch; WAL is back afterwards, even after a failure."""
    db = Database.open(tmp_path / "t.sqlite")
    other = None
    try:
        assert _journal(db) == "wal"  # this thread's reader is open: rollback_journal closes it first
        with db.rollback_journal() as switched:
            assert switched
            db.write(lambda c: c.execute("INSERT INTO meta (key, value) VALUES ('j', 1)"))
        assert _journal(db) == "wal"

        def fails(c):
            c.execute("INSERT INTO meta (key, value) VALUES ('k', 1)")
            raise RuntimeError("boom")
        with pytest.raises(RuntimeError, match="boom"):
            with db.rollback_journal() as switched:
                assert switched
                db.write(fails)
        assert db.read(lambda c: c.execute("SELECT key FROM meta WHERE key IN ('j', 'k')").fetchall()) == [("j",)]
        assert _journal(db) == "wal"

        other = apsw.Connection(str(tmp_path / "t.sqlite"))  # another process, say a running server
        other.execute("SELECT count(*) FROM meta").fetchall()
        with db.rollback_journal() as switched:
            assert not switched
        assert _journal(db) == "wal"
    finally:
        if other is not None:
            other.close()
        db.close()
