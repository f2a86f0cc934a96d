"""Differential test: the same repo API requests to tinypds and to the reference PDS
(@atproto/pds from ../shared/lab) get the same status, error name and (where clients match
on it) the same message; successful responses have the same keys.

The reference PDS comes from the lab (tests/lab.py starts it, or $TINYPDS_REF_PDS_URL names
a running one); skipped with the reason when the lab cannot start.
Deliberate differences (not compared): a singleton written without rkey gets "self" here
(the reference picks a TID and then refuses it); creating an existing record or updating a
missing one is a 400 here (a 500 there); getRecord of a foreign repo is RepoNotFound here
(the reference proxies to its AppView); lexicon validation messages use our own wording.
"""

from __future__ import annotations

import re
import secrets

import httpx
import pytest


NOW = "2026-01-01T00:00:00.000Z"
NS = "/xrpc/com.atproto.repo."
CID_RE = re.compile(r"\bbaf[a-z2-7]{20,}\b")
GHOST = "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
OTHER_CID = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


class Side:
    """One server with a logged-in account."""

    def __init__(self, url: str, did: str, handle: str, token: str):
        self.url, self.did, self.handle = url, did, handle
        self.http = httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})
        self.anon = httpx.Client(base_url=url, timeout=30)

    def norm(self, text: str) -> str:
        text = text.replace(self.did, "<did>").replace(self.handle, "<handle>")
        return re.sub(r" at \$[^ ]*$", "", CID_RE.sub("<cid>", text))


@pytest.fixture(scope="module")
def sides(pds, ref_pds_url):
    REF = ref_pds_url
    with httpx.Client(timeout=30) as client:
        handle = f"diff{secrets.token_hex(4)}.test"
        resp = client.post(f"{REF}/xrpc/com.atproto.server.createAccount",
                           json={"handle": handle, "email": f"{handle}@example.com", "password": "hunter2-hunter2"})
        assert resp.status_code == 200, resp.text
        ref = resp.json()
        resp = client.post(f"{pds.url}/xrpc/com.atproto.server.createSession",
                           json={"identifier": pds.handle, "password": pds.password})
        assert resp.status_code == 200, resp.text
        ours = resp.json()
    return (Side(pds.url, pds.did, pds.handle, ours["accessJwt"]),
            Side(REF, ref["did"], handle, ref["accessJwt"]))


def post(text: str = "hi") -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": NOW}


def write(kind: str, **kw) -> dict:
    return {"$type": f"com.atproto.repo.applyWrites#{kind}", **kw}


