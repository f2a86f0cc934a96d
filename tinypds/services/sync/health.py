"""The network-health watcher: asks each relay and the AppView what they know of us, heals what it can.

One background task, off every hot path: a round every `health_interval` s (exponential backoff for an
unreachable relay); `note_write()` only reads the subscriber count. Heals by requestCrawl (one per relay per
interval), #identity/#account and #sync re-announcements; warns once when it cannot. No HTTP types, no SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from . import health_checks as checks
from .crawl import _is_loopback, http_post
from .health_report import AppViewHealth, HandleHealth, HealthReport, RelayHealth, iso

log = logging.getLogger("tinypds.health")

UNREACHABLE_WARN_SECONDS = 3600.0
REANNOUNCE_EVERY = 3600.0  # at most this often re-announce #identity for the AppView's handle check


@dataclass
class _Relay:
    view: RelayHealth
    next_check: float = 0.0  # monotonic
    failures: int = 0
    down_since: float | None = None  # monotonic
    lag_since: float | None = None
    last_crawl: float | None = None
    warned: set[str] = field(default_factory=set)
    crawling: bool = False


@dataclass
class _Own:
    did: str | None
    handle: str | None
    status: str | None
    rev: str | None
    seq: int
    latest_post: str | None


def _read_own(conn: Any) -> _Own:
    from ...store.accounts import get_account
    from ...store.events import last_seq
    from ...store.records import list_records
    from ...store.repo import get_root

    acct = get_account(conn)
    root = get_root(conn)
    posts = list_records(conn, "app.bsky.feed.post", limit=1) if acct else []
    latest = f"at://{acct.did}/app.bsky.feed.post/{posts[0][0]}" if acct and posts else None
    return _Own(acct.did if acct else None, acct.handle if acct else None, acct.status if acct else None,
                root.rev if root else None, last_seq(conn), latest)


class HealthWatcher:
    """One per server. `start()` / `aclose()` from the lifespan; `report()` for status pages."""

    def __init__(self, settings: Any, db: Any, *, firehose: Any = None,
                 reannounce: Callable[[], Awaitable[None]] | None = None,
                 token_for: checks.TokenFor | None = None, keys: Any = None,
                 post: Callable[[str, dict], Awaitable[bool]] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 probe_timeout: float = 10.0, dns_txt: checks.DnsTxt | None = None,
                 well_known_url: Callable[[str], str] | None = None):
        self.settings = settings
        self.db = db
        self.firehose = firehose
        self.reannounce = reannounce
        self.token_for = token_for
        self.keys = keys  # with `keys` (has get_key(did, "signing")): service auth for an AppView that wants it
        self.post = post or http_post
        self.clock, self.wall = clock, wall
        self.interval = float(settings.health_interval)
        self.lag_grace = float(settings.health_lag_seconds)
        self.timeout = probe_timeout
        self.dns_txt, self.well_known_url = dns_txt, well_known_url
        self.hostname = settings.hostname
        loopback = _is_loopback(self.hostname)
        self.relays = [_Relay(RelayHealth(u.rstrip("/"))) for u in settings.relays
                       if not loopback or _is_loopback(urlsplit(u).netloc)]
        self.skipped = [u for u in settings.relays if u.rstrip("/") not in {r.view.url for r in self.relays}]
        self.appview_reachable = not loopback or _is_loopback(urlsplit(settings.appview_url).netloc)
        self._report = HealthReport(relays=[r.view for r in self.relays],
                                    appview=AppViewHealth(settings.appview_url.rstrip("/")))
        if self.skipped:
            self._report.note = (f"this server's hostname {self.hostname} is a loopback name: "
                                 f"relays {', '.join(self.skipped)} cannot reach it and are not checked")
        self._post_unseen_since: float | None = None
        self._last_reannounce: float | None = None
        self._last_resync: float | None = None
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._closed = False
        self.rounds = 0

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        self._closed = True
        for task in [self._task, *self._tasks]:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*[t for t in [self._task, *self._tasks] if t is not None], return_exceptions=True)

    def report(self) -> HealthReport:
        """The current facts (the same object `tinypds status` reads back from the database)."""
        return self._report

    async def check_now(self) -> HealthReport:
        """Run one full round now (every relay, the AppView, the handle), ignoring schedules."""
        await self._round(every_relay=True, side=True)
        return self._report

    # ---- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        await self._sleep(min(self.interval, 60.0))  # let startup's own crawl requests go first
        next_side = 0.0
        while not self._closed:
            try:
                await self._round(every_relay=False, side=self.clock() >= next_side)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("network health check failed")
            if self.clock() >= next_side:
                next_side = self.clock() + self.interval
            due = min([r.next_check for r in self.relays] + [next_side])
            await self._sleep(max(0.05, min(self.interval, due - self.clock())))

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    async def _round(self, every_relay: bool, side: bool) -> None:
        """Relays that are due (or all), then (`side`) the AppView and our handle; then store the report."""
        async with self._round_lock:
            own = await self.db.aread(_read_own)
            rep = self._report
            rep.did, rep.our_seq, rep.our_rev = own.did, own.seq, own.rev
            rep.subscribers = self.firehose.subscriber_count if self.firehose is not None else None
            now = self.clock()
            await asyncio.gather(*[self._check_relay(r, own) for r in self.relays if every_relay or now >= r.next_check])
            if side:
                await asyncio.gather(self._check_appview(own), self._check_handle(own))
            rep.checked_at = iso(self.wall())
            self.rounds += 1
            await self._persist()

    async def _persist(self) -> None:
        from ...store.health import put_report

        doc = self._report.to_json()
        try:
            await self.db.awrite(lambda conn: put_report(conn, doc))
        except Exception:  # a busy or closing database: the next round stores it
            log.warning("could not store the network health report", exc_info=True)

    # ---- relays ------------------------------------------------------------------------------
    async def _check_relay(self, r: _Relay, own: _Own) -> None:
        v = r.view
        probe = await checks.probe_relay(v.url, self.hostname, own.did, timeout=self.timeout)
        now = self.clock()
        v.last_checked = iso(self.wall())
        v.our_seq, v.our_rev = own.seq, own.rev
        if not probe.reachable:
            r.failures += 1
            r.down_since = r.down_since if r.down_since is not None else now
            v.state, v.problem = "unreachable", f"unreachable: {probe.error}"
            v.unreachable_since = v.unreachable_since or iso(self.wall())
            r.next_check = now + max(self.interval, min(self.interval * 2 ** r.failures, 3600.0, 16 * self.interval))
            if now - r.down_since >= UNREACHABLE_WARN_SECONDS:
                self._warn(r, "unreachable", "relay %s has been unreachable for %d min (%s): posts may not reach the "
                           "network; check this machine's outbound connectivity", v.url, (now - r.down_since) // 60,
                           probe.error)
            return
        recovered = r.failures > 0
        r.failures, r.down_since, v.unreachable_since = 0, None, None
        r.warned.discard("unreachable")
        r.next_check = now + self.interval
        v.last_ok = v.last_checked
        v.status, v.relay_seq, v.relay_rev = probe.host_status, probe.host_seq, probe.rev
        if probe.repo_known is False:
            v.repo = "not known"
        elif probe.repo_active is False:
            v.repo = probe.repo_status or "inactive"
        elif probe.repo_known:
            v.repo = "active"
        else:
            v.repo = None
        # behind: an older rev (TIDs sort as strings), or it knows the repo but none of its commits
        behind = bool(own.rev and probe.repo_known and (probe.rev is None or probe.rev < own.rev))
        if behind:
            r.lag_since = r.lag_since if r.lag_since is not None else now
        else:
            r.lag_since = None
        stuck = self._cannot_heal(r, probe, own)
        reason = None
        if stuck is None:
            if recovered:
                reason = "our requests reach the relay again after an outage"
            elif probe.host_status == "unknown":
                reason = "the relay does not know this host"
            elif probe.host_status in ("offline", "idle"):
                reason = f"the relay calls this host {probe.host_status}"
            elif probe.repo_known is False and own.did is not None:
                reason = "the relay does not know our repo"
            elif behind and r.lag_since is not None and now - r.lag_since >= self.lag_grace:
                reason = f"the relay has lagged our rev for {int(now - r.lag_since)} s"
        if stuck is not None:
            v.state, v.problem = "stuck", stuck
        elif reason is not None:
            v.state, v.problem = "healing", reason
            await self._crawl(r, reason, reannounce=probe.host_status == "unknown" or probe.repo_known is False,
                              resync=behind and probe.host_status == "active")
        elif behind:
            v.state, v.problem = "ok", f"behind our rev for {int(now - (r.lag_since or now))} s (within the grace)"
        else:
            v.state, v.problem = "ok", None
            r.warned.difference_update({"banned", "throttled", "repo"})

    def _cannot_heal(self, r: _Relay, probe: checks.RelayProbe, own: _Own) -> str | None:
        v = r.view
        if probe.host_status == "banned":
            self._warn(r, "banned", "relay %s has BANNED this host (%s): a crawl request cannot help; "
                       "contact the relay's operators", v.url, self.hostname)
            return "the relay has banned this host; contact its operators"
        if probe.host_status == "throttled":
            self._warn(r, "throttled", "relay %s throttles this host (%s): events may be delayed or dropped; "
                       "it lifts on the relay's side", v.url, self.hostname)
            return "the relay throttles this host"
        if probe.repo_active is False and own.status == "active" and probe.repo_status not in (None, "desynchronized"):
            self._warn(r, "repo", "relay %s reports our repo as %s while it is active here", v.url, probe.repo_status)
            return f"the relay reports our repo as {probe.repo_status}"
        return None

    def _warn(self, r: _Relay, key: str, msg: str, *args: Any) -> None:
        if key not in r.warned:  # once per episode, not once per round
            r.warned.add(key)
            log.warning(msg, *args)

    async def _crawl(self, r: _Relay, reason: str, reannounce: bool = False, resync: bool = False) -> bool:
        now = self.clock()
        if r.crawling or (r.last_crawl is not None and now - r.last_crawl < self.interval):
            return False  # one crawl request per relay per interval
        r.crawling, r.last_crawl = True, now
        v = r.view
        try:
            ok = await self.post(f"{v.url}/xrpc/com.atproto.sync.requestCrawl", {"hostname": self.hostname})
        except Exception as exc:  # noqa: BLE001
            log.info("requestCrawl to %s failed: %s", v.url, exc)
            ok = False
        finally:
            r.crawling = False
        v.crawl_requests += 1
        v.last_crawl_requested, v.last_crawl_reason = iso(self.wall()), reason + ("" if ok else " (refused or failed)")
        log.info("asked %s to crawl us: %s%s", v.url, reason, "" if ok else " (the request failed)")
        if ok and reannounce and self.reannounce is not None:
            try:  # a relay that (re)subscribes starts at our current seq: tell it who we are
                await self.reannounce()
            except Exception:
                log.exception("could not re-announce #identity/#account")
        if ok and resync:
            await self._resync()
        return ok

    async def _resync(self) -> None:
        """A #sync event (our current commit): a subscribed relay that missed commits catches up from it.
        At most one per interval, whatever the number of relays."""
        from ..repo.writes import iso_now
        from .sequencer import sync_event

        now = self.clock()
        if self._last_resync is not None and now - self._last_resync < self.interval:
            return
        self._last_resync = now
        try:
            seq = await self.db.awrite(lambda conn: sync_event(conn, iso_now()))
        except Exception:
            log.exception("could not emit #sync")
            return
        if self.firehose is not None and hasattr(self.firehose, "notify"):
            self.firehose.notify()
        log.info("emitted #sync at seq %s so a lagging relay can catch up", seq)

    def note_write(self) -> None:
        """After a durable event: if nobody is subscribed to our firehose, ask relays to crawl (rate-limited).
        Synchronous and cheap (a comparison per relay); the request itself runs in a task."""
        if (self._closed or self.interval <= 0 or not self.relays or self.firehose is None
                or self.firehose.subscriber_count > 0):
            return
        now = self.clock()
        for r in self.relays:
            if r.crawling or r.failures or (r.last_crawl is not None and now - r.last_crawl < self.interval):
                continue
            try:
                task = asyncio.get_running_loop().create_task(
                    self._crawl(r, "writes while no relay is subscribed to our firehose", reannounce=True))
            except RuntimeError:
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # ---- the AppView and our handle ---------------------------------------------------------
    async def _check_appview(self, own: _Own) -> None:
        a = self._report.appview
        assert a is not None
        if not self.appview_reachable or own.did is None or own.status == "offline-copy":
            a.state = "skipped"
            a.problem = ("not checked: no account yet" if own.did is None else
                         "not checked: offline copy" if own.status == "offline-copy" else
                         f"not checked: the AppView cannot reach a loopback server ({self.hostname})")
            return
        probe = await checks.probe_appview(a.url, own.did, own.latest_post, token_for=self._token_for(own.did),
                                           timeout=self.timeout)
        a.last_checked = iso(self.wall())
        a.latest_post = own.latest_post
        if not probe.reachable:
            a.state, a.problem, a.handle_valid, a.latest_post_indexed = "unreachable", probe.error, None, None
            return
        if not probe.known:
            a.state, a.handle_valid, a.handle_shown, a.latest_post_indexed = "problem", None, None, None
            a.problem = f"the AppView does not know our DID ({probe.error})"
            return
        a.handle_shown = probe.handle
        a.handle_valid = probe.handle is not None and probe.handle != "handle.invalid" and probe.handle == own.handle
        a.latest_post_indexed = probe.latest_post_indexed
        now = self.clock()
        if probe.latest_post_indexed is False:
            self._post_unseen_since = self._post_unseen_since if self._post_unseen_since is not None else now
        else:
            self._post_unseen_since = None
        problems = []
        if not a.handle_valid:
            problems.append("handle invalid at the AppView" if probe.handle in (None, "handle.invalid")
                            else f"the AppView shows handle {probe.handle}, not {own.handle}")
            await self._reannounce_identity()
        if self._post_unseen_since is not None and now - self._post_unseen_since >= self.lag_grace:
            problems.append(f"our latest post has not been indexed for {int(now - self._post_unseen_since)} s")
        a.state, a.problem = ("problem", "; ".join(problems)) if problems else ("ok", None)

    def _token_for(self, did: str) -> checks.TokenFor | None:
        """lxm -> a 60 s service-auth JWT from our signing key (iss our DID, aud the AppView's DID), as the proxy mints."""
        if self.token_for is not None or self.keys is None:
            return self.token_for

        async def mint(lxm: str) -> str | None:
            from ...core.jwt import create_service_auth

            try:
                key = await asyncio.to_thread(self.keys.get_key, did, "signing")
            except Exception:  # noqa: BLE001 - no key (offline copy): anonymous only
                return None
            return create_service_auth(did, self.settings.appview_did, lxm, key, int(self.wall()), exp_seconds=60)
        return mint

    async def _reannounce_identity(self) -> None:
        """The AppView re-checks a handle on an #identity event: send one now and then (rate-limited)."""
        now = self.clock()
        if self.reannounce is None or (self._last_reannounce is not None
                                       and now - self._last_reannounce < max(REANNOUNCE_EVERY, self.interval)):
            return
        self._last_reannounce = now
        try:
            await self.reannounce()
            log.info("the AppView shows our handle as invalid: re-announced #identity so it re-checks")
        except Exception:
            log.exception("could not re-announce #identity")

    async def _check_handle(self, own: _Own) -> None:
        if own.handle is None or own.did is None:
            self._report.handle = None
            return
        p = await checks.probe_handle(own.handle, own.did, dns_txt=self.dns_txt, well_known_url=self.well_known_url,
                                      timeout=min(self.timeout, 5.0))
        was_ok = self._report.handle is None or self._report.handle.ok
        self._report.handle = HandleHealth(p.handle, p.ok, p.dev, p.dns, p.well_known, p.reason, iso(self.wall()))
        if not p.ok and was_ok:  # once per episode
            log.warning("our handle %s does not resolve to %s: %s", p.handle, own.did, p.reason)
