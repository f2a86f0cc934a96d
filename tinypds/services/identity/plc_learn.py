"""Learning the local DID's operations that others submitted to the directory (a new PDS
after a move out, a recovery key's fork): fetched from `/<did>/log/audit`, verified op by op.

Services layer, beside identity.plc (whose PlcService it works on); no HTTP types. Tricky
bits: the whole audit log is verified (core.plc_audit: CIDs, signatures against the keys valid
at each prev, nullified flags) before anything is written; only canonical ops the local log
lacks are appended, in one transaction with the account's handle (and an #identity event when
the account is active); a directory whose history no longer starts with the local log is
reported, never merged; our identity record's signing key is left alone (it names OUR key,
which startup checks against the key store).
"""

from __future__ import annotations

import logging
from typing import Any

from ...core import plc as core_plc
from ...core.plc import PlcError, PlcState
from ...store import accounts as accounts_db
from ...store import identity as identity_db
from .plc import PlcLogError, PlcService, record_identity_event, utc_now_iso

log = logging.getLogger("tinypds.plc")


async def learn_from_directory(plc: PlcService, did: str) -> PlcState | None:
    """Fetch the directory's audit log, verify it op by op (core.plc_audit: every CID,
    every signature against the keys valid at its prev, the nullified flags), and append
    the canonical ops the local log lacks. Returns the directory's verified current state,
    or None for a DID kept in the local log only. PlcLogError if the directory's log does
    not verify or no longer starts with the local one (nothing is written then)."""
    ident = plc.identity(did)
    if not ident.plc_url:
        return None
    entries = await plc.client(ident.plc_url).get_audit_log(did)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PlcLogError("the directory's audit log is not a list of entries")
    try:
        state = core_plc.verify_audit_log(did, entries)
    except PlcError as exc:
        raise PlcLogError(f"the directory's audit log of {did} does not verify: {exc}") from None
    canonical = [e for e in entries if not e.get("nullified")]
    if len(canonical) <= len(plc.ops(did)):
        return state  # nothing new (the common case: no write)
    added: list[str] = []

    def txn(conn: Any) -> None:
        local = [r.cid for r in identity_db.plc_ops(conn, did)]
        if [e["cid"] for e in canonical[: len(local)]] != local:
            raise PlcLogError(f"the directory's history of {did} no longer starts with the local log "
                              "(a rotation key rewrote it); the local log was left as it is")
        for e in canonical[len(local):]:
            identity_db.append_plc_op(conn, did, e["cid"], e["operation"], str(e["createdAt"]))
            added.append(e["cid"])
        account = accounts_db.get_account(conn, did)
        handle = state.handle()
        if account is not None and handle and account.handle != handle:
            accounts_db.set_handle(conn, did, handle)
            if account.status == "active":
                record_identity_event(conn, did, handle, utc_now_iso(plc._clock))
                added.append("#identity")

    async with plc._lock:
        await plc.db.awrite(txn)
    log.info("learned %d PLC operation(s) of %s from %s", len([a for a in added if a != "#identity"]), did,
             ident.plc_url)
    if "#identity" in added and plc.on_event is not None:
        plc.on_event()
    return state
