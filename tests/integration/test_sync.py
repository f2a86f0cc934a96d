"""com.atproto.sync.* and subscribeRepos against the real server over real websockets.

The `atproto` SDK's firehose client decodes every event; every #commit of a randomized
session (including a delete that collapses the MST root layer) verifies inductively from the
frame's blocks alone; getRecord proofs verify (presence and absence); getRepo?since= merged
with the earlier export reproduces the repo; a backfill cut over to live while writing
delivers every event exactly once; FutureCursor; a stuck consumer gets ConsumerTooSlow while
a fast one keeps receiving."""

from __future__ import annotations

import random
import socket
import threading
import time

import httpx
import pytest

from tinypds.core.blocks import MemoryBlockStore
from tinypds.core.car import CarParser
from tinypds.core.cid import CID
from tinypds.core.commit import verify_inductive
from tinypds.core.events import parse_frame
from tinypds.core.mst import key_height, verify_proof, verify_tree

websockets_sync = pytest.importorskip("websockets.sync.client")

NOW = "2026-01-01T00:00:00.000Z"
SYNC = "/xrpc/com.atproto.sync."
COLL = "com.example.item"  # an unknown type: any record key, no lexicon


# ---- helpers ---------------------------------------------------------------------------------
def car_blocks(data: bytes) -> tuple[list[CID], dict[CID, bytes]]:
    parser = CarParser()
    blocks = dict(parser.feed(data))
    parser.close()
    return parser.roots, blocks


def ws_url(pds, cursor: int | None = None) -> str:
    url = pds.url.replace("http://", "ws://") + SYNC + "subscribeRepos"
    return url if cursor is None else f"{url}?cursor={cursor}"


class Writer:
    """applyWrites over HTTP with the dev account's session."""

    def __init__(self, pds):
        self.pds = pds
        resp = httpx.post(pds.url + "/xrpc/com.atproto.server.createSession",
                          json={"identifier": pds.handle, "password": pds.password})
        assert resp.status_code == 200, resp.text
        self.client = httpx.Client(base_url=pds.url, timeout=30,
                                   headers={"Authorization": f"Bearer {resp.json()['accessJwt']}"})

    def apply(self, writes: list[dict]) -> dict:
        resp = self.client.post("/xrpc/com.atproto.repo.applyWrites", json={"repo": self.pds.did, "writes": writes})
        assert resp.status_code == 200, resp.text
        return resp.json()

    def create(self, rkey: str, text: str = "hi", collection: str = COLL) -> dict:
        return {"$type": "com.atproto.repo.applyWrites#create", "collection": collection, "rkey": rkey,
                "value": {"$type": collection, "text": text, "createdAt": NOW}}

    def update(self, rkey: str, text: str) -> dict:
        return {**self.create(rkey, text), "$type": "com.atproto.repo.applyWrites#update"}

    def delete(self, rkey: str) -> dict:
        return {"$type": "com.atproto.repo.applyWrites#delete", "collection": COLL, "rkey": rkey}

    def posts(self, n: int, prefix: str, size: int = 0) -> None:
        for i in range(n):
            self.apply([self.create(f"{prefix}{i:06d}", "x" * size if size else f"post {i}",
                                    collection=COLL)])


def last_seq(pds) -> int:
    """The newest seq, read from the stream itself (cursor 0 replays everything)."""
    with websockets_sync.connect(ws_url(pds, 0), max_size=None) as ws:
        seq = 0
        while True:
            try:
                header, body = parse_frame(ws.recv(timeout=0.5))
            except TimeoutError:
                return seq
            seq = body.get("seq", seq)


def collect(pds, cursor: int | None, until_seq: int, timeout: float = 60) -> list[tuple[dict, dict]]:
    frames = []
    deadline = time.monotonic() + timeout
    with websockets_sync.connect(ws_url(pds, cursor), max_size=None) as ws:
        while time.monotonic() < deadline:
            header, body = parse_frame(ws.recv(timeout=deadline - time.monotonic()))
            frames.append((header, body))
            if header.get("op") == -1 or body.get("seq", 0) >= until_seq:
                return frames
    raise AssertionError(f"stream stopped short of seq {until_seq}")


