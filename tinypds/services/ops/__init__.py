"""Ops: a data directory as an operator sees it — the server lock, backup and restore,
`tinypds status` and `tinypds config check`.

May import any other service subpackage (it reports on all of them); nothing imports it
but the CLI and the app's startup lock.
"""
