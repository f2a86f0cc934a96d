"""`tinypds status` and `tinypds config check`: what a data directory holds and what is wrong.

No HTTP types, no SQL (store.ops.figures). Network checks (does the handle resolve to the
DID, does the DID document name this server and handle) are bounded by one short timeout
and report trouble as text, never raise. Opens the database without migrating it, so it is
safe while a server runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...store import ops as store_ops
from ...store.db import DatabaseError
from ..sync.health_report import HealthReport, report_lines
from .data_dir import OpsError, server_running


@dataclass
class Line:
    label: str
    value: str
    ok: bool = True  # False: shown as a problem


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


async def _resolution(settings: Any, did: str, handle: str | None, plc_url: str | None, timeout: float) -> list[Line]:
    """Handle -> DID and DID -> document (naming this PDS and the handle), each within `timeout`."""
    from ..identity.resolver import DidResolver, HandleResolver, doc_handle, doc_pds_endpoint

    out: list[Line] = []
    dids = DidResolver(plc_url or settings.plc_url, timeout=timeout)
    handles = HandleResolver(timeout=timeout)
    try:
        if did.startswith("did:plc:") and plc_url is None:
            out.append(Line("DID document", "kept locally only (dev identity, not registered with a directory)"))
        else:
            try:
                doc = await asyncio.wait_for(dids.resolve(did, fresh=True), timeout)
            except Exception as exc:  # noqa: BLE001 - any failure is a line, not a crash
                out.append(Line("DID document", f"does not resolve: {type(exc).__name__}: {exc}", ok=False))
            else:
                endpoint = doc_pds_endpoint(doc)
                good = endpoint == settings.public_url
                out.append(Line("DID document", f"resolves; PDS endpoint {endpoint}"
                                + ("" if good else f" (expected {settings.public_url})"), ok=good))
                if handle and doc_handle(doc) != handle:
                    out.append(Line("DID doc handle", f"names {doc_handle(doc)}, not {handle}", ok=False))
        if not handle:
            out.append(Line("handle", "none", ok=False))
        elif handle.endswith(".test") and getattr(settings, "dev_like", settings.dev):
            out.append(Line("handle resolves", "not checked (dev .test handle)"))
        else:
            try:
                got = await asyncio.wait_for(handles.resolve(handle, fresh=True), timeout * 2)
            except Exception as exc:  # noqa: BLE001
                got, why = None, f"{type(exc).__name__}: {exc}"
            else:
                why = "no DNS TXT _atproto record nor /.well-known/atproto-did answer"
            if got == did:
                out.append(Line("handle resolves", f"{handle} -> {did}"))
            elif got is None:
                out.append(Line("handle resolves", f"{handle} does not resolve ({why})", ok=False))
            else:
                out.append(Line("handle resolves", f"{handle} points at {got}, not {did}", ok=False))
    finally:
        await dids.aclose()
        await handles.aclose()
    return out


def status(settings: Any, *, network: bool = True, timeout: float = 3.0) -> list[Line]:
    """Status lines for the data directory (account, repo, blobs, firehose, files, keys, identity, network)."""
    return status_report(settings, network=network, timeout=timeout)[0]


def status_report(settings: Any, *, network: bool = True, timeout: float = 3.0) -> tuple[list[Line], Any]:
    """(status lines, the server's last stored HealthReport or None). The network section shows
    what the running server's health watcher last saw (relays, AppView, handle resolution)."""
    from ...store.accounts import get_account
    from ...store.health import get_report as get_health
    from ...store.identity import get_identity
    from ...store.repo import get_root
    from ..identity.keys import KeyStore, KeyStoreError

    path = settings.db_path
    if not path.exists():
        return [Line("database", f"none at {path}", ok=False)], None
    try:
        lines = [Line("server", "running" if server_running(settings.data_dir) else "not running")]
    except OpsError as exc:
        lines = [Line("server", f"unknown: {exc}", ok=False)]

    def snapshot(conn: Any) -> tuple:
        return get_account(conn), store_ops.figures(conn), get_root(conn), get_identity(conn), get_health(conn)

    try:  # a private read snapshot: never holds up a running server's writes
        account, fig, root, ident, health_doc = store_ops.read_only(path, snapshot)
    except DatabaseError as exc:
        return lines + [Line("database", str(exc), ok=False)], None
    if account is None:
        lines.append(Line("account", "none yet (run `tinypds init`)", ok=False))
    else:
        lines += [
            Line("account", f"{account.status}"),
            Line("DID", account.did),
            Line("handle", account.handle or "(none)"),
            Line("email", (f"{account.email} ({'confirmed' if account.email_confirmed_at else 'not confirmed'})"
                           if account.email else "(none)")
                 + ("; mailed via SMTP" if settings.smtp_url else "; no SMTP: tokens via `tinypds account email-token`")),
        ]
    lines += [
        Line("records", f"{fig.records} in {fig.collections} collections"),
        Line("repo size", f"{fig.blocks} blocks, {_size(fig.block_bytes)}"),
        Line("blobs", f"{fig.blobs}, {_size(fig.blob_bytes)}" + (f" (+{fig.temp_blobs} temporary)" if fig.temp_blobs else "")),
        Line("last commit", f"rev {root.rev}, {root.commit_cid}" if root else "none"),
        Line("firehose seq", f"{fig.last_seq}" + (f" (last event {fig.last_event_time})" if fig.last_event_time else "")),
        Line("sessions", str(fig.sessions)),
        Line("database", f"{path} {_size(_file_size(path))}"
             + (f" + WAL {_size(_file_size(Path(str(path) + '-wal')))}" if Path(str(path) + "-wal").exists() else "")
             + f" ({_size(fig.freelist_count * fig.page_size)} free)"),
    ]
    try:
        keys = KeyStore.open(settings)
        backend = keys.backend_name()
        if account is not None and account.status != "offline-copy":
            has = keys.has_key(account.did, "signing")
            lines.append(Line("keyring", f"{backend}; signing key {'present' if has else 'MISSING'}", ok=has))
        else:
            lines.append(Line("keyring", backend))
    except KeyStoreError as exc:
        lines.append(Line("keyring", str(exc), ok=False))
    if network and account is not None and account.status != "offline-copy":
        plc_url = ident.plc_url if ident is not None else settings.plc_url
        try:
            lines += asyncio.run(asyncio.wait_for(
                _resolution(settings, account.did, account.handle, plc_url, timeout), timeout * 4))
        except Exception as exc:  # noqa: BLE001
            lines.append(Line("identity", f"not checked: {type(exc).__name__}", ok=False))
    report = HealthReport.from_json(health_doc) if health_doc else None
    if account is not None and account.status != "offline-copy":
        lines += [Line(label, value, ok) for label, value, ok in report_lines(report)]
        stale = _stale(report, settings, lines[0].value == "running")
        if stale:
            lines.append(Line("network", stale, ok=False))
    return lines, report


def _stale(report: Any, settings: Any, running: bool) -> str | None:
    """A running server whose watcher has not stored a round for three intervals (at least 15 min)."""
    interval = int(getattr(settings, "health_interval", 0) or 0)
    if not running or interval <= 0 or report is None or not report.checked_at:
        return None
    from datetime import datetime, timezone

    try:
        when = datetime.strptime(report.checked_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    age = (datetime.now(timezone.utc) - when).total_seconds()
    if age <= max(3 * interval, 900):
        return None
    return f"the last health check is {int(age // 60)} min old although the server runs: is its watcher stuck?"


def config_problems(settings: Any, check_keys: bool = True) -> list[str]:
    """check_settings plus what only shows on this machine: data dir, database, key store."""
    import os

    from ...config import check_settings

    out = list(check_settings(settings))
    d = settings.data_dir
    if not d.exists():
        out.append(f"warning: data directory {d} does not exist yet (it is created on first start)")
    elif not os.access(d, os.W_OK):
        out.append(f"error: data directory {d} is not writable by this user")
    if settings.db_path.exists():
        try:
            store_ops.read_only(settings.db_path, lambda conn: None)
        except DatabaseError as exc:
            out.append(f"error: {exc}")
    if check_keys:
        from ..identity.keys import KeyStore, KeyStoreError

        try:
            KeyStore.open(settings)
        except KeyStoreError as exc:
            out.append(f"error: key store: {exc}")
    if settings.key_file is not None and settings.keyring_backend == "system":
        out.append("warning: TINYPDS_KEY_FILE is ignored with TINYPDS_KEYRING_BACKEND=system")
    return out
