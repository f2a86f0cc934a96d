"""50 concurrent createRecord calls from several clients: 50 records, one linear chain of
commits with strictly increasing revs, no lost write, no `database is locked`."""

from __future__ import annotations

import asyncio

import httpx

N = 50
CLIENTS = 5


async def _write_concurrently(url: str, did: str, token: str) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}

    async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post(
            "/xrpc/com.atproto.repo.createRecord",
            headers=headers,
            json={"repo": did, "collection": "com.example.concurrent", "record": {"$type": "com.example.concurrent", "i": i}},
        )

    clients = [httpx.AsyncClient(base_url=url, timeout=60) for _ in range(CLIENTS)]
    try:
        return await asyncio.gather(*(one(clients[i % CLIENTS], i) for i in range(N)))
    finally:
        for c in clients:
            await c.aclose()


def test_fifty_concurrent_creates(pds, http):
    s = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": pds.handle, "password": pds.password}).json()
    before = http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": pds.did}).json()
    responses = asyncio.run(_write_concurrently(pds.url, pds.did, s["accessJwt"]))
    bodies = []
    for r in responses:
        assert r.status_code == 200, r.text
        assert "locked" not in r.text
        bodies.append(r.json())

    revs = [b["commit"]["rev"] for b in bodies]
    assert len(set(revs)) == N, "every write got its own commit"
    assert min(revs) > before["rev"]
    uris = {b["uri"] for b in bodies}
    assert len(uris) == N

    listed, cursor = [], None
    while True:
        params = {"repo": pds.did, "collection": "com.example.concurrent", "limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/xrpc/com.atproto.repo.listRecords", params=params).json()
        listed += page["records"]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert {r["uri"] for r in listed} == uris
    assert sorted(r["value"]["i"] for r in listed) == list(range(N))

    latest = http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": pds.did}).json()
    assert latest["rev"] == max(revs)
    assert latest["cid"] in {b["commit"]["cid"] for b in bodies}
