"""com.atproto.repo.* against the real server: the `atproto` SDK for the happy paths, raw HTTP
(httpx) for the error cases; every response is checked against the published lexicons."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from tinypds.core.dagcbor import from_json
from tinypds.core.lexicon import LexiconCatalog

from .test_http_basics import assert_xrpc_error

atproto = pytest.importorskip("atproto")
from atproto import Client, models  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = "2026-01-01T00:00:00.000Z"
NS = "/xrpc/com.atproto.repo."


# ---- helpers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def published() -> LexiconCatalog:
    """The published com.atproto.repo lexicons (the shapes our responses must have)."""
    root = REPO_ROOT.parent / "shared" / "lexicons" / "com" / "atproto" / "repo"
    if not root.is_dir():
        pytest.skip(f"published lexicons not found at {root}")
    cat = LexiconCatalog()
    for path in sorted(root.glob("*.json")):
        cat.add(json.loads(path.read_text()))
    return cat


def check_output(cat: LexiconCatalog, nsid: str, resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    cat.validate_output(f"com.atproto.repo.{nsid}", from_json(body))
    return body


@pytest.fixture(scope="module")
def session(pds) -> dict:
    assert pds.handle and pds.password, "the server did not print a dev account on first start"
    resp = httpx.post(pds.url + "/xrpc/com.atproto.server.createSession",
                      json={"identifier": pds.handle, "password": pds.password})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture
def authed(pds, session):
    headers = {"Authorization": f"Bearer {session['accessJwt']}"}
    with httpx.Client(base_url=pds.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(pds) -> Client:
    client = Client(base_url=pds.url)
    client.login(pds.handle, pds.password, fetch_bsky_profile=False)
    return client


def tiny_png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def post(text: str = "hello") -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": NOW}


# ---- the SDK ---------------------------------------------------------------------------------------
def test_sdk_post_like_list_delete(pds, sdk):
    created = sdk.send_post("hello from the atproto SDK", profile_identify=pds.did)
    assert created.uri.startswith(f"at://{pds.did}/app.bsky.feed.post/") and created.cid.startswith("bafy")
    rkey = created.uri.rsplit("/", 1)[1]
    got = sdk.get_post(rkey, pds.did)
    assert got.value.text == "hello from the atproto SDK" and got.cid == created.cid
    subject = models.ComAtprotoRepoStrongRef.Main(uri=created.uri, cid=created.cid)
    like = sdk.app.bsky.feed.like.create(pds.did, models.AppBskyFeedLike.Record(subject=subject, created_at=sdk.get_current_time_iso()))
    assert like.uri.startswith(f"at://{pds.did}/app.bsky.feed.like/")
    listed = sdk.com.atproto.repo.list_records({"repo": pds.handle, "collection": "app.bsky.feed.like"})
    assert like.uri in [r.uri for r in listed.records]
    assert sdk.unlike(like.uri) and sdk.delete_post(created.uri)
    after = sdk.com.atproto.repo.list_records({"repo": pds.did, "collection": "app.bsky.feed.post"})
    assert created.uri not in [r.uri for r in after.records]


def test_sdk_profile_put_and_image_embed(pds, sdk):
    png = tiny_png()
    uploaded = sdk.upload_blob(png)
    assert uploaded.blob.mime_type == "image/png" and uploaded.blob.size == len(png)
    profile = models.AppBskyActorProfile.Record(display_name="Alice", description="tiny", avatar=uploaded.blob)
    put = sdk.com.atproto.repo.put_record({"repo": pds.did, "collection": "app.bsky.actor.profile",
                                           "rkey": "self", "record": profile})
    assert put.uri == f"at://{pds.did}/app.bsky.actor.profile/self" and put.validation_status == "valid"
    got = sdk.com.atproto.repo.get_record({"repo": pds.did, "collection": "app.bsky.actor.profile", "rkey": "self"})
    assert got.value.display_name == "Alice" and got.value.avatar.ref.link == uploaded.blob.ref.link
    with_image = sdk.send_image("a picture", png, "two red pixels", profile_identify=pds.did)
    rec = sdk.get_post(with_image.uri.rsplit("/", 1)[1], pds.did).value
    assert rec.embed.images[0].alt == "two red pixels"
    blob = httpx.get(pds.url + "/xrpc/com.atproto.sync.getBlob",
                     params={"did": pds.did, "cid": rec.embed.images[0].image.ref.link})
    assert blob.status_code == 200 and blob.content == png


def test_app_password_session_can_write(pds, sdk):
    created = sdk.com.atproto.server.create_app_password({"name": "repo-api-test"})
    app = Client(base_url=pds.url)
    app.login(pds.handle, created.password, fetch_bsky_profile=False)
    out = app.send_post("written with an app password", profile_identify=pds.did)
    assert out.uri.startswith(f"at://{pds.did}/app.bsky.feed.post/")
    assert app.delete_post(out.uri)


# ---- shapes (checked against the published lexicons) ------------------------------------------------
def test_write_responses_match_the_lexicons(pds, authed, published):
    did = pds.did
    made = check_output(published, "createRecord", authed.post(NS + "createRecord", json={
        "repo": did, "collection": "app.bsky.feed.post", "record": post()}))
    assert set(made) == {"uri", "cid", "commit", "validationStatus"} and made["validationStatus"] == "valid"
    unknown = check_output(published, "createRecord", authed.post(NS + "createRecord", json={
        "repo": pds.handle, "collection": "com.example.thing", "rkey": "one", "record": {"x": 1}}))
    assert unknown["validationStatus"] == "unknown" and unknown["uri"] == f"at://{did}/com.example.thing/one"
    skipped = check_output(published, "putRecord", authed.post(NS + "putRecord", json={
        "repo": did, "collection": "com.example.thing", "rkey": "one", "record": {"x": 2}, "validate": False}))
    assert "validationStatus" not in skipped and skipped["commit"]["rev"] > unknown["commit"]["rev"]
    batch = check_output(published, "applyWrites", authed.post(NS + "applyWrites", json={"repo": did, "writes": [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": post("a")},
        {"$type": "com.atproto.repo.applyWrites#update", "collection": "com.example.thing", "rkey": "one", "value": {"x": 3}},
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": "app.bsky.feed.post", "rkey": made["uri"].rsplit("/", 1)[1]},
    ]}))
    assert [r["$type"].rsplit("#", 1)[1] for r in batch["results"]] == ["createResult", "updateResult", "deleteResult"]
    assert batch["results"][0]["validationStatus"] == "valid" and batch["results"][1]["validationStatus"] == "unknown"
    deleted = check_output(published, "deleteRecord", authed.post(NS + "deleteRecord", json={
        "repo": did, "collection": "com.example.thing", "rkey": "one"}))
    assert deleted["commit"]["rev"] > batch["commit"]["rev"]
    noop = check_output(published, "deleteRecord", authed.post(NS + "deleteRecord", json={
        "repo": did, "collection": "com.example.thing", "rkey": "one"}))
    assert noop == {}
    same = check_output(published, "putRecord", authed.post(NS + "putRecord", json={
        "repo": did, "collection": "app.bsky.feed.post", "rkey": batch["results"][0]["uri"].rsplit("/", 1)[1], "record": post("a")}))
    assert "commit" not in same and same["cid"] == batch["results"][0]["cid"]  # unchanged: no commit
    empty = check_output(published, "applyWrites", authed.post(NS + "applyWrites", json={"repo": did, "writes": []}))
    assert empty == {"results": []}


def test_read_responses_match_the_lexicons(pds, authed, published):
    made = authed.post(NS + "createRecord", json={"repo": pds.did, "collection": "app.bsky.feed.post", "record": post("r")}).json()
    rkey = made["uri"].rsplit("/", 1)[1]
    params = {"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": rkey}
    got = check_output(published, "getRecord", httpx.get(pds.url + NS + "getRecord", params=params))
    assert got == {"uri": made["uri"], "cid": made["cid"], "value": post("r")}
    with_cid = check_output(published, "getRecord", httpx.get(pds.url + NS + "getRecord", params={**params, "cid": made["cid"]}))
    assert with_cid["cid"] == made["cid"]
    listed = check_output(published, "listRecords", httpx.get(pds.url + NS + "listRecords", params={
        "repo": pds.handle, "collection": "app.bsky.feed.post", "limit": 1}))
    assert len(listed["records"]) == 1 and "cursor" in listed
    rev = check_output(published, "listRecords", httpx.get(pds.url + NS + "listRecords", params={
        "repo": pds.handle, "collection": "app.bsky.feed.post", "limit": 100, "reverse": "true"}))
    rkeys = [r["uri"].rsplit("/", 1)[1] for r in rev["records"]]
    assert rkeys == sorted(rkeys) and rkey in rkeys
    desc = check_output(published, "describeRepo", httpx.get(pds.url + NS + "describeRepo", params={"repo": pds.handle}))
    assert desc["did"] == pds.did and desc["handle"] == pds.handle
    assert "app.bsky.feed.post" in desc["collections"] and desc["didDoc"]["id"] == pds.did
    assert desc["handleIsCorrect"] is True  # a dev server vouches for its own .test handle
    assert f"at://{pds.handle}" in desc["didDoc"]["alsoKnownAs"]


# ---- errors ----------------------------------------------------------------------------------------
def test_get_record_not_found_has_the_reference_message(pds):
    resp = httpx.get(pds.url + NS + "getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": "3jzfcijpj2z2a"})
    body = assert_xrpc_error(resp, 400, "RecordNotFound")
    assert body["message"] == f"Could not locate record: at://{pds.did}/app.bsky.feed.post/3jzfcijpj2z2a"
    made = httpx.get(pds.url + NS + "getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post",
                                                         "rkey": "3jzfcijpj2z2a", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"})
    assert_xrpc_error(made, 400, "RecordNotFound")


@pytest.mark.parametrize("params", [
    {"collection": "app.bsky.feed.post", "rkey": "x"},  # repo missing
    {"repo": "not a handle!", "collection": "app.bsky.feed.post", "rkey": "x"},
    {"repo": "DID", "collection": "not-an-nsid", "rkey": "x"},
    {"repo": "DID", "collection": "app.bsky.feed.post", "rkey": "bad/rkey"},
    {"repo": "DID", "collection": "app.bsky.feed.post", "rkey": "x", "cid": "notacid"},
])
def test_get_record_bad_params(pds, params):
    params = {k: (pds.did if v == "DID" else v) for k, v in params.items()}
    assert_xrpc_error(httpx.get(pds.url + NS + "getRecord", params=params), 400, "InvalidRequest")


@pytest.mark.parametrize("extra", [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}, {"reverse": "maybe"}])
def test_list_records_bad_params(pds, extra):
    params = {"repo": pds.did, "collection": "app.bsky.feed.post", **extra}
    assert_xrpc_error(httpx.get(pds.url + NS + "listRecords", params=params), 400, "InvalidRequest")


def test_other_repo_is_refused(pds, authed):
    resp = httpx.get(pds.url + NS + "describeRepo", params={"repo": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"})
    assert_xrpc_error(resp, 400, "RepoNotFound")
    resp = authed.post(NS + "createRecord", json={"repo": "someone.else.test", "collection": "app.bsky.feed.post", "record": post()})
    assert_xrpc_error(resp, 403, "AccountNotFound")


def test_writes_need_auth(pds):
    resp = httpx.post(pds.url + NS + "createRecord", json={"repo": pds.did, "collection": "app.bsky.feed.post", "record": post()})
    assert_xrpc_error(resp, 401, "AuthenticationRequired")


@pytest.mark.parametrize("body,needle", [
    ({"collection": "app.bsky.feed.post", "record": post()}, 'property "repo"'),
    ({"repo": "DID", "collection": "app.bsky.feed.post"}, 'property "record"'),
    ({"repo": "DID", "collection": "bad nsid", "record": post()}, "Invalid collection"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "rkey": "a/b", "record": post()}, "Invalid record key"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "record": {**post(), "$type": "app.bsky.feed.like"}}, "Invalid $type"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "record": post("x" * 301)},
     "Invalid app.bsky.feed.post record: Record/text must not be longer than 300 graphemes"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "record": {"text": "no date"}}, 'Record must have the property "createdAt"'),
    ({"repo": "DID", "collection": "com.example.thing", "record": {"x": 1}, "validate": True}, "Unknown lexicon type: com.example.thing"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "record": post(), "validate": "yes"}, "validate"),
    ({"repo": "DID", "collection": "app.bsky.feed.post", "record": post(), "swapCommit": "nope"}, "swapCommit"),
    ({"repo": "DID", "collection": "com.example.thing", "record": {"x": 1.5}}, "float"),
])
def test_create_record_refusals(pds, authed, body, needle):
    body = {k: (pds.did if v == "DID" else v) for k, v in body.items()}
    err = assert_xrpc_error(authed.post(NS + "createRecord", json=body), 400, "InvalidRequest")
    assert needle in err["message"]


def test_malformed_bodies(pds, authed):
    assert_xrpc_error(authed.post(NS + "createRecord", content=b"{not json", headers={"Content-Type": "application/json"}),
                      400, "InvalidRequest")
    assert_xrpc_error(authed.post(NS + "createRecord", content=b"{}", headers={"Content-Type": "text/plain"}),
                      400, "InvalidRequest")
    assert_xrpc_error(authed.post(NS + "createRecord", json=[1, 2]), 400, "InvalidRequest")


def test_swap_mismatches_are_invalid_swap(pds, authed):
    did = pds.did
    first = authed.post(NS + "putRecord", json={"repo": did, "collection": "com.example.swap", "rkey": "k",
                                                "record": {"v": 1}, "swapRecord": None})
    assert first.status_code == 200, first.text
    again = authed.post(NS + "putRecord", json={"repo": did, "collection": "com.example.swap", "rkey": "k",
                                                "record": {"v": 2}, "swapRecord": None})
    assert_xrpc_error(again, 400, "InvalidSwap")
    stale = first.json()["commit"]["cid"]
    authed.post(NS + "createRecord", json={"repo": did, "collection": "com.example.swap", "record": {"v": 0}})
    resp = authed.post(NS + "createRecord", json={"repo": did, "collection": "com.example.swap", "record": {"v": 3}, "swapCommit": stale})
    assert_xrpc_error(resp, 400, "InvalidSwap")
    wrong_cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    resp = authed.post(NS + "deleteRecord", json={"repo": did, "collection": "com.example.swap", "rkey": "k", "swapRecord": wrong_cid})
    assert_xrpc_error(resp, 400, "InvalidSwap")
    resp = authed.post(NS + "applyWrites", json={"repo": did, "swapCommit": stale, "writes": [
        {"$type": "com.atproto.repo.applyWrites#delete", "collection": "com.example.swap", "rkey": "k"}]})
    assert_xrpc_error(resp, 400, "InvalidSwap")
    ok = authed.post(NS + "putRecord", json={"repo": did, "collection": "com.example.swap", "rkey": "k",
                                             "record": {"v": 4}, "swapRecord": first.json()["cid"]})
    assert ok.status_code == 200, ok.text


def test_apply_writes_limits_and_atomicity(pds, authed):
    did = pds.did

    def create(i):
        return {"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.batch", "rkey": f"r{i:03d}", "value": {"i": i}}

    err = assert_xrpc_error(authed.post(NS + "applyWrites", json={"repo": did, "writes": [create(i) for i in range(201)]}),
                            400, "InvalidRequest")
    assert "Too many writes" in err["message"]
    bad = [create(i) for i in range(5)] + [{"$type": "com.atproto.repo.applyWrites#create", "collection": "app.bsky.feed.post", "value": {"text": 1}}]
    assert_xrpc_error(authed.post(NS + "applyWrites", json={"repo": did, "writes": bad}), 400, "InvalidRequest")
    listed = httpx.get(pds.url + NS + "listRecords", params={"repo": did, "collection": "com.example.batch"}).json()
    assert listed["records"] == []  # the failed batch left nothing behind
    assert_xrpc_error(authed.post(NS + "applyWrites", json={"repo": did, "writes": [{"$type": "nope"}]}), 400, "InvalidRequest")
    ok = authed.post(NS + "applyWrites", json={"repo": did, "writes": [create(i) for i in range(200)]})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["results"]) == 200
    page = httpx.get(pds.url + NS + "listRecords", params={"repo": did, "collection": "com.example.batch", "limit": 100}).json()
    assert len(page["records"]) == 100 and page["cursor"]


def test_records_must_reference_uploaded_blobs(pds, authed):
    ghost = {"$type": "blob", "ref": {"$link": "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
             "mimeType": "image/png", "size": 100}
    resp = authed.post(NS + "putRecord", json={"repo": pds.did, "collection": "app.bsky.actor.profile", "rkey": "self",
                                               "record": {"displayName": "Ghost", "avatar": ghost}})
    body = assert_xrpc_error(resp, 400, "BlobNotFound")
    assert body["message"] == "Could not find blob: bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