# (name, method, nsid, body-or-params builder(side), compare message exactly?)
CASES = [
    ("create ok", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": post()}, True),
    ("create unknown type", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "com.example.thing", "record": {"x": 1}}, True),
    ("validate true, unknown type", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "com.example.thing", "record": {"x": 1}, "validate": True}, True),
    ("wrong $type", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": {**post(), "$type": "app.bsky.feed.like"}}, True),
    ("wrong $type, validate false", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": {**post(), "$type": "app.bsky.feed.like"}, "validate": False}, True),
    ("too long text", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": post("x" * 301)}, False),
    ("missing createdAt", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": {"text": "x"}}, False),
    ("non-TID post rkey", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "mykey", "record": post()}, True),
    ("non-TID post rkey, validate false", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "k" + secrets.token_hex(4), "record": post(), "validate": False}, True),
    ("profile rkey other", "POST", "putRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.actor.profile", "rkey": "other", "record": {"$type": "app.bsky.actor.profile"}}, True),
    ("bad rkey syntax", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "a/b", "record": post()}, False),
    ("bad collection", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "bad nsid", "record": post()}, False),
    ("no record", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post"}, False),
    ("validate not a boolean", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": post(), "validate": "yes"}, False),
    ("bad swapCommit", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": post(), "swapCommit": "nope"}, False),
    ("stale swapCommit", "POST", "createRecord",
     lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "record": post(), "swapCommit": OTHER_CID}, True),
    ("float in record", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "com.example.thing", "record": {"x": 1.5}}, False),
    ("record not an object", "POST", "createRecord", lambda s: {"repo": s.did, "collection": "com.example.thing", "record": [1]}, False),
    ("another repo", "POST", "createRecord", lambda s: {"repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "collection": "app.bsky.feed.post", "record": post()}, True),
    ("blob never uploaded", "POST", "putRecord", lambda s: {"repo": s.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": {
        "$type": "app.bsky.actor.profile", "avatar": {"$type": "blob", "ref": {"$link": GHOST}, "mimeType": "image/png", "size": 100}}}, True),
    ("put new", "POST", "putRecord", lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "k1", "record": {"v": 1}}, True),
    ("put unchanged", "POST", "putRecord", lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "k1", "record": {"v": 1}}, True),
    ("put swapRecord null, exists", "POST", "putRecord",
     lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "k1", "record": {"v": 2}, "swapRecord": None}, True),
    ("put swapRecord wrong", "POST", "putRecord",
     lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "k1", "record": {"v": 2}, "swapRecord": OTHER_CID}, True),
    ("put without rkey", "POST", "putRecord", lambda s: {"repo": s.did, "collection": "com.example.put", "record": {"v": 2}}, False),
    ("delete absent", "POST", "deleteRecord", lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "nope"}, True),
    ("delete", "POST", "deleteRecord", lambda s: {"repo": s.did, "collection": "com.example.put", "rkey": "k1"}, True),
    ("applyWrites", "POST", "applyWrites", lambda s: {"repo": s.did, "writes": [
        write("create", collection="app.bsky.feed.post", value=post()),
        write("create", collection="com.example.aw", rkey="a", value={"v": 1})]}, True),
    ("applyWrites update+delete", "POST", "applyWrites", lambda s: {"repo": s.did, "writes": [
        write("update", collection="com.example.aw", rkey="a", value={"v": 2}),
        write("create", collection="com.example.aw", rkey="b", value={"v": 1})]}, True),
    ("applyWrites delete", "POST", "applyWrites", lambda s: {"repo": s.did, "writes": [
        write("delete", collection="com.example.aw", rkey="a")]}, True),
    ("applyWrites 201", "POST", "applyWrites", lambda s: {"repo": s.did, "writes": [
        write("create", collection="com.example.aw", value={"v": i}) for i in range(201)]}, True),
    ("applyWrites bad $type", "POST", "applyWrites", lambda s: {"repo": s.did, "writes": [{"$type": "nope"}]}, False),
    ("getRecord missing", "GET", "getRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "3jzfcijpj2z2a"}, True),
    ("getRecord", "GET", "getRecord", lambda s: {"repo": s.did, "collection": "com.example.aw", "rkey": "b"}, True),
    ("getRecord bad rkey", "GET", "getRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "a/b"}, False),
    ("getRecord bad cid", "GET", "getRecord", lambda s: {"repo": s.did, "collection": "app.bsky.feed.post", "rkey": "x", "cid": "nope"}, False),
    ("getRecord no repo", "GET", "getRecord", lambda s: {"collection": "app.bsky.feed.post", "rkey": "x"}, False),
    ("getRecord bad repo", "GET", "getRecord", lambda s: {"repo": "not a handle!", "collection": "app.bsky.feed.post", "rkey": "x"}, False),
    ("listRecords", "GET", "listRecords", lambda s: {"repo": s.handle, "collection": "com.example.aw", "limit": 1}, True),
    ("listRecords empty", "GET", "listRecords", lambda s: {"repo": s.did, "collection": "com.example.none"}, True),
    ("listRecords limit 0", "GET", "listRecords", lambda s: {"repo": s.did, "collection": "com.example.aw", "limit": 0}, False),
    ("listRecords limit 101", "GET", "listRecords", lambda s: {"repo": s.did, "collection": "com.example.aw", "limit": 101}, False),
    ("listRecords reverse maybe", "GET", "listRecords", lambda s: {"repo": s.did, "collection": "com.example.aw", "reverse": "maybe"}, False),
    ("describeRepo", "GET", "describeRepo", lambda s: {"repo": s.handle}, True),
    ("describeRepo bad", "GET", "describeRepo", lambda s: {"repo": "bad repo"}, False),
]


def _call(side: Side, method: str, nsid: str, arg: dict) -> httpx.Response:
    if method == "GET":
        return side.anon.get(NS + nsid, params=arg)
    return side.http.post(NS + nsid, json=arg)


def _shape(value):
    """Keys (recursively) of a JSON response, with values dropped."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("didDoc", "value")}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def test_same_answers_as_the_reference(sides):
    ours, ref = sides
    problems = []
    for name, method, nsid, build, exact in CASES:
        a, b = _call(ours, method, nsid, build(ours)), _call(ref, method, nsid, build(ref))
        if a.status_code != b.status_code:
            problems.append(f"{name}: status {a.status_code} vs reference {b.status_code} ({a.text[:200]} | {b.text[:200]})")
            continue
        ja, jb = a.json(), b.json()
        if a.status_code == 200:
            if _shape(ja) != _shape(jb):
                problems.append(f"{name}: shape {_shape(ja)} vs reference {_shape(jb)}")
            continue
        if ja.get("error") != jb.get("error"):
            problems.append(f"{name}: error {ja.get('error')} vs reference {jb.get('error')}")
        elif exact and ours.norm(ja.get("message", "")) != ref.norm(jb.get("message", "")):
            problems.append(f"{name}: message {ja.get('message')!r} vs reference {jb.get('message')!r}")
    assert not problems, "\n".join(problems)
