"""`tinypds export FILE.car`, `tinypds import FILE.car`, `tinypds verify [FILE.car]`.

Thin over services.repo.car_io: opens the data directory's database (and the key store only
when an account needs it), shows progress on stderr, prints a summary on stdout and turns
every failure into one CliError line that says what to do next. Never imports store SQL.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any

from . import CliError, settings_from_args
from .progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the repo as a CAR file", description="Stream the current repo as a CAR v1 file (root = commit).")
    p.add_argument("file", metavar="FILE.car", help="output file ('-' for stdout)")
    p.add_argument("--force", action="store_true", help="overwrite FILE.car if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="import a repo CAR file", description=(
        "Import a repo CAR (e.g. the 'Export my data' file). Into an empty data directory the repo is kept "
        "exactly as signed (an offline copy); into the same account it is re-signed with the account key."))
    p.add_argument("file", metavar="FILE.car")
    p.add_argument("--did-key", metavar="did:key:...",
                   help="check the commit signature with this key (default: the key in the DID document, when it resolves)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("verify", help="deep-verify the stored repo or a CAR file", description=(
        "Check every block hash, the MST (canonical, ordered), the record index and the commit signature."))
    p.add_argument("file", metavar="FILE.car", nargs="?", help="verify this CAR file instead of the stored repo")
    p.add_argument("--did-key", metavar="did:key:...", help="check the commit signature with this key")
    p.add_argument("--records", action="store_true", help="also decode every record strictly (canonical DAG-CBOR, $type)")
    p.set_defaults(func=cmd_verify)


class _Phases:
    """Adapts the services' progress(phase, n) callback to one Progress line per phase."""

    def __init__(self, label: str):
        self.label = label
        self.bars: dict[str, Progress] = {}

    def __call__(self, phase: str, n: int) -> None:
        bar = self.bars.get(phase)
        if bar is None:
            for other in self.bars.values():
                other.done()
            bar = self.bars[phase] = Progress(f"{self.label} {phase}", unit=phase)
        bar.update(n)

    def finish(self) -> None:
        if self.bars:
            list(self.bars.values())[-1].done()


def _open_db(settings: Any, create: bool):
    from ..store.db import Database, DatabaseError

    try:
        return Database.open(settings.db_path, create=create)
    except DatabaseError as exc:
        if not create and not settings.db_path.exists():
            raise CliError(f"no database at {settings.db_path}; pass --data DIR or import a repo first") from None
        raise CliError(str(exc)) from None


def _keys(settings: Any):
    from ..services.identity.keys import KeyStore, KeyStoreError

    try:
        return KeyStore.open(settings)  # settings.credentials_dir: systemd's $CREDENTIALS_DIRECTORY
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None


def _check_did_key(did_key: str | None) -> None:
    if did_key is None:
        return
    from ..core.crypto import parse_did_key

    try:
        parse_did_key(did_key)
    except ValueError as exc:
        raise CliError(f"--did-key: {exc}") from None


def _print_summary(s: Any, out=None) -> None:
    out = out or sys.stdout
    print(f"repo      {s.did}", file=out)
    print(f"commit    {s.commit_cid}  rev {s.rev}", file=out)
    print(f"data      {s.data_cid}", file=out)
    print(f"records   {s.records:,}", file=out)
    print(f"blocks    {s.blocks:,} ({s.bytes:,} bytes)", file=out)
    print(f"signature {s.signature}", file=out)


