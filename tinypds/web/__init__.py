"""The HTTP toolkit under the XRPC handlers: a small ASGI app with exact-path routing,
requests, responses, streams, websockets, CORS and lifespan — what tinypds needs from a web
framework and nothing more (it replaced Litestar to keep a Pi's idle RSS small: see
docs/BENCHMARKS.md). Imports msgspec and tinypds.errors only; never services or store. Modules: connection
(Request, WebSocket), responses (Response, Stream, Cookie), app (routes, App, CORS).

Tricky bits: request bodies are only ever read as a stream with a byte cap; a streamed
response watches for the client leaving and stops producing; an exception after a response
has started cannot become an error document, so the connection is dropped instead.
"""

from __future__ import annotations

from .app import CORS, App, Route, get, post, route, websocket
from .connection import (ASGIApp, ClientDisconnected, Headers, QueryParams, Request, WebSocket,
                         WebSocketDisconnect)
from .responses import Cookie, Response, Stream

__all__ = ["ASGIApp", "App", "CORS", "ClientDisconnected", "Cookie", "Headers", "QueryParams", "Request", "Response",
           "Route", "Stream", "WebSocket", "WebSocketDisconnect", "get", "post", "route", "websocket"]
