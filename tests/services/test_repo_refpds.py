"""Interop with the reference PDS (@atproto/pds, /work/shared/lab): its getRepo CAR imports,
verifies and re-exports identically here, and it accepts our export back (importRepo).

The reference PDS comes from the lab (tests/lab.py starts it, or $TINYPDS_REF_PDS_URL names
a running one); the test is skipped with the reason when the lab cannot start.
"""

from __future__ import annotations

import io
import os
import secrets

import pytest

from tinypds.core import car as car_core
from tinypds.core.crypto import parse_multibase_key
from tinypds.services.repo.car_io import import_car, iter_export, verify_stored
from tinypds.store import records as records_db

from .repo_helpers import open_env

httpx = pytest.importorskip("httpx")
PLC = os.environ.get("TINYPDS_REF_PLC_URL", "http://localhost:2582")
REF = ""  # set per test from the ref_pds_url fixture (tests/lab.py)


@pytest.fixture(autouse=True)
def _ref(ref_pds_url):
    global REF
    REF = ref_pds_url


def _xrpc(client, method, nsid, token=None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = client.request(method, f"{REF}/xrpc/{nsid}", headers=headers, **kw)
    assert r.status_code == 200, (nsid, r.status_code, r.text)
    return r


def _signing_did_key(client, did: str) -> str:
    doc = client.get(f"{PLC}/{did}").json()
    vm = next(v for v in doc["verificationMethod"] if v["id"].endswith("#atproto"))
    return parse_multibase_key(vm["publicKeyMultibase"], vm.get("type")).did_key()


def test_reference_repo_round_trips_through_tinypds(tmp_path):
    with httpx.Client(timeout=30) as client:
        handle = f"rt{secrets.token_hex(4)}.test"
        acct = _xrpc(client, "POST", "com.atproto.server.createAccount",
                     json={"handle": handle, "email": f"{handle}@example.com", "password": "hunter2-hunter2"}).json()
        did, token = acct["did"], acct["accessJwt"]
        blob = _xrpc(client, "POST", "com.atproto.repo.uploadBlob", token, content=b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                     headers={"Content-Type": "image/png"}).json()["blob"]
        writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post",
                   "value": {"$type": "app.bsky.feed.post", "text": f"post {i}", "createdAt": "2025-01-01T00:00:00.000Z"}}
                  for i in range(40)]
        writes.append({"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": {
            "$type": "app.bsky.feed.post", "text": "pic", "createdAt": "2025-01-01T00:00:00.000Z",
            "embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "x", "image": blob}]}}})
        writes += [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.graph.follow",
                    "value": {"$type": "app.bsky.graph.follow", "subject": f"did:plc:{'a' * 23}{c}", "createdAt": "2025-01-01T00:00:00.000Z"}}
                   for c in "bcdefgh"]
        writes.append({"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.custom.thing", "rkey": "self",
                       "value": {"$type": "com.example.custom.thing", "n": 1}})
        _xrpc(client, "POST", "com.atproto.repo.applyWrites", token, json={"repo": did, "writes": writes})
        car = _xrpc(client, "GET", "com.atproto.sync.getRepo", params={"did": did}).content
        did_key = _signing_did_key(client, did)

        env = open_env(tmp_path, did=None)
        try:
            res = import_car(env.db, io.BytesIO(car), did_key=did_key)
            assert res.did == did and res.records == 49 and res.signature.startswith("valid")
            assert verify_stored(env.db, did_key=did_key).records == 49
            assert env.db.read(lambda c: c.execute("SELECT count(*) FROM record_blobs").fetchone()[0]) == 1
            ours = b"".join(iter_export(env.db))
            index = env.db.read(lambda c: list(records_db.iter_index_in_mst_order(c)))
        finally:
            env.db.close()

        ref_roots, ref_blocks = car_core.read_car_bytes(car)
        our_roots, our_blocks = car_core.read_car_bytes(ours)
        assert our_roots == ref_roots  # same commit CID
        assert sorted(our_blocks) == sorted(ref_blocks)  # exactly the same blocks
        listed = _xrpc(client, "GET", "com.atproto.repo.listRecords",
                       params={"repo": did, "collection": "app.bsky.feed.post", "limit": 100}).json()["records"]
        ref_cids = {r["uri"].split("/", 3)[3]: r["cid"] for r in listed}
        for key, cid in index:
            if key.startswith("app.bsky.feed.post/"):
                assert ref_cids[key] == str(cid)

        # the reference accepts our export of its repo
        _xrpc(client, "POST", "com.atproto.repo.importRepo", token, content=ours,
              headers={"Content-Type": "application/vnd.ipld.car"})
