"""Operations on a data directory: the server lock, backup, restore, config check, status.

No HTTP types, no SQL (store.ops). The server holds an exclusive `flock` on
`<data>/tinypds.lock` for its whole life; restore takes the same lock, so it never replaces a
database a server has open, and a server cannot start halfway through a restore. Tricky
bits: restore checks and migrates a private copy first and only then swaps it in (the
old file, with its -wal, is kept beside it); it marks the seq sidecar so the next start
jumps seq above the backup's reservation and emits #sync (relays never see seq go back).
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...store import ops as store_ops
from ...store.db import Database, DatabaseError
from ..sync import sequencer
from ..repo.car_io import RepoIOError, verify_stored

LOCK_NAME = "tinypds.lock"


class OpsError(Exception):
    """An operation was refused or failed; the message says why and what to do."""


# ---- the server lock ------------------------------------------------------------------------


class ServerLock:
    """An exclusive flock on <data>/tinypds.lock, held while a server (or a restore) runs."""

    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        writable = True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError:
            try:  # another user's lock file: a read-only descriptor can still take the lock
                fd, writable = os.open(self.path, os.O_RDONLY), False
            except OSError as exc:
                raise OpsError(f"cannot open {self.path} ({exc.strerror}); run this as the data "
                               "directory's owner (under systemd: tinypds-admin)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if writable:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "ServerLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def server_running(data_dir: Path | str) -> bool:
    """True if a process holds the data directory's server lock."""
    lock = ServerLock(data_dir)
    if not lock.path.exists():
        return False
    if lock.acquire():
        lock.release()
        return False
    return True


def _iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _local_did(conn: Any) -> str | None:
    from ...store.accounts import get_account

    account = get_account(conn)
    return account.did if account is not None else None


# ---- backup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    path: Path
    pages: int
    size: int
    sealed_keys: list[tuple[str, str]] = field(default_factory=list)  # (did, purpose) sealed inside


