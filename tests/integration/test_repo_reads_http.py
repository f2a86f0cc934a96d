"""getRecord / listRecords responses, the hottest read routes: headers, CORS, body, error
shapes and cursors must be exactly what clients get elsewhere."""

from __future__ import annotations

import httpx
import pytest

from tinypds.core import dagcbor

from .test_http_basics import assert_xrpc_error

NS = "/xrpc/com.atproto.repo."
NOW = "2026-01-01T00:00:00.000Z"


@pytest.fixture(scope="module")
def seeded(pds):
    with httpx.Client(base_url=pds.url, timeout=10) as c:
        tok = c.post("/xrpc/com.atproto.server.createSession",
                     json={"identifier": pds.handle, "password": pds.password}).json()["accessJwt"]
        made = []
        for i in range(3):
            rec = {"$type": "app.bsky.feed.post", "text": f"fast read {i} é", "createdAt": NOW,
                   "langs": ["en"], "facets": []}
            r = c.post(NS + "createRecord", headers={"Authorization": f"Bearer {tok}"},
                       json={"repo": pds.did, "collection": "app.bsky.feed.post", "record": rec})
            assert r.status_code == 200, r.text
            made.append((r.json(), rec))
    return pds, made


def test_get_record_headers_cors_and_body(seeded):
    pds, made = seeded
    out, rec = made[0]
    rkey = out["uri"].rsplit("/", 1)[1]
    r = httpx.get(pds.url + NS + "getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": rkey},
                  headers={"Origin": "https://app.example"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers.get("access-control-allow-origin") == "*"
    assert r.json() == {"uri": out["uri"], "cid": out["cid"], "value": rec}
    # the CID in the answer is the CID of the stored DAG-CBOR of exactly that value
    assert str(dagcbor.encode_with_cid(dagcbor.from_json(r.json()["value"]))[0]) == out["cid"]
    # by handle too, and with the matching cid
    r2 = httpx.get(pds.url + NS + "getRecord", params={"repo": pds.handle, "collection": "app.bsky.feed.post",
                                                       "rkey": rkey, "cid": out["cid"]})
    assert r2.status_code == 200 and r2.content == r.content


def test_get_record_errors_stay_xrpc_json(seeded):
    pds, made = seeded
    base = {"repo": pds.did, "collection": "app.bsky.feed.post"}
    r = httpx.get(pds.url + NS + "getRecord", params={**base, "rkey": "3zzzzzzzzzzz2"})
    assert_xrpc_error(r, 400, "RecordNotFound")
    assert r.json()["message"] == f"Could not locate record: at://{pds.did}/app.bsky.feed.post/3zzzzzzzzzzz2"
    rkey = made[0][0]["uri"].rsplit("/", 1)[1]
    r = httpx.get(pds.url + NS + "getRecord", params={**base, "rkey": rkey, "cid": made[1][0]["cid"]})
    assert_xrpc_error(r, 400, "RecordNotFound")
    r = httpx.get(pds.url + NS + "getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post"})
    assert_xrpc_error(r, 400, "InvalidRequest")


def test_list_records_pages_with_cursor(seeded):
    pds, made = seeded
    seen = []
    cursor = None
    for _ in range(10):
        params = {"repo": pds.did, "collection": "app.bsky.feed.post", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = httpx.get(pds.url + NS + "listRecords", params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        seen += [x["uri"] for x in body["records"]]
        cursor = body.get("cursor")
        if not cursor:
            break
    mine = [out["uri"] for out, _ in made]
    assert [u for u in seen if u in mine] == sorted(mine, reverse=True)  # newest first, no repeats
    assert len(seen) == len(set(seen))
