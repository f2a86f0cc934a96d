"""Concurrent writes over HTTP: 50 createRecord calls from several clients at once make 50
records and a linear chain of commits (strictly increasing revs, each `since` the previous
rev), with no `database is locked` reaching a client; the exported repo passes `tinypds verify`."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx

from tinypds.core import dagcbor
from tinypds.store import events as events_db
from tinypds.store.db import Database

from .conftest import REPO_ROOT, server_env

NS = "/xrpc/com.atproto.repo."
CLIENTS, PER_CLIENT = 5, 10


def login(url: str, handle: str, password: str) -> str:
    resp = httpx.post(url + "/xrpc/com.atproto.server.createSession", json={"identifier": handle, "password": password})
    assert resp.status_code == 200, resp.text
    return resp.json()["accessJwt"]


async def _burst(url: str, did: str, tokens: list[str]) -> list[httpx.Response]:
    async def client_run(c: int, token: str) -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            async def one(i: int) -> httpx.Response:
                record = {"$type": "app.bsky.feed.post", "text": f"client {c} post {i}", "createdAt": "2026-01-01T00:00:00Z"}
                return await client.post(NS + "createRecord", json={"repo": did, "collection": "app.bsky.feed.post", "record": record})
            return await asyncio.gather(*(one(i) for i in range(PER_CLIENT)))

    batches = await asyncio.gather(*(client_run(c, t) for c, t in enumerate(tokens)))
    return [r for batch in batches for r in batch]


def commit_events(db: Database) -> list[dict]:
    rows = db.read(lambda c: events_db.events_after(c, 0, 10_000))
    return [dagcbor.decode(r.body, strict=False) for r in rows if r.type == "#commit"]


def run_cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    """The CLI on the server's data dir (a loopback server keeps its dev keys in DATA/keys.json)."""
    env = server_env({"TINYPDS_KEY_FILE": str(data_dir / "keys.json")})
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data_dir), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_concurrent_creates_make_a_linear_chain(start_pds, tmp_path):
    pds = start_pds()
    assert pds.handle and pds.password, "no dev account"
    tokens = [login(pds.url, pds.handle, pds.password) for _ in range(CLIENTS)]
    responses = asyncio.run(_burst(pds.url, pds.did, tokens))
    bodies = [r.text for r in responses if r.status_code != 200]
    assert not bodies, bodies[:3]
    assert not any("database is locked" in r.text for r in responses)
    results = [r.json() for r in responses]
    total = CLIENTS * PER_CLIENT
    assert len({r["uri"] for r in results}) == total
    revs = sorted(r["commit"]["rev"] for r in results)
    assert len(set(revs)) == total

    listed, cursor = [], None
    while True:
        params = {"repo": pds.did, "collection": "app.bsky.feed.post", "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(pds.url + NS + "listRecords", params=params).json()
        listed += page["records"]
        cursor = page.get("cursor")
        if not cursor:
            break
    assert {r["uri"] for r in listed} == {r["uri"] for r in results}

    car = tmp_path / "repo.car"
    with httpx.stream("GET", pds.url + "/xrpc/com.atproto.sync.getRepo", params={"did": pds.did}) as resp:
        assert resp.status_code == 200
        with car.open("wb") as f:
            for chunk in resp.iter_bytes():
                f.write(chunk)
    checked = run_cli(pds.data_dir, "verify", str(car))
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "OK" in checked.stdout

    assert pds.stop() == 0
    assert "database is locked" not in pds.stderr() and "Traceback" not in pds.stderr()
    stored = run_cli(pds.data_dir, "verify")
    assert stored.returncode == 0, stored.stderr + stored.stdout

    db_path = next(pds.data_dir.glob("*.sqlite"))
    db = Database.open(db_path, create=False, migrate=False)
    try:
        events = commit_events(db)
    finally:
        db.close()
    chain = events[-total:]
    assert len(chain) == total
    assert sorted(str(e["commit"]) for e in chain) == sorted(r["commit"]["cid"] for r in results)
    for prev, cur in zip(chain, chain[1:]):
        assert cur["rev"] > prev["rev"], (prev["rev"], cur["rev"])
        assert cur["since"] == prev["rev"], "the chain of commits is not linear"
        if "prevData" in cur and "prevData" in prev:
            assert cur["prevData"] != prev["prevData"]


def test_export_after_mixed_writes_passes_verify(start_pds, tmp_path):
    pds = start_pds()
    token = login(pds.url, pds.handle, pds.password)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=pds.url, headers=headers, timeout=30) as http:
        uris = []
        for i in range(30):
            r = http.post(NS + "createRecord", json={"repo": pds.did, "collection": "com.example.item", "record": {"i": i}})
            assert r.status_code == 200, r.text
            uris.append(r.json()["uri"])
        for uri in uris[::3]:
            r = http.post(NS + "deleteRecord", json={"repo": pds.did, "collection": "com.example.item", "rkey": uri.rsplit("/", 1)[1]})
            assert r.status_code == 200, r.text
        r = http.post(NS + "putRecord", json={"repo": pds.did, "collection": "app.bsky.actor.profile", "rkey": "self",
                                              "record": {"displayName": "Verify Me"}})
        assert r.status_code == 200, r.text
        car = tmp_path / "after.car"
        resp = http.get("/xrpc/com.atproto.sync.getRepo", params={"did": pds.did})
        assert resp.status_code == 200
        car.write_bytes(resp.content)
    checked = run_cli(pds.data_dir, "verify", str(car))
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "OK" in checked.stdout
