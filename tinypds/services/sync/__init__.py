"""Sync: what the PDS does for relays and AppViews — the event sequence (never backwards),
the firehose outbox, sync reads (getRepo since, record proofs, blocks), crawl requests, the
relay-safe write budget, the network-health watcher and its metrics.

May import core, store, config, errors and the identity and proxy services (service auth for
AppView checks); never auth, repo writes, migration, xrpc or app.
"""
