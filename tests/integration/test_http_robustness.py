"""The real server (tinypds serve: Litestar on uvicorn) against hostile or stalled clients,
driven with raw sockets: shutdown with stalled downloads and subscribers, write-stall and
body-stall deadlines, the stream executor, firehose close codes, nesting, websocket
handshake errors, proxy headers and the subscriber cap. Each case failed on the
hand-written server this replaced (see issue 13) or guards a property it had."""

from __future__ import annotations

import contextlib
import signal
import socket
import time

import httpx
import pytest
from litestar import Litestar, Request, Response, get, post

from tests.inprocess import running
from tests.integration.conftest import start_server
from tinypds.config import Settings
from tinypds.xrpc.routing import client_ip

websockets_sync = pytest.importorskip("websockets.sync.client")

STALL = 2  # TINYPDS_CLIENT_STALL_SECONDS for these servers
POST_TEXT = "x" * 2900


@pytest.fixture
def big_pds(tmp_path):
    """A server holding a repo larger than the kernel's socket buffers (~9 MB of posts)."""
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_CLIENT_STALL_SECONDS": str(STALL)})
    session = login(server)
    with httpx.Client(base_url=server.url, timeout=60, headers=auth(session)) as http:
        for batch in range(15):
            writes = [{"$type": "com.atproto.repo.applyWrites#create", "collection": "com.example.note",
                       "value": {"$type": "com.example.note", "text": f"{batch}.{i} {POST_TEXT}"}} for i in range(200)]
            r = http.post("/xrpc/com.atproto.repo.applyWrites", json={"repo": session["did"], "writes": writes})
            assert r.status_code == 200, r.text
    server.session = session
    yield server
    server.stop()


