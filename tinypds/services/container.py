"""AppServices: every service the handlers use, typed and built in one place (open_services).

Services layer: imports services and store factories, never xrpc, app or cli. The lifespan
(app.py) opens it and keeps it on `app.state.services`; handlers reach it through
`xrpc.routing.services(request)`. Tricky bits: oauth, proxy, preferences and migration are
built by their handler modules on first use (an idle server never imports them); the
per-account services are rebuilt by `attach_account()` whenever the account row changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Settings

if TYPE_CHECKING:  # the services are imported when the lifespan opens them
    from .identity.create import AccountRow
    from .auth.service import AuthService
    from .repo.blobs import BlobService
    from .sync.crawl import Crawler
    from .sync.firehose import Firehose
    from .sync.health import HealthWatcher
    from .identity.keys import KeyStore
    from .identity.local import LocalIdentity
    from .migration.service import MigrationService
    from .auth.oauth.server import OAuthService
    from .account.preferences import PreferencesService
    from .proxy.service import ProxyService
    from .sync.ratelimit import WriteRateLimiter
    from .repo.records import RecordService
    from .repo.writes import RepoService
    from .sync.sequencer import SeqKeeper
    from .sync.reads import SyncService
    from ..store.db import Database

log = logging.getLogger("tinypds.services")


@dataclass(eq=False)
class AppServices:
    """What handlers reach through `request.app.state.services`; None = not available (yet).

    Built in one place (`open_services`); oauth, proxy, preferences and migration are built
    by their handler modules on first use (an idle server never imports them)."""

    settings: Settings
    db: "Database | None" = None
    keys: "KeyStore | None" = None
    identity: "LocalIdentity | None" = None
    auth: "AuthService | None" = None
    blobs: "BlobService | None" = None
    account: "AccountRow | None" = None
    repo: "RepoService | None" = None
    records: "RecordService | None" = None
    seq: "SeqKeeper | None" = None
    firehose: "Firehose | None" = None
    crawler: "Crawler | None" = None
    ratelimit: "WriteRateLimiter | None" = None
    sync: "SyncService | None" = None
    oauth: "OAuthService | None" = None
    proxy: "ProxyService | None" = None
    preferences: "PreferencesService | None" = None
    migration: "MigrationService | None" = None
    health: "HealthWatcher | None" = None  # relays, AppView and handle, watched (services/health.py)

    def attach_account(self) -> None:
        """(Re)build the per-account services once the database holds an account
        (after createAccount, an import or a status change)."""
        attach_account(self)

    def notify_event(self, *_args: Any) -> None:
        """Something durable was written: firehose subscribers and relays hear of it."""
        if self.firehose is not None:
            self.firehose.notify()
        if self.crawler is not None:
            self.crawler.notify_write()
        if self.health is not None:
            self.health.note_write()  # nobody subscribed to the firehose: ask relays to crawl (rate-limited)

    def closables(self) -> list[Any]:
        return [self.auth, self.repo, self.identity, self.blobs, self.seq, self.firehose, self.crawler, self.ratelimit,
                self.sync, self.oauth, self.proxy, self.preferences, self.migration, self.health]


async def open_services(settings: Settings) -> AppServices:
    """Open the database (migrating it), the key store and the services built on them."""
    from .auth.service import AuthService, load_jwt_secret
    from .repo.blobs import BlobService
    from .identity.keys import KeyStore
    from .identity.local import build_local_identity
    from .sync.relay import open_relay_services
    from ..store.db import Database

    svc = AppServices(settings=settings)
    svc.db = await asyncio.to_thread(Database.open, settings.db_path)
    try:
        svc.keys = await asyncio.to_thread(KeyStore.open, settings)
        svc.identity = build_local_identity(settings, svc.db, svc.keys, on_event=svc.notify_event)
        await asyncio.to_thread(svc.identity.check_keys)  # missing keys: fail now, naming the fix
        secret = await asyncio.to_thread(load_jwt_secret, svc.keys, settings.service_did)
        svc.auth = AuthService(
            svc.db,
            service_did=settings.service_did,
            jwt_secret=secret,
            access_ttl=settings.access_token_seconds,
            refresh_ttl=settings.refresh_token_seconds,
        )
        from .auth.twofactor import TwoFactorService, rp_from_public_url  # nacl only; pyotp/webauthn load on first use

        rp_id, origin = rp_from_public_url(settings.public_url)
        svc.auth.twofactor = TwoFactorService(svc.db, svc.keys, seal_did=settings.service_did, rp_id=rp_id, origin=origin)
        svc.blobs = BlobService(svc.db, settings)
        await svc.blobs.start()  # startup blob GC, then a periodic GC task (stopped by aclose)
        attach_account(svc)
        relay = await open_relay_services(settings, svc.db, keys=svc.keys)  # seq guard, firehose, crawler, write budget
        svc.seq, svc.firehose, svc.crawler = relay.seq, relay.firehose, relay.crawler
        svc.ratelimit, svc.sync, svc.health = relay.ratelimit, relay.sync, relay.health
    except BaseException:
        await close_services(svc)
        raise
    return svc


def attach_account(svc: AppServices) -> None:
    """(Re)build the per-account services once the database holds an account."""
    from .identity.create import get_account
    from .repo.records import RecordService
    from .repo.writes import RepoService

    row = get_account(svc.db)
    svc.account = row
    if row is None:
        svc.repo = svc.records = None
        return
    if row.status == "offline-copy":  # imported without keys: reads only, no key lookups
        from .repo.writes import read_only_signer
        svc.repo = RepoService(svc.db, row.did, read_only_signer(row.did))
    else:
        svc.repo = RepoService.from_keystore(svc.db, row.did, svc.keys)
    svc.repo.add_listener(svc.notify_event)
    svc.records = RecordService(svc.repo, blobs=svc.blobs)


async def close_services(svc: AppServices) -> None:
    for obj in svc.closables():
        closer = getattr(obj, "aclose", None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                log.exception("closing %s failed", type(obj).__name__)
    if svc.db is not None:
        await asyncio.to_thread(svc.db.close)
