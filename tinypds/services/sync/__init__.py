"""Sync: what the PDS does for relays and AppViews — the event sequence (never backwards),
the firehose outbox, sync reads (getRepo since, record proofs, blocks), crawl requests, the
relay-safe write budget, the network-health watcher and its metrics.

May import core, store, config, errors and the repo subpackage (the stream pool, the clock);
the AppView checks sign their service-auth tokens through a key store handed to them.
"""
