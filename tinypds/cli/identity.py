"""`tinypds init`, `tinypds plc log|verify|token|handle`, `tinypds key export|import`.

Thin over services.identity (local, plc, keys): parses flags, reads the
password or passphrase (prompt or stdin, never a flag), chooses and explains the key store,
writes the data directory's tinypds.toml once the account exists, prints next steps.
Tricky bits: init refuses a data directory that already has an account; every failure is a
one-line CliError; nothing secret is printed except the token `plc token` exists to show.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import XrpcError
from . import CliError, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create the account, its keys and its DID", description=(
        "Create the one account: signing + rotation keys in the key store, the DID "
        "(did:plc registered at the PLC directory, or did:web:HOSTNAME), the empty repo."))
    p.add_argument("--handle", required=True, help="the account's handle, e.g. alice.example.com")
    p.add_argument("--hostname", required=True, help="public host[:port] of this PDS, e.g. pds.example.com")
    p.add_argument("--did-method", choices=("plc", "web"), default="plc")
    p.add_argument("--plc-url", default=None, help="PLC directory (default https://plc.directory; with --dev: none, local log only)")
    p.add_argument("--recovery-key", default=None, metavar="DID_KEY", help="your own did:key, put first in rotationKeys")
    p.add_argument("--email", default=None)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--dev", action="store_true", help="localhost setup: http:// endpoint, works offline")
    p.add_argument("--keyring-backend", choices=("auto", "system", "file"), default=None,
                   help="where private keys live (default auto: the system keyring, else a sealed file)")
    p.add_argument("--key-file", default=None, help="sealed key file for --keyring-backend file")
    p.set_defaults(func=cmd_init)

    plc = sub.add_parser("plc", help="the account's did:plc operation log").add_subparsers(dest="plc_cmd", metavar="CMD")
    plc.required = True
    plc.add_parser("log", help="print every operation of the local PLC log").set_defaults(func=cmd_plc_log)
    v = plc.add_parser("verify", help="check the local log's chain (and compare with the directory)")
    v.add_argument("--offline", action="store_true", help="do not ask the PLC directory")
    v.set_defaults(func=cmd_plc_verify)
    plc.add_parser("token", help="mint a single-use token for signPlcOperation (15 minutes)").set_defaults(func=cmd_plc_token)
    h = plc.add_parser("handle", help="change the account's handle (checks it resolves to the DID)")
    h.add_argument("handle")
    h.set_defaults(func=cmd_plc_handle)

    plc.add_parser("rotate-key", help="replace this server's PLC rotation key (two signed ops)").set_defaults(
        func=cmd_plc_rotate_key)

    key = sub.add_parser("key", help="back up or restore the account's private keys").add_subparsers(dest="key_cmd", metavar="CMD")
    key.required = True
    e = key.add_parser("export", help="write the keys sealed with a passphrase (argon2id + secretbox)")
    e.add_argument("--sealed", required=True, metavar="FILE")
    e.add_argument("--passphrase-stdin", action="store_true")
    e.set_defaults(func=cmd_key_export)
    i = key.add_parser("import", help="restore keys from a `key export` file")
    i.add_argument("file")
    i.add_argument("--passphrase-stdin", action="store_true")
    i.add_argument("--overwrite", action="store_true", help="replace different keys already stored")
    i.set_defaults(func=cmd_key_import)


# ---- helpers ---------------------------------------------------------------------------------------


def _secret(prompt: str, from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise CliError(f"no terminal for the {prompt.lower()} prompt; pass --password-stdin / --passphrase-stdin")
        value = getpass.getpass(f"{prompt}: ")
        if confirm and getpass.getpass(f"{prompt} (again): ") != value:
            raise CliError(f"the two {prompt.lower()}s differ")
    if not value:
        raise CliError(f"the {prompt.lower()} must not be empty")
    return value


def _open_keys(settings: Any):
    from ..services.identity.keys import KeyStore, KeyStoreError

    try:
        return KeyStore.open(settings)
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except XrpcError as exc:
        raise CliError(exc.message) from None


def _with_identity(args: argparse.Namespace, fn: Any, *, keys_needed: bool = True) -> Any:
    """Open settings, db, keys and the LocalIdentity; run `await fn(ident)`; close everything."""
    from ..services.identity.keys import KeyStoreError
    from ..services.identity.local import build_local_identity, open_database

    settings = settings_from_args(args)
    if not settings.db_path.exists():
        raise CliError(f"no database at {settings.db_path}; run `tinypds init` first")
    keys = _open_keys(settings) if keys_needed else None
    db = open_database(settings)

    async def main() -> Any:
        ident = build_local_identity(settings, db, keys)
        try:
            if ident.identity() is None:
                raise CliError(f"{settings.db_path} has no identity; run `tinypds init` first")
            return await fn(ident)
        finally:
            await ident.aclose()

    try:
        return _run(main())
    except KeyStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        db.close()


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def _write_config(data_dir: Path, values: dict[str, Any]) -> str:
    path = data_dir / "tinypds.toml"
    lines = ["# written by `tinypds init`; environment variables (TINYPDS_*) override these"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    if path.exists():
        return f"{path} already exists; make sure it has:\n    " + "\n    ".join(lines[1:])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"settings written to {path}"


# ---- init ------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from ..services.identity.keys import KeyStoreError, SealedFile
    from ..services.identity.local import build_local_identity, open_database
    from ..services.auth.passwords import hash_password

    overrides: dict[str, Any] = {"hostname": args.hostname, "keyring_backend": args.keyring_backend, "key_file": args.key_file}
    if args.dev:
        overrides["dev"] = True
    if args.plc_url:
        overrides["plc_url"] = args.plc_url
    settings = settings_from_args(args, **overrides)
    if args.dev and args.did_method == "plc" and not args.plc_url:
        plc_url = None  # --dev alone: the genesis op stays in the local log
    else:
        plc_url = settings.plc_url if args.did_method == "plc" else None
    if settings.db_path.exists():
        db = open_database(settings)
        try:
            from ..services.identity.create import get_account

            existing = get_account(db)
        finally:
            db.close()
        if existing is not None:
            raise CliError(f"{settings.data_dir} already holds the account {existing.did} ({existing.handle}); "
                           "init runs once per data directory")
    password = _secret("Password", args.password_stdin)
    keys = _open_keys(settings)
    sealed = isinstance(getattr(keys, "_backend", None), SealedFile)  # also SealedFileKeyring
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings)

    async def main() -> Any:
        ident = build_local_identity(settings, db, keys)
        try:
            return await ident.create(args.handle, password_hash=hash_password(password), email=args.email,
                                      method=args.did_method, plc_url=plc_url, recovery_key=args.recovery_key)
        finally:
            await ident.aclose()

    try:
        new = _run(main())
    except KeyStoreError as exc:
        raise CliError(f"{exc} (choose another store with --keyring-backend file)") from None
    finally:
        db.close()

    config = {"hostname": settings.hostname, "dev": settings.dev or None,
              "plc_url": settings.plc_url if args.plc_url else None,
              "keyring_backend": "file" if sealed else "system",
              "key_file": str(keys._backend.file_path) if sealed else None}
    if args.dev and ":" in settings.hostname and settings.hostname.rsplit(":", 1)[1].isdigit():
        config["port"] = int(settings.hostname.rsplit(":", 1)[1])
    _print_next_steps(new, settings, keys, sealed, _write_config(settings.data_dir, config))
    return 0


def _print_next_steps(new: Any, settings: Any, keys: Any, sealed: bool, config_note: str) -> None:
    out = print
    out(f"Created the account {new.handle}")
    out(f"  did:      {new.did}")
    out(f"  endpoint: {new.endpoint}")
    out(f"  signing key:   {new.signing_key}")
    if new.method == "plc":
        out(f"  rotation keys: {', '.join(new.rotation_keys)}")
        out("  PLC genesis:   " + (f"registered at {new.plc_url}" if new.plc_url else "kept in the local log only (--dev)"))
    out(f"  {config_note}")
    out("")
    if sealed:
        b = keys._backend
        out(f"Private keys: sealed file {b.file_path}, sealing secret {b.secret_path} (both 0600).")
        why = "Chosen by the settings" if settings.keyring_backend == "file" else "No desktop keyring was usable"
        out(f"  {why}; this store works headless (no D-Bus). Under systemd,")
        out(f"  move the secret out of reach and load it with LoadCredential=tinypds-keys:{b.secret_path}.")
    else:
        out(f"Private keys: the system keyring ({keys.backend_name()}), service \"tinypds\".")
        out("  On a headless server (no D-Bus session) use --keyring-backend file instead.")
    out("  Back them up now: tinypds key export --sealed keys.backup")
    out("")
    out("Next steps:")
    if new.method == "web":
        out(f"  - the DID document is served at {new.endpoint}/.well-known/did.json")
    if settings.dev:
        out(f"  - run: tinypds --data {settings.data_dir} serve")
        out(f"  - sign in as {new.handle} at {new.endpoint}")
    else:
        out(f"  - prove the handle: DNS TXT record _atproto.{new.handle} = \"did={new.did}\"")
        out(f"    or serve \"{new.did}\" at https://{new.handle}/.well-known/atproto-did")
        out(f"  - put a TLS reverse proxy (e.g. Caddy) for https://{settings.hostname} in front of")
        out(f"    tinypds serve (it listens on {settings.host}:{settings.port}), including websockets")
        out("  - start it: tinypds serve (or the systemd unit)")


# ---- plc ------------------------------------------------------------------------------------------------


def cmd_plc_log(args: argparse.Namespace) -> int:
    async def fn(ident: Any) -> None:
        row = ident.identity()
        if row.method != "plc":
            raise CliError(f"{row.did} is a did:web; it has no PLC log")
        print(f"# {row.did}  directory: {row.plc_url or '(local log only)'}")
        for op in ident.plc.ops(row.did):
            print(json.dumps({"seq": op.seq, "cid": op.cid, "createdAt": op.created_at, "operation": op.operation}))

    _with_identity(args, fn, keys_needed=False)
    return 0


def cmd_plc_verify(args: argparse.Namespace) -> int:
    async def fn(ident: Any) -> int:
        row = ident.identity()
        if row.method != "plc":
            raise CliError(f"{row.did} is a did:web; it has no PLC log")
        state = ident.plc.state(row.did)
        n = len(ident.plc.ops(row.did))
        print(f"ok: {n} operation(s) of {row.did} verify (genesis hash, signatures, prev links)")
        print(f"  handle {state.handle()}, endpoint {state.pds_endpoint()}, signing key {state.signing_key()}")
        if args.offline or not row.plc_url:
            return 0
        problems = await ident.plc.compare_with_directory(row.did)
        for p in problems:
            print(f"MISMATCH: {p}")
        if problems:
            raise CliError(f"the local log and {row.plc_url} disagree")
        print(f"ok: {row.plc_url} holds the same operations")
        return 0

    return _with_identity(args, fn, keys_needed=False)


def cmd_plc_token(args: argparse.Namespace) -> int:
    async def fn(ident: Any) -> None:
        row = ident.identity()
        ident._require_plc(row.did)
        token = await ident.plc.mint_token(row.did)
        print(token)
        print("single use, valid 15 minutes: give it to signPlcOperation (e.g. during an account migration)",
              file=sys.stderr)

    _with_identity(args, fn, keys_needed=False)
    return 0


def cmd_plc_handle(args: argparse.Namespace) -> int:
    async def fn(ident: Any) -> None:
        row = ident.identity()
        await ident.update_handle(row.did, args.handle)
        print(f"handle of {row.did} is now {args.handle.lower()} (an #identity event was emitted)")

    _with_identity(args, fn)
    return 0


def cmd_plc_rotate_key(args: argparse.Namespace) -> int:
    async def fn(ident: Any) -> None:
        row = ident.identity()
        new = await ident.rotate_rotation_key(row.did)
        print(f"the rotation key of {row.did} is now {new}; back up the keys again (tinypds key export)")

    _with_identity(args, fn)
    return 0


# ---- keys ------------------------------------------------------------------------------------------------


def cmd_key_export(args: argparse.Namespace) -> int:
    from ..services.identity.keys import KeyStoreError

    dest = Path(args.sealed)
    if dest.exists():
        raise CliError(f"{dest} already exists; choose a new file name")
    settings = settings_from_args(args)
    keys = _open_keys(settings)
    did = _local_did(settings)
    passphrase = _secret("Passphrase", args.passphrase_stdin)
    dids = [did] + ([settings.service_did] if settings.service_did != did else [])  # + the session secret
    try:
        blob = keys.export_sealed(dids, passphrase)
    except (KeyStoreError, ValueError) as exc:
        raise CliError(str(exc)) from None
    dest.write_bytes(blob)
    dest.chmod(0o600)
    print(f"wrote the keys of {did} to {dest} (sealed with your passphrase; keep both safe)")
    return 0


def cmd_key_import(args: argparse.Namespace) -> int:
    from ..services.identity.keys import KeyStoreError

    src = Path(args.file)
    if not src.is_file():
        raise CliError(f"no such file {src}")
    settings = settings_from_args(args)
    keys = _open_keys(settings)
    passphrase = _secret("Passphrase", args.passphrase_stdin, confirm=False)
    try:
        pairs = keys.import_sealed(src.read_bytes(), passphrase, overwrite=args.overwrite)
    except (KeyStoreError, ValueError) as exc:
        raise CliError(str(exc)) from None
    for did, purpose in pairs:
        print(f"restored the {purpose} key of {did} into {keys.backend_name()}")
    return 0


def _local_did(settings: Any) -> str:
    from ..services.identity.local import open_database

    if not settings.db_path.exists():
        raise CliError(f"no database at {settings.db_path}; nothing to export")
    db = open_database(settings)
    try:
        from ..services.identity.create import get_account

        account = get_account(db)
    finally:
        db.close()
    if account is None:
        raise CliError("the database has no account yet")
    return account.did
