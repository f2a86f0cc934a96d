"""The pure protocol core: values in, values out. No I/O, no asyncio, no SQLite.

Clock and randomness are injected by callers. Must not import tinypds.store,
tinypds.services, tinypds.xrpc or tinypds.app.
"""
