"""Repo: the account's repository — writes under one lock (commit, sign, persist with the
firehose event in one transaction), records (validation, swaps, rkeys), CAR import and
deep verification, streamed export, and blobs (streamed in and out, collected when
unreferenced); long streams run on their own bounded thread pool.

May import core, store, config and errors only: it is the bottom of the service
subpackages (the signing key is handed to it).
"""