def login(server) -> dict:
    r = httpx.post(server.url + "/xrpc/com.atproto.server.createSession",
                   json={"identifier": server.handle, "password": server.password}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def auth(session: dict) -> dict:
    return {"Authorization": "Bearer " + session["accessJwt"]}


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


@contextlib.contextmanager
def stalled_download(server, path: str):
    """A client that asks for `path` and then reads nothing (tiny receive window)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port_of(server)))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    try:
        yield s
    finally:
        s.close()


def get_repo_path(server) -> str:
    return f"/xrpc/com.atproto.sync.getRepo?did={server.session['did']}"


def drain_until_closed(s: socket.socket, timeout: float) -> int:
    """Read what the server sent until it closes the connection; bytes read."""
    s.settimeout(timeout)
    total = 0
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return total
        total += len(chunk)


def test_a_stalled_download_is_dropped_and_its_snapshot_released(big_pds):
    with stalled_download(big_pds, get_repo_path(big_pds)) as s:
        time.sleep(STALL + 2)  # the server's send has been stuck for longer than the deadline
        received = drain_until_closed(s, timeout=30)
    full = len(httpx.get(big_pds.url + get_repo_path(big_pds), timeout=60).content)
    assert full > 8_000_000
    assert 0 < received < full  # cut off mid-body, not served whole
    assert "dropped a client that accepted no bytes" in big_pds.stderr()
    # the export's read snapshot is gone: a checkpoint can now reset the WAL (it could not while
    # a reader pinned it); the server answers normally
    r = httpx.get(big_pds.url + "/xrpc/_health", timeout=10)
    assert r.status_code == 200


def test_stalled_downloads_do_not_starve_sign_in(big_pds):
    sockets = [stalled_download(big_pds, get_repo_path(big_pds)) for _ in range(8)]
    with contextlib.ExitStack() as stack:
        for cm in sockets:
            stack.enter_context(cm)
        time.sleep(0.5)
        t0 = time.monotonic()
        session = login(big_pds)  # argon2id runs on the default executor, exports on their own
        took = time.monotonic() - t0
    assert session["did"] == big_pds.session["did"]
    assert took < STALL  # answered while all eight downloads were still stalled


def test_sigterm_with_a_stalled_download_and_subscriber_exits_cleanly(big_pds):
    with stalled_download(big_pds, get_repo_path(big_pds)), \
            websockets_sync.connect(big_pds.url.replace("http", "ws") + "/xrpc/com.atproto.sync.subscribeRepos",
                                    max_size=None) as ws:
        time.sleep(0.5)
        t0 = time.monotonic()
        big_pds.proc.send_signal(signal.SIGTERM)
        codes = []
        with contextlib.suppress(Exception):
            while True:
                ws.recv(timeout=15)
        codes.append(ws.close_code)
        rc = big_pds.proc.wait(20)
        took = time.monotonic() - t0
    assert rc == 0
    assert took <= 12, f"shutdown took {took:.1f} s"
    assert codes == [1001]  # Going Away: consumers reconnect (1000 would mean "stream finished")
    assert "Traceback" not in big_pds.stderr()


def test_a_post_head_without_its_body_is_dropped(tmp_path):
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_CLIENT_STALL_SECONDS": str(STALL)})
    try:
        socks = []
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port_of(server)), timeout=30)
            s.sendall(b"POST /xrpc/com.atproto.server.createSession HTTP/1.1\r\nHost: localhost\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
            socks.append(s)
        assert httpx.get(server.url + "/xrpc/_health", timeout=5).status_code == 200  # others are served meanwhile
        answers = []
        for s in socks:
            data = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(4096):
                    data += chunk
            answers.append(data)
            s.close()
        # each stalled request got an answer or a close within the deadline (recv returned)
        assert all(a == b"" or a.startswith(b"HTTP/1.1 400") for a in answers)
    finally:
        assert server.stop() == 0


def test_deep_nesting_is_a_400_never_a_500(pds):
    deep = "[" * 5000 + "]" * 5000
    for path in ("/xrpc/com.atproto.repo.createRecord", "/xrpc/com.atproto.server.createSession",
                 "/xrpc/app.bsky.actor.putPreferences"):
        r = httpx.post(pds.url + path, content=('{"record": ' + deep + "}").encode(),
                       headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code in (400, 401), (path, r.status_code, r.text)
        assert r.json()["error"] in ("InvalidRequest", "AuthenticationRequired")
    session = login(pds)
    record = {"$type": "com.example.thing", "v": None}
    node = record
    for _ in range(200):
        node["v"] = {"v": None}
        node = node["v"]
    r = httpx.post(pds.url + "/xrpc/com.atproto.repo.createRecord", headers=auth(session), timeout=10,
                   json={"repo": session["did"], "collection": "com.example.thing", "record": record})
    assert (r.status_code, r.json()["error"]) == (400, "InvalidRequest")
    r = httpx.post(pds.url + "/xrpc/com.atproto.repo.createRecord", headers=auth(session), timeout=10, json=[1, 2])
    assert (r.status_code, r.json()["error"]) == (400, "InvalidRequest")
    assert "RecursionError" not in pds.stderr() and "Traceback" not in pds.stderr()


def raw_exchange(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port_of(server)), timeout=10) as s:
        s.sendall(request)
        data = b""
        with contextlib.suppress(socket.timeout):
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data


def test_malformed_websocket_handshakes_get_an_http_answer(pds):
    path = "/xrpc/com.atproto.sync.subscribeRepos"
    no_key = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    assert raw_exchange(pds, no_key).startswith(b"HTTP/1.1 400")
    wrong_version = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").encode()
    answer = raw_exchange(pds, wrong_version)
    assert answer.startswith(b"HTTP/1.1 426") or answer.startswith(b"HTTP/1.1 400"), answer[:100]
    assert "Traceback" not in pds.stderr()


def test_firehose_subscribers_are_capped_apart_from_requests(tmp_path):
    server = start_server(tmp_path / "data", extra_env={"TINYPDS_FIREHOSE_MAX_SUBSCRIBERS": "2"})
    url = server.url.replace("http", "ws") + "/xrpc/com.atproto.sync.subscribeRepos"
    try:
        with websockets_sync.connect(url) as a, websockets_sync.connect(url) as b:
            time.sleep(0.3)
            with websockets_sync.connect(url) as c:
                from tinypds.core.events import parse_frame
                header, body = parse_frame(c.recv(timeout=5))
                assert header["op"] == -1 and body["error"] == "NotEnoughResources"
                with contextlib.suppress(Exception):
                    c.recv(timeout=5)
                assert c.close_code == 1013
            assert httpx.get(server.url + "/xrpc/_health", timeout=5).status_code == 200
            assert a.protocol.state.name == "OPEN" and b.protocol.state.name == "OPEN"
    finally:
        assert server.stop() == 0


@get("/whoami", sync_to_thread=False)
def whoami(request: Request) -> dict:
    return {"ip": client_ip(request), "scheme": request.url.scheme}


@pytest.mark.parametrize("trusted, xff, expect", [
    (("127.0.0.1", "::1"), "203.0.113.7", "203.0.113.7"),  # the default: a proxy on loopback (Caddy)
    (("127.0.0.0/8",), "203.0.113.7, 198.51.100.2", "198.51.100.2"),  # CIDRs; the nearest hop
    (("10.9.9.9",), "203.0.113.7", "127.0.0.1"),  # an untrusted peer's header is ignored
    (("127.0.0.1",), "not-an-ip", "unknown"),  # a value that is not an IP never becomes one
])
def test_forwarded_for_only_from_trusted_proxies_and_only_ips(trusted, xff, expect):
    app = Litestar([whoami], logging_config=None)
    settings = Settings(trusted_proxies=trusted)
    with running(app, settings=settings) as (_server, url):
        r = httpx.get(url + "/whoami", headers={"X-Forwarded-For": xff, "X-Forwarded-Proto": "https"}, timeout=10)
    assert r.json()["ip"] == expect
    assert r.json()["scheme"] == ("http" if expect == "127.0.0.1" else "https")


@post("/inject", status_code=200, sync_to_thread=False)
def inject() -> Response:
    return Response(b"ok", headers={"X-Note": "a\r\nSet-Cookie: evil=1"})


def test_a_header_with_a_line_break_is_never_sent():
    app = Litestar([inject], logging_config=None)
    with running(app) as (_server, url):
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
            s.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            data = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(4096):
                    data += chunk
    assert b"evil=1" not in data.split(b"\r\n\r\n", 1)[0].replace(b"X-Note", b"")
    assert b"\r\nSet-Cookie: evil" not in data


def test_head_is_answered_by_the_get_route_without_a_body(pds):
    r = httpx.head(pds.url + "/xrpc/_health", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) > 0
    session = login(pds)
    r = httpx.head(pds.url + f"/xrpc/com.atproto.sync.getRepo?did={session['did']}", timeout=10)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/vnd.ipld.car"
