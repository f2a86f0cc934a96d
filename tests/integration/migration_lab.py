"""Helpers for the migration tests: the lab (real PLC + reference PDS), tinypds servers with
a did:plc account, an account populated with posts, likes, an avatar, blobs and preferences,
snapshots to compare both sides, the `tinypds migrate` CLI, and a loopback TCP proxy that
can cut connections (the old PDS "dies")."""

from __future__ import annotations

import os
import random
import re
import secrets
import socket
import struct
import subprocess
import sys
import threading
import zlib
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from .conftest import REPO_ROOT, start_server

LAB = Path(os.environ.get("TINYPDS_LAB", REPO_ROOT.parent / "shared" / "lab"))
PLC_URL = "http://localhost:2582"
REF_PORTS = (2597, 2598)
PASSWORD = "migrate-me-please"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_lab() -> list[str]:
    """PLC + two reference PDS instances (idempotent); skips the test when the lab cannot start."""
    urls = [f"http://localhost:{p}" for p in REF_PORTS]
    if _healthy("http://127.0.0.1:2582/_health") and all(_healthy(u + "/xrpc/_health") for u in urls):
        return urls
    script = LAB / "ref-pds" / "start.sh"
    if not script.exists():
        pytest.skip(f"no lab: {script} not found (set TINYPDS_LAB)")
    try:
        proc = subprocess.run(["bash", str(script), *map(str, REF_PORTS)], capture_output=True, text=True,
                              timeout=420, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip("the lab did not start within 420 s")
    if proc.returncode != 0:
        pytest.skip(f"the lab did not start: {(proc.stderr or proc.stdout)[-500:]}")
    return urls


def ensure_plc() -> str:
    """Only the PLC directory (tinypds <-> tinypds needs nothing else); skips when it cannot start."""
    if _healthy("http://127.0.0.1:2582/_health"):
        return PLC_URL
    script = LAB / "ref-pds" / "start.sh"
    if not script.exists():
        pytest.skip(f"no lab: {script} not found (set TINYPDS_LAB)")
    try:
        proc = subprocess.run(["bash", str(script), "plc"], capture_output=True, text=True, timeout=420,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.skip("the PLC directory did not start within 420 s")
    if proc.returncode != 0 or not _healthy("http://127.0.0.1:2582/_health"):
        pytest.skip(f"the PLC directory did not start: {(proc.stderr or proc.stdout)[-500:]}")
    return PLC_URL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(port: int, plc_url: str = PLC_URL) -> dict[str, str]:
    return {"TINYPDS_HOSTNAME": f"localhost:{port}", "TINYPDS_PLC_URL": plc_url, "TINYPDS_KEYRING_BACKEND": "file",
            "TINYPDS_DEV": "1", "TINYPDS_WRITE_RATE_LIMIT": "0"}


def cli(data: Path, *args: str, port: int, stdin: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYPDS_")}
    env.update(server_env(port))
    return subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(data), *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout)


def start_tinypds(data: Path, port: int, plc_url: str = PLC_URL, env: dict[str, str] | None = None):
    return start_server(data, extra_env={**server_env(port, plc_url), **(env or {})},
                        args=["--port", str(port), "--no-dev-account"])


def init_tinypds(data: Path, port: int, handle: str) -> str:
    out = cli(data, "init", "--dev", "--plc-url", PLC_URL, "--handle", handle, "--hostname", f"localhost:{port}",
              "--password-stdin", port=port, stdin=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    return re.search(r"did:\s+(did:plc:\S+)", out.stdout).group(1)


def unique_handle(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}.test"


# ---- account content --------------------------------------------------------------------


def png(seed: int, size: int = 8) -> bytes:
    """A small valid PNG whose pixels depend on `seed` (distinct blobs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rng = random.Random(seed)
    rows = b"".join(b"\x00" + rng.randbytes(size * 3) for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Account:
    def __init__(self, url: str, identifier: str, password: str = PASSWORD):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)
        r = self.http.post("/xrpc/com.atproto.server.createSession", json={"identifier": identifier, "password": password})
        assert r.status_code == 200, r.text
        self.session = r.json()
        self.did = self.session["did"]
        self.http.headers["Authorization"] = f"Bearer {self.session['accessJwt']}"

    def close(self) -> None:
        self.http.close()

    def upload(self, data: bytes, mime: str = "image/png") -> dict:
        r = self.http.post("/xrpc/com.atproto.repo.uploadBlob", content=data, headers={"Content-Type": mime})
        assert r.status_code == 200, r.text
        return r.json()["blob"]

    def create(self, collection: str, record: dict, rkey: str | None = None) -> dict:
        body = {"repo": self.did, "collection": collection, "record": {"$type": collection, **record}}
        if rkey:
            body["rkey"] = rkey
        r = self.http.post("/xrpc/com.atproto.repo.createRecord", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def populate(self, posts: int = 6, blobs: int = 4, image_size: int = 8) -> None:
        """Posts (some with images), likes of them, a profile with an avatar, preferences."""
        images = [self.upload(png(i + int.from_bytes(self.did[-4:].encode(), "big"), image_size)) for i in range(blobs)]
        made = []
        for i in range(posts):
            rec: dict = {"text": f"post {i}", "createdAt": now_iso()}
            if i < len(images):
                rec["embed"] = {"$type": "app.bsky.embed.images", "images": [{"image": images[i], "alt": f"img {i}"}]}
            made.append(self.create("app.bsky.feed.post", rec))
        for p in made[:3]:
            self.create("app.bsky.feed.like", {"subject": {"uri": p["uri"], "cid": p["cid"]}, "createdAt": now_iso()})
        avatar = self.upload(png(999 + int.from_bytes(self.did[-4:].encode(), "big"), image_size))
        self.create("app.bsky.actor.profile", {"displayName": "Migrant", "avatar": avatar}, rkey="self")
        prefs = [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False},
                 {"$type": "app.bsky.actor.defs#savedFeedsPrefV2",
                  "items": [{"id": "3l6ovcmm2vd2k", "type": "timeline", "value": "following", "pinned": True}]}]
        r = self.http.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": prefs})
        assert r.status_code == 200, r.text

    def snapshot(self) -> dict:
        """Records (uri -> cid), blobs (cid -> bytes), preferences: what must arrive."""
        records = {}
        for coll in ("app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.actor.profile"):
            r = self.http.get("/xrpc/com.atproto.repo.listRecords", params={"repo": self.did, "collection": coll, "limit": 100})
            assert r.status_code == 200, r.text
            records.update({rec["uri"]: rec["cid"] for rec in r.json()["records"]})
        r = self.http.get("/xrpc/com.atproto.sync.listBlobs", params={"did": self.did, "limit": 1000})
        assert r.status_code == 200, r.text
        blobs = {}
        for cid in r.json()["cids"]:
            b = self.http.get("/xrpc/com.atproto.sync.getBlob", params={"did": self.did, "cid": cid})
            assert b.status_code == 200, b.text
            blobs[cid] = b.content
        prefs = self.http.get("/xrpc/app.bsky.actor.getPreferences")
        assert prefs.status_code == 200, prefs.text
        return {"records": records, "blobs": blobs, "preferences": prefs.json()["preferences"]}


def plc_doc(did: str) -> dict:
    r = httpx.get(f"{PLC_URL}/{did}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def pds_endpoint(doc: dict) -> str:
    return next(s["serviceEndpoint"] for s in doc["service"] if s["id"].endswith("#atproto_pds"))


# ---- a TCP proxy that can cut ----------------------------------------------------------


class CuttingProxy:
    """127.0.0.1:port -> target port. After `cut_after` response bytes (if set), or when a
    request line contains `kill_on` (if set; after `kill_skip` such requests), every live
    connection is dropped and new ones are refused until `heal()`."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.cut_after: int | None = None
        self.sent = 0
        self.dead = False
        self.requests: list[bytes] = []
        self.kill_on: bytes | None = None
        self.kill_skip = 0
        self.kill_mid: int | None = None  # with kill_on: let this many response bytes through first
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def heal(self) -> None:
        with self._lock:
            self.dead, self.cut_after, self.sent, self.kill_on = False, None, 0, None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.dead:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _kill_all(self) -> None:
        self.dead = True
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self._conns.clear()

    def _pipe(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        try:
            while data := src.recv(65536):
                if not response and data[:4] in (b"GET ", b"POST"):
                    line = data.split(b"\r\n", 1)[0]
                    self.requests.append(line)
                    if self.kill_on is not None and self.kill_on in line:
                        if self.kill_skip <= 0:
                            with self._lock:
                                if self.kill_mid is None:
                                    self._kill_all()
                                    return
                                self.cut_after = self.sent + self.kill_mid  # the response stops part-way
                                self.kill_on = None
                        self.kill_skip -= 1
                with self._lock:
                    if response:
                        self.sent += len(data)
                        if self.cut_after is not None and self.sent > self.cut_after:
                            dst.sendall(data[: max(0, len(data) - (self.sent - self.cut_after))])
                            self._kill_all()
                            return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        with self._lock:
            self._kill_all()
