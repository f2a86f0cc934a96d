"""The firehose outbox (com.atproto.sync.subscribeRepos): cursor replay, then live, per subscriber.

No HTTP types, no SQL (store.events). Every frame a subscriber gets comes from the durable
event log in seq order; subscribers only keep their position (`last` seq), so the
backfill-to-live cutover cannot lose or repeat an event: a subscriber reads pages from
SQLite while it is behind the shared in-memory ring of recent frames, and from the ring once
its position is inside it. The hub fills the ring by reading the log after its head whenever
`notify()` is called (the repo listener) or the safety poll sees a higher seq, so events
written by any path reach subscribers. Tricky bits: a subscriber that has been live and falls
more than `max_lag` frames behind is cancelled with a `ConsumerTooSlow` error frame (its
stuck send never delays others, and memory is the shared ring, not per subscriber); pruning
only touches SQLite, and live subscribers read the ring, so it never breaks the live stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from ...core import events as events_core
from ...store import events as events_db

log = logging.getLogger("tinypds.firehose")

Send = Callable[[bytes], Awaitable[None]]

PAGE = 500  # events per SQLite backfill page
PAGE_BYTES = 1 << 20  # ... and at most about this many bytes of frames (a replaying subscriber holds one page)
SEND_STALL_SECONDS = 30.0  # a subscriber that takes no frame for this long is ConsumerTooSlow (replay or live)
RING = 2048  # recent frames kept in memory (shared by every subscriber)
MAX_LAG = 1000  # frames a live subscriber may fall behind before ConsumerTooSlow
POLL_SECONDS = 1.0  # safety poll for events written without notify()
PRUNE_SECONDS = 600.0
ERROR_SEND_SECONDS = 10.0  # how long a stuck consumer gets to take its error frame


def iso_time(epoch: float) -> str:
    t = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _frames_after(conn: Any, cursor: int, limit: int, max_bytes: int | None = None
                  ) -> tuple[int | None, list[tuple[int, bytes]]]:
    """(oldest kept seq, framed events after cursor) from one read snapshot."""
    first = events_db.first_seq(conn)
    rows = events_db.events_after(conn, cursor, limit, max_bytes)
    return first, [(r.seq, events_core.frame(r.seq, r.type, r.body)) for r in rows]


class FirehoseClosed(Exception):
    """The firehose is shutting down."""


@dataclass(eq=False)
class Subscriber:
    last: int  # seq of the last frame handed to this subscriber
    live: bool = False  # has caught up with the head at least once
    reason: str | None = None  # why it was stopped (ConsumerTooSlow, ...)
    sent: int = 0
    _pump: asyncio.Task | None = field(default=None, repr=False)

    def kill(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            if self._pump is not None:
                self._pump.cancel()


class Firehose:
    """The outbox. `start()` from the app lifespan, `aclose()` at shutdown; `serve()` per websocket."""

    def __init__(self, db: Any, *, retention_hours: float = 72, max_lag: int = MAX_LAG, ring_size: int = RING,
                 page_size: int = PAGE, poll_seconds: float = POLL_SECONDS, prune_seconds: float = PRUNE_SECONDS,
                 clock: Callable[[], float] = time.time, on_head: Callable[[int], None] | None = None,
                 head_record_seconds: float = 5.0, send_stall_seconds: float = SEND_STALL_SECONDS):
        if max_lag >= ring_size:
            raise ValueError("max_lag must be smaller than ring_size (a live subscriber must stay inside the ring)")
        self.db = db
        self.retention_seconds = retention_hours * 3600
        self.max_lag = max_lag
        self.ring_size = ring_size
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.prune_seconds = prune_seconds
        self.clock = clock
        self.on_head = on_head  # blocking hook (SeqKeeper.observe), run on a thread now and then
        self.head_record_seconds = head_record_seconds
        self.send_stall_seconds = send_stall_seconds
        self.head = 0  # highest seq known durable
        self._ring: list[tuple[int, bytes]] = []
        self._ring_base = 0  # the ring holds every event with _ring_base < seq <= head
        self._wake = asyncio.Event()
        self._subs: set[Subscriber] = set()
        self._dirty = False
        self._fetcher: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self.published = 0

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self, background: bool = True) -> None:
        self.head = await self.db.aread(events_db.last_seq)
        self._ring_base = self.head
        if background:
            self._tasks = [asyncio.create_task(self._poll_forever()), asyncio.create_task(self._prune_forever())]

    async def aclose(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.kill("Shutdown")
        for task in [*self._tasks, self._fetcher]:
            if task is not None and not task.done():
                task.cancel()
        self._wake.set()
        if self.on_head is not None:
            try:
                last = await self.db.aread(events_db.last_seq)
                await asyncio.to_thread(self.on_head, last)
            except Exception:
                log.exception("could not record the final seq")

    async def going_away(self) -> None:
        """Server shutdown is starting: every subscriber is stopped with reason "GoingAway"
        (its websocket is closed with 1001, which consumers answer by reconnecting later)."""
        subs = list(self._subs)
        for sub in subs:
            sub.kill("GoingAway")
        for _ in range(50):  # up to ~1 s for the handlers to send their close frames
            if not self._subs:
                break
            await asyncio.sleep(0.02)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    # ---- the hub -----------------------------------------------------------------------
    def notify(self, *_args: Any) -> None:
        """New events may be in the log (usable as a RepoService listener: fn(seq, commit))."""
        if self._closed:
            return
        self._dirty = True
        if self._fetcher is None or self._fetcher.done():
            try:
                self._fetcher = asyncio.get_running_loop().create_task(self._fetch())
            except RuntimeError:  # no loop (CLI): the next poll picks it up
                pass

    async def _fetch(self) -> None:
        try:
            await self._fetch_new()
        except Exception:  # the next notify or poll retries
            log.exception("firehose could not read new events")

    async def _fetch_new(self) -> None:
        while self._dirty and not self._closed:
            self._dirty = False
            while True:
                _first, frames = await self.db.aread(lambda c, h=self.head: _frames_after(c, h, self.page_size))
                frames = [f for f in frames if f[0] > self.head]  # a concurrent fetch may have published them
                if frames:
                    self._publish(frames)
                if len(frames) < self.page_size:
                    break

    def _publish(self, frames: list[tuple[int, bytes]]) -> None:
        self._ring.extend(frames)
        self.head = frames[-1][0]
        self.published += len(frames)
        if len(self._ring) > 2 * self.ring_size:  # trim in chunks: amortised O(1)
            cut = len(self._ring) - self.ring_size
            self._ring_base = self._ring[cut - 1][0]
            del self._ring[:cut]
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()
        for sub in list(self._subs):
            if sub.live and sub.reason is None and self._pending(sub.last) > self.max_lag:
                log.info("firehose consumer too slow (%d frames behind); closing it", self._pending(sub.last))
                sub.kill("ConsumerTooSlow")

    def _pending(self, last: int) -> int:
        if last < self._ring_base:
            return len(self._ring) + (self._ring[0][0] - last if self._ring else 1)
        return len(self._ring) - bisect_right(self._ring, last, key=lambda f: f[0])

    def _ring_after(self, last: int) -> list[tuple[int, bytes]] | None:
        if last < self._ring_base:
            return None
        i = bisect_right(self._ring, last, key=lambda f: f[0])
        return self._ring[i : i + self.page_size]

    async def _poll_forever(self) -> None:
        recorded_at = 0.0
        while not self._closed:
            await asyncio.sleep(self.poll_seconds)
            try:
                if self.db.read(events_db.last_seq) > self.head:  # one indexed point read
                    self.notify()
                if self.on_head is not None and time.monotonic() - recorded_at >= self.head_record_seconds:
                    recorded_at = time.monotonic()
                    await asyncio.to_thread(self.on_head, self.head)
            except Exception:
                log.exception("firehose poll failed")

    # ---- retention ---------------------------------------------------------------------
    async def prune(self, now: float | None = None) -> int:
        """Delete events older than the retention window (live subscribers read the ring)."""
        before = iso_time((self.clock() if now is None else now) - self.retention_seconds)
        removed = await self.db.awrite(lambda c: events_db.prune_events(c, before))
        if removed:
            log.info("pruned %d firehose event(s) older than %s", removed, before)
        return removed

    async def _prune_forever(self) -> None:
        while not self._closed:
            try:
                await self.prune()
            except Exception:
                log.exception("firehose prune failed")
            await asyncio.sleep(self.prune_seconds)

    # ---- subscribers -------------------------------------------------------------------
    async def open_cursor(self, cursor: int | None) -> tuple[Subscriber, bytes | None]:
        """A subscriber positioned at `cursor` and the #info frame to send first (if any).

        Raises errors.FutureCursor (the caller sends it as an error frame) for a cursor
        past the newest seq; a cursor older than the oldest kept event gets OutdatedCursor.
        """
        from ...errors import FutureCursor, InvalidRequest

        if self._closed:
            raise FirehoseClosed()
        if cursor is None:  # live only: from the newest durable event, even if not fetched yet
            return Subscriber(last=max(self.head, await self.db.aread(events_db.last_seq))), None
        if cursor < 0:
            raise InvalidRequest("cursor must not be negative")
        newest = await self.db.aread(events_db.last_seq)
        if cursor > max(newest, self.head):
            raise FutureCursor("Cursor in the future.")
        first = await self.db.aread(events_db.first_seq)
        oldest_kept = first - 1 if first is not None else newest  # everything up to here was pruned
        if cursor < oldest_kept:
            return Subscriber(last=oldest_kept), events_core.info_frame(
                "OutdatedCursor", "Requested cursor exceeded limit. Possibly missing events")
        return Subscriber(last=cursor), None

    async def serve(self, send: Send, cursor: int | None = None, sub: Subscriber | None = None) -> str | None:
        """Stream frames to `send` until the consumer goes away or is stopped.

        Returns None when `send` raised (consumer gone) or the reason it was stopped
        (after trying to send the matching error frame). FutureCursor etc. are sent here too.
        """
        from ...errors import XrpcError

        if sub is None:
            try:
                sub, info = await self.open_cursor(cursor)
            except XrpcError as exc:
                await send(events_core.error_frame(exc.error, exc.message))
                return exc.error
            except FirehoseClosed:
                return "Shutdown"
            if info is not None:
                await send(info)
        self._subs.add(sub)
        sub._pump = asyncio.create_task(self._run(sub, send))
        sub._pump.add_done_callback(_retrieve)  # a pump that failed after its caller left is not an error
        try:
            await asyncio.shield(sub._pump)
        except asyncio.CancelledError:
            if sub.reason is None:  # our caller was cancelled (consumer disconnected)
                sub._pump.cancel()
                raise
        except Exception as exc:  # send failed: the consumer is gone
            log.debug("firehose subscriber ended: %r", exc)
            return None
        finally:
            self._subs.discard(sub)
        if sub.reason is not None and sub.reason not in ("Shutdown", "GoingAway"):
            try:
                await asyncio.wait_for(send(events_core.error_frame(sub.reason, _MESSAGES.get(sub.reason))), ERROR_SEND_SECONDS)
            except (asyncio.TimeoutError, Exception):
                pass
        return sub.reason

    async def _run(self, sub: Subscriber, send: Send) -> None:
        while not self._closed:
            if sub.last >= self.head:
                sub.live = True
                wake = self._wake
                if sub.last >= self.head:
                    await wake.wait()
                continue
            frames = self._ring_after(sub.last)
            if frames is None:
                frames = await self._backfill_page(sub, send)
            for seq, data in frames:
                try:
                    await asyncio.wait_for(send(data), self.send_stall_seconds)
                except asyncio.TimeoutError:  # stalled, replaying or live: memory stays one page
                    sub.kill("ConsumerTooSlow")
                    return
                sub.last = seq
                sub.sent += 1

    async def _backfill_page(self, sub: Subscriber, send: Send) -> list[tuple[int, bytes]]:
        head = self.head
        first, frames = await self.db.aread(lambda c: _frames_after(c, sub.last, self.page_size, PAGE_BYTES))
        if first is not None and sub.last < first - 1 and sub.sent:  # pruned under a slow backfill
            await send(events_core.info_frame("OutdatedCursor", "Events were pruned while replaying; skipping ahead"))
        if not frames:  # nothing stored up to the head we saw: the seq jumped (restore) or was pruned
            sub.last = max(sub.last, head)
        return frames


_MESSAGES = {"ConsumerTooSlow": "Stream consumer too slow"}


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
