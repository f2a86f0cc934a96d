"""The real server over HTTP: health, describeServer, error shapes, CORS, robots.txt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import interop_root

LEXICONS = Path(__file__).resolve().parents[3] / "shared" / "lexicons"


def assert_xrpc_error(resp, status: int, error: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == error, body
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in body["message"]
    return body


def test_health(http):
    resp = http.get("/xrpc/_health")
    assert resp.status_code == 200
    assert isinstance(resp.json()["version"], str)


def test_describe_server_shape(http, pds):
    resp = http.get("/xrpc/com.atproto.server.describeServer")
    assert resp.status_code == 200
    body = resp.json()
    assert body["did"] == "did:web:localhost%3A2583"
    assert isinstance(body["availableUserDomains"], list)
    assert isinstance(body["inviteCodeRequired"], bool)
    assert isinstance(body["links"], dict) and isinstance(body["contact"], dict)


def test_describe_server_matches_lexicon(http):
    lex_file = LEXICONS / "com" / "atproto" / "server" / "describeServer.json"
    if not lex_file.is_file():
        pytest.skip(f"published lexicons not found at {lex_file}")
    lex = json.loads(lex_file.read_text())
    schema = lex["defs"]["main"]["output"]["schema"]
    body = http.get("/xrpc/com.atproto.server.describeServer").json()
    for name in schema["required"]:
        assert name in body
    kinds = {"boolean": bool, "integer": int, "string": str, "array": list, "ref": dict}
    for name, value in body.items():
        assert name in schema["properties"], f"{name} is not in the lexicon"
        assert isinstance(value, kinds[schema["properties"][name]["type"]]), name


def test_unknown_xrpc_method_is_501(http):
    assert_xrpc_error(http.get("/xrpc/com.example.nothing.here"), 501, "MethodNotImplemented")
    assert_xrpc_error(http.post("/xrpc/com.example.nothing.here", json={}), 501, "MethodNotImplemented")


def test_unknown_path_is_404(http):
    assert_xrpc_error(http.get("/no/such/page"), 404, "NotFound")


def test_wrong_method_is_405(http):
    assert_xrpc_error(http.post("/xrpc/com.atproto.server.describeServer", json={}), 405, "MethodNotAllowed")


def test_invalid_nsid_is_400(http):
    assert_xrpc_error(http.get("/xrpc/not..an..nsid"), 400, "InvalidRequest")


@pytest.mark.parametrize(
    "content,ctype",
    [
        (b"{not json", "application/json"),
        (b'{"identifier": "a", ', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"identifier": "a", "password": "b"}', "text/plain"),
    ],
)
def test_malformed_body_is_400(http, content, ctype):
    resp = http.post("/xrpc/com.atproto.server.createSession", content=content, headers={"content-type": ctype})
    assert_xrpc_error(resp, 400, "InvalidRequest")


def test_oversized_body_is_refused(http):
    big = b'{"identifier": "' + b"a" * (6 * 1024 * 1024) + b'"}'
    resp = http.post("/xrpc/com.atproto.server.createSession", content=big, headers={"content-type": "application/json"})
    assert_xrpc_error(resp, 413, "PayloadTooLarge")


def test_cors(http):
    pre = http.options(
        "/xrpc/com.atproto.server.describeServer",
        headers={"Origin": "https://bsky.app", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization,atproto-proxy"},
    )
    assert pre.status_code in (200, 204)
    assert pre.headers["access-control-allow-origin"] in ("*", "https://bsky.app")
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    resp = http.get("/xrpc/com.atproto.server.describeServer", headers={"Origin": "https://bsky.app"})
    assert resp.headers["access-control-allow-origin"] in ("*", "https://bsky.app")
    err = http.get("/xrpc/com.example.nothing", headers={"Origin": "https://bsky.app"})
    assert err.headers.get("access-control-allow-origin") in ("*", "https://bsky.app")


def test_robots_txt(http):
    resp = http.get("/robots.txt")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert "User-agent" in resp.text


def test_server_survives_garbage_and_stays_healthy(http, pds):
    for path in ("/xrpc/", "/xrpc/%00", "/xrpc/" + "a." * 300 + "b", "/%ff"):
        resp = http.get(path)
        assert resp.status_code < 500, (path, resp.status_code, resp.text)
        assert resp.json().keys() == {"error", "message"}
    assert http.get("/xrpc/_health").status_code == 200
    assert "Traceback" not in pds.stderr()


def test_interop_root_is_importable():
    # the integration suite shares the fixture locator with the core tests
    assert interop_root() is None or interop_root().is_dir()
