"""The README's `atproto` SDK example works as printed: the python block is taken from the
README, only the URL and the printed password are filled in, and run against a real
`tinypds serve` (its dev account); the post it sends must then be in the repo."""

from __future__ import annotations

import re

import httpx

from tests.integration.conftest import REPO_ROOT, start_server


def _readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    found = [b for b in blocks if "from atproto import Client" in b]
    assert found, "the README has no atproto SDK example"
    return found[0]


def test_readme_sdk_example_posts(tmp_path):
    code = _readme_example()
    server = start_server(tmp_path / "data")
    try:
        assert server.handle == "dev.test"
        code = code.replace("http://localhost:2583", server.url).replace("PASSWORD-PRINTED-BY-SERVE", server.password)
        scope: dict = {}
        exec(compile(code, "README.md", "exec"), scope)  # as a reader would paste it
        did = scope["me"].did
        r = httpx.get(server.url + "/xrpc/com.atproto.repo.listRecords",
                      params={"repo": did, "collection": "app.bsky.feed.post"})
        texts = [rec["value"]["text"] for rec in r.json()["records"]]
        assert texts == ["Hello from tinypds"]
    finally:
        server.stop()
