"""Handle and DID resolution against loopback HTTP servers and an injected DNS function
(no real DNS, no internet): the well-known paths, size caps, timeouts, garbage, caching."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tinypds.errors import DidNotFound, InvalidRequest, UpstreamFailure, UpstreamTimeout
from tinypds.services.identity.resolver import (DidResolver, HandleResolver, IdentityResolver, doc_handle, doc_pds_endpoint, doc_signing_key)
from tinypds.services.identity.plc import PlcClient

DID_A = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
DID_B = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
KEY = "did:key:zQ3shZYuXQqMEVne4FZkjAM6roJsEzUbkjihazSPYXUmqZ6FP"


class Loopback:
    """A tiny HTTP server on 127.0.0.1: routes[path] = (status, body bytes, delay seconds)."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes, float]] = {}
        self.hits: list[tuple[str, str, str]] = []  # (method, path, host header)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                outer.hits.append((self.command, self.path, self.headers.get("host", "")))
                status, body, delay = outer.routes.get(self.path, (404, b'{"message":"nope"}', 0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_POST = _serve

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    srv = Loopback()
    yield srv
    srv.close()


def run(coro):
    return asyncio.run(coro)


def dns_table(table: dict[str, list[str]]):
    calls: list[str] = []

    async def txt(name: str) -> list[str]:
        calls.append(name)
        return table.get(name, [])

    txt.calls = calls  # type: ignore[attr-defined]
    return txt


def doc_for(did: str, handle: str = "alice.example.com") -> dict:
    return {
        "id": did,
        "alsoKnownAs": [f"at://{handle}"],
        "verificationMethod": [{"id": f"{did}#atproto", "type": "Multikey", "controller": did,
                                "publicKeyMultibase": KEY.removeprefix("did:key:")}],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example"}],
    }


# ---- handles ----------------------------------------------------------------------------------------


def handles(web: Loopback, table: dict | None = None, **kw) -> HandleResolver:
    return HandleResolver(dns_txt=dns_table(table or {}), well_known_url=lambda h: f"{web.url}/{h}/atproto-did", **kw)


def test_dns_txt_wins_and_names_the_atproto_subdomain(web):
    dns = dns_table({"_atproto.alice.example.com": ["other=1", f"did={DID_A}"]})
    r = HandleResolver(dns_txt=dns, well_known_url=lambda h: f"{web.url}/{h}/atproto-did")

    async def go():
        try:
            return await r.resolve("Alice.Example.com")
        finally:
            await r.aclose()

    assert run(go()) == DID_A
    assert dns.calls == ["_atproto.alice.example.com"]
    assert web.hits == []  # DNS answered: no HTTPS request


def test_two_different_txt_dids_do_not_resolve_by_dns(web):
    web.routes["/alice.example.com/atproto-did"] = (200, f"{DID_B}\n".encode(), 0)
    r = handles(web, {"_atproto.alice.example.com": [f"did={DID_A}", f"did={DID_B}"]})
    assert run(_resolve(r, "alice.example.com")) == DID_B  # ambiguous DNS -> the well-known route decides


def test_well_known_route_resolves(web):
    web.routes["/bob.example.com/atproto-did"] = (200, f"  {DID_A}\n".encode(), 0)
    assert run(_resolve(handles(web), "bob.example.com")) == DID_A


@pytest.mark.parametrize(
    "status,body",
    [(200, b"not a did"), (200, b"<html>hello</html>"), (404, b"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"), (500, b"")],
)
def test_bad_well_known_answers_do_not_resolve(web, status, body):
    web.routes["/bob.example.com/atproto-did"] = (status, body, 0)
    assert run(_resolve(handles(web), "bob.example.com")) is None


def test_oversized_well_known_answer_is_refused(web):
    web.routes["/bob.example.com/atproto-did"] = (200, DID_A.encode() + b"\n" + b"x" * 100_000, 0)
    assert run(_resolve(handles(web), "bob.example.com")) is None


def test_slow_well_known_times_out(web):
    web.routes["/slow.example.com/atproto-did"] = (200, DID_A.encode(), 3.0)
    assert run(_resolve(handles(web, timeout=0.3), "slow.example.com")) is None


def test_unreachable_well_known_does_not_resolve():
    r = HandleResolver(dns_txt=dns_table({}), well_known_url=lambda h: "http://127.0.0.1:9/atproto-did")
    assert run(_resolve(r, "gone.example.com")) is None


def test_invalid_handle_is_refused(web):
    with pytest.raises(ValueError):
        run(_resolve(handles(web), "not a handle"))


def test_handle_results_are_cached(web):
    web.routes["/c.example.com/atproto-did"] = (200, DID_A.encode(), 0)
    r = handles(web)

    async def go():
        try:
            return [await r.resolve("c.example.com"), await r.resolve("c.example.com")]
        finally:
            await r.aclose()

    assert run(go()) == [DID_A, DID_A]
    assert len(web.hits) == 1


async def _resolve(r: HandleResolver, handle: str):
    try:
        return await r.resolve(handle)
    finally:
        await r.aclose()


# ---- DIDs -----------------------------------------------------------------------------------------------


def test_did_web_on_loopback_and_doc_helpers(web):
    did = f"did:web:localhost%3A{web.port}"
    web.routes["/.well-known/did.json"] = (200, json.dumps(doc_for(did)).encode(), 0)
    doc = run(_resolve_did(DidResolver("http://127.0.0.1:9"), did))
    assert doc["id"] == did
    assert doc_handle(doc) == "alice.example.com"
    assert doc_pds_endpoint(doc) == "https://pds.example"
    assert doc_signing_key(doc) == KEY


def test_legacy_verification_method_key_is_read():
    legacy = {"verificationMethod": [{"id": "#atproto", "type": "EcdsaSecp256k1VerificationKey2019",
                                      "publicKeyMultibase": "zNMESveWqS8kgkQkqth7qbgaPXGfTV3y71RR8Wv84f3FNCJwtCwcTvG3dJgzvKAtUVvvCVZbMZiFvyUtek8qmdB1j"}]}
    assert doc_signing_key(legacy).startswith("did:key:zQ3s")


def test_did_web_document_for_another_did_is_refused(web):
    did = f"did:web:localhost%3A{web.port}"
    web.routes["/.well-known/did.json"] = (200, json.dumps(doc_for("did:web:evil.example")).encode(), 0)
    with pytest.raises(UpstreamFailure, match="not"):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), did))


