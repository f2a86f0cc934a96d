"""Ask relays to crawl us: com.atproto.sync.requestCrawl at startup and after writes, with backoff.

No HTTP server types; the outgoing POST goes through an injected `post(url, json) -> bool`
(default: the standard library's http.client). `notify_write()` is synchronous and only schedules work, so a relay that
is down never blocks or fails a write. Each relay is asked at most once per
`crawl_interval_seconds` after a success; failures back off exponentially (30 s doubling,
capped at the interval). Tricky bit: a relay starts its subscription at our *current* seq,
so after the first successful request `on_first_success` re-emits #identity and #account.
A loopback hostname is never announced to a non-loopback relay (it could not reach us).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

log = logging.getLogger("tinypds.crawl")

Post = Callable[[str, dict], Awaitable[bool]]
FIRST_BACKOFF = 30.0


def _is_loopback(hostport: str) -> bool:
    if hostport.startswith("["):
        host = hostport[1:hostport.find("]")]
    elif hostport.count(":") == 1:
        host = hostport.rsplit(":", 1)[0]
    else:
        host = hostport
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


@dataclass
class RelayState:
    url: str
    last_success: float | None = None
    retry_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    requests: int = 0
    failures: int = 0


async def http_post(url: str, body: dict, timeout: float = 10.0) -> bool:
    """POST JSON with the standard library's http.client in a worker thread. This is the one
    request an otherwise idle server makes, so it does not load httpx (~4 MB of RSS) for it;
    TLS is verified against the system's CA store."""
    return await asyncio.to_thread(_post_blocking, url, body, timeout)


def _post_blocking(url: str, body: dict, timeout: float) -> bool:
    import http.client
    import json
    import ssl

    parts = urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context())
    elif parts.scheme == "http":
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    else:
        raise ValueError(f"not an http(s) URL: {url}")
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request("POST", target, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "User-Agent": "tinypds"})
        resp = conn.getresponse()
        text = resp.read(4096)
        if resp.status >= 300:
            log.warning("requestCrawl to %s answered %s: %s", url, resp.status, text[:200].decode("utf-8", "replace"))
        return resp.status < 300
    finally:
        conn.close()


class Crawler:
    """requestCrawl scheduler for `settings.relays`."""

    def __init__(self, settings: Any, *, post: Post | None = None,
                 on_first_success: Callable[[], Awaitable[None]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.hostname = settings.hostname
        self.interval = float(settings.crawl_interval_seconds)
        self.post = post or http_post
        self.on_first_success = on_first_success
        self.clock = clock
        loopback = _is_loopback(self.hostname)
        self.relays = [RelayState(u.rstrip("/")) for u in settings.relays
                       if not loopback or _is_loopback(urlsplit(u).netloc)]
        self._announced = False
        self._tasks: set[asyncio.Task] = set()
        self._busy: set[str] = set()
        self._closed = False

    def start(self) -> None:
        """Ask every relay now (at startup); returns at once."""
        self.request(force=True)

    def notify_write(self, *_args: Any) -> None:
        """After a write (usable as a repo listener): ask relays whose interval has passed."""
        self.request(force=False)

    def request(self, force: bool = False) -> None:
        """Schedule requestCrawl to each relay that is due (`force`: ignore the interval, not the backoff)."""
        if self._closed:
            return
        now = self.clock()
        for relay in self.relays:
            if relay.url in self._busy or now < relay.retry_at:
                continue
            if not force and relay.last_success is not None and now - relay.last_success < self.interval:
                continue
            self._busy.add(relay.url)
            try:
                task = asyncio.get_running_loop().create_task(self._ask(relay))
            except RuntimeError:
                self._busy.discard(relay.url)
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask(self, relay: RelayState) -> None:
        url = f"{relay.url}/xrpc/com.atproto.sync.requestCrawl"
        relay.requests += 1
        try:
            ok = await self.post(url, {"hostname": self.hostname})
        except Exception as exc:
            log.warning("requestCrawl to %s failed: %s", relay.url, exc)
            ok = False
        finally:
            self._busy.discard(relay.url)
        now = self.clock()
        if not ok:
            relay.failures += 1
            relay.retry_at = now + relay.backoff
            relay.backoff = min(relay.backoff * 2, max(self.interval, FIRST_BACKOFF))
            return
        relay.last_success = now
        relay.backoff = FIRST_BACKOFF
        relay.retry_at = 0.0
        log.info("requested a crawl from %s", relay.url)
        if not self._announced and self.on_first_success is not None:
            self._announced = True
            try:
                await self.on_first_success()
            except Exception:
                log.exception("could not re-announce identity and account after the first crawl request")

    async def wait_idle(self) -> None:
        """Wait for in-flight requests (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
