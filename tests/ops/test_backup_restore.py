"""`tinypds backup` while the server writes, `tinypds restore` into a fresh directory, and the refusals.

Everything runs like an operator would: real `tinypds serve` subprocesses and the CLI as
subprocesses. The round trip checks that the copy is consistent (`tinypds verify` passes)
and complete (every record acknowledged before the backup started, and the blob, are there).
"""

from __future__ import annotations

import hashlib
import time

import apsw
import httpx
import pytest

from tinypds.store import schema

from .conftest import POST, Client, Writer, cli, start_server

PASSPHRASE = "correct horse battery staple\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300


def _query(db, sql):
    """One row from a stopped server's database (a read-write connection, so closing it
    leaves no -wal/-shm behind, as the server's own close does)."""
    conn = apsw.Connection(str(db))
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path):
    server = start_server(tmp_path / "live")
    client = Client(server)
    yield server, client
    client.close()
    server.stop()


def test_backup_while_writing_then_restore_into_fresh_dir(served, tmp_path):
    server, client = served
    blob = client.upload(PNG)
    with_blob = client.post("with a picture", embed={"$type": "app.bsky.embed.images", "images": [
        {"alt": "", "image": blob}]})
    before = [client.post(f"before {i}")["uri"].rsplit("/", 1)[1] for i in range(30)]
    before.append(with_blob["uri"].rsplit("/", 1)[1])

    writer = Writer(Client(server), "during")
    writer.start()
    while len(writer.acked) < 20:  # the backup starts while writes are flowing
        time.sleep(0.01)
    acked_before_backup = list(writer.acked)
    backup = tmp_path / "backup.sqlite"
    out = cli(server.data_dir, "backup", str(backup), "--with-keys", "--passphrase-stdin", stdin=PASSPHRASE)
    writes_after = len(writer.acked) - len(acked_before_backup)
    writer.stop()
    assert out.returncode == 0, out.stderr
    assert "sealed inside: 3 keys" in out.stdout
    assert "backup" in out.stderr and "pages" in out.stderr  # progress
    assert writer.errors == []
    assert writes_after > 0, "no write overlapped the backup; the test proves nothing"
    assert not (tmp_path / ".backup.sqlite.partial").exists()
    assert backup.stat().st_mode & 0o077 == 0

    # the copy is one file in rollback-journal mode with the keys sealed inside
    conn = apsw.Connection(str(backup), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("SELECT count(*) FROM backup_keys").fetchone()[0] == 1
    conn.close()

    fresh = tmp_path / "fresh"
    out = cli(fresh, "restore", str(backup), "--passphrase-stdin", stdin=PASSPHRASE)
    assert out.returncode == 0, out.stderr
    assert f"restored {client.did}" in out.stdout
    assert "restored the signing key" in out.stdout and "restored the jwt key" in out.stdout
    assert "previous" not in out.stdout
    assert not list(fresh.glob(".restore-*"))

    out = cli(fresh, "verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")
    assert "signature valid" in out.stdout

    # the restored live database never holds the sealed keys
    conn = apsw.Connection(str(fresh / "tinypds.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'backup_keys'").fetchone()[0] == 0
    conn.close()

    restored = start_server(fresh)
    try:
        with httpx.Client(base_url=restored.url, timeout=30) as http:
            for rkey in before + acked_before_backup:
                r = http.get("/xrpc/com.atproto.repo.getRecord",
                             params={"repo": client.did, "collection": POST, "rkey": rkey})
                assert r.status_code == 200, (rkey, r.text)
            r = http.get("/xrpc/com.atproto.sync.getBlob", params={"did": client.did, "cid": blob["ref"]["$link"]})
            assert r.status_code == 200 and r.content == PNG
            # the restored server signs with the restored keys: a session works, a write commits
            r = http.post("/xrpc/com.atproto.server.createSession",
                          json={"identifier": client.did, "password": server.password})
            assert r.status_code == 200, r.text
    finally:
        assert restored.stop() == 0, restored.stderr()


def test_restore_refuses_a_live_database(served, tmp_path):
    server, client = served
    client.post("hello")
    backup = tmp_path / "b.sqlite"
    assert cli(server.data_dir, "backup", str(backup)).returncode == 0
    db = server.data_dir / "tinypds.sqlite"
    out = cli(server.data_dir, "restore", str(backup))
    assert out.returncode == 1
    assert "server is running" in out.stderr
    assert (server.data_dir / "tinypds.sqlite").exists() and db.stat().st_size > 0
    assert not list(server.data_dir.glob("tinypds.sqlite.before-restore-*"))


def test_backup_refuses_an_existing_destination(served, tmp_path):
    server, _ = served
    dest = tmp_path / "exists.sqlite"
    dest.write_bytes(b"keep me")
    out = cli(server.data_dir, "backup", str(dest))
    assert out.returncode == 1 and "already exists" in out.stderr
    assert dest.read_bytes() == b"keep me"


@pytest.fixture
def stopped_with_backup(tmp_path):
    """A stopped data directory with one post, plus a good backup of it."""
    server = start_server(tmp_path / "data")
    client = Client(server)
    client.post("kept")
    backup = tmp_path / "good.sqlite"
    assert cli(server.data_dir, "backup", str(backup)).returncode == 0
    client.close()
    assert server.stop() == 0
    account_of[server.data_dir] = server.account  # printed only on the first start
    return server.data_dir, backup


account_of: dict = {}


def _refused(data_dir, src, *needles):
    db = data_dir / "tinypds.sqlite"
    digest = _sha(db)
    out = cli(data_dir, "restore", str(src))
    assert out.returncode == 1, out.stdout
    for needle in needles:
        assert needle in out.stderr, out.stderr
    assert _sha(db) == digest, "a refused restore changed the database"
    assert not list(data_dir.glob("tinypds.sqlite.before-restore-*"))
    assert not list(data_dir.glob(".restore-*"))


def test_restore_refuses_a_file_that_is_not_sqlite(stopped_with_backup, tmp_path):
    data_dir, _ = stopped_with_backup
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 200)
    _refused(data_dir, junk, "not")


def test_restore_refuses_another_applications_database(stopped_with_backup, tmp_path):
    data_dir, _ = stopped_with_backup
    other = tmp_path / "other.sqlite"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
    conn.close()
    _refused(data_dir, other, "not a tinypds database")


def test_restore_refuses_a_newer_schema(stopped_with_backup):
    data_dir, backup = stopped_with_backup
    conn = apsw.Connection(str(backup))
    conn.execute(f"PRAGMA user_version={schema.latest_version() + 1}")
    conn.close()
    _refused(data_dir, backup, "newer than this tinypds knows", "upgrade tinypds")


def test_restore_refuses_a_damaged_repo(stopped_with_backup):
    data_dir, backup = stopped_with_backup
    conn = apsw.Connection(str(backup))
    rowid, data = conn.execute("SELECT id, data FROM blocks ORDER BY id DESC LIMIT 1").fetchone()
    conn.execute("UPDATE blocks SET data = ? WHERE id = ?", (data + b"\x00", rowid))
    conn.close()
    _refused(data_dir, backup, "failed the repo check", "does not match its hash")


def test_restore_over_a_stopped_database_keeps_the_old_one_and_seq_moves_on(stopped_with_backup, tmp_path):
    data_dir, backup = stopped_with_backup
    # the live directory moves on after the backup: more events than the backup knows
    server = start_server(data_dir)
    server.account = account_of[data_dir]
    client = Client(server)
    for i in range(5):
        client.post(f"after the backup {i}")
    client.close()
    assert server.stop() == 0
    seq_before = _query(data_dir / "tinypds.sqlite", "SELECT max(seq) FROM events")[0]

    out = cli(data_dir, "restore", str(backup))
    assert out.returncode == 0, out.stderr
    kept = list(data_dir.glob("tinypds.sqlite.before-restore-*"))
    assert len(kept) == 1 and "kept as" in out.stdout

    server = start_server(data_dir)
    assert server.stop() == 0
    seq, kind = _query(data_dir / "tinypds.sqlite", "SELECT seq, type FROM events ORDER BY seq DESC LIMIT 1")
    assert kind == "#sync"
    assert seq > seq_before, "seq went backwards after restoring an older backup"


def test_restore_without_keys_warns_when_the_key_store_lacks_them(stopped_with_backup, tmp_path):
    _, backup = stopped_with_backup  # made without --with-keys
    fresh = tmp_path / "elsewhere"
    out = cli(fresh, "restore", str(backup))
    assert out.returncode == 0, out.stderr
    assert "holds no keys" in out.stderr and "tinypds key import" in out.stderr
    assert (fresh / "tinypds.sqlite").exists()
    assert "restored the" not in out.stdout


def test_commands_on_a_live_database_never_checkpoint_it(served, tmp_path):
    """status, config check and backup only read: a forced checkpoint would hold up the server's writes."""
    server, client = served
    for i in range(5):
        client.post(f"wal {i}")
    wal = server.data_dir / "tinypds.sqlite-wal"
    size = wal.stat().st_size
    assert size > 0
    for args, stdin in ((["status", "--offline"], None), (["config", "check"], None),
                        (["backup", str(tmp_path / "k.sqlite"), "--with-keys", "--passphrase-stdin"], PASSPHRASE)):
        out = cli(server.data_dir, *args, stdin=stdin)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        assert wal.stat().st_size >= size, f"`tinypds {args[0]}` checkpointed the live database"


def test_a_second_server_on_the_same_data_directory_is_refused(served):
    server, _ = served
    out = cli(server.data_dir, "serve", "--host", "127.0.0.1", "--port", "0", timeout=60)
    assert out.returncode == 1
    assert "is running on" in out.stderr
    assert server.proc.poll() is None  # the first one is untouched