def test_did_web_garbage_and_oversize_are_refused(web):
    did = f"did:web:localhost%3A{web.port}"
    web.routes["/.well-known/did.json"] = (200, b"{not json", 0)
    with pytest.raises(UpstreamFailure, match="JSON"):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), did))
    web.routes["/.well-known/did.json"] = (200, b"[" + b"1," * 100_000 + b"1]", 0)
    with pytest.raises(UpstreamFailure, match="more than"):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), did))


def test_did_web_missing_is_did_not_found(web):
    with pytest.raises(DidNotFound):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), f"did:web:localhost%3A{web.port}"))


def test_did_web_with_path_is_refused():
    with pytest.raises(InvalidRequest, match="bare host"):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), "did:web:example.com:users:alice"))


def test_did_plc_via_directory_is_cached(web):
    web.routes[f"/{DID_A}"] = (200, json.dumps(doc_for(DID_A)).encode(), 0)
    r = DidResolver(web.url)

    async def go():
        try:
            return [await r.resolve(DID_A), await r.resolve(DID_A), await r.resolve(DID_A, fresh=True)]
        finally:
            await r.aclose()

    docs = run(go())
    assert all(d["id"] == DID_A for d in docs)
    assert len(web.hits) == 2  # one cached answer, one forced refresh


def test_unknown_did_method_is_not_found():
    with pytest.raises(DidNotFound, match="unsupported"):
        run(_resolve_did(DidResolver("http://127.0.0.1:9"), "did:example:123"))


async def _resolve_did(r: DidResolver, did: str):
    try:
        return await r.resolve(did)
    finally:
        await r.aclose()


# ---- the PLC client against broken directories ---------------------------------------------------------------


def test_plc_directory_down_is_a_clear_upstream_failure():
    async def go():
        c = PlcClient("http://127.0.0.1:9")
        try:
            await c.get_document(DID_A)
        finally:
            await c.aclose()

    with pytest.raises(UpstreamFailure, match="unreachable"):
        run(go())


@pytest.mark.parametrize(
    "status,body,match",
    [(200, b"<html>", "not JSON"), (200, b"[1,2]", "not"), (500, b"oops", "HTTP 500"), (410, b"{}", "deactivated")],
)
def test_plc_directory_garbage_is_refused(web, status, body, match):
    web.routes[f"/{DID_A}"] = (status, body, 0)

    async def go():
        c = PlcClient(web.url)
        try:
            await c.get_document(DID_A)
        finally:
            await c.aclose()

    with pytest.raises(InvalidRequest if status == 410 else UpstreamFailure, match=match):
        run(go())


def test_plc_directory_timeout():
    srv = Loopback()
    srv.routes[f"/{DID_A}"] = (200, b"{}", 3.0)

    async def go():
        c = PlcClient(srv.url, timeout=0.3)
        try:
            await c.submit(DID_A, {"type": "plc_operation"})
        finally:
            await c.aclose()

    try:
        with pytest.raises(UpstreamTimeout):
            run(go())
    finally:
        srv.close()


# ---- bidirectional ------------------------------------------------------------------------------------------------


def test_identity_handle_must_point_back(web):
    web.routes[f"/{DID_A}"] = (200, json.dumps(doc_for(DID_A, "alice.example.com")).encode(), 0)
    web.routes[f"/{DID_B}"] = (200, json.dumps(doc_for(DID_B, "alice.example.com")).encode(), 0)
    dns = dns_table({"_atproto.alice.example.com": [f"did={DID_A}"], "_atproto.mallory.example.com": [f"did={DID_B}"]})
    r = IdentityResolver(DidResolver(web.url), HandleResolver(dns_txt=dns, well_known_url=lambda h: web.url + "/x"))

    async def go():
        try:
            return (await r.resolve_identity(DID_A), await r.resolve_identity(DID_B),
                    await r.resolve_identity("mallory.example.com"))
        finally:
            await r.aclose()

    a, b, m = run(go())
    assert a["handle"] == "alice.example.com" and a["didDoc"]["id"] == DID_A
    assert b["handle"] == "handle.invalid"  # B claims alice's handle, which points at A
    assert m["did"] == DID_B and m["handle"] == "handle.invalid"  # B's doc does not name mallory
