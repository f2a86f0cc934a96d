"""Interop: an independent implementation (the atproto Python SDK: libipld + atproto_crypto)
reads our exported CAR, checks the commit signature and walks the MST to the same records."""

from __future__ import annotations

import asyncio

import pytest

from tinypds.services.repo.car_io import iter_export

from .repo_helpers import DID, fixed_key, open_env

libipld = pytest.importorskip("libipld", reason="the atproto SDK (libipld) is not installed")
atproto_crypto_verify = pytest.importorskip("atproto_crypto.verify", reason="atproto SDK crypto missing")
atproto_car = pytest.importorskip("atproto_core.car")


def _sdk_walk(blocks: dict, node_cid) -> list[tuple[str, object]]:
    """In-order MST walk written against the SDK's decoded blocks (independent of tinypds.core.mst)."""
    node = blocks[node_cid]
    out: list[tuple[str, object]] = []
    if node["l"] is not None:
        out += _sdk_walk(blocks, node["l"])
    prev = b""
    for e in node["e"]:
        key = prev[: e["p"]] + e["k"]
        out.append((key.decode(), e["v"]))
        if e["t"] is not None:
            out += _sdk_walk(blocks, e["t"])
        prev = key
    return out


def test_sdk_reads_and_verifies_our_export(tmp_path):
    key = fixed_key("interop")
    env = open_env(tmp_path, key=key)
    try:
        async def write():
            for i in range(120):
                await env.repo.create_record("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": f"post {i}",
                                                                    "createdAt": "2024-05-01T00:00:00.000Z"})
            await env.repo.create_record("app.bsky.actor.profile", {"$type": "app.bsky.actor.profile", "displayName": "A"}, rkey="self")

        asyncio.run(write())
        data = b"".join(iter_export(env.db))
        root = env.repo.get_root()
        records = {}
        for c in env.repo.list_collections():
            cursor = None
            while True:
                page, cursor = env.repo.list_records(c, limit=100, cursor=cursor)
                records.update({f"{c}/{v.uri.rsplit('/', 1)[1]}": v for v in page})
                if cursor is None:
                    break
        assert len(records) == 121
    finally:
        env.db.close()

    car = atproto_car.CAR.from_bytes(data)  # the SDK's CAR reader accepts the file
    assert str(car.root) == str(root.commit_cid)
    header, blocks = libipld.decode_car(data)  # {binary CID: decoded block}, links as binary CIDs
    assert header["roots"] == [bytes(root.commit_cid)]
    commit = blocks[bytes(root.commit_cid)]
    assert commit["did"] == DID and commit["version"] == 3 and commit["rev"] == root.rev
    unsigned = {k: v for k, v in commit.items() if k != "sig"}
    assert atproto_crypto_verify.verify_signature(key.public_key().did_key(), libipld.encode_dag_cbor(unsigned), commit["sig"])

    walked = _sdk_walk(blocks, commit["data"])
    assert [k for k, _ in walked] == sorted(records)
    for k, v in walked:
        assert v == bytes(records[k].cid)
        assert blocks[v]["$type"] == k.split("/")[0]
    nodes = sum(1 for b in blocks.values() if set(b) == {"e", "l"})
    assert len(blocks) == 1 + nodes + len(records)  # commit + MST nodes + records, nothing else
