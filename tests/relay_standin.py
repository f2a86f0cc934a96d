"""A stand-in relay on 127.0.0.1 for the health tests (a relay is outside this machine; not a test module).

Faithful to com.atproto.sync lexicons: requestCrawl (HostBanned) subscribes to ws://<hostname> and tracks seq
and revs from the frames; getHostStatus (HostNotFound), getRepoStatus, getLatestCommit (RepoNotFound) answer
from that. Tests make it forget us, call us offline/idle, lag, throttle, ban, drop us, or go down and back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
import websockets

from tinypds.core.events import parse_frame


@dataclass
class Host:
    status: str = "active"
    seq: int | None = None
    lagging: bool = False
    task: asyncio.Task | None = None
    dids: set[str] = field(default_factory=set)


class RelayStandIn:
    def __init__(self, port: int = 0) -> None:
        self.hosts: dict[str, Host] = {}
        self.well_known: dict[str, str] = {}  # handle -> what /.well-known/atproto-did answers for Host: handle
        self.repos: dict[str, dict[str, Any]] = {}  # did -> {active, status, rev, cid}
        self.crawl_requests: list[tuple[float, str]] = []
        self.banned: set[str] = set()
        self._consumers: set[asyncio.Task] = set()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Future | None = None

    # ---- lifecycle (called from the test thread) -----------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "RelayStandIn":
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._serve())
        return self

    async def _serve(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._serving = asyncio.ensure_future(self._server.serve())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def go_down(self) -> None:
        """An outage: stop answering (connections are refused) but keep the state."""
        self._call(self._stop_serving())

    async def _stop_serving(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._serving
            self._server = None

    def come_back(self) -> None:
        self._call(self._serve())

    def close(self) -> None:
        async def shutdown() -> None:
            tasks = list(self._consumers)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_serving()
        try:
            self._call(shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ---- what tests tell it ------------------------------------------------------------------
    def _do(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()
        return self._call(run())

    def forget(self, hostname: str) -> None:
        def f() -> None:
            h = self.hosts.pop(hostname, None)
            if h is not None:
                if h.task is not None:
                    h.task.cancel()
                for did in h.dids:
                    self.repos.pop(did, None)
        self._do(f)

    def set_status(self, hostname: str, status: str) -> None:
        """offline / idle drop the subscription (keeping the cursor); throttled / banned as well."""
        def f() -> None:
            h = self.hosts[hostname]
            h.status = status
            if status != "active" and h.task is not None:
                h.task.cancel()
                h.task = None
            if status == "banned":
                self.banned.add(hostname)
        self._do(f)

    def drop(self, hostname: str) -> None:
        """Lose the subscription silently: the relay still calls the host active (it has not noticed)."""
        def f() -> None:
            h = self.hosts[hostname]
            if h.task is not None:
                h.task.cancel()
                h.task = None
        self._do(f)

    def lag(self, hostname: str, on: bool = True) -> None:
        def f() -> None:
            self.hosts[hostname].lagging = on
        self._do(f)

    def host(self, hostname: str) -> dict | None:
        return self._do(lambda: None if hostname not in self.hosts else {
            "status": self.hosts[hostname].status, "seq": self.hosts[hostname].seq,
            "subscribed": self.hosts[hostname].task is not None and not self.hosts[hostname].task.done()})

    def crawls_for(self, hostname: str) -> int:
        return self._do(lambda: sum(1 for _, h in self.crawl_requests if h == hostname))

    def wait_for(self, pred: Any, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"stand-in relay: condition not met within {timeout} s")

    # ---- the firehose subscription -------------------------------------------------------------
    def _subscribe(self, hostname: str, h: Host) -> None:
        if h.task is None or h.task.done():
            h.task = asyncio.ensure_future(self._consume(hostname, h))
            self._consumers.add(h.task)
            h.task.add_done_callback(self._consumers.discard)

    async def _consume(self, hostname: str, h: Host, attempts: int = 5) -> None:
        """Dial and read; like a relay, re-dial with backoff a few times, then call the host offline."""
        failures = 0
        while failures < attempts:
            url = f"ws://{hostname}/xrpc/com.atproto.sync.subscribeRepos"
            if h.seq is not None:
                url += f"?cursor={h.seq}"
            try:
                async with websockets.connect(url, max_size=8 * 1024 * 1024, open_timeout=10) as ws:
                    failures = 0
                    async for msg in ws:
                        if isinstance(msg, bytes):
                            self._apply(h, *parse_frame(msg))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - refused or dropped: try again a little later
                pass
            failures += 1
            await asyncio.sleep(0.2 * 2 ** failures)
        if self.hosts.get(hostname) is h and h.status == "active":
            h.status = "offline"

    def _apply(self, h: Host, header: dict, body: dict) -> None:
        if header.get("op") != 1 or h.lagging:
            return
        h.seq = body.get("seq", h.seq)
        did = body.get("repo") or body.get("did")
        if not did:
            return
        h.dids.add(did)
        repo = self.repos.setdefault(did, {"active": True, "status": None, "rev": None, "cid": None})
        t = header.get("t")
        if t in ("#commit", "#sync"):
            repo["rev"] = body.get("rev")
            commit = body.get("commit")
            repo["cid"] = str(commit) if commit is not None else repo["cid"]
        elif t == "#account":
            repo["active"] = bool(body.get("active"))
            repo["status"] = body.get("status")

    # ---- XRPC ------------------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        self.request_headers = dict(scope["headers"])  # for subclasses that check auth (one request at a time)
        if scope["path"] == "/.well-known/atproto-did":  # a handle host that answers with what the test says
            host = dict(scope["headers"]).get(b"host", b"").decode().split(":")[0]
            did = self.well_known.get(host)
            status, raw, kind = (200, did.encode(), b"text/plain") if did else (404, b"not found", b"text/plain")
        else:
            status, doc = self._handle(scope["method"], scope["path"], query, body)
            raw, kind = json.dumps(doc).encode(), b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})

    def _handle(self, method: str, path: str, q: dict, body: bytes) -> tuple[int, dict]:
        nsid = path.removeprefix("/xrpc/")
        if nsid == "com.atproto.sync.requestCrawl" and method == "POST":
            try:
                hostname = json.loads(body)["hostname"]
            except (ValueError, KeyError, TypeError):
                return 400, {"error": "InvalidRequest", "message": "hostname required"}
            self.crawl_requests.append((time.time(), hostname))
            if hostname in self.banned:
                return 400, {"error": "HostBanned", "message": "this host is banned"}
            h = self.hosts.setdefault(hostname, Host())
            if h.status in ("offline", "idle"):
                h.status = "active"
            if h.status == "active":
                self._subscribe(hostname, h)
            return 200, {}
        if nsid == "com.atproto.sync.getHostStatus":
            if "hostname" not in q:
                return 400, {"error": "InvalidRequest", "message": "hostname required"}
            h = self.hosts.get(q["hostname"])
            if h is None:
                return 400, {"error": "HostNotFound", "message": "host not found"}
            doc = {"hostname": q["hostname"], "status": h.status, "accountCount": len(h.dids)}
            return 200, doc | ({"seq": h.seq} if h.seq is not None else {})
        if nsid in ("com.atproto.sync.getRepoStatus", "com.atproto.sync.getLatestCommit"):
            repo = self.repos.get(q.get("did", ""))
            if repo is None:
                return 400, {"error": "RepoNotFound", "message": "repo not found"}
            if nsid.endswith("getLatestCommit"):
                if repo["rev"] is None:
                    return 400, {"error": "RepoNotFound", "message": "no commit seen"}
                return 200, {"cid": repo["cid"], "rev": repo["rev"]}
            doc = {"did": q["did"], "active": repo["active"]}
            if repo["status"]:
                doc["status"] = repo["status"]
            if repo["active"] and repo["rev"]:
                doc["rev"] = repo["rev"]
            return 200, doc
        return 404, {"error": "MethodNotImplemented", "message": f"{nsid} not served"}
