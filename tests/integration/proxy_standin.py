"""A stand-in AppView / chat service on 127.0.0.1 for the proxy tests (not a test module).

A plain ASGI app under uvicorn in a background thread. It serves its own did:web document
(did:web:localhost%3APORT, services #bsky_appview, #bsky_chat, #my_appview and any extra
ones) and answers /xrpc/<nsid> only after VERIFYING the service-auth JWT independently of
tinypds: the atproto SDK parses the issuer's DID document (fetched over HTTP) and checks
the ES256K signature and exp; the stand-in then checks aud (its own DID), lxm (the method
called), a short lifetime and a never-seen jti. It echoes what it received as JSON.

Methods (any namespace): *.big?size=N streams N bytes; *.cut drops the connection mid-body; *.fail?status=S answers an XRPC
error; *.notjson answers 503 text/html; *.gzip answers gzip-encoded JSON; *.slow?delay=S
sleeps before answering; anything else echoes.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn
from atproto_core.did_doc import DidDocument
from atproto_identity.did.atproto_data import ensure_atproto_key
from atproto_server.auth.jwt import verify_jwt_async

CHUNK = 64 * 1024


class StandIn:
    """One stand-in service. `.url`, `.did`, `.received` (echo dicts), `.failures` (strings)."""

    def __init__(self, name: str, extra_services: dict[str, str] | None = None):
        self.name = name
        self.extra_services = dict(extra_services or {})
        self.received: list[dict] = []
        self.failures: list[str] = []
        self.seen_jti: set[str] = set()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._keys: dict[str, str] = {}

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def did(self) -> str:
        return f"did:web:localhost%3A{self.port}"

    def start(self) -> "StandIn":
        config = uvicorn.Config(self, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"standin-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"stand-in {self.name} did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def did_doc(self) -> dict:
        services = {"bsky_appview": self.url, "bsky_chat": self.url, "my_appview": self.url, **self.extra_services}
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": self.did,
            "service": [
                {"id": f"#{sid}", "type": "TestService", "serviceEndpoint": url} for sid, url in services.items()
            ],
        }

    # ---- JWT verification (independent of tinypds) ----------------------------------
    async def _signing_key(self, iss: str, force_refresh: bool) -> str:
        did = iss.split("#", 1)[0]
        if force_refresh or did not in self._keys:
            host = did[len("did:web:"):].replace("%3A", ":")
            async with httpx.AsyncClient(timeout=10) as client:
                doc = (await client.get(f"http://{host}/.well-known/did.json")).json()
            self._keys[did] = ensure_atproto_key(DidDocument.from_dict(doc))
        return self._keys[did]

    async def _verify(self, headers: dict[str, str], nsid: str) -> dict:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise ValueError("no bearer token")
        payload = await verify_jwt_async(auth[len("Bearer "):], self._signing_key)
        claims = payload.model_dump()
        claims.update(payload.model_extra or {})
        if claims.get("aud") != self.did:
            raise ValueError(f"aud {claims.get('aud')!r} is not {self.did}")
        if claims.get("lxm") != nsid:
            raise ValueError(f"lxm {claims.get('lxm')!r} is not {nsid}")
        if not isinstance(claims.get("iat"), int) or not 0 < claims["exp"] - claims["iat"] <= 60:
            raise ValueError("token lifetime is not short")
        if not claims.get("jti") or claims["jti"] in self.seen_jti:
            raise ValueError("jti missing or reused")
        self.seen_jti.add(claims["jti"])
        return claims

    # ---- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/.well-known/did.json":
            await _answer(send, 200, json.dumps(self.did_doc()).encode(), "application/json")
            return
        if not path.startswith("/xrpc/"):
            await _answer(send, 404, b"{}", "application/json")
            return
        nsid = path[len("/xrpc/"):]
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            headers[name] = headers[name] + "," + v.decode("latin-1") if name in headers else v.decode("latin-1")
        digest, length = hashlib.sha256(), 0
        while True:
            message = await receive()
            body = message.get("body", b"")
            digest.update(body)
            length += len(body)
            if not message.get("more_body"):
                break
        query_raw = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[0] for k, v in parse_qs(query_raw).items()}
        try:
            claims = await self._verify(headers, nsid)
        except Exception as exc:  # the test sees the reason in the body and in .failures
            self.failures.append(f"{nsid}: {exc}")
            await _answer(send, 401, json.dumps({"error": "StandInAuthFailed", "message": str(exc)}).encode(), "application/json")
            return
        echo = {
            "service": self.name, "nsid": nsid, "method": scope["method"], "query": query_raw,
            "headers": headers, "body_len": length, "body_sha256": digest.hexdigest(),
            "iss": claims.get("iss"), "aud": claims.get("aud"), "lxm": claims.get("lxm"),
            "exp": claims.get("exp"), "iat": claims.get("iat"), "jti": claims.get("jti"),
        }
        self.received.append(echo)
        method = nsid.rsplit(".", 1)[-1]
        if method == "big":
            await self._big(send, int(query.get("size", "0")))
        elif method == "fail":
            status = int(query.get("status", "400"))
            body = json.dumps({"error": query.get("error", "StandInError"), "message": "stand-in says no"}).encode()
            await _answer(send, status, body, "application/json", [(b"retry-after", b"7"), (b"set-cookie", b"x=1")])
        elif method == "cut":  # promise 1 MiB, send 64 KiB, then drop the connection
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"), (b"content-length", str(16 * CHUNK).encode())]})
            await send({"type": "http.response.body", "body": b"x" * CHUNK, "more_body": True})
            raise ConnectionAbortedError("stand-in drops the connection mid-body")
        elif method == "notjson":
            await _answer(send, 503, b"<html>down</html>", "text/html")
        elif method == "gzip":
            await _answer(send, 200, gzip.compress(json.dumps(echo).encode()), "application/json",
                          [(b"content-encoding", b"gzip")])
        elif method == "slow":
            await asyncio.sleep(float(query.get("delay", "5")))
            await _answer(send, 200, json.dumps(echo).encode(), "application/json")
        else:
            extra = [(b"atproto-content-labelers", b"did:plc:labelerlabelerlabeler"), (b"atproto-repo-rev", b"3kabc"),
                     (b"content-language", b"en"), (b"set-cookie", b"session=upstream"),
                     (b"x-upstream-private", b"1"), (b"access-control-allow-origin", b"https://evil.example")]
            await _answer(send, 200, json.dumps(echo).encode(), "application/json; charset=utf-8", extra)

    async def _big(self, send: Any, size: int) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/octet-stream"), (b"content-length", str(size).encode())]})
        block = bytes(range(256)) * (CHUNK // 256)
        left = size
        while left > 0:
            part = block[: min(CHUNK, left)]
            left -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": left > 0})


async def _answer(send: Any, status: int, body: bytes, ctype: str, extra: list | None = None) -> None:
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
