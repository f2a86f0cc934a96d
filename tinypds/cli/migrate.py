"""`tinypds migrate in|out|delete-token` and `tinypds invite`: account migration, one command each way.

Thin over services.migration.client (the flow, over XRPC, against both servers) and
services.migration (invite codes). `migrate in` drives the old PDS and this server (which
must be running; the invite code is minted here); `migrate out` drives this server and the
new PDS (the PLC token is minted here, as we hold the rotation key). Re-running after an
interruption continues; `--check` changes nothing. Passwords are prompted or read from stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import subprocess
import sys
from typing import Any

from . import CliError, settings_from_args
from .progress import Progress


def register(sub: argparse._SubParsersAction) -> None:
    inv = sub.add_parser("invite", help="print a one-time invite code for createAccount (migrating an account in)")
    inv.set_defaults(func=cmd_invite)

    mig = sub.add_parser("migrate", help="move an account here from another PDS, or away from here")
    msub = mig.add_subparsers(dest="migrate_cmd", metavar="CMD")
    msub.required = True
    p = msub.add_parser("in", help="move an account from another PDS to this one (this server must be running)")
    p.add_argument("--from", dest="old_url", required=True, metavar="URL", help="the old PDS, e.g. https://bsky.social")
    p.add_argument("--identifier", required=True, help="handle or DID on the old PDS")
    p.add_argument("--handle", default=None, help="handle here (default: the current one)")
    p.add_argument("--email", default=None)
    p.add_argument("--invite-code", default=None, help="default: minted here")
    _common(p)
    p.add_argument("--plc-token-cmd", default=None, metavar="CMD",
                   help="shell command printing the old PDS's emailed PLC token ({did} is replaced); default: prompt")
    p.set_defaults(func=cmd_migrate_in)

    p = msub.add_parser("out", help="move this server's account to another PDS")
    p.add_argument("--to", dest="new_url", required=True, metavar="URL", help="the new PDS")
    p.add_argument("--handle", required=True, help="the handle on the new PDS")
    p.add_argument("--email", required=True)
    p.add_argument("--invite-code", default=None)
    _common(p)
    p.set_defaults(func=cmd_migrate_out)

    p = msub.add_parser("delete-token", help="mint the single-use token deleteAccount needs (after a move)")
    p.set_defaults(func=cmd_delete_token)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local-url", default=None, help="this server's URL (default: its public URL)")
    p.add_argument("--password-stdin", action="store_true", help="read the account password from standard input")
    p.add_argument("--check", action="store_true", help="dry run: list what would move and the PLC change")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError("no terminal for the password prompt; pass --password-stdin")
        value = getpass.getpass("Account password (used on both servers): ")
    if not value:
        raise CliError("the password must not be empty")
    return value


class _Bars:
    """Progress bars per phase, fed with (phase, done, total)."""

    def __init__(self) -> None:
        self.bars: dict[str, Progress] = {}

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        bar = self.bars.get(phase)
        if bar is None:
            for other in self.bars.values():
                other.done()
            self.bars = {phase: Progress(phase, total)}
            bar = self.bars[phase]
        bar.total = total
        bar.update(done - bar.count)

    def finish(self) -> None:
        for bar in self.bars.values():
            bar.done()
        self.bars = {}


def _print_report(report: Any, dry: bool) -> None:
    print(("would move" if dry else "moved") + f" {report.did}:")
    print(f"  records:     {report.records}" + (f" ({report.repo_bytes:,} bytes of CAR)" if report.repo_bytes else ""))
    print(f"  blobs:       {report.blobs_total}" + (f" ({report.blob_bytes:,} bytes" + ("" if dry else f", {report.blobs_copied} copied this run") + ")"))
    print(f"  preferences: {report.preferences}")
    print(f"  PLC change:  {report.plc_change}")
    for line in report.checks:
        print(f"  check: {line}")


async def _run(settings: Any, old_url: str, new_url: str, identifier: str, password: str, *, handle: str | None,
               email: str | None, invite_code: str | None, token_for: Any, check: bool) -> None:
    from ..services.migration.client import Migration, MigrationError, XrpcClient

    old, new = XrpcClient(old_url), XrpcClient(new_url)
    bars = _Bars()
    migration = None
    try:
        try:
            session = await old.login(identifier, password)
            migration = Migration(old, new, plc_url=settings.plc_url, handle=handle or session["handle"],
                                  password=password, email=email or session.get("email"),  # the old account's by default
                                  invite_code=invite_code() if callable(invite_code) else invite_code,
                                  get_plc_token=token_for, workdir=settings.data_dir, progress=bars)
            report = await (migration.plan() if check else migration.run())
        except MigrationError as exc:
            bars.finish()
            raise CliError(f"migration stopped: {exc} (run the same command again to continue)") from None
        bars.finish()
        _print_report(report, check)
    finally:
        if migration is not None:
            await migration.aclose()
        await old.aclose()
        await new.aclose()


def cmd_migrate_in(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    password = _password(args)

    async def token_for(did: str) -> str:
        if args.plc_token_cmd:
            out = subprocess.run(args.plc_token_cmd.replace("{did}", did), shell=True, capture_output=True, text=True)
            if out.returncode != 0:
                raise CliError(f"--plc-token-cmd failed: {out.stderr.strip()[:300]}")
            return out.stdout.strip()
        print(f"The old PDS has emailed a PLC-operation token for {did}.", file=sys.stderr)
        return await asyncio.to_thread(input, "PLC token: ")

    def invite() -> str:
        if args.invite_code:
            return args.invite_code
        from ..services.identity.local import open_database
        from ..services.migration.service import mint_invite_code

        db = open_database(settings)
        try:
            return mint_invite_code(db, settings.service_did)
        finally:
            db.close()

    asyncio.run(_run(settings, args.old_url, args.local_url or settings.public_url, args.identifier, password,
                     handle=args.handle, email=args.email, invite_code=None if args.check else invite,
                     token_for=token_for, check=args.check))
    return 0


def _local_account(settings: Any) -> tuple[Any, Any]:
    from ..services.identity.create import get_account
    from ..services.identity.local import open_database

    db = open_database(settings)
    account = get_account(db)
    if account is None:
        db.close()
        raise CliError(f"{settings.data_dir} holds no account")
    return db, account


def cmd_migrate_out(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    db, account = _local_account(settings)
    db.close()
    password = _password(args)

    async def token_for(did: str) -> str:
        from ..services.identity.local import open_database
        from ..services.identity.plc import PlcService

        db = open_database(settings)
        try:
            return await PlcService(db).mint_token(did)
        finally:
            db.close()

    asyncio.run(_run(settings, args.local_url or settings.public_url, args.new_url, account.did, password,
                     handle=args.handle, email=args.email, invite_code=args.invite_code,
                     token_for=token_for, check=args.check))
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from ..services.identity.local import open_database
    from ..services.migration.service import INVITE_TTL_SECONDS, mint_invite_code

    settings = settings_from_args(args)
    db = open_database(settings)
    try:
        from ..services.identity.create import get_account

        if get_account(db) is not None:
            raise CliError("this server already holds its account; an invite code would be of no use")
        code = mint_invite_code(db, settings.service_did)
    finally:
        db.close()
    print(code)
    print(f"(single use, valid {INVITE_TTL_SECONDS // 86400} days; a new code replaces this one)", file=sys.stderr)
    return 0


def cmd_delete_token(args: argparse.Namespace) -> int:
    """The same token as `tinypds account email-token delete-account` (kept for scripts)."""
    from ..services.account.email import EmailTokens

    settings = settings_from_args(args)
    db, account = _local_account(settings)
    try:
        token = EmailTokens(db).mint_sync(account.did, "delete_account")
    finally:
        db.close()
    print(token)
    return 0
