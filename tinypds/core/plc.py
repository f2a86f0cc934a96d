"""did:plc operations: build, sign, verify linear chains, DID and DID document.

Pure: operations in, state out (no HTTP; the directory client lives in services).
Imports core.crypto, core.dagcbor and core.cid (plus core.plc_audit, deferred, for the
re-exported `verify_audit_log`; forks and nullification live there).
Tricky bits: `prev` is the *string* CID of the previous signed op (not a DAG-CBOR link);
the signature covers the DAG-CBOR of the op without `sig` and is strict base64url
(no padding, canonical trailing bits, 64-byte low-S r||s); a legacy "create" genesis
has rotation keys [recoveryKey, signingKey].
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any, Iterable

from . import dagcbor
from .cid import CID, cid_for_dagcbor
from .crypto import PrivateKey, parse_did_key

PLC_PREFIX = "did:plc:"
ATPROTO_PDS_TYPE = "AtprotoPersonalDataServer"

_OP_KEYS = {"type", "rotationKeys", "verificationMethods", "alsoKnownAs", "services", "prev"}
_TOMBSTONE_KEYS = {"type", "prev"}
_LEGACY_KEYS = {"type", "signingKey", "recoveryKey", "handle", "service", "prev"}
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")
_DID_PLC_RE = re.compile(r"did:plc:[a-z2-7]{24}")


class PlcError(ValueError):
    """An operation or log is malformed, badly signed, or out of order."""


@dataclass(frozen=True)
class PlcState:
    """The DID's data after the last applied operation; `prev` is that op's CID string."""

    did: str
    rotation_keys: list[str]
    verification_methods: dict[str, str]
    also_known_as: list[str]
    services: dict[str, dict[str, str]]
    prev: str | None = None
    tombstoned: bool = False

    def signing_key(self) -> str | None:
        """The `atproto` verification method (did:key) if any."""
        return self.verification_methods.get("atproto")

    def handle(self) -> str | None:
        for aka in self.also_known_as:
            if aka.startswith("at://"):
                return aka[len("at://") :]
        return None

    def pds_endpoint(self) -> str | None:
        svc = self.services.get("atproto_pds")
        return svc.get("endpoint") if svc and svc.get("type") == ATPROTO_PDS_TYPE else None


# ---- building and signing -------------------------------------------------------


def build_operation(
    rotation_keys: Iterable[str],
    verification_methods: dict[str, str],
    also_known_as: Iterable[str],
    services: dict[str, dict[str, str]],
    prev: str | CID | None,
) -> dict:
    """An unsigned `plc_operation` (validated)."""
    op = {
        "type": "plc_operation",
        "rotationKeys": list(rotation_keys),
        "verificationMethods": dict(verification_methods),
        "alsoKnownAs": list(also_known_as),
        "services": {k: dict(v) for k, v in services.items()},
        "prev": None if prev is None else str(prev),
    }
    _check_shape(op, signed=False)
    if not 1 <= len(op["rotationKeys"]) <= 5 or len(set(op["rotationKeys"])) != len(op["rotationKeys"]):
        raise PlcError("rotationKeys must hold 1 to 5 distinct keys")
    for key in op["rotationKeys"]:
        _parse_rotation_key(key)
    return op


def build_atproto_operation(
    signing_key: str, handle: str, pds_endpoint: str, rotation_keys: Iterable[str], prev: str | CID | None
) -> dict:
    """The usual atproto op: one `atproto` signing key, one handle, one PDS."""
    return build_operation(
        rotation_keys,
        {"atproto": signing_key},
        [f"at://{handle}"],
        {"atproto_pds": {"type": ATPROTO_PDS_TYPE, "endpoint": pds_endpoint}},
        prev,
    )


def build_update(
    state: PlcState,
    *,
    rotation_keys: Iterable[str] | None = None,
    verification_methods: dict[str, str] | None = None,
    also_known_as: Iterable[str] | None = None,
    services: dict[str, dict[str, str]] | None = None,
) -> dict:
    """An unsigned op that follows `state`, replacing the fields given."""
    if state.tombstoned:
        raise PlcError("the DID is tombstoned")
    return build_operation(
        state.rotation_keys if rotation_keys is None else rotation_keys,
        state.verification_methods if verification_methods is None else verification_methods,
        state.also_known_as if also_known_as is None else also_known_as,
        state.services if services is None else services,
        state.prev,
    )


def build_tombstone(prev: str | CID) -> dict:
    return {"type": "plc_tombstone", "prev": str(prev)}


def sign_operation(op: dict, rotation_key: PrivateKey) -> dict:
    """The op with `sig`: base64url (unpadded) of a low-S signature over DAG-CBOR of the op."""
    unsigned = {k: v for k, v in op.items() if k != "sig"}
    sig = rotation_key.sign(dagcbor.encode(unsigned))
    return {**unsigned, "sig": base64.urlsafe_b64encode(sig).decode("ascii").rstrip("=")}


def operation_cid(signed_op: dict) -> CID:
    """CID (dag-cbor, sha2-256) of a signed op; `str()` of it is the next op's `prev`."""
    return cid_for_dagcbor(dagcbor.encode(signed_op))


