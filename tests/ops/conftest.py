"""Helpers for the operations tests: the CLI as a subprocess, a signed-in HTTP client.

Servers come from tests/integration/conftest.py (`start_server`: a real `tinypds serve`
subprocess on 127.0.0.1, port 0, dev account, keys in DATA/keys.json).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx

from tests.integration.conftest import REPO_ROOT, server_env, start_server  # noqa: F401 - re-exported

POST = "app.bsky.feed.post"


def cli(data_dir: Path, *args: str, stdin: str | None = None, env: dict | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `tinypds --data DATA ARGS` like an operator would (keys in DATA/keys.json)."""
    extra = {"TINYPDS_KEY_FILE": str(data_dir / "keys.json"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tinypds.cli", "--data", str(data_dir), *args],
        cwd=REPO_ROOT, env=server_env(extra), input=stdin, capture_output=True, text=True, timeout=timeout,
    )


class Client:
    """A signed-in session on a running server (the dev account)."""

    def __init__(self, server):
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)
        r = self.http.post("/xrpc/com.atproto.server.createSession",
                           json={"identifier": server.handle, "password": server.password})
        r.raise_for_status()
        self.did = r.json()["did"]
        self.http.headers["Authorization"] = "Bearer " + r.json()["accessJwt"]

    def close(self) -> None:
        self.http.close()

    def post(self, text: str, embed: dict | None = None) -> dict:
        record = {"$type": POST, "text": text, "createdAt": "2024-01-01T00:00:00.000Z"}
        if embed is not None:
            record["embed"] = embed
        r = self.http.post("/xrpc/com.atproto.repo.createRecord",
                           json={"repo": self.did, "collection": POST, "record": record})
        r.raise_for_status()
        return r.json()

    def upload(self, data: bytes, mime: str = "image/png") -> dict:
        r = self.http.post("/xrpc/com.atproto.repo.uploadBlob", content=data, headers={"Content-Type": mime})
        r.raise_for_status()
        return r.json()["blob"]


class Writer(threading.Thread):
    """Creates posts in a loop until stopped; `acked` holds the rkeys the server confirmed."""

    def __init__(self, client: Client, prefix: str):
        super().__init__(daemon=True)
        self.client, self.prefix = client, prefix
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.stop_flag = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop_flag.is_set():
            try:
                out = self.client.post(f"{self.prefix} {i}")
            except Exception as exc:  # the server going away ends the run
                self.errors.append(repr(exc))
                return
            self.acked.append(out["uri"].rsplit("/", 1)[1])
            i += 1

    def stop(self) -> None:
        self.stop_flag.set()
        self.join(30)
