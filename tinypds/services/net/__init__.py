"""Net: outgoing HTTP for the services — a connection backend that only reaches public
addresses (SSRF safety) and a small XRPC client for another PDS.

May import core, config and errors only.
"""