def did_for_genesis(signed_op: dict) -> str:
    digest = hashlib.sha256(dagcbor.encode(signed_op)).digest()
    return PLC_PREFIX + base64.b32encode(digest).decode("ascii").lower()[:24]


# ---- verification ----------------------------------------------------------------


def _check_shape(op: Any, signed: bool = True) -> str:
    """Validate the op's fields (strictly, like the reference schemas); return its type."""
    if not isinstance(op, dict):
        raise PlcError("operation must be an object")
    extra = {"sig"} if signed else set()
    if signed and not isinstance(op.get("sig"), str):
        raise PlcError("operation is not signed")
    kind = op.get("type")
    if kind == "plc_operation":
        if set(op) != _OP_KEYS | extra:
            raise PlcError("plc_operation has missing or unknown fields")
        if not _str_list(op["rotationKeys"]) or not _str_list(op["alsoKnownAs"]):
            raise PlcError("rotationKeys and alsoKnownAs must be lists of strings")
        vms = op["verificationMethods"]
        if not isinstance(vms, dict) or not all(isinstance(v, str) for v in vms.values()):
            raise PlcError("verificationMethods must map ids to did:key strings")
        svcs = op["services"]
        if not isinstance(svcs, dict) or not all(
            isinstance(s, dict) and set(s) == {"type", "endpoint"} and all(isinstance(x, str) for x in s.values())
            for s in svcs.values()
        ):
            raise PlcError("services must map ids to {type, endpoint}")
        if op["prev"] is not None and not isinstance(op["prev"], str):
            raise PlcError("prev must be a CID string or null")
    elif kind == "plc_tombstone":
        if set(op) != _TOMBSTONE_KEYS | extra or not isinstance(op["prev"], str):
            raise PlcError("malformed plc_tombstone")
    elif kind == "create":
        if set(op) != _LEGACY_KEYS | extra or op["prev"] is not None:
            raise PlcError("malformed legacy create operation")
        if not all(isinstance(op[k], str) for k in _LEGACY_KEYS - {"type", "prev"}):
            raise PlcError("malformed legacy create operation")
    else:
        raise PlcError(f"unknown operation type {kind!r}")
    return kind


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _parse_rotation_key(key: str):
    try:
        return parse_did_key(key)
    except ValueError as exc:
        raise PlcError(f"rotation key is not a k256/p256 did:key: {key!r}") from exc


def _decode_sig(sig: str) -> bytes:
    if not _B64URL_RE.fullmatch(sig) or len(sig) % 4 == 1:
        raise PlcError("signature is not unpadded base64url")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != sig:
        raise PlcError("signature base64url is not canonical")
    return raw


def verify_operation_signature(op: dict, allowed_keys: Iterable[str]) -> str:
    """The first key of `allowed_keys` (did:key strings) that signed `op`; else PlcError."""
    sig = _decode_sig(op.get("sig", ""))
    data = dagcbor.encode({k: v for k, v in op.items() if k != "sig"})
    for did_key in allowed_keys:
        try:
            key = parse_did_key(did_key)
        except ValueError:
            continue
        if key.verify(data, sig):
            return did_key
    raise PlcError("operation signature does not match any allowed rotation key")


