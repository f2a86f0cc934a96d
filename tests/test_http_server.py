"""tinypds.http_server on a real socket, driven with raw bytes (and the `websockets` client):
keep-alive, pipelining, malformed and oversized requests, chunked bodies, 100-continue,
HEAD, unread bodies, proxy headers from loopback, idle timeouts, websockets, lifespan."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest
from websockets.sync.client import connect as ws_connect

from tests.inprocess import running
from tinypds import http_server
from tinypds.http_server import limits


async def toy_app(scope, receive, send):
    """Echo: method, path, client, scheme, body length as JSON; /ws echoes one message back."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "bytes": b"echo:" + (message.get("bytes") or message["text"].encode())})
            await receive()  # until the client leaves
        return
    size = 0
    if scope["path"] != "/ignore-body":
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
    body = json.dumps({"method": scope["method"], "path": scope["path"], "client": scope["client"][0],
                       "scheme": scope["scheme"], "size": size}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server():
    with running(toy_app) as (srv, url):
        yield srv, int(url.rsplit(":", 1)[1])


@contextlib.contextmanager
def _sock(port: int):
    """A client socket; closing it closes its buffered reader too (else the fd stays open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield s
    finally:
        reader = _readers.pop(id(s), None)
        if reader is not None:
            reader[1].close()
        s.close()


def _read_response(s: socket.socket, head: bool = False) -> tuple[int, dict, bytes]:
    """One response (Content-Length framed; no body after a HEAD or a 100) off the socket."""
    f = _reader(s)
    line = f.readline()
    if not line:
        raise ConnectionError("closed before a response")
    status = int(line.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if status == 100 or head:
        return status, headers, b""
    return status, headers, f.read(int(headers.get("content-length", "0")))


_readers: dict[int, object] = {}


def _reader(s: socket.socket):
    """One buffered reader per socket, so bytes of a following response are never lost."""
    if id(s) not in _readers:
        _readers[id(s)] = (s, s.makefile("rb"))
    return _readers[id(s)][1]


def _closed(s: socket.socket, wait: float = 5.0) -> bool:
    s.settimeout(wait)
    try:
        return _reader(s).read(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def test_keep_alive_and_pipelining(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(_read_response(s)[2])["path"] == "/a"
        s.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n")  # two at once
        assert [json.loads(_read_response(s)[2])["path"] for _ in range(2)] == ["/b", "/c"]


def test_malformed_and_oversized_requests_get_an_error_and_a_close(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"NOT A REQUEST\r\n\r\n")
        status, headers, body = _read_response(s)
        assert status == 400 and json.loads(body)["error"] == "InvalidRequest"
        assert headers["connection"] == "close" and _closed(s)
    with _sock(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * limits.MAX_HEADER_BYTES) + b"\r\n\r\n")
        assert _read_response(s)[0] == 431 and _closed(s)


def test_chunked_body_and_100_continue(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        assert json.loads(_read_response(s)[2])["size"] == 11
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert _read_response(s)[0] == 100  # the server asks for the body only when the app reads it
        s.sendall(b"data")
        assert json.loads(_read_response(s)[2])["size"] == 4


def test_head_has_headers_and_no_body(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = _read_response(s, head=True)
        assert status == 200 and int(headers["content-length"]) > 0
        status, _, body = _read_response(s)  # the next answer follows the head at once: no body between
        assert status == 200 and json.loads(body)["path"] == "/after"


def test_unread_body_small_keeps_the_connection_large_closes_it(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
        assert _read_response(s)[0] == 200
        s.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(_read_response(s)[2])["path"] == "/next"
    with _sock(port) as s:
        size = 4 * limits.MAX_DRAIN_BYTES
        s.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        assert _read_response(s)[0] == 200
        assert _closed(s)  # the body never came: the server does not wait for it


def test_forwarded_headers_are_taken_from_a_loopback_proxy(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n")
        seen = json.loads(_read_response(s)[2])
    assert (seen["client"], seen["scheme"]) == ("203.0.113.7", "https")
    with _sock(port) as s:
        s.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n")
        assert json.loads(_read_response(s)[2])["client"] == "127.0.0.1"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored():
    with running(toy_app, trusted_proxies=()) as (_srv, url), _sock(int(url.rsplit(":", 1)[1])) as s:
        s.sendall(b"GET /f HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n")
        seen = json.loads(_read_response(s)[2])
    assert (seen["client"], seen["scheme"]) == ("127.0.0.1", "http")


def test_idle_keep_alive_connection_is_closed(server, monkeypatch):
    _, port = server
    monkeypatch.setattr(limits, "KEEP_ALIVE_SECONDS", 0.3)
    with _sock(port) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(s)[0] == 200
        start = time.monotonic()
        assert _closed(s, wait=5)
        assert time.monotonic() - start < 4


def test_websocket_messages_ping_and_close(server):
    _, port = server
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.ping().wait(5)  # answered with a pong
        ws.send(b"hi")
        assert ws.recv(timeout=10) == b"echo:hi"


def test_websocket_refused_before_accept_is_403():
    async def refuse(scope, receive, send):
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "lifespan":
            await toy_app(scope, receive, send)

    with running(refuse) as (_srv, url):
        with pytest.raises(Exception) as info:
            ws_connect(url.replace("http", "ws") + "/ws", open_timeout=10)
    assert "403" in str(info.value)


def test_failed_startup_means_no_listener():
    async def broken(scope, receive, send):
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = http_server.Server(broken, "127.0.0.1", 0)
    assert server.run() is False and not server.started


def test_stop_waits_for_an_answer_in_flight():
    import asyncio

    async def slow(scope, receive, send):
        if scope["type"] == "lifespan":
            await toy_app(scope, receive, send)
            return
        await asyncio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with running(slow) as (srv, url), _sock(int(url.rsplit(":", 1)[1])) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        srv.stop()  # graceful: the request in flight is answered, then the connection closes
        status, headers, body = _read_response(s)
        assert (status, body, headers.get("connection")) == (200, b"ok", "close")
        with contextlib.suppress(OSError):
            assert _closed(s)


def test_pipelined_request_behind_a_streamed_answer_with_a_disconnect_watcher():
    """A streamed answer whose app watches for the client leaving (as tinypds.web.Stream does)
    must not swallow the next request that arrives meanwhile."""
    import asyncio

    async def streaming(scope, receive, send):
        if scope["type"] == "lifespan":
            await toy_app(scope, receive, send)
            return
        await receive()  # the (empty) body
        watcher = asyncio.ensure_future(receive())  # returns when the client leaves or the answer ends
        await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
        for part in (b"one,", b"two,"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.2)  # the watcher reads the pipelined request meanwhile
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await send({"type": "http.response.body", "body": b"three"})

    with running(streaming) as (_srv, url), _sock(int(url.rsplit(":", 1)[1])) as s:
        s.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        f = _reader(s)
        answers = []
        for _ in range(2):
            assert f.readline().startswith(b"HTTP/1.1 200")
            while f.readline() != b"\r\n":
                pass
            body = b""
            while (size := int(f.readline().strip(), 16)) != 0:
                body += f.read(size)
                f.readline()
            f.readline()
            answers.append(body)
    assert answers == [b"one,two,three"] * 2


def test_a_header_with_a_line_break_is_never_sent():
    async def injecting(scope, receive, send):
        if scope["type"] == "lifespan":
            await toy_app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", b"/ok\r\nset-cookie: stolen=1")]})
        await send({"type": "http.response.body", "body": b""})

    with running(injecting) as (_srv, url), _sock(int(url.rsplit(":", 1)[1])) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _read_response(s)
    assert status == 500 and "set-cookie" not in headers and "location" not in headers
    assert json.loads(body)["error"] == "InternalServerError"


def test_http_1_0_gets_a_framed_answer_and_a_close(server):
    _, port = server
    with _sock(port) as s:
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, body = _read_response(s)
        assert status == 200 and json.loads(body)["path"] == "/old"
        assert headers["connection"] == "close" and _closed(s)


def test_a_trickled_request_head_is_cut_off(server, monkeypatch):
    """Slowloris: bytes that keep coming but never finish the head do not keep the connection."""
    _, port = server
    monkeypatch.setattr(limits, "HEADER_SECONDS", 0.5)
    with _sock(port) as s:
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.1 s, for at most 4 s
            time.sleep(0.1)
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
        assert closed or _closed(s, wait=1)
        assert time.monotonic() - start < 3


def test_connections_over_the_limit_get_503(server, monkeypatch):
    _, port = server
    monkeypatch.setattr(limits, "MAX_CONNECTIONS", 2)
    with _sock(port) as a, _sock(port) as b:
        for s in (a, b):  # two connections in use
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _read_response(s)[0] == 200
        with _sock(port) as c:
            status, _, body = _read_response(c)
            assert status == 503 and json.loads(body)["error"] == "NotEnoughResources"
    time.sleep(0.3)  # the server notices the others closing
    with _sock(port) as d:  # room again
        d.sendall(b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(d)[0] == 200
