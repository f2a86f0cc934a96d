"""Wiring for everything the PDS does for relays: seq guard, firehose, crawler, write budget, sync reads.

No HTTP types. `open_relay_services(settings, db)` runs at startup inside the app lifespan
(an event loop is running): it guards seq against a restored backup (emitting #sync), starts
the firehose outbox and asks the relays to crawl us; it returns them as a typed
`RelayServices`. Tricky bit: the guard runs BEFORE the
firehose reads its head, so the head already includes the jump.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from .crawl import Crawler
from .firehose import Firehose
from .health import HealthWatcher
from .ratelimit import WriteRateLimiter
from ..repo.writes import iso_now
from .sequencer import SeqKeeper, identity_and_account_events
from .reads import SyncService

log = logging.getLogger("tinypds.relay")


class RelayServices(NamedTuple):
    seq: SeqKeeper
    firehose: Firehose
    crawler: Crawler
    ratelimit: WriteRateLimiter
    sync: SyncService
    health: HealthWatcher


async def open_relay_services(settings: Any, db: Any, keys: Any = None) -> RelayServices:
    """The seq guard, firehose, crawler, write budget, sync reads and the network-health watcher:
    started and ready. `keys` lets the watcher sign service auth for an AppView that wants it."""
    keeper = SeqKeeper(db, settings.data_dir)
    guard = await asyncio.to_thread(keeper.guard)
    max_lag = max(1, int(settings.firehose_max_lag))
    firehose = Firehose(db, retention_hours=settings.event_retention_hours, on_head=keeper.observe,
                        max_lag=max_lag, ring_size=max(2048, 2 * max_lag),
                        send_stall_seconds=settings.client_stall_seconds)
    await firehose.start()

    async def reannounce() -> None:
        await db.awrite(lambda conn: identity_and_account_events(conn, iso_now()))
        firehose.notify()

    crawler = Crawler(settings, on_first_success=reannounce)
    crawler.start()
    health = HealthWatcher(settings, db, firehose=firehose, reannounce=reannounce, keys=keys)
    health.start()  # first round after min(interval, 60 s); TINYPDS_HEALTH_INTERVAL=0 turns it off
    if guard.restored:
        log.warning("restored database detected: #sync emitted at seq %d and a crawl requested", guard.last_seq)
    return RelayServices(keeper, firehose, crawler, WriteRateLimiter.from_settings(settings), SyncService(db), health)

