"""did:plc: build/sign/verify, DID derivation against published ops, audit-log forks, DID doc.

The two published logs below (did:plc:z72i7hdynmk6r22z27h6tvur and the legacy-genesis
did:plc:yk4dd2qkboz2yv6tpubpc6co) are public plc.directory data, also used as test vectors
by the did-method-plc / go-didplc projects; they check DID derivation, CIDs and signatures
against an independent implementation.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest

from tinypds.core.cid import CID
from tinypds.core.crypto import K256_ORDER, K256PrivateKey, P256PrivateKey
from tinypds.core.plc import (
    PlcError,
    apply_operation,
    build_atproto_operation,
    build_operation,
    build_tombstone,
    build_update,
    did_for_genesis,
    doc_from_state,
    operation_cid,
    sign_operation,
    verify_audit_log,
    verify_operation_chain,
)

_BSKY_ROT = [
    "did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg",
    "did:key:zQ3shpKnbdPx3g3CmPf5cRVTPe1HtSwVn5ish3wSnDPQCbLJK",
]
_BSKY_SIGNING = "did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"
_BSKY_PDS = {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": "https://bsky.social"}}
BSKY_DID = "did:plc:z72i7hdynmk6r22z27h6tvur"
BSKY_OPS = [
    {
        "sig": "9NuYV7AqwHVTc0YuWzNV3CJafsSZWH7qCxHRUIP2xWlB-YexXC1OaYAnUayiCXLVzRQ8WBXIqF-SvZdNalwcjA",
        "prev": None,
        "type": "plc_operation",
        "services": _BSKY_PDS,
        "alsoKnownAs": ["at://bluesky-team.bsky.social"],
        "rotationKeys": _BSKY_ROT,
        "verificationMethods": {"atproto": _BSKY_SIGNING},
    },
    {
        "sig": "1mEWzRtFOgeRXH-YCSPTxb990JOXxa__n8Qw6BOKl7Ndm6OFFmwYKiiMqMCpAbxpnGjF5abfIsKc7u3a77Cbnw",
        "prev": "bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6zm",
        "type": "plc_operation",
        "services": _BSKY_PDS,
        "alsoKnownAs": ["at://bsky.app"],
        "rotationKeys": _BSKY_ROT,
        "verificationMethods": {"atproto": _BSKY_SIGNING},
    },
]
BSKY_CIDS = [
    "bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6zm",
    "bafyreihmuvr3frdvd6vmdhucih277prdcfcezf67lasg5oekxoimnunjoq",
]

DHOLMS_DID = "did:plc:yk4dd2qkboz2yv6tpubpc6co"
DHOLMS_OPS = [
    {
        "sig": "7QTzqO1BcL3eDzP4P_YBxMmv5U4brHzAItkM9w5o8gZA7ElZkrVYEwsfQCfk5EoWLk58Z1y6fyNP9x1pthJnlw",
        "prev": None,
        "type": "create",
        "handle": "dan.bsky.social",
        "service": "https://bsky.social",
        "signingKey": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ",
        "recoveryKey": "did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg",
    },
    {
        "sig": "n-VWsPZY4xkFN8wlg-kJBU_yzWTNd2oBnbjkjxXu3HdjbBLaEB7K39JHIPn_DZVALKRjts6bUicjSEecZy8eIw",
        "prev": "bafyreigcxay6ucqlwowfpu35alyxqtv3c4vsj7gmdtmnidsnqs6nblyarq",
        "type": "plc_operation",
        "services": _BSKY_PDS,
        "alsoKnownAs": ["at://dholms.xyz"],
        "rotationKeys": [
            "did:key:zQ3shhCGUqDKjStzuDxPkTxN6ujddP4RkEKJJouJGRRkaLGbg",
            "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ",
        ],
        "verificationMethods": {"atproto": "did:key:zQ3shP5TBe1sQfSttXty15FAEHV1DZgcxRZNxvEWnPfLFwLxJ"},
    },
]

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


# ---- published vectors ---------------------------------------------------------------


def test_published_genesis_did_and_cids():
    assert did_for_genesis(BSKY_OPS[0]) == BSKY_DID
    assert [str(operation_cid(op)) for op in BSKY_OPS] == BSKY_CIDS
    assert did_for_genesis(DHOLMS_OPS[0]) == DHOLMS_DID


def test_published_chain_verifies_and_renders_doc():
    state = verify_operation_chain(BSKY_DID, BSKY_OPS)
    assert state.handle() == "bsky.app"
    assert state.prev == BSKY_CIDS[1]
    assert state.signing_key() == _BSKY_SIGNING
    doc = doc_from_state(BSKY_DID, state)
    assert doc == {
        "@context": [
            "https://www.w3.org/ns/did/v1",
            "https://w3id.org/security/multikey/v1",
            "https://w3id.org/security/suites/secp256k1-2019/v1",
        ],
        "id": BSKY_DID,
        "alsoKnownAs": ["at://bsky.app"],
        "verificationMethod": [
            {
                "id": BSKY_DID + "#atproto",
                "type": "Multikey",
                "controller": BSKY_DID,
                "publicKeyMultibase": _BSKY_SIGNING.removeprefix("did:key:"),
            }
        ],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://bsky.social"}],
    }


def test_published_legacy_genesis_accepted():
    state = verify_operation_chain(DHOLMS_DID, DHOLMS_OPS[:1])
    assert state.handle() == "dan.bsky.social"
    assert state.rotation_keys == [DHOLMS_OPS[0]["recoveryKey"], DHOLMS_OPS[0]["signingKey"]]
    assert verify_operation_chain(DHOLMS_DID, DHOLMS_OPS).handle() == "dholms.xyz"


def test_published_chain_tampering_detected():
    tampered = [BSKY_OPS[0], {**BSKY_OPS[1], "alsoKnownAs": ["at://evil.example"]}]
    with pytest.raises(PlcError):
        verify_operation_chain(BSKY_DID, tampered)
    with pytest.raises(PlcError):  # wrong DID for this genesis
        verify_operation_chain("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", BSKY_OPS)
    with pytest.raises(PlcError):  # a legacy create cannot appear mid-log
        verify_operation_chain(DHOLMS_DID, [DHOLMS_OPS[0], {**DHOLMS_OPS[0], "prev": None}])


# ---- our own operations ------------------------------------------------------------------


@pytest.fixture()
def keys():
    return {"rot": K256PrivateKey.generate(), "rot2": K256PrivateKey.generate(), "sign": K256PrivateKey.generate()}


def _genesis(keys, rotation=("rot", "rot2")):
    op = build_atproto_operation(
        keys["sign"].public_key().did_key(),
        "alice.example.com",
        "https://pds.example.com",
        [keys[r].public_key().did_key() for r in rotation],
        None,
    )
    signed = sign_operation(op, keys[rotation[0]])
    return signed, did_for_genesis(signed)


def test_build_sign_and_verify_chain(keys):
    genesis, did = _genesis(keys)
    assert did.startswith("did:plc:") and len(did) == 32
    assert genesis["prev"] is None and len(base64.urlsafe_b64decode(genesis["sig"] + "==")) == 64
    assert "=" not in genesis["sig"]
    state = verify_operation_chain(did, [genesis])
    assert state.pds_endpoint() == "https://pds.example.com"
    assert state.prev == str(operation_cid(genesis))
    assert isinstance(operation_cid(genesis), CID)

    update = sign_operation(build_update(state, also_known_as=["at://alice.new"]), keys["rot2"])
    assert update["prev"] == state.prev
    state2 = verify_operation_chain(did, [genesis, update])
    assert state2.handle() == "alice.new"
    assert apply_operation(state, update) == state2
    doc = doc_from_state(did, state2)
    assert doc["alsoKnownAs"] == ["at://alice.new"]
    assert doc["verificationMethod"][0]["publicKeyMultibase"] == keys["sign"].public_key().multibase()


def test_p256_rotation_key(keys):
    keys["p"] = P256PrivateKey.generate()
    genesis, did = _genesis(keys, rotation=("p",))
    state = verify_operation_chain(did, [genesis])
    assert state.rotation_keys[0].startswith("did:key:zDn")


def test_wrong_key_refused(keys):
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    bad = sign_operation(build_update(state, also_known_as=["at://x.example"]), keys["sign"])
    with pytest.raises(PlcError):
        verify_operation_chain(did, [genesis, bad])
    # genesis signed by a key that is not among its own rotation keys
    op = {k: v for k, v in genesis.items() if k != "sig"}
    stranger = sign_operation(op, keys["sign"])
    with pytest.raises(PlcError):
        verify_operation_chain(did_for_genesis(stranger), [stranger])


def test_rotated_out_key_refused(keys):
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    rotate = sign_operation(build_update(state, rotation_keys=[keys["rot2"].public_key().did_key()]), keys["rot"])
    state2 = verify_operation_chain(did, [genesis, rotate])
    late = sign_operation(build_update(state2, also_known_as=["at://y.example"]), keys["rot"])
    with pytest.raises(PlcError):
        verify_operation_chain(did, [genesis, rotate, late])


def test_tampered_and_malformed_ops_refused(keys):
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    update = sign_operation(build_update(state, also_known_as=["at://b.example"]), keys["rot"])
    raw = base64.urlsafe_b64decode(update["sig"] + "==")
    high = raw[:32] + (K256_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    cases = [
        {**update, "alsoKnownAs": ["at://c.example"]},  # content changed after signing
        {**update, "prev": None},  # prev no longer links
        {**update, "sig": update["sig"] + "=="},  # padded base64
        {**update, "sig": update["sig"] + "\n"},  # trailing newline
        {**update, "sig": base64.urlsafe_b64encode(high).decode().rstrip("=")},  # high-S
        {**update, "extra": 1},  # unknown field
        {k: v for k, v in update.items() if k != "services"},  # missing field
        {**update, "type": "plc_whatever"},
    ]
    for bad in cases:
        with pytest.raises(PlcError):
            verify_operation_chain(did, [genesis, bad])
    assert verify_operation_chain(did, [genesis, update]).handle() == "b.example"


def test_tombstone_ends_the_log(keys):
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    tomb = sign_operation(build_tombstone(state.prev), keys["rot"])
    final = verify_operation_chain(did, [genesis, tomb])
    assert final.tombstoned
    with pytest.raises(PlcError):
        doc_from_state(did, final)
    with pytest.raises(PlcError):
        build_update(final)
    after = sign_operation({**build_update(state), "prev": final.prev}, keys["rot"])
    with pytest.raises(PlcError):
        verify_operation_chain(did, [genesis, tomb, after])
    with pytest.raises(PlcError):  # a log cannot start with a tombstone
        verify_operation_chain(did, [tomb])


def test_build_operation_validates(keys):
    rot = keys["rot"].public_key().did_key()
    with pytest.raises(PlcError):
        build_operation([], {}, [], {}, None)
    with pytest.raises(PlcError):
        build_operation([rot, rot], {}, [], {}, None)
    with pytest.raises(PlcError):
        build_operation(["did:key:zNotAKey"], {}, [], {}, None)
    with pytest.raises(PlcError):
        build_operation([rot], {}, [], {"atproto_pds": {"type": "X"}}, None)


# ---- audit logs with forks ---------------------------------------------------------------


def _entry(did, op, when, nullified=False):
    return {
        "did": did,
        "operation": op,
        "cid": str(operation_cid(op)),
        "nullified": nullified,
        "createdAt": when.isoformat().replace("+00:00", "Z"),
    }


def _fork_log(keys, recovery_key="rot", delay=timedelta(hours=1)):
    """genesis (rot > rot2); rot2 signs an update; `recovery_key` forks from genesis."""
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    hijack = sign_operation(build_update(state, also_known_as=["at://hijack.example"]), keys["rot2"])
    recover = sign_operation(build_update(state, also_known_as=["at://recovered.example"]), keys[recovery_key])
    entries = [
        _entry(did, genesis, T0),
        _entry(did, hijack, T0 + timedelta(minutes=1), nullified=True),
        _entry(did, recover, T0 + timedelta(minutes=1) + delay),
    ]
    return did, entries


def test_audit_log_linear(keys):
    genesis, did = _genesis(keys)
    state = verify_operation_chain(did, [genesis])
    up = sign_operation(build_update(state, also_known_as=["at://z.example"]), keys["rot2"])
    log = [_entry(did, genesis, T0), _entry(did, up, T0 + timedelta(seconds=5))]
    assert verify_audit_log(did, log).handle() == "z.example"
    log[1]["cid"] = BSKY_CIDS[0]
    with pytest.raises(PlcError):
        verify_audit_log(did, log)


def test_audit_log_recovery_fork(keys):
    did, entries = _fork_log(keys)
    assert verify_audit_log(did, entries).handle() == "recovered.example"
    entries[1]["nullified"] = False  # flags must match what the rules imply
    with pytest.raises(PlcError):
        verify_audit_log(did, entries)


def test_audit_log_recovery_at_exactly_72h_ok(keys):
    did, entries = _fork_log(keys, delay=timedelta(hours=72))
    assert verify_audit_log(did, entries).handle() == "recovered.example"


def test_audit_log_recovery_too_late(keys):
    did, entries = _fork_log(keys, delay=timedelta(hours=72, seconds=1))
    with pytest.raises(PlcError):
        verify_audit_log(did, entries)


def test_audit_log_recovery_needs_higher_priority_key(keys):
    did, entries = _fork_log(keys, recovery_key="rot2")
    with pytest.raises(PlcError):
        verify_audit_log(did, entries)


def test_audit_log_update_on_nullified_op_refused(keys):
    did, entries = _fork_log(keys)
    hijack = entries[1]["operation"]
    hijack_state = verify_operation_chain(did, [entries[0]["operation"], hijack])
    on_top = sign_operation(build_update(hijack_state, also_known_as=["at://late.example"]), keys["rot"])
    entries.append(_entry(did, on_top, T0 + timedelta(hours=3)))
    with pytest.raises(PlcError):
        verify_audit_log(did, entries)