def backup(settings: Any, dest: Path | str, *, keys: Any = None, passphrase: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> BackupResult:
    """A consistent single-file copy of the data directory's database (safe while serving).

    With `keys` and `passphrase`, the account's keys (and the session secret) are sealed under
    the passphrase inside the copy (table backup_keys); the live database never holds them.
    """
    dest = Path(dest)
    if dest.exists():
        raise OpsError(f"{dest} already exists; choose a new file name")
    if not settings.db_path.exists():
        raise OpsError(f"no database at {settings.db_path}; pass --data DIR")
    if dest.resolve() == settings.db_path.resolve():
        raise OpsError("the backup must not be the database itself")
    sealed, pairs = None, []
    if passphrase is not None:
        if keys is None:
            raise OpsError("sealing keys needs the key store")
        try:  # a private read snapshot: Database.close() would checkpoint under the running server
            did = store_ops.read_only(settings.db_path, _local_did)
        except DatabaseError as exc:
            raise OpsError(str(exc)) from None
        if did is None:
            raise OpsError("the database has no account yet; there are no keys to back up")
        dids = [did] + ([settings.service_did] if settings.service_did != did else [])
        sealed = keys.export_sealed(dids, passphrase)
        from ..identity.keys import PURPOSES

        pairs = [(d, p) for d in dids for p in PURPOSES if keys.has_key(d, p)]

    created = _iso_now()

    def seal_keys(conn: Any) -> None:
        store_ops.put_sealed_keys(conn, sealed, created)

    try:
        pages = store_ops.copy_file(settings.db_path, dest, progress, prepare=seal_keys if sealed is not None else None)
    except DatabaseError as exc:
        raise OpsError(str(exc)) from None
    try:
        dest.chmod(0o600)
    except OSError:
        pass
    return BackupResult(dest, pages, dest.stat().st_size, pairs)


# ---- restore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    did: str | None
    records: int
    rev: str
    schema_version: int
    migrated_from: int
    signature: str
    keys_restored: list[tuple[str, str]]
    previous: Path | None  # the replaced database, kept beside it
    seq_floor: int
    warnings: list[str]


def _move_with_wal(src: Path, dest: Path) -> None:
    """Rename a database file together with its -wal/-shm (a WAL belongs to its file)."""
    os.replace(src, dest)
    for suffix in ("-wal", "-shm"):
        side = Path(str(src) + suffix)
        if side.exists():
            os.replace(side, Path(str(dest) + suffix))


def _unlink_with_wal(path: Path) -> None:
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm"), Path(str(path) + "-journal")):
        p.unlink(missing_ok=True)


def restore(settings: Any, src: Path | str, *, keys_factory: Callable[[], Any] | None = None,
            passphrase: Callable[[], str] | None = None, overwrite_keys: bool = False,
            progress: Callable[[int, int], None] | None = None,
            verify_progress: Callable[[str, int], None] | None = None) -> RestoreResult:
    """Replace the data directory's database with the backup `src`, after checking it.

    Refused while a server runs on the directory. Checks: integrity_check, application id,
    schema version (older ones are migrated forward; newer are refused), a deep repo verify.
    Sealed keys in the backup go to the key store (`keys_factory()`), unsealed with
    `passphrase()`. The replaced database is kept as tinypds.sqlite.before-restore-<time>.
    """
    src = Path(src)
    if not src.is_file():
        raise OpsError(f"no such file {src}")
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if src.resolve() == settings.db_path.resolve():
        raise OpsError("that is the database itself; restore from a backup file")
    lock = ServerLock(data_dir)
    if not lock.acquire():
        raise OpsError(f"a tinypds server is running on {data_dir}; stop it first (e.g. systemctl stop tinypds)")
    tmp = data_dir / f".restore-{os.getpid()}.sqlite"
    warnings: list[str] = []
    try:
        _unlink_with_wal(tmp)
        try:
            store_ops.copy_file(src, tmp, progress)
            check = store_ops.check_file(tmp)
        except DatabaseError as exc:
            raise OpsError(f"{src}: {exc}") from None
        if check.problems:
            raise OpsError(f"{src} cannot be restored: " + "; ".join(check.problems))
        if not check.has_repo:
            raise OpsError(f"{src} holds no repo; nothing to restore")
        try:
            db = Database.open(tmp, create=False, migrate=True)  # an older schema migrates forward here
        except DatabaseError as exc:
            raise OpsError(f"{src}: {exc}") from None
        try:
            signing = db.read(lambda c: store_ops.signing_key(c, check.did))
            try:
                summary = verify_stored(db, did_key=signing, progress=verify_progress)
            except RepoIOError as exc:
                raise OpsError(f"{src} failed the repo check: {exc}") from None
            sealed = db.read(store_ops.get_sealed_keys)
            db.write(store_ops.drop_sealed_keys)
            from ...store.schema import current_version

            version = db.read(current_version)
        finally:
            db.close()  # checkpoints: the copy is one complete file again

        restored: list[tuple[str, str]] = []
        keys = None
        if sealed is not None:
            if keys_factory is None or passphrase is None:
                raise OpsError("the backup holds sealed keys but no key store or passphrase was given")
            keys = keys_factory()
            try:
                restored = keys.import_sealed(sealed, passphrase(), overwrite=overwrite_keys)
            except ValueError as exc:
                raise OpsError(f"cannot unseal the keys in {src}: {exc}") from None
        elif keys_factory is not None and check.did is not None:
            try:
                keys = keys_factory()
                has = keys.has_key(check.did, "signing")
            except Exception as exc:  # noqa: BLE001 - only a check; the restore itself does not need keys
                warnings.append(f"could not check the key store for {check.did}'s keys: {exc}")
                has = True
            if not has:
                warnings.append(
                    f"the backup holds no keys and {keys.backend_name()} has no signing key for {check.did}; "
                    "restore them with `tinypds key import FILE` before starting the server"
                )

        previous = None
        if settings.db_path.exists():
            previous = settings.db_path.with_name(
                f"{settings.db_path.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
            )
            _move_with_wal(settings.db_path, previous)
        else:  # stale side files of a vanished database must not meet the new one
            _unlink_with_wal(settings.db_path)
        os.replace(tmp, settings.db_path)
        floor = max(check.seq_reserved, check.last_seq + 1)
        sequencer.mark_restored(data_dir, floor)
        return RestoreResult(
            did=summary.did, records=summary.records, rev=summary.rev, schema_version=version,
            migrated_from=check.schema_version, signature=summary.signature, keys_restored=restored,
            previous=previous, seq_floor=floor, warnings=warnings,
        )
    finally:
        _unlink_with_wal(tmp)
        lock.release()
