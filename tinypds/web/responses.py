"""Responses: a whole body (bytes, text or JSON), a stream of chunks, cookies.

Tricky bits: a streamed response watches for the client leaving and stops producing; an
exception after the start line cannot become an error document, so the response is left
incomplete (the server drops the connection): quietly for the types in `abort_on` and for a
client that left, logged otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterable

import msgspec

from .connection import Receive, Scope, Send

log = logging.getLogger("tinypds.web")

_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Cookie:
    key: str
    value: str
    path: str = "/"
    max_age: int | None = None
    httponly: bool = False
    secure: bool = False
    samesite: str = "lax"

    def header(self) -> str:
        parts = [f"{self.key}={self.value}", f"Path={self.path}", f"SameSite={self.samesite.capitalize()}"]
        if self.max_age is not None:
            parts.append(f"Max-Age={self.max_age}")
        if self.httponly:
            parts.append("HttpOnly")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _media(media_type: str) -> str:
    if media_type.startswith("text/") and "charset" not in media_type:
        return media_type + "; charset=utf-8"
    return media_type


class Response:
    """A whole-body response. `content`: bytes, str, a JSON-able dict/list, or None (empty)."""

    __slots__ = ("status_code", "body", "media_type", "headers", "cookies")

    def __init__(self, content: Any = None, status_code: int = 200, headers: dict[str, str] | None = None,
                 media_type: str | None = None, cookies: Iterable[Cookie] | None = None):
        if content is None:
            body = b""
        elif isinstance(content, bytes):
            body = content
        elif isinstance(content, str):
            body = content.encode("utf-8")
            media_type = media_type or "text/plain"
        else:
            body = _json.encode(content)
            media_type = media_type or "application/json"
        self.status_code = status_code
        self.body = body
        self.media_type = media_type
        self.headers = dict(headers or {})
        self.cookies = list(cookies or ())

    def raw_headers(self, length: int | None) -> list[tuple[bytes, bytes]]:
        out = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in self.headers.items()]
        names = {k for k, _ in out}
        if self.media_type and b"content-type" not in names:
            out.append((b"content-type", _media(self.media_type).encode("latin-1")))
        if length is not None and b"content-length" not in names:
            out.append((b"content-length", b"%d" % length))
        out.extend((b"set-cookie", c.header().encode("latin-1")) for c in self.cookies)
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers(len(self.body))})
        await send({"type": "http.response.body", "body": self.body})


class Stream(Response):
    """A streamed response from an async iterator of byte chunks. Production stops when the
    client leaves. An exception after the start line drops the connection (the body is then
    visibly incomplete); types in `abort_on` do so quietly, others are logged."""

    __slots__ = ("chunks", "abort_on")

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200, headers: dict[str, str] | None = None,
                 media_type: str | None = None, abort_on: tuple[type[BaseException], ...] = ()):
        super().__init__(None, status_code, headers, media_type or "application/octet-stream")
        self.chunks = chunks
        self.abort_on = abort_on

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        left = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers(None)})
            async for chunk in self.chunks:
                if left.done():
                    return  # nobody is listening any more
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except self.abort_on:
            log.info("stream aborted mid-body: %s", scope.get("path"))
        except OSError:
            log.info("client left mid-stream: %s", scope.get("path"))
        except Exception:
            log.exception("stream failed mid-body: %s", scope.get("path"))
        finally:
            left.cancel()
            await asyncio.gather(left, return_exceptions=True)  # its pending receive() is gone before we return
            closer = getattr(self.chunks, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
