"""did:plc audit-log verification: `verify_audit_log(did, entries)` (also re-exported by core.plc).

Pure; imports core.plc only (its op checks and state helpers); core.plc must import this
module lazily, never at module level. Tricky bits: a higher-priority rotation key may fork
history within 72 hours (RECOVERY_WINDOW) of the first op it replaces, nullifying those ops;
the log's `nullified` flags must be exactly the ones these rules imply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .plc import (
    _DID_PLC_RE,
    PlcError,
    PlcState,
    _check_shape,
    _state_after,
    operation_cid,
    verify_genesis,
    verify_operation_signature,
)

RECOVERY_WINDOW = timedelta(hours=72)


def _parse_time(s: Any) -> datetime:
    try:
        t = datetime.fromisoformat(s)
    except (TypeError, ValueError) as exc:
        raise PlcError(f"bad createdAt {s!r}") from exc
    if t.tzinfo is None:
        raise PlcError(f"createdAt without timezone {s!r}")
    return t


@dataclass
class _Entry:
    op: dict
    cid: str
    created: datetime
    state: PlcState = field(repr=False)


def verify_audit_log(did: str, entries: list[dict]) -> PlcState:
    """Verify a directory audit log (`/{did}/log/audit`): entries {did, operation, cid,
    nullified, createdAt} in order, including forks by higher-priority rotation keys.

    Checks every cid and that the `nullified` flags are exactly the ones the rules imply.
    """
    if not _DID_PLC_RE.fullmatch(did):
        raise PlcError(f"not a did:plc: {did!r}")
    if not entries:
        raise PlcError("empty audit log")
    canonical: list[_Entry] = []
    nullified: set[str] = set()
    for e in entries:
        op = e.get("operation")
        if e.get("did", did) != did:
            raise PlcError("audit log entry for another DID")
        try:
            cid = str(operation_cid(op)) if isinstance(op, dict) else ""
        except ValueError as exc:
            raise PlcError("audit log operation is not valid DAG-CBOR data") from exc
        if e.get("cid") != cid:
            raise PlcError("audit log entry cid does not match its operation")
        created = _parse_time(e.get("createdAt"))
        if not canonical:
            canonical.append(_Entry(op, cid, created, verify_genesis(did, op)))
            continue
        kind = _check_shape(op)
        if kind == "create":
            raise PlcError("a legacy create operation can only be a genesis")
        idx = next((i for i, c in enumerate(canonical) if c.cid == op["prev"]), None)
        if idx is None:
            raise PlcError("operation prev is not in the canonical history")
        base, forked = canonical[idx], canonical[idx + 1 :]
        if base.state.tombstoned:
            raise PlcError("no operation may follow a tombstone")
        keys = base.state.rotation_keys
        if not forked:
            verify_operation_signature(op, keys)
        else:
            disputed = verify_operation_signature(forked[0].op, keys)
            verify_operation_signature(op, keys[: keys.index(disputed)])
            if created <= canonical[-1].created:
                raise PlcError("operations must be in time order")
            if created - forked[0].created > RECOVERY_WINDOW:
                raise PlcError("recovery came after the 72 hour window")
            nullified.update(f.cid for f in forked)
        canonical = canonical[: idx + 1] + [_Entry(op, cid, created, _state_after(did, op))]
    for e in entries:
        if bool(e.get("nullified")) != (e["cid"] in nullified):
            raise PlcError(f"nullified flag of {e['cid']} does not match the log")
    return canonical[-1].state
