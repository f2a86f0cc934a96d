"""Async orchestration over store and core; no HTTP types. Must not import xrpc, app or cli."""
