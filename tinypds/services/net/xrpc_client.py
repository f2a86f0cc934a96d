"""A small async XRPC client for another PDS (httpx): sign in, keep the session fresh, call
methods, stream bodies in and out.

Used by the migration client. Tricky bits: the access token is refreshed BEFORE it
expires (a third of its lifetime ahead, at most two minutes), so a long blob copy never
runs into ExpiredToken mid-stream; a call that still meets ExpiredToken is refreshed
and retried once (bodies that are streams are not retried).
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import httpx

CHUNK = 256 * 1024


class MigrationError(Exception):
    """A step failed; the message names it. The old account is still usable unless it says otherwise."""


class RemoteError(MigrationError):
    def __init__(self, url: str, status: int, error: str, message: str):
        super().__init__(f"{url}: HTTP {status} {error}: {message}")
        self.status, self.error, self.remote_message = status, error, message


def _jwt_times(token: str) -> tuple[int, int]:
    """(iat, exp) of a JWT, unverified ((0, 0) if unreadable)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(claims.get("iat", 0)), int(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, AttributeError):
        return 0, 0


class XrpcClient:
    """One PDS. `session` holds accessJwt/refreshJwt/did/handle once signed in."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, transport: httpx.AsyncBaseTransport | None = None):
        import httpx  # on first use, as across services/: importing them never loads httpx

        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        self.session: dict | None = None

    async def aclose(self) -> None:
        await self.http.aclose()

    def _url(self, nsid: str) -> str:
        return f"/xrpc/{nsid}"

    async def _auth_headers(self) -> dict[str, str]:
        if self.session is None:
            return {}
        iat, exp = _jwt_times(self.session["accessJwt"])
        if exp - time.time() < min(120.0, max(exp - iat, 0) / 3):
            await self.refresh()
        return {"Authorization": f"Bearer {self.session['accessJwt']}"}

    async def refresh(self) -> None:
        resp = await self._send("POST", "com.atproto.server.refreshSession",
                                headers={"Authorization": f"Bearer {self.session['refreshJwt']}"})
        self.session = resp

    @staticmethod
    def _error(url: str, resp: httpx.Response, body: bytes) -> RemoteError:
        try:
            doc = json.loads(body)
            return RemoteError(url, resp.status_code, str(doc.get("error")), str(doc.get("message")))
        except (ValueError, AttributeError):
            return RemoteError(url, resp.status_code, "HTTP error", body[:200].decode("utf-8", "replace"))

    async def _send(self, method: str, nsid: str, **kw: Any) -> Any:
        import httpx  # already loaded by __init__

        url = self.base_url + self._url(nsid)
        try:
            resp = await self.http.request(method, self._url(nsid), **kw)
        except httpx.HTTPError as exc:
            raise MigrationError(f"{url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise self._error(url, resp, resp.content)
        if not resp.content or not resp.headers.get("content-type", "").startswith("application/json"):
            return None
        return resp.json()

    async def login(self, identifier: str, password: str) -> dict:
        self.session = None
        self.session = await self._send("POST", "com.atproto.server.createSession",
                                        json={"identifier": identifier, "password": password})
        return self.session

    async def call(self, method: str, nsid: str, *, auth: bool = True, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", None) or {})
        if auth:
            headers.update(await self._auth_headers())
        try:
            return await self._send(method, nsid, headers=headers, **kw)
        except RemoteError as exc:
            if not (auth and self.session and exc.error == "ExpiredToken" and "content" not in kw):
                raise
        await self.refresh()
        headers.update(await self._auth_headers())
        return await self._send(method, nsid, headers=headers, **kw)

    async def get(self, nsid: str, **params: Any) -> Any:
        return await self.call("GET", nsid, params={k: v for k, v in params.items() if v is not None})

    async def post(self, nsid: str, body: Any = None, **kw: Any) -> Any:
        return await self.call("POST", nsid, json=body, **kw) if body is not None else await self.call("POST", nsid, **kw)

    async def download(self, nsid: str, params: dict, out: Any, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
        """Stream a GET body into the binary file `out`; returns (bytes, content type)."""
        import httpx  # already loaded by __init__

        url = self.base_url + self._url(nsid)
        total = 0
        try:
            async with self.http.stream("GET", self._url(nsid), params=params, headers=await self._auth_headers()) as resp:
                if resp.status_code >= 400:
                    raise self._error(url, resp, await resp.aread())
                async for chunk in resp.aiter_bytes(CHUNK):
                    out.write(chunk)
                    total += len(chunk)
                    if progress:
                        progress(len(chunk))
                expected = resp.headers.get("content-length")
                if expected is not None and int(expected) != total:
                    raise MigrationError(f"{url}: connection ended after {total} of {expected} bytes")
                return total, resp.headers.get("content-type", "application/octet-stream")
        except httpx.HTTPError as exc:
            raise MigrationError(f"{url}: {type(exc).__name__} after {total} bytes: {exc}") from None
