"""Wiring for everything the PDS does for relays: seq guard, firehose, crawler, write budget, sync reads.

No HTTP types. `open_relay_services(settings, db)` runs at startup inside the app lifespan
(an event loop is running): it guards seq against a restored backup (emitting #sync), starts
the firehose outbox and asks the relays to crawl us. `after_event(services)` is what the
write paths call once something durable happened. Tricky bit: the guard runs BEFORE the
firehose reads its head, so the head already includes the jump.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .crawl import Crawler
from .firehose import Firehose
from .ratelimit import WriteRateLimiter
from .repo import iso_now
from .sequencer import SeqKeeper, identity_and_account_events
from .sync import SyncService

log = logging.getLogger("tinypds.relay")


async def open_relay_services(settings: Any, db: Any) -> dict[str, Any]:
    """{seq, firehose, crawler, ratelimit, sync}: started and ready."""
    keeper = SeqKeeper(db, settings.data_dir)
    guard = await asyncio.to_thread(keeper.guard)
    max_lag = max(1, int(settings.firehose_max_lag))
    firehose = Firehose(db, retention_hours=settings.event_retention_hours, on_head=keeper.observe,
                        max_lag=max_lag, ring_size=max(2048, 2 * max_lag))
    await firehose.start()

    async def reannounce() -> None:
        await db.awrite(lambda conn: identity_and_account_events(conn, iso_now()))
        firehose.notify()

    crawler = Crawler(settings, on_first_success=reannounce)
    crawler.start()
    if guard.restored:
        log.warning("restored database detected: #sync emitted at seq %d and a crawl requested", guard.last_seq)
    return {
        "seq": keeper,
        "firehose": firehose,
        "crawler": crawler,
        "ratelimit": WriteRateLimiter.from_settings(settings),
        "sync": SyncService(db),
    }


def after_event(extra: dict[str, Any]) -> None:
    """Something durable was written (a commit, an identity or account change)."""
    firehose = extra.get("firehose")
    if firehose is not None:
        firehose.notify()
    crawler = extra.get("crawler")
    if crawler is not None:
        crawler.notify_write()