@pytest.fixture(scope="module")
def writer(pds):
    w = Writer(pds)
    yield w
    w.client.close()


def check_commit(body: dict) -> None:
    """A #commit must verify inductively using ONLY its own blocks."""
    roots, blocks = car_blocks(body["blocks"])
    assert roots[0] == body["commit"] and body["commit"] in blocks
    from tinypds.core.dagcbor import decode
    commit = decode(blocks[body["commit"]])
    assert commit["rev"] == body["rev"] and commit["did"] == body["repo"]
    verify_inductive(commit["data"], body["ops"], body.get("prevData"), MemoryBlockStore(blocks))
    for op in body["ops"]:
        if op["action"] != "delete":
            assert op["cid"] in blocks and op["cid"].matches(blocks[op["cid"]])


def rkey_with_height(h: int, taken: set[str], rng: random.Random) -> str:
    while True:
        rkey = f"h{h}x{rng.randrange(10**9):09d}"
        if key_height(f"{COLL}/{rkey}") == h and rkey not in taken:
            return rkey


def read_raw_frames(raw: socket.socket) -> list[tuple[dict, dict]]:
    """Parse server->client websocket frames from a raw socket until the close frame."""
    buf = bytearray()
    out = []

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = raw.recv(1 << 16)
            if not chunk:
                raise EOFError
            buf.extend(chunk)

    try:
        while True:
            need(2)
            opcode, length, pos = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if length == 126:
                need(4)
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                need(10)
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            need(pos + length)
            payload = bytes(buf[pos:pos + length])
            del buf[:pos + length]
            if opcode == 0x8:  # close
                return out
            if opcode == 0x2:
                out.append(parse_frame(payload))
    except (EOFError, OSError):
        return out


