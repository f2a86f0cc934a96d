"""The `tinypds` command line: a thin layer over services.

Owns argument parsing and turning errors into one-line messages with a non-zero
exit. Each command group lives in its own module with a `register(subparsers)`
function (repo: import/export/verify; server: serve; identity: init/plc/key/invite;
ops: backup/restore/status/config). Must not import tinypds.store directly except
through services.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..config import ConfigError, load_settings

COMMAND_MODULES = ("server", "repo", "identity", "ops", "migrate", "account", "twofactor")  # twofactor joins `account`: keep it last


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1 (or .code)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinypds", description="A one-account AT Protocol PDS on one SQLite file.")
    parser.add_argument("--data", metavar="DIR", default=None, help="data directory (default: ./data or TINYPDS_DATA_DIR)")
    parser.add_argument("--config", metavar="FILE", default=None, help="TOML settings file (default: DIR/tinypds.toml if present)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def settings_from_args(args: argparse.Namespace, **overrides):
    return load_settings({"data_dir": args.data, "config_file": args.config, **overrides})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # the parser is dropped here: `serve` runs for months
    try:
        rc = args.func(args)
    except CliError as exc:
        print(f"tinypds: error: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"tinypds: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinypds: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
