"""`tinypds account password|email|email-token`: the owner's offline account care.

Thin over services.account.life / services.account.email. Joins the `account` command group if
another module made it (cli/twofactor.py does the same), else makes it. Each command is one
short write through SQLite's lock, so it works while the server runs, and needs no keys.
Tricky bit: tokens are stored only as hashes, so `email-token` MINTS a new one (replacing
any outstanding one of that purpose) and prints it; it is how an owner without SMTP
confirms an email, resets a password or confirms a deletion from the app.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import CliError, settings_from_args

_PURPOSES = ("confirm-email", "update-email", "reset-password", "delete-account")


def account_group(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `account` command's subcommands, made here unless another module already did."""
    parser = sub.choices.get("account")
    if parser is None:
        parser = sub.add_parser("account", help="the account: password, email, second factors")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    group = parser.add_subparsers(dest="account_cmd", metavar="CMD")
    group.required = True
    return group


def register(sub: argparse._SubParsersAction) -> None:
    group = account_group(sub)
    p = group.add_parser("password", help="set a new account password offline (ends every session)")
    p.add_argument("--password-stdin", action="store_true", help="read the new password as one line from stdin")
    p.set_defaults(func=cmd_password)
    e = group.add_parser("email", help="show the account's email, or set a new (unconfirmed) one")
    e.add_argument("address", nargs="?", help="the new email address")
    e.set_defaults(func=cmd_email)
    t = group.add_parser("email-token", help="mint the token an email would carry (no SMTP needed)",
                         description="Mint a single-use token (valid 15 minutes) for confirmEmail, updateEmail, "
                                     "resetPassword or deleteAccount, replacing any outstanding one, and print it.")
    t.add_argument("purpose", choices=_PURPOSES)
    t.set_defaults(func=cmd_email_token)


def _open_db(args: argparse.Namespace) -> Any:
    from ..services.identity.local import open_database

    settings = settings_from_args(args)
    if not settings.db_path.exists():
        raise CliError(f"no database at {settings.db_path}; run `tinypds init` first")
    return open_database(settings)


def _account(db: Any) -> Any:
    from ..services.identity.create import get_account

    row = get_account(db)
    if row is None or row.status == "deleted":
        raise CliError("this data directory holds no account")
    return row


def cmd_password(args: argparse.Namespace) -> int:
    from ..errors import XrpcError
    from ..services.account.life import set_password_offline
    from .identity import _secret

    password = _secret("New password", args.password_stdin)
    db = _open_db(args)
    try:
        _account(db)
        try:
            did, ended = set_password_offline(db, password)
        except XrpcError as exc:
            raise CliError(exc.message) from None
    finally:
        db.close()
    print(f"password of {did} changed; {ended} session(s) ended (apps must sign in again)")
    return 0


def cmd_email(args: argparse.Namespace) -> int:
    from ..errors import XrpcError
    from ..services.account.life import set_email_offline

    db = _open_db(args)
    try:
        row = _account(db)
        if args.address is None:
            if not row.email:
                print("(no email address)")
            else:
                print(f"{row.email} ({'confirmed ' + row.email_confirmed_at if row.email_confirmed_at else 'not confirmed'})")
            return 0
        try:
            set_email_offline(db, args.address)
        except XrpcError as exc:
            raise CliError(exc.message) from None
    finally:
        db.close()
    print(f"email set to {args.address.strip()} (not confirmed: confirm it from the app, "
          "or with `tinypds account email-token confirm-email`)")
    return 0


def cmd_email_token(args: argparse.Namespace) -> int:
    from ..services.account.email import EmailTokens

    db = _open_db(args)
    try:
        row = _account(db)
        token = EmailTokens(db).mint_sync(row.did, args.purpose)
    finally:
        db.close()
    print(token)
    print(f"single use, valid 15 minutes, for {args.purpose} of {row.did}; any earlier {args.purpose} token no "
          "longer works", file=sys.stderr)
    return 0
