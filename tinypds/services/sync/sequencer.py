"""Seq never goes backwards: a reservation and the last head, kept in the database and a sidecar file.

No HTTP types, no SQL (store.sequencer / store.events). At startup `SeqKeeper.guard` compares
`<data>/seq.reserved` ("reserved head") with the database: if the file's reservation is
higher or its head is past the database's last seq, the database is an older copy (a
restored backup), so seq jumps above everything ever handed out and a `#sync` event tells
relays the repo's current state. While serving, `observe(head)` records the head (the
firehose calls it every few seconds) and raises the reservation well before the log reaches
it. Also appends the `#sync` / `#identity` / `#account` events other services need.
Tricky bit: the file is written (atomically, fsynced) BEFORE the database, so a crash in
between only causes a harmless extra jump, never a reuse.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core import events as events_core
from ...store import accounts as accounts_db
from ...store import blocks as blocks_db
from ...store import events as events_db
from ...store import repo as repo_db
from ...store import sequencer as seq_db
from ..repo.writes import iso_now

log = logging.getLogger("tinypds.sequencer")

RESERVE = 100_000  # seqs reserved ahead; bumped when less than half is left
FILE_NAME = "seq.reserved"


@dataclass(frozen=True)
class GuardResult:
    last_seq: int
    reserved: int
    restored: bool  # the database was older than the sidecar file: seq jumped, #sync emitted


def _read_file(path: Path) -> tuple[int, int]:
    """(reservation, last head seen) from the sidecar file; (0, 0) if absent or unreadable."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except FileNotFoundError:
        return 0, 0
    except (ValueError, IndexError):
        log.warning("%s is unreadable; ignoring it", path)
        return 0, 0


def _write_file(path: Path, reserved: int, head: int) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(f"{reserved} {head}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def mark_restored(data_dir: Path | str, floor: int) -> None:
    """A database file was just restored: make the next start jump seq above `floor` and emit #sync.

    Used by `tinypds restore`, also into a fresh directory (no sidecar yet); never lowers the file.
    """
    path = Path(data_dir) / FILE_NAME
    reserved, head = _read_file(path)
    _write_file(path, max(reserved, floor), max(head, floor))


def sync_event(conn: Any, time: str) -> int | None:
    """Append a #sync event for the current commit (inside a write transaction)."""
    root = repo_db.get_root(conn)
    if root is None:
        return None
    block = blocks_db.get_block(conn, root.commit_cid)
    if block is None:
        return None
    body = events_core.sync_body(root.did, root.commit_cid, block, root.rev, time)
    return events_db.append_event(conn, events_core.SYNC, root.did, time, events_core.encode_body(body))


def identity_and_account_events(conn: Any, time: str) -> list[int]:
    """Append #identity and #account for the local account (re-announcement to a new relay)."""
    acct = accounts_db.get_account(conn)
    if acct is None or acct.status == "offline-copy":
        return []
    active = acct.status == "active"
    seqs = [
        events_db.append_event(conn, events_core.IDENTITY, acct.did, time,
                               events_core.encode_body(events_core.identity_body(acct.did, time, acct.handle))),
        events_db.append_event(conn, events_core.ACCOUNT, acct.did, time,
                               events_core.encode_body(events_core.account_body(acct.did, time, active, None if active else acct.status))),
    ]
    return seqs


class SeqKeeper:
    """Keeps the sidecar file ahead of the log. `guard()` once at startup (blocking), then
    `observe(head)` from the firehose (blocking file I/O: call it off the event loop)."""

    def __init__(self, db: Any, data_dir: Path, *, reserve: int = RESERVE):
        self.db = db
        self.path = Path(data_dir) / FILE_NAME
        self.reserve = reserve
        self.reserved = 0
        self.head_written = 0

    def guard(self, now: float | None = None) -> GuardResult:
        """Detect a database older than the file (restored backup): then jump seq and emit #sync."""
        file_reserved, file_head = _read_file(self.path)

        def inspect(conn: Any) -> tuple[int, int, int]:
            return events_db.last_seq(conn), seq_db.get_reserved(conn), seq_db.max_event_seq(conn) or 0

        last, db_reserved, max_event = self.db.read(inspect, snapshot=True)
        last = max(last, max_event)
        restored = file_reserved > db_reserved or file_head > last
        floor = max(last, file_reserved, file_head) if restored else last
        self.reserved = max(floor + self.reserve, file_reserved)
        _write_file(self.path, self.reserved, floor)
        self.head_written = floor
        time = iso_now(now)

        def apply(conn: Any) -> int:
            seq_db.raise_seq_floor(conn, floor)
            seq_db.set_reserved(conn, self.reserved)
            if restored:
                sync_event(conn, time)
            return events_db.last_seq(conn)

        last = self.db.write(apply)
        if restored:
            log.warning("database is older than its seq record (restored backup?): seq continues above %d; #sync emitted", floor)
        return GuardResult(last, self.reserved, restored)

    def observe(self, head: int) -> None:
        """Record the head; raise the reservation when the log has used half of it."""
        if head <= self.head_written:
            return
        if head >= self.reserved - self.reserve // 2:
            self.reserved = head + self.reserve
            _write_file(self.path, self.reserved, head)
            self.db.write(lambda conn: seq_db.set_reserved(conn, self.reserved))
        else:
            _write_file(self.path, self.reserved, head)
        self.head_written = head
