"""The HTTP/1.1 + websocket server for the one ASGI app, on asyncio streams: httptools
(llhttp, Node's parser) parses requests, wsproto speaks websocket, this package frames
answers, keeps the limits and runs the lifespan. It replaced uvicorn, whose package always
imports its command line and process supervisors (click, multiprocessing, logging.config:
~3.5 MB of a Pi's idle RSS). Imports httptools, wsproto and the standard library only.

Modules: server (listening, lifespan, graceful stop), http1 (one connection: parsing,
framing, keep-alive, proxy headers), websocket (loaded with the first websocket), limits.
"""

from __future__ import annotations

from . import limits
from .server import Server

__all__ = ["Server", "limits"]