def _normalize(op: dict) -> dict:
    """A legacy `create` op as the equivalent plc_operation fields (others unchanged)."""
    if op["type"] != "create":
        return op
    handle = op["handle"]
    if not handle.startswith("at://"):
        handle = "at://" + handle.replace("http://", "").replace("https://", "")
    service = op["service"]
    if not service.startswith(("http://", "https://")):
        service = "https://" + service
    return {
        "type": "plc_operation",
        "rotationKeys": [op["recoveryKey"], op["signingKey"]],
        "verificationMethods": {"atproto": op["signingKey"]},
        "alsoKnownAs": [handle],
        "services": {"atproto_pds": {"type": ATPROTO_PDS_TYPE, "endpoint": service}},
        "prev": None,
    }


def _state_after(did: str, op: dict) -> PlcState:
    cid = str(operation_cid(op))
    if op["type"] == "plc_tombstone":
        return PlcState(did, [], {}, [], {}, prev=cid, tombstoned=True)
    n = _normalize(op)
    return PlcState(
        did,
        list(n["rotationKeys"]),
        dict(n["verificationMethods"]),
        list(n["alsoKnownAs"]),
        {k: dict(v) for k, v in n["services"].items()},
        prev=cid,
    )


def verify_genesis(did: str, op: dict) -> PlcState:
    """Check a genesis op (signed by one of its own rotation keys, hashing to `did`)."""
    kind = _check_shape(op)
    if kind == "plc_tombstone":
        raise PlcError("a log cannot start with a tombstone")
    if op["prev"] is not None:
        raise PlcError("genesis operation must have prev: null")
    verify_operation_signature(op, _normalize(op)["rotationKeys"])
    if did_for_genesis(op) != did:
        raise PlcError(f"genesis operation hashes to {did_for_genesis(op)}, not {did}")
    return _state_after(did, op)


def apply_operation(state: PlcState, op: dict) -> PlcState:
    """Check `op` as the successor of `state` (linear history); return the new state."""
    kind = _check_shape(op)
    if kind == "create":
        raise PlcError("a legacy create operation can only be a genesis")
    if state.tombstoned:
        raise PlcError("no operation may follow a tombstone")
    if op["prev"] != state.prev:
        raise PlcError("operation prev does not point at the previous operation")
    verify_operation_signature(op, state.rotation_keys)
    return _state_after(state.did, op)


def verify_operation_chain(did: str, ops: list[dict]) -> PlcState:
    """Verify a linear op log (no nullified ops) from genesis; return the final state."""
    if not _DID_PLC_RE.fullmatch(did):
        raise PlcError(f"not a did:plc: {did!r}")
    if not ops:
        raise PlcError("empty operation log")
    state = verify_genesis(did, ops[0])
    for op in ops[1:]:
        state = apply_operation(state, op)
    return state


def verify_audit_log(did: str, entries: list[dict]) -> PlcState:
    """Verify a directory audit log, forks included (see core.plc_audit, which owns the rules)."""
    from .plc_audit import verify_audit_log as verify  # deferred: plc_audit builds on this module

    return verify(did, entries)


# ---- DID document ------------------------------------------------------------------

_CONTEXT = ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"]
_SUITE_CONTEXT = {
    "ES256K": "https://w3id.org/security/suites/secp256k1-2019/v1",
    "ES256": "https://w3id.org/security/suites/ecdsa-2019/v1",
}


def doc_from_state(did: str, state: PlcState) -> dict:
    """The W3C DID document the PLC directory serves for this state."""
    if state.tombstoned:
        raise PlcError("a tombstoned DID has no document")
    if did != state.did:
        raise PlcError("state belongs to another DID")
    context = list(_CONTEXT)
    methods = []
    for key_id, did_key in state.verification_methods.items():
        try:
            suite = _SUITE_CONTEXT.get(parse_did_key(did_key).jwt_alg)
        except ValueError:
            suite = None  # any syntactically valid did:key may appear here
        if suite and suite not in context:
            context.append(suite)
        methods.append(
            {
                "id": f"{did}#{key_id}",
                "type": "Multikey",
                "controller": did,
                "publicKeyMultibase": did_key.removeprefix("did:key:"),
            }
        )
    services = [
        {"id": f"#{sid}", "type": svc["type"], "serviceEndpoint": svc["endpoint"]}
        for sid, svc in state.services.items()
    ]
    return {
        "@context": context,
        "id": did,
        "alsoKnownAs": list(state.also_known_as),
        "verificationMethod": methods,
        "service": services,
    }