# ---- tests -----------------------------------------------------------------------------------
def test_sdk_firehose_client_decodes_every_event(pds, writer):
    from atproto import CAR, firehose_models, parse_subscribe_repos_message
    from atproto_firehose import FirehoseSubscribeReposClient

    writer.posts(3, "sdk")
    target = last_seq(pds)
    seen: list = []
    client = FirehoseSubscribeReposClient({"cursor": 0}, base_uri=pds.url.replace("http://", "ws://") + "/xrpc")

    def on_message(message: "firehose_models.MessageFrame") -> None:
        event = parse_subscribe_repos_message(message)
        seen.append(event)
        if getattr(event, "seq", 0) >= target:
            client.stop()

    thread = threading.Thread(target=client.start, args=(on_message,), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the SDK client did not receive every event"
    assert [e.seq for e in seen] == list(range(1, target + 1))
    kinds = {type(e).__name__ for e in seen}
    assert any("Commit" in k for k in kinds) and any("Identity" in k for k in kinds) and any("Account" in k for k in kinds)
    for e in seen:
        if "Commit" in type(e).__name__:
            car = CAR.from_bytes(e.blocks)
            assert str(car.root) == str(e.commit)
            for op in e.ops:
                if op.action == "create":
                    assert car.blocks.get(op.cid) is not None


def test_randomized_session_every_commit_verifies_inductively(pds, writer):
    rng = random.Random(5)
    start = last_seq(pds)
    live: dict[str, str] = {}
    # a tall key over a low tree: deleting it collapses the root layer
    taken: set[str] = set()
    low = [rkey_with_height(0, taken, rng) for _ in range(20)]
    writer.apply([writer.create(k) for k in low])
    live.update({k: "hi" for k in low})
    tall = rkey_with_height(2, taken, rng)
    writer.apply([writer.create(tall)])
    writer.apply([writer.delete(tall)])
    for round_ in range(40):
        batch, used = [], set()
        for _ in range(rng.randrange(1, 6)):
            action = rng.choice(["create", "create", "update", "delete"]) if live else "create"
            if action == "create":
                k = f"r{rng.randrange(10**8):08d}"
                if k in live or k in used:
                    continue
                batch.append(writer.create(k, f"v{round_}"))
                live[k] = f"v{round_}"
            else:
                choices = sorted(set(live) - used)
                if not choices:
                    continue
                k = rng.choice(choices)
                if action == "update":
                    batch.append(writer.update(k, f"u{round_}"))
                    live[k] = f"u{round_}"
                else:
                    batch.append(writer.delete(k))
                    del live[k]
            used.add(k)
        if batch:
            writer.apply(batch)
    end = last_seq(pds)
    frames = collect(pds, start, end)
    commits = [b for h, b in frames if h.get("t") == "#commit"]
    assert [b["seq"] for h, b in frames] == list(range(start + 1, end + 1))
    assert len(commits) >= 20
    for body in commits:
        check_commit(body)
    deletes_of_tall = [b for b in commits if any(op["path"].endswith(tall) and op["action"] == "delete" for op in b["ops"])]
    assert len(deletes_of_tall) == 1  # the collapsing delete was among the verified commits


def test_get_record_proofs_verify_presence_and_absence(pds, writer):
    writer.apply([writer.create("proofpresent", "here")])
    for rkey, present in (("proofpresent", True), ("proofabsent", False)):
        resp = httpx.get(pds.url + SYNC + "getRecord",
                         params={"did": pds.did, "collection": COLL, "rkey": rkey})
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("application/vnd.ipld.car")
        roots, blocks = car_blocks(resp.content)
        from tinypds.core.dagcbor import decode
        commit = decode(blocks[roots[0]])
        value = verify_proof(commit["data"], f"{COLL}/{rkey}", MemoryBlockStore(blocks))
        if present:
            assert value is not None and decode(blocks[value])["text"] == "here"
        else:
            assert value is None


def test_get_repo_since_merged_with_earlier_export_is_the_repo(pds, writer):
    first = httpx.get(pds.url + SYNC + "getRepo", params={"did": pds.did}).content
    _roots, old_blocks = car_blocks(first)
    since = httpx.get(pds.url + SYNC + "getLatestCommit", params={"did": pds.did}).json()["rev"]
    writer.posts(5, "since")
    writer.apply([writer.delete("since000001"), writer.update("since000002", "changed")])
    diff = httpx.get(pds.url + SYNC + "getRepo", params={"did": pds.did, "since": since})
    assert diff.status_code == 200
    roots, new_blocks = car_blocks(diff.content)
    assert len(new_blocks) < len(old_blocks)  # a diff, not the whole repo
    full_roots, full_blocks = car_blocks(httpx.get(pds.url + SYNC + "getRepo", params={"did": pds.did}).content)
    assert roots == full_roots
    from tinypds.core.dagcbor import decode
    data = decode(new_blocks[roots[0]])["data"]
    merged = MemoryBlockStore({**old_blocks, **new_blocks})
    expected = list(verify_tree(MemoryBlockStore(full_blocks), data))
    assert list(verify_tree(merged, data)) == expected
    assert all(merged.get_block(cid) is not None for _k, cid in expected)


def test_other_sync_endpoints(pds):
    repos = httpx.get(pds.url + SYNC + "listRepos").json()["repos"]
    latest = httpx.get(pds.url + SYNC + "getLatestCommit", params={"did": pds.did}).json()
    assert repos == [{"did": pds.did, "head": latest["cid"], "rev": latest["rev"], "active": True}]
    status = httpx.get(pds.url + SYNC + "getRepoStatus", params={"did": pds.did}).json()
    assert status == {"did": pds.did, "active": True, "rev": latest["rev"]}
    head = CID.parse(latest["cid"])
    ok = httpx.get(pds.url + SYNC + "getBlocks", params={"did": pds.did, "cids": [str(head)]})
    assert ok.status_code == 200 and car_blocks(ok.content)[1].keys() == {head}
    missing = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
    bad = httpx.get(pds.url + SYNC + "getBlocks", params={"did": pds.did, "cids": [str(head), missing]})
    assert bad.status_code == 400 and bad.json()["error"] == "BlockNotFound"
    unknown = httpx.get(pds.url + SYNC + "getRepo", params={"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "RepoNotFound"


def test_future_cursor_gets_an_error_frame(pds):
    with websockets_sync.connect(ws_url(pds, 10**12)) as ws:
        header, body = parse_frame(ws.recv(timeout=10))
    assert header == {"op": -1} and body["error"] == "FutureCursor"


def test_backfill_cutover_while_writing_delivers_each_event_once(pds, writer):
    writer.posts(60, "pre")
    stop = threading.Event()

    def write_more():
        writer.posts(60, "during")
        stop.set()

    frames: list[dict] = []
    with websockets_sync.connect(ws_url(pds, 0), max_size=None) as ws:
        thread = threading.Thread(target=write_more)
        thread.start()
        target = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                header, body = parse_frame(ws.recv(timeout=1))
                frames.append(body)
            except TimeoutError:  # the writer may finish after the last frame arrived
                pass
            if stop.is_set() and target is None:
                thread.join()
                target = last_seq(pds)
            if target is not None and frames and frames[-1]["seq"] >= target:
                break
    seqs = [b["seq"] for b in frames]
    assert seqs == list(range(1, target + 1))


def test_stuck_consumer_gets_consumer_too_slow_while_a_fast_one_keeps_up(start_pds):
    pds = start_pds(extra_env={"TINYPDS_FIREHOSE_MAX_LAG": "10"})
    writer = Writer(pds)
    # the stuck consumer: a raw socket with a tiny receive window that does the websocket
    # handshake and then reads nothing while we write
    port = int(pds.url.rsplit(":", 1)[1])
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    raw.connect(("127.0.0.1", port))
    raw.sendall((f"GET {SYNC}subscribeRepos HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    handshake = b""
    while b"\r\n\r\n" not in handshake:
        handshake += raw.recv(1)
    assert handshake.startswith(b"HTTP/1.1 101")
    fast_frames: list[dict] = []
    with websockets_sync.connect(ws_url(pds), max_size=None) as fast:
        time.sleep(0.3)  # both subscribed and caught up

        def read_fast():
            while len(fast_frames) < 150:
                fast_frames.append(parse_frame(fast.recv(timeout=60))[1])

        reader = threading.Thread(target=read_fast)
        reader.start()
        writer.posts(150, "big", size=40_000)
        reader.join(60)
    assert len(fast_frames) == 150 and all(b["ops"][0]["action"] == "create" for b in fast_frames)
    # now the stuck consumer reads: whatever was buffered, then the error frame, then the close
    raw.settimeout(30)
    frames = read_raw_frames(raw)
    assert frames and frames[-1][0] == {"op": -1} and frames[-1][1]["error"] == "ConsumerTooSlow"
    assert len(frames) < 151  # it was cut off, not served everything
    raw.close()
    writer.client.close()


def test_relay_is_asked_to_crawl_and_identity_is_reannounced(start_pds):
    """A (fake, loopback) relay gets requestCrawl at startup; after the first success the PDS
    re-emits #identity and #account, because the relay subscribes at the current seq."""
    import http.server
    import json as jsonlib

    calls: list[tuple[str, dict]] = []

    class Relay(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            calls.append((self.path, jsonlib.loads(body)))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    relay = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Relay)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        relay_url = f"http://127.0.0.1:{relay.server_address[1]}"
        first = start_pds("first", extra_env={"TINYPDS_RELAYS": relay_url})
        first_seq = last_seq(first)  # account creation: #identity, #account, #commit
        first.stop()
        calls.clear()
        # a restart of the same data dir: asked again, then identity and account re-sent
        again = start_pds("first", extra_env={"TINYPDS_RELAYS": relay_url})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and last_seq(again) < first_seq + 2:
            time.sleep(0.1)
        frames = collect(again, first_seq, first_seq + 2)
    finally:
        relay.shutdown()
    assert calls and calls[0] == ("/xrpc/com.atproto.sync.requestCrawl", {"hostname": "localhost:2583"})
    assert [h["t"] for h, _ in frames] == ["#identity", "#account"]
    assert frames[0][1]["did"] == first.did and frames[1][1]["active"] is True
