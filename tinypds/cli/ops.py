"""`tinypds backup`, `tinypds restore`, `tinypds config check`, `tinypds status`.

Thin over services.ops / services.status: parses arguments, asks for passphrases, shows
progress on stderr and prints a summary; every refusal is one CliError line. Never imports
store SQL. Passphrases come from a terminal prompt or, with --passphrase-stdin, one line of
stdin (for scripts); they are never accepted as arguments (they would land in `ps` and shell history).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from . import CliError, settings_from_args
from .progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="copy the database to one file (safe while serving)", description=(
        "Write a consistent single-file copy of the database, also while the server runs. "
        "--with-keys seals the account's private keys inside the copy under a passphrase."))
    p.add_argument("dest", metavar="DEST.sqlite")
    p.add_argument("--with-keys", action="store_true", help="also store the keys, sealed under a passphrase")
    p.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from stdin (one line)")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="replace the database with a backup (server stopped)", description=(
        "Check a backup (integrity, application id, schema version, repo verify) and make it the "
        "data directory's database. Refused while a server runs. Sealed keys in the backup are "
        "restored to the key store. The replaced database is kept beside it."))
    p.add_argument("src", metavar="SRC.sqlite")
    p.add_argument("--passphrase-stdin", action="store_true", help="read the key passphrase from stdin (one line)")
    p.add_argument("--overwrite-keys", action="store_true", help="replace different keys already in the key store")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("config", help="configuration", description="Inspect the configuration.")
    csub = p.add_subparsers(dest="config_command", metavar="COMMAND")
    csub.required = True
    c = csub.add_parser("check", help="print the effective settings and what is wrong with them")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("status", help="account, repo, firehose, database, identity and network health at a glance",
                       description="Exits 1 when something needs attention (also what the server's health watcher "
                                   "last saw: relays, the AppView, handle resolution).")
    p.add_argument("--offline", action="store_true", help="skip the handle / DID document lookups")
    p.add_argument("--json", action="store_true", help="one JSON document (for scripts and monitoring)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per network lookup (default 3)")
    p.set_defaults(func=cmd_status)


def _passphrase(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal to ask for the passphrase; pass --passphrase-stdin")
        value = getpass.getpass("Passphrase for the keys: ")
        if confirm and getpass.getpass("Passphrase (again): ") != value:
            raise CliError("the two passphrases differ")
    if not value:
        raise CliError("the passphrase must not be empty")
    return value


def _keys(settings: Any) -> Any:
    from ..services.identity.keys import KeyStore, KeyStoreError

    try:
        return KeyStore.open(settings)
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None


class _Pages:
    """progress(done, total) in pages -> one Progress bar."""

    def __init__(self, label: str):
        self.label = label
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = Progress(self.label, total=total, unit="pages")
        self.bar.total = total
        self.bar.update(done - self.bar.count)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.done()


def cmd_backup(args: argparse.Namespace) -> int:
    from ..services.identity.keys import KeyStoreError
    from ..services.ops.data_dir import OpsError, backup

    settings = settings_from_args(args)
    keys = passphrase = None
    if args.with_keys:
        keys = _keys(settings)
        passphrase = _passphrase(args.passphrase_stdin, confirm=True)
    bar = _Pages("backup")
    try:
        result = backup(settings, Path(args.dest), keys=keys, passphrase=passphrase, progress=bar)
    except (OpsError, KeyStoreError) as exc:
        raise CliError(str(exc)) from None
    bar.finish()
    print(f"wrote {result.path} ({result.size:,} bytes, {result.pages} pages)")
    if result.sealed_keys:
        print(f"sealed inside: {len(result.sealed_keys)} keys ({', '.join(p for _, p in result.sealed_keys)}); "
              "keep the passphrase apart from the file")
    else:
        print("no keys inside: keep a `tinypds key export` (or the key store and its secret) as well")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from ..services.identity.keys import KeyStoreError
    from ..services.ops.data_dir import OpsError, restore

    settings = settings_from_args(args)
    bar = _Pages("restore copy")
    phases: dict[str, Progress] = {}

    def verify_progress(phase: str, n: int) -> None:
        if phase not in phases:
            phases[phase] = Progress(f"restore verify {phase}", unit=phase)
        phases[phase].update(n)

    try:
        result = restore(
            settings, Path(args.src),
            keys_factory=lambda: _keys(settings),
            passphrase=lambda: _passphrase(args.passphrase_stdin, confirm=False),
            overwrite_keys=args.overwrite_keys,
            progress=bar, verify_progress=verify_progress,
        )
    except (OpsError, KeyStoreError) as exc:
        raise CliError(str(exc)) from None
    bar.finish()
    for p in phases.values():
        p.done()
    print(f"restored {result.did}: {result.records} records at rev {result.rev} (signature {result.signature})")
    if result.migrated_from != result.schema_version:
        print(f"schema migrated from version {result.migrated_from} to {result.schema_version}")
    for did, purpose in result.keys_restored:
        print(f"restored the {purpose} key of {did}")
    if result.previous is not None:
        print(f"the replaced database is kept as {result.previous}")
    print(f"on the next start seq continues above {result.seq_floor}, a #sync event tells relays the current state")
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from ..config import env_name
    from ..services.ops.status import config_problems

    settings = settings_from_args(args)  # fatal problems raise ConfigError (exit 2) with the reasons
    print(f"# effective settings (config file: {settings.config_file or 'none'})")
    for name, value in settings.describe().items():
        print(f"{env_name(name)}={value}")
    problems = config_problems(settings)
    print()
    if not problems:
        print("no problems found")
        return 0
    for p in problems:
        print(p)
    return 1 if any(p.startswith("error:") for p in problems) else 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..services.ops.status import status_report

    settings = settings_from_args(args)
    lines, report = status_report(settings, network=not args.offline, timeout=args.timeout)
    healthy = all(line.ok for line in lines)
    if args.json:
        import json

        print(json.dumps({"ok": healthy, "lines": [{"label": x.label.strip(), "value": x.value, "ok": x.ok} for x in lines],
                          "network": report.to_json() if report is not None else None}, indent=2))
        return 0 if healthy else 1
    width = max(len(line.label) for line in lines)
    for line in lines:
        print(f"{line.label:<{width}}  {line.value}" + ("" if line.ok else "   <-- problem"))
    return 0 if healthy else 1
