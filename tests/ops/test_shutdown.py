"""SIGTERM while writes and a firehose subscriber are in flight: a clean stop, one complete file.

After the server exits, the .sqlite file ALONE (copied without any -wal/-shm) must open
and hold every record the server acknowledged, and the subscriber must have been sent a
websocket close frame (not a dropped TCP connection).
"""

from __future__ import annotations

import shutil
import signal
import threading
import time

import apsw
import pytest

from .conftest import POST, Client, Writer, start_server

websockets_sync = pytest.importorskip("websockets.sync.client")


def test_sigterm_during_writes_leaves_one_complete_file(tmp_path):
    server = start_server(tmp_path / "data")
    client = Client(server)
    ws_url = server.url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
    closed: dict = {}

    def subscribe() -> None:
        with websockets_sync.connect(ws_url, open_timeout=10) as ws:
            closed["opened"] = True
            try:
                while True:
                    ws.recv(timeout=30)
            except Exception as exc:  # ConnectionClosed* carries the close frame we got (if any)
                closed["exc"] = exc

    sub = threading.Thread(target=subscribe, daemon=True)
    sub.start()
    writers = [Writer(Client(server), f"w{i}") for i in range(3)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 60
    while sum(len(w.acked) for w in writers) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed.get("opened")

    server.proc.send_signal(signal.SIGTERM)
    rc = server.proc.wait(30)
    for w in writers:
        w.stop_flag.set()
        w.join(30)
    sub.join(30)
    client.close()
    assert rc == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()

    db = server.data_dir / "tinypds.sqlite"
    assert not (server.data_dir / "tinypds.sqlite-wal").exists(), "the WAL was not checkpointed and removed"
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(db, alone / "tinypds.sqlite")  # the one file, nothing else
    conn = apsw.Connection(str(alone / "tinypds.sqlite"), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {r[0] for r in conn.execute("SELECT rkey FROM records WHERE collection = ?", (POST,))}
    conn.close()
    acked = [rkey for w in writers for rkey in w.acked]
    assert len(acked) >= 60
    missing = [rkey for rkey in acked if rkey not in stored]
    assert missing == [], f"{len(missing)} acknowledged records are missing after SIGTERM"

    exc = closed.get("exc")
    assert exc is not None, "the subscriber was not disconnected"
    rcvd = getattr(exc, "rcvd", None)
    assert rcvd is not None, f"no close frame was sent to the subscriber: {exc!r}"
    assert rcvd.code in (1000, 1001, 1012), rcvd
