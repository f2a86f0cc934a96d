"""uploadBlob/getBlob over HTTP against the real server: streamed bodies, CIDs, headers,
the lifecycle (served only while a record references it), limits and auth."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from tinypds.core.cid import cid_for_raw

from .test_http_basics import assert_xrpc_error

UPLOAD = "/xrpc/com.atproto.repo.uploadBlob"
GET_BLOB = "/xrpc/com.atproto.sync.getBlob"


def login(server) -> dict[str, str]:
    resp = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                      json={"identifier": server.handle, "password": server.password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['accessJwt']}"}


@pytest.fixture(scope="module")
def auth(pds) -> dict[str, str]:
    return login(pds)


def chunks(data: bytes, size: int = 50_000):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_streamed_upload_lifecycle_and_headers(pds, auth):
    data = b"\x1a\x45\xdf\xa3" + os.urandom(3 * 1024 * 1024)  # EBML (matroska) magic
    # no Content-Length: chunked transfer encoding, consumed as a stream
    resp = httpx.post(pds.url + UPLOAD, content=chunks(data), headers={**auth, "Content-Type": "video/webm"}, timeout=60)
    assert resp.status_code == 200, resp.text
    blob = resp.json()["blob"]
    cid = str(cid_for_raw(data))
    assert blob == {"$type": "blob", "ref": {"$link": cid}, "mimeType": "video/x-matroska", "size": len(data)}

    params = {"did": pds.did, "cid": cid}
    assert_xrpc_error(httpx.get(pds.url + GET_BLOB, params=params), 400, "BlobNotFound")  # temp: not served

    record = {"$type": "com.example.blobholder", "file": blob}
    created = httpx.post(pds.url + "/xrpc/com.atproto.repo.createRecord", headers=auth, json={
        "repo": pds.did, "collection": "com.example.blobholder", "record": record})
    assert created.status_code == 200, created.text
    rkey = created.json()["uri"].rsplit("/", 1)[1]

    got = httpx.get(pds.url + GET_BLOB, params=params, timeout=60)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    assert got.headers["content-type"] == "video/x-matroska"
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["content-security-policy"] == "default-src 'none'; sandbox"
    assert got.headers["x-content-type-options"] == "nosniff"
    listed = httpx.get(pds.url + "/xrpc/com.atproto.sync.listBlobs", params={"did": pds.did}).json()
    assert cid in listed["cids"]

    deleted = httpx.post(pds.url + "/xrpc/com.atproto.repo.deleteRecord", headers=auth, json={
        "repo": pds.did, "collection": "com.example.blobholder", "rkey": rkey})
    assert deleted.status_code == 200, deleted.text
    assert_xrpc_error(httpx.get(pds.url + GET_BLOB, params=params), 400, "BlobNotFound")


def test_upload_with_content_length_and_dedupe(pds, auth):
    data = b"%PDF-1.7\n" + os.urandom(100_000)
    first = httpx.post(pds.url + UPLOAD, content=data, headers={**auth, "Content-Type": "text/html"})
    second = httpx.post(pds.url + UPLOAD, content=data, headers={**auth, "Content-Type": "application/pdf"})
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert first.json()["blob"]["mimeType"] == "application/pdf"
    assert first.json()["blob"]["ref"]["$link"] == str(cid_for_raw(data))


def test_unsafe_declared_type_is_neutralised(pds, auth):
    resp = httpx.post(pds.url + UPLOAD, content=b"<svg onload='alert(1)'/>", headers={**auth, "Content-Type": "image/svg+xml"})
    assert resp.status_code == 200 and resp.json()["blob"]["mimeType"] == "application/octet-stream"


def test_upload_needs_auth(pds):
    assert_xrpc_error(httpx.post(pds.url + UPLOAD, content=b"x", headers={"Content-Type": "image/png"}),
                      401, "AuthenticationRequired")


def test_unknown_blob_and_bad_cid(pds):
    unknown = str(cid_for_raw(b"never uploaded"))
    assert_xrpc_error(httpx.get(pds.url + GET_BLOB, params={"did": pds.did, "cid": unknown}), 400, "BlobNotFound")
    assert_xrpc_error(httpx.get(pds.url + GET_BLOB, params={"did": pds.did, "cid": "nope"}), 400, "InvalidRequest")
    assert_xrpc_error(httpx.get(pds.url + GET_BLOB, params={"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "cid": unknown}),
                      400, "RepoNotFound")


def test_size_limit(start_pds):
    server = start_pds(extra_env={"TINYPDS_BLOB_MAX_BYTES": "100000"})
    headers = {**login(server), "Content-Type": "image/png"}
    # announced too large: refused before the body is read
    resp = httpx.post(server.url + UPLOAD, content=b"x" * 100_001, headers=headers)
    assert_xrpc_error(resp, 400, "BlobTooLarge")
    # no Content-Length: refused while streaming
    resp = httpx.post(server.url + UPLOAD, content=chunks(b"x" * 300_000, 10_000), headers=headers)
    assert_xrpc_error(resp, 400, "BlobTooLarge")
    ok = httpx.post(server.url + UPLOAD, content=b"x" * 100_000, headers=headers)
    assert ok.status_code == 200 and ok.json()["blob"]["size"] == 100_000


def test_client_disconnect_mid_upload_leaves_nothing(start_pds):
    """A client that goes away mid-body leaves no blob rows and no error traceback in the log."""
    import socket
    import time
    from urllib.parse import urlparse

    from tinypds.store.blobs import status_counts
    from tinypds.store.db import Database

    pds = start_pds()
    auth = login(pds)
    url = urlparse(pds.url)
    db = Database.open(pds.data_dir / "tinypds.sqlite", create=False)

    def wait_for(cond, what: str) -> dict:
        deadline = time.monotonic() + 20
        while True:
            counts = db.read(status_counts)
            if cond(counts):
                return counts
            assert time.monotonic() < deadline, f"{what}: {counts}"
            time.sleep(0.05)

    try:
        with socket.create_connection((url.hostname, url.port)) as sock:
            head = (
                f"POST {UPLOAD} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {auth['Authorization']}\r\n"
                f"Content-Type: image/png\r\nContent-Length: {8 * 1024 * 1024}\r\n\r\n"
            )
            sock.sendall(head.encode() + os.urandom(3 * 1024 * 1024))  # 3 of the 8 MiB announced
            wait_for(lambda c: c.get("uploading", 0) == 1 and c["parts"] > 0, "the upload never reached the database")
        counts = wait_for(lambda c: "uploading" not in c and "dead" not in c, "interrupted upload left rows behind")
        assert counts == {"parts": 0}
        log = pds.stderr_path.read_text(errors="replace")
        assert "Traceback" not in log and "unhandled error" not in log  # an aborted upload is not a server error
    finally:
        db.close()
