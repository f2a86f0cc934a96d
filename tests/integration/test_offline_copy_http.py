"""A data dir holding an `offline-copy` account (a verified repo imported without its keys):
`tinypds serve` starts on it without looking up a signing key, serves reads (getRecord,
listRecords, describeRepo, sync.getRepo) and refuses every write with RepoReadOnly (never a 500)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tinypds import errors
from tinypds.core import car as car_core
from tinypds.core import dagcbor
from tinypds.services.repo.writes import RepoService, read_only_signer
from tinypds.services.repo.car_io import import_car
from tinypds.store.db import Database

from tests.services.repo_helpers import build_repo_blocks, car_bytes, fixed_key, snapshot

from .conftest import start_server
from .test_http_basics import assert_xrpc_error

DID = "did:plc:offlinecopyhttptest00000a"
KEY = fixed_key("offline-copy-signer")
NS = "/xrpc/com.atproto.repo."
POST = "app.bsky.feed.post"


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline")
    root, blocks = build_repo_blocks(40, KEY, did=DID)
    car = tmp / "in.car"
    car.write_bytes(car_bytes([root], blocks))
    data = tmp / "data"
    data.mkdir()
    with Database.open(data / "tinypds.sqlite") as db, open(car, "rb") as fh:
        res = import_car(db, fh, did_key=KEY.public_key().did_key())
    assert not res.resigned and res.signature.startswith("valid")
    server = start_server(data, extra_env={"TINYPDS_PLC_URL": "http://127.0.0.1:9"})
    yield server, root, blocks
    rc = server.stop()
    assert rc == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert "signing" not in server.stderr()
    key_file = data / "keys.json"  # a loopback server keeps its key store beside the data
    entries = json.loads(key_file.read_text()).get("tinypds", {}) if key_file.exists() else {}
    assert not any(name.startswith(DID) for name in entries), entries  # no key was made or looked up for the copy


def records_in(blocks, root) -> dict[str, tuple[str, dict]]:
    """path -> (cid string, JSON value) of every record in the CAR, via its MST."""
    from tinypds.core.blocks import MemoryBlockStore
    from tinypds.core.mst import MST

    store = MemoryBlockStore(dict(blocks))
    commit = dagcbor.decode(store.get_block(root))
    tree = MST.load(store, commit["data"])
    return {k: (str(cid), dagcbor.to_json(dagcbor.decode(store.get_block(cid)))) for k, cid in tree.items()}


def test_reads_are_served(offline):
    server, root, blocks = offline
    recs = records_in(blocks, root)
    path, (cid, value) = next((k, v) for k, v in recs.items() if k.startswith(POST + "/"))
    rkey = path.split("/", 1)[1]
    r = httpx.get(server.url + NS + "getRecord", params={"repo": DID, "collection": POST, "rkey": rkey})
    assert r.status_code == 200, r.text
    assert r.json() == {"uri": f"at://{DID}/{path}", "cid": cid, "value": value}

    r = httpx.get(server.url + NS + "listRecords", params={"repo": DID, "collection": POST, "limit": 100})
    assert r.status_code == 200
    listed = {x["uri"].split("/", 3)[3]: x["cid"] for x in r.json()["records"]}
    assert listed == {k: v[0] for k, v in recs.items() if k.startswith(POST + "/")}

    r = httpx.get(server.url + NS + "describeRepo", params={"repo": DID})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["did"] == DID and body["didDoc"]["id"] == DID and "service" not in body["didDoc"]
    assert sorted(body["collections"]) == sorted({k.split("/")[0] for k in recs})

    r = httpx.get(server.url + "/xrpc/com.atproto.sync.getRepo", params={"did": DID})
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
    roots, got = car_core.read_car_bytes(r.content)
    assert roots == [root] and sorted(got) == sorted(blocks)  # exactly as signed


@pytest.mark.parametrize("method, body", [
    ("createRecord", {"repo": DID, "collection": POST, "record": {"text": "x", "createdAt": "2026-01-01T00:00:00.000Z"}}),
    ("putRecord", {"repo": DID, "collection": POST, "rkey": "3kaaaaaaaaaa2", "record": {"text": "x", "createdAt": "2026-01-01T00:00:00.000Z"}}),
    ("deleteRecord", {"repo": DID, "collection": POST, "rkey": "3kaaaaaaaaaa2"}),
    ("applyWrites", {"repo": DID, "writes": []}),
])
def test_writes_are_refused_clearly(offline, method, body):
    server, _root, _blocks = offline
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = httpx.post(server.url + NS + method, json=body, headers=headers)
        err = assert_xrpc_error(r, 400, "RepoReadOnly")
        assert "offline copy" in err["message"] and DID in err["message"]


def test_upload_blob_is_refused_clearly(offline):
    server, _root, _blocks = offline
    r = httpx.post(server.url + NS + "uploadBlob", content=b"\x89PNG\r\n\x1a\nxxxx", headers={"Content-Type": "image/png"})
    assert_xrpc_error(r, 400, "RepoReadOnly")


def test_repo_service_of_an_offline_copy_refuses_without_a_key(tmp_path):
    root, blocks = build_repo_blocks(5, KEY, did=DID)
    with Database.open(tmp_path / "t.sqlite") as db:
        import io
        import_car(db, io.BytesIO(car_bytes([root], blocks)), did_key=KEY.public_key().did_key())
        before = snapshot(db)
        repo = RepoService(db, DID, read_only_signer(DID))
        with pytest.raises(errors.RepoReadOnly, match="offline copy"):
            asyncio.run(repo.create_record(POST, {"$type": POST, "text": "x", "createdAt": "2026-01-01T00:00:00.000Z"}))
        assert snapshot(db) == before


def test_serving_an_offline_copy_never_looks_up_its_signing_key(tmp_path, monkeypatch):
    """In process: the startup key check, the lifespan, reads and refused writes, with every
    KeyStore.get_key call recorded."""
    import io

    from tests.inprocess import serve
    from tinypds.app import create_app
    from tinypds.config import Settings
    from tinypds.services.identity import keys as keys_service
    from tinypds.services.identity.local import check_startup_keys

    root, blocks = build_repo_blocks(5, KEY, did=DID)
    data = tmp_path / "data"
    data.mkdir()
    with Database.open(data / "tinypds.sqlite") as db:
        import_car(db, io.BytesIO(car_bytes([root], blocks)), did_key=KEY.public_key().did_key())
    asked: list[tuple[str, str]] = []
    real_get = keys_service.KeyStore.get_key

    def spy(self, did, purpose):
        asked.append((did, purpose))
        return real_get(self, did, purpose)

    monkeypatch.setattr(keys_service.KeyStore, "get_key", spy)
    settings = Settings(data_dir=data, hostname="localhost:2583", dev=True, keyring_backend="file",
                        key_file=tmp_path / "keys.json", plc_url="http://127.0.0.1:9")
    check_startup_keys(settings)  # what `tinypds serve` runs first
    with serve(create_app(settings)) as client:
        path = records_in(blocks, root)
        key = next(iter(path))
        r = client.get(NS + "getRecord", params={"repo": DID, "collection": key.split("/")[0], "rkey": key.split("/")[1]})
        assert r.status_code == 200
        assert client.get(NS + "describeRepo", params={"repo": DID}).status_code == 200
        r = client.post(NS + "createRecord", json={"repo": DID, "collection": POST, "record": {"text": "x"}})
        assert_xrpc_error(r, 400, "RepoReadOnly")
    assert not [a for a in asked if a[0] == DID], asked
