"""`tinypds account 2fa status|off`: see the second factors, or switch them all off (loss recovery).

Thin over services.auth.twofactor. Sits in the `account` command group beside other account
commands: it joins the group if another module made it, else makes it (so registration
order does not matter as long as it registers last). Works with the server running (one
short write through SQLite's lock) and needs no keys: switching off only deletes rows.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from . import CliError, settings_from_args


def account_group(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `account` command's subcommands, made here unless another module already did."""
    parser = sub.choices.get("account")
    if parser is None:
        parser = sub.add_parser("account", help="the account: password, second factors")
        group = parser.add_subparsers(dest="account_cmd", metavar="CMD")
        group.required = True
        return group
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    group = parser.add_subparsers(dest="account_cmd", metavar="CMD")
    group.required = True
    return group


def register(sub: argparse._SubParsersAction) -> None:
    tfa = account_group(sub).add_parser("2fa", help="second factors (TOTP, passkeys) for password sign-in")
    tsub = tfa.add_subparsers(dest="twofactor_cmd", metavar="CMD")
    tsub.required = True
    tsub.add_parser("status", help="which second factors are on").set_defaults(func=cmd_status)
    tsub.add_parser("off", help="remove every second factor (TOTP, recovery codes, passkeys)").set_defaults(func=cmd_off)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from ..services.identity.create import get_account
    from ..store.db import Database, DatabaseError

    settings = settings_from_args(args)
    if not settings.db_path.exists():
        raise CliError(f"no database at {settings.db_path}; pass --data DIR")
    try:
        db = Database.open(settings.db_path, create=False)
    except DatabaseError as exc:
        raise CliError(str(exc)) from None
    account = get_account(db)
    if account is None:
        db.close()
        raise CliError("this server has no account")
    return db, account


def _service(db: Any) -> Any:
    from ..services.auth.twofactor import TwoFactorService

    return TwoFactorService(db, None, seal_did="did:web:unused", rp_id="localhost", origin="http://localhost")


def cmd_status(args: argparse.Namespace) -> int:
    db, account = _open(args)
    try:
        st = _service(db).status(account.did)
    finally:
        db.close()
    print(f"account:        {account.did}")
    print(f"authenticator:  {'on' if st['totp'] else ('enrolment pending' if st['totp_pending'] else 'off')}")
    print(f"passkeys:       {len(st['passkeys'])}" + "".join(f"\n  - {p['name']}" for p in st["passkeys"]))
    print(f"recovery codes: {st['recovery_codes']} left")
    return 0


def cmd_off(args: argparse.Namespace) -> int:
    db, account = _open(args)
    try:
        removed = asyncio.run(_service(db).disable_all(account.did))
    finally:
        db.close()
    print(f"second factors off for {account.handle or account.did} ({removed} entries removed); "
          "the password alone signs in now — enrol again on /account")
    return 0
