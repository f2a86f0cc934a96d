"""Who signed a repo CAR: the commit's DID, read from the file, and the `#atproto` signing key
in that DID's document (services.identity: did:plc via the PLC directory, did:web).

Used by `tinypds import` when no --did-key is given, BEFORE the import transaction (network
I/O never runs inside a write). No SQL, no HTTP-server types. Tricky bits: any failure
(offline, unknown DID, a document without a key, an unreadable CAR) is returned as a reason,
never raised: the import then says the signature could NOT be checked and goes on; the DID
document holds the CURRENT key, so a CAR signed before a key rotation will not verify with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from ...core import dagcbor
from ...core.car import CarError, read_car_stream
from .resolver import DidResolver, doc_signing_key

LOOKUP_TIMEOUT = 10.0


@dataclass(frozen=True)
class SigningKeyLookup:
    did: str | None  # the DID the CAR's commit names (None: the CAR could not be read)
    did_key: str | None  # the #atproto key of its DID document (None: see `problem`)
    problem: str | None = None  # why there is no key, in words for the user


def car_commit_did(path: str | Path) -> str:
    """The `did` of the CAR's root commit (scans blocks until the root; no hashing, no import).

    Raises ValueError naming the problem; the import itself reports bad CARs precisely."""
    with open(path, "rb") as fh:
        try:
            roots, blocks = read_car_stream(fh, verify=False)
            if not roots:
                raise ValueError("the CAR has no root")
            for cid, data in blocks:
                if cid == roots[0]:
                    commit = dagcbor.decode(data, strict=False)
                    did = commit.get("did") if isinstance(commit, dict) else None
                    if not isinstance(did, str) or not did.startswith("did:"):
                        raise ValueError("the root commit names no DID")
                    return did
        except (CarError, dagcbor.DagCborError) as exc:
            raise ValueError(f"cannot read the CAR: {exc}") from None
    raise ValueError("the CAR does not contain its root commit")


async def resolve_signing_key(did: str, plc_url: str, timeout: float = LOOKUP_TIMEOUT) -> str:
    """The did:key of `did`'s `#atproto` verification method. Raises with a readable message."""
    resolver = DidResolver(plc_url, timeout=timeout)
    try:
        doc = await resolver.resolve(did, fresh=True)
    finally:
        await resolver.aclose()
    key = doc_signing_key(doc)
    if key is None:
        raise ValueError(f"the DID document of {did} has no usable #atproto signing key")
    return key


def lookup_car_signing_key(path: str | Path, plc_url: str, timeout: float = LOOKUP_TIMEOUT) -> SigningKeyLookup:
    """Read the CAR's DID and resolve its signing key; failures come back as `problem`."""
    try:
        did = car_commit_did(path)
    except (OSError, ValueError) as exc:
        return SigningKeyLookup(None, None, str(exc))
    try:
        key = asyncio.run(resolve_signing_key(did, plc_url, timeout))
    except Exception as exc:  # offline, DidNotFound, UpstreamFailure, a bad document ...
        reason = str(exc) or type(exc).__name__
        return SigningKeyLookup(did, None, f"resolving {did} failed: {reason}")
    return SigningKeyLookup(did, key)
