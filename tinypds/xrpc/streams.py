"""Streamed answers (CAR exports, blobs, proxied bodies) with a write-stall deadline.

Owns `Stream`, Litestar's streaming response with three guarantees Litestar's own lacks:
a client that accepts no bytes for client_stall_seconds is dropped; production stops as
soon as the client leaves; and the chunk iterator is always closed (aclose), so an export's
worker thread and SQLite read snapshot are released at once. Imports Litestar only.
Tricky bits: an exception after the status line cannot become an error document, so the
connection is dropped (the body is visibly incomplete): quietly for the types in
`abort_on` and for clients that left or stalled, logged otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

from litestar.response import Stream as _LitestarStream

log = logging.getLogger("tinypds.stream")

WRITE_STALL_SECONDS = 30.0  # a client that takes no bytes for this long is dropped (settings.client_stall_seconds)
HEAD_KEY = "tinypds.head"  # set in the scope of a HEAD request served by its GET route (http_serve)
INCOMPLETE = "ASGI callable returned without completing response."  # uvicorn's words for a dropped body


class Stream(_LitestarStream):
    """A streamed response from an async iterator of byte chunks."""

    def __init__(self, chunks: AsyncIterator[bytes], *, status_code: int = 200, headers: dict[str, str] | None = None,
                 media_type: str = "application/octet-stream", abort_on: tuple[type[BaseException], ...] = ()):
        super().__init__(chunks, status_code=status_code, headers=headers, media_type=media_type)
        self.chunks = chunks
        self.abort_on = abort_on

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        base = super().to_asgi_response(*args, **kwargs)
        return _Guarded(base, self.chunks, self.abort_on)


class _Guarded:
    """The ASGI side: Litestar's start line and headers, then our guarded body loop."""

    def __init__(self, base: Any, chunks: AsyncIterator[bytes], abort_on: tuple[type[BaseException], ...]):
        self.base, self.chunks, self.abort_on = base, chunks, abort_on

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        left = asyncio.ensure_future(_wait_disconnect(receive))
        path = scope.get("path")
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        stall = float(getattr(settings, "client_stall_seconds", WRITE_STALL_SECONDS))
        try:
            await self.base.start_response(send=send)
            if self.base.is_head_response or scope.get(HEAD_KEY):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async for chunk in self.chunks:
                if left.done():
                    return  # nobody is listening any more
                if chunk:
                    await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": True}),
                                           stall)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.TimeoutError:
            log.warning("dropped a client that accepted no bytes for %.0f s: %s", stall, path)
        except self.abort_on:
            log.info("stream aborted mid-body: %s", path)
        except OSError:
            log.info("client left mid-stream: %s", path)
        except Exception:
            log.exception("stream failed mid-body: %s", path)
        finally:
            left.cancel()
            await asyncio.gather(left, return_exceptions=True)
            closer = getattr(self.chunks, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class QuietIncomplete:
    """A logging filter for uvicorn's error logger: a body we dropped on purpose (stalled or
    failed client, logged by us above) is not a second ERROR line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != INCOMPLETE
