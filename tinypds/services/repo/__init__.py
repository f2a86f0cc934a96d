"""Repo: the account's repository — writes under one lock (commit, sign, persist with the
firehose event in one transaction), records (validation, swaps, rkeys), CAR import and
deep verification, streamed export, and blobs (streamed in and out, collected when
unreferenced); long streams run on their own bounded thread pool.

May import core, store, config, errors and the identity subpackage (the signing key); never
auth, sync, migration, proxy, xrpc or app.
"""