class _SyncingWriter:
    """A file written on a helper thread (the write syscalls' copying overlaps the export's
    work; at most QUEUED chunks wait) whose data also goes to disk in the background as the
    export runs (an fdatasync on another thread every SYNC_BYTES), so the fsync at the end
    waits for the last stretch only instead of the whole CAR (~1 s for 371 MB here). A write
    error is raised by the next write() or by finish()."""

    SYNC_BYTES = 32 * 1024 * 1024
    QUEUED = 8

    def __init__(self, fh: Any):
        self.fh = fh
        self.unsynced = 0
        self.syncer: threading.Thread | None = None
        self.error: BaseException | None = None
        self.queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self.writer = threading.Thread(target=self._run, daemon=True)
        self.writer.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(data)
                except BaseException as exc:  # noqa: BLE001 (handed to the exporting thread)
                    self.error = exc

    def _write(self, data: bytes) -> None:
        self.fh.write(data)
        self.unsynced += len(data)
        if self.unsynced >= self.SYNC_BYTES and (self.syncer is None or not self.syncer.is_alive()):
            self.fh.flush()
            self.unsynced = 0
            self.syncer = threading.Thread(target=os.fdatasync, args=(self.fh.fileno(),), daemon=True)
            self.syncer.start()

    def write(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        self.queue.put(data)
        return len(data)

    def wait(self) -> None:
        """Let the writer finish what is queued and stop; wait for a running fdatasync."""
        if self.writer.is_alive():
            self.queue.put(None)
            self.writer.join()
        if self.syncer is not None:
            self.syncer.join()

    def finish(self) -> None:
        """Flush and fsync: the file is complete on disk when this returns."""
        self.wait()
        if self.error is not None:
            raise self.error
        self.fh.flush()
        os.fsync(self.fh.fileno())


def cmd_export(args: argparse.Namespace) -> int:
    from ..services.repo.car_io import RepoIOError, export_car

    settings = settings_from_args(args)
    db = _open_db(settings, create=False)
    phases = _Phases("export")
    try:
        if args.file == "-":
            n = export_car(db, sys.stdout.buffer, phases)
        else:
            dest = Path(args.file)
            if dest.exists() and not args.force:
                raise CliError(f"{dest} already exists; choose another name or pass --force")
            tmp = dest.with_name(f".{dest.name}.partial")
            try:
                with open(tmp, "wb") as raw:
                    out = _SyncingWriter(raw)
                    try:
                        n = export_car(db, out, phases)
                        out.finish()
                    finally:
                        out.wait()  # before the file closes, also when the export failed
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        phases.finish()
    except RepoIOError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    finally:
        db.close()
    print(f"exported {n:,} bytes to {args.file}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..services.identity.create import get_account
    from ..services.repo.car_io import RepoIOError, import_car

    _check_did_key(args.did_key)
    settings = settings_from_args(args)
    src = Path(args.file)
    if not src.is_file():
        raise CliError(f"{src} is not a file; give the path of a repo CAR (e.g. from 'Export my data')")
    did_key, lookup = args.did_key, None
    if did_key is None:  # the key from the DID document (network I/O before the write transaction)
        from ..services.identity.repo_keys import lookup_car_signing_key

        lookup = lookup_car_signing_key(src, settings.plc_url)
        did_key = lookup.did_key
    db = _open_db(settings, create=True)
    phases = _Phases("import")
    try:
        account = get_account(db)
        keys = _keys(settings) if account is not None and account.status != "offline-copy" else None
        with open(src, "rb") as fh:
            result = import_car(db, fh, did_key=did_key, keys=keys, progress=phases)
        phases.finish()
    except RepoIOError as exc:
        hint = ""
        if lookup is not None and lookup.did_key is not None:
            hint = (f" (the key is the #atproto key in {lookup.did}'s DID document; if the account's key changed "
                    f"after this CAR was written, pass --did-key with the key that signed it)")
        raise CliError(f"import failed, nothing was changed: {exc}{hint}") from None
    finally:
        db.close()
    _print_summary(result)
    if result.resigned:
        print(f"re-signed the imported repo (rev {result.imported_rev}) as rev {result.rev} with this account's key")
    else:
        print("kept exactly as signed (offline copy: this data directory has no key for it)")
    if result.unreferenced_blocks:
        print(f"note: {result.unreferenced_blocks} blocks in the CAR are not part of the repo", file=sys.stderr)
    if lookup is not None and lookup.did_key is not None:
        print(f"signature checked with the signing key in {lookup.did}'s DID document")
    if result.signature.startswith("NOT CHECKED"):
        why = f" ({lookup.problem})" if lookup is not None and lookup.problem else ""
        print(f"warning: the commit signature could NOT be checked{why}; to check it, pass --did-key did:key:... "
              "with the account's signing key (the #atproto key of its DID document)", file=sys.stderr)
    return 0


def _keys_if_present(settings: Any, did: str) -> Any:
    """The key store when it holds the account's signing key, else None (never an error)."""
    from ..services.identity.keys import KeyStore, KeyStoreError

    try:
        keys = KeyStore.open(settings)
        return keys if keys.has_key(did, "signing") else None
    except (KeyStoreError, OSError, ValueError):
        return None


def cmd_verify(args: argparse.Namespace) -> int:
    from ..services.identity.create import get_account
    from ..services.repo.car_io import RepoIOError, verify_car_file, verify_stored

    _check_did_key(args.did_key)
    phases = _Phases("verify")
    try:
        if args.file:
            src = Path(args.file)
            if not src.is_file():
                raise CliError(f"{src} is not a file")
            summary = verify_car_file(src, did_key=args.did_key, progress=phases, check_records=args.records)
        else:
            settings = settings_from_args(args)
            db = _open_db(settings, create=False)
            try:
                account = get_account(db)
                did_key, where, keys = args.did_key, None, None
                if did_key is None and account is not None:
                    # the public key the DID document names (local log / our did:web document);
                    # else the key store's key if it is here; else the document resolved now
                    from ..services.identity.local import document_signing_key

                    did_key, where = document_signing_key(settings, db, account.did, network=False)
                    if did_key is None and account.status != "offline-copy":
                        keys = _keys_if_present(settings, account.did)
                    if did_key is None and keys is None:
                        did_key, where = document_signing_key(settings, db, account.did)
                        if did_key is None:
                            print(f"warning: no signing key from the DID document: {where}", file=sys.stderr)
                summary = verify_stored(db, did_key=did_key, keys=keys, progress=phases, check_records=args.records)
                if where is not None and did_key is not None:
                    print(f"signature checked with {did_key} from {where}")
            finally:
                db.close()
        phases.finish()
    except RepoIOError as exc:
        raise CliError(f"verify failed: {exc}") from None
    _print_summary(summary)
    print("OK")
    return 0
