"""The repo API over HTTP with the `atproto` SDK (post, like, profile, image upload and
embed, list, delete) and raw HTTP for the error cases; then the export verifies."""

from __future__ import annotations

import subprocess
import sys
import warnings

import httpx
import pytest

atproto = pytest.importorskip("atproto")
from atproto import Client, models  # noqa: E402
from atproto_client.exceptions import BadRequestError  # noqa: E402

from .conftest import REPO_ROOT  # noqa: E402
from .test_http_basics import assert_xrpc_error  # noqa: E402

# smallest valid PNG (1x1)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def client(pds):
    c = Client(base_url=pds.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.login(pds.handle, pds.password, fetch_bsky_profile=False)
    # getProfile is an AppView method (not served here); the SDK's helpers only need me.did
    c.me = models.AppBskyActorDefs.ProfileViewDetailed(did=pds.did, handle=pds.handle)
    return c


@pytest.fixture
def token(client):
    return {"Authorization": f"Bearer {client._session.access_jwt}"}


def test_post_like_list_delete(client, pds):
    post = client.send_post("hello from the SDK")
    assert post.uri.startswith(f"at://{pds.did}/app.bsky.feed.post/")
    like = client.like(post.uri, post.cid)
    assert "/app.bsky.feed.like/" in like.uri

    got = client.com.atproto.repo.get_record({"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": post.uri.rsplit("/", 1)[1]})
    assert got.cid == post.cid and got.value.text == "hello from the SDK"

    listed = client.com.atproto.repo.list_records({"repo": pds.handle, "collection": "app.bsky.feed.post"})
    assert post.uri in [r.uri for r in listed.records]

    assert client.delete_post(post.uri)
    with pytest.raises(BadRequestError) as e:
        client.com.atproto.repo.get_record({"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": post.uri.rsplit("/", 1)[1]})
    assert e.value.response.content.error == "RecordNotFound"
    assert e.value.response.content.message == f"Could not locate record: {post.uri}"


def test_profile_put_and_image_embed(client, pds):
    upload = client.upload_blob(PNG)
    assert upload.blob.mime_type == "image/png" and upload.blob.size == len(PNG)
    profile = models.AppBskyActorProfile.Record(display_name="Dev", avatar=upload.blob)
    put = client.com.atproto.repo.put_record(
        {"repo": pds.did, "collection": "app.bsky.actor.profile", "rkey": "self", "record": profile}
    )
    assert put.uri.endswith("/app.bsky.actor.profile/self") and put.validation_status == "valid"

    image_post = client.send_image("with an image", PNG, "a pixel")
    got = client.com.atproto.repo.get_record(
        {"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": image_post.uri.rsplit("/", 1)[1]}
    )
    blob_cid = got.value.embed.images[0].image.ref.link
    with httpx.Client(base_url=pds.url) as http:
        resp = http.get("/xrpc/com.atproto.sync.getBlob", params={"did": pds.did, "cid": blob_cid})
        assert resp.status_code == 200
        assert resp.content == PNG
        assert resp.headers["content-type"].startswith("image/png")
        assert resp.headers["content-length"] == str(len(PNG))
        assert resp.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert resp.headers["x-content-type-options"] == "nosniff"


def test_unknown_type_and_validation(http, pds, token):
    ok = http.post(
        "/xrpc/com.atproto.repo.createRecord",
        headers=token,
        json={"repo": pds.did, "collection": "com.example.thing", "record": {"$type": "com.example.thing", "x": 1}},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["validationStatus"] == "unknown"
    assert set(ok.json()["commit"]) == {"cid", "rev"}

    bad = http.post(
        "/xrpc/com.atproto.repo.createRecord",
        headers=token,
        json={"repo": pds.did, "collection": "app.bsky.feed.post", "record": {"$type": "app.bsky.feed.post", "text": 5, "createdAt": "2026-01-01T00:00:00Z"}},
    )
    body = assert_xrpc_error(bad, 400, "InvalidRequest")
    assert "text" in body["message"]

    mismatch = http.post(
        "/xrpc/com.atproto.repo.createRecord",
        headers=token,
        json={"repo": pds.did, "collection": "com.example.thing", "record": {"$type": "com.example.other"}},
    )
    assert_xrpc_error(mismatch, 400, "InvalidRequest")


def test_swap_and_apply_writes(http, pds, token):
    writes = [
        {"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.batch", "rkey": f"k{i}", "value": {"i": i}}
        for i in range(20)
    ]
    resp = http.post("/xrpc/com.atproto.repo.applyWrites", headers=token, json={"repo": pds.did, "writes": writes})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == 20 and results[0]["$type"] == "com.atproto.repo.applyWrites#createResult"
    assert results[0]["uri"].endswith("/com.example.batch/k0")

    first_cid = results[0]["cid"]
    stale = http.post(
        "/xrpc/com.atproto.repo.putRecord",
        headers=token,
        json={"repo": pds.did, "collection": "com.example.batch", "rkey": "k0", "record": {"i": 99},
              "swapRecord": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
    )
    assert_xrpc_error(stale, 400, "InvalidSwap")
    fresh = http.post(
        "/xrpc/com.atproto.repo.putRecord",
        headers=token,
        json={"repo": pds.did, "collection": "com.example.batch", "rkey": "k0", "record": {"i": 99}, "swapRecord": first_cid},
    )
    assert fresh.status_code == 200, fresh.text
    too_many = [{"$type": "com.atproto.repo.applyWrites#delete", "collection": "com.example.batch", "rkey": "k1"}] * 201
    assert_xrpc_error(http.post("/xrpc/com.atproto.repo.applyWrites", headers=token, json={"repo": pds.did, "writes": too_many}), 400, "InvalidRequest")

    page = http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": pds.did, "collection": "com.example.batch", "limit": 5})
    assert page.status_code == 200 and len(page.json()["records"]) == 5 and page.json()["cursor"]


def test_errors_before_the_store(http, pds, token):
    assert_xrpc_error(http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": pds.did, "collection": "not an nsid", "rkey": "x"}), 400, "InvalidRequest")
    assert_xrpc_error(http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post", "rkey": "../x"}), 400, "InvalidRequest")
    assert_xrpc_error(http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": "did:plc:someoneelse2345678abcdef", "collection": "app.bsky.feed.post", "rkey": "x"}), 400, "RepoNotFound")
    assert_xrpc_error(http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": pds.did, "collection": "app.bsky.feed.post"}), 400, "InvalidRequest")
    assert_xrpc_error(http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": pds.did, "collection": "a.b.c", "limit": 1000}), 400, "InvalidRequest")
    unauth = http.post("/xrpc/com.atproto.repo.createRecord", json={"repo": pds.did, "collection": "com.example.thing", "record": {}})
    assert_xrpc_error(unauth, 401, "AuthenticationRequired")


def test_describe_repo_and_sync(http, pds):
    d = http.get("/xrpc/com.atproto.repo.describeRepo", params={"repo": pds.handle})
    assert d.status_code == 200, d.text
    body = d.json()
    assert body["did"] == pds.did and body["handle"] == pds.handle and isinstance(body["collections"], list)
    assert body["didDoc"]["id"] == pds.did
    latest = http.get("/xrpc/com.atproto.sync.getLatestCommit", params={"did": pds.did})
    assert latest.status_code == 200 and set(latest.json()) == {"cid", "rev"}


def test_export_after_writes_verifies(http, pds, tmp_path):
    car = http.get("/xrpc/com.atproto.sync.getRepo", params={"did": pds.did})
    assert car.status_code == 200 and car.headers["content-type"] == "application/vnd.ipld.car"
    path = tmp_path / "repo.car"
    path.write_bytes(car.content)
    result = subprocess.run(
        [sys.executable, "-m", "tinypds.cli", "--data", str(tmp_path / "empty"), "verify", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
