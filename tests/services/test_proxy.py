"""services.proxy on its own: method rules, atproto-proxy parsing, endpoint safety, target
resolution (with caching), timeouts and unreachable upstreams, getServiceAuth rules.
End-to-end behaviour through the real server is in tests/integration/test_proxy.py."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import pytest

from tinypds.config import Settings
from tinypds.core.crypto import K256PrivateKey
from tinypds.core.jwt import JwtError, verify_service_auth
from tinypds.errors import InvalidRequest, InvalidToken, MethodNotImplemented, UpstreamFailure, UpstreamTimeout
from tinypds.services.proxy.service import (BadExpiration, ProxyService, check_proxy_allowed, parse_proxy_header, safe_origin, service_endpoint)

DID = "did:web:alice.example"
NOW = 1_800_000_000
KEY = K256PrivateKey.generate()


@dataclass(frozen=True)
class Ctx:
    did: str = DID
    kind: str = "access"


class Keys:
    def __init__(self):
        self.calls = 0

    def get_key(self, did, purpose):
        assert (did, purpose) == (DID, "signing")
        self.calls += 1
        return KEY


def make(settings: Settings | None = None, docs: dict | None = None, **kw) -> tuple[ProxyService, list]:
    asked: list[str] = []

    async def resolve(did):
        asked.append(did)
        return (docs or {}).get(did)

    svc = ProxyService(settings or Settings(), Keys(), resolve, clock=lambda: NOW, **kw)
    return svc, asked


def run(coro):
    return asyncio.run(coro)


# ---- rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize("nsid", ["com.atproto.admin.sendEmail", "com.atproto.server.createAppPassword",
                                  "COM.ATPROTO.SERVER.getSession", "com.atproto.identity.signPlcOperation"])
def test_protected_methods_are_never_proxied(nsid):
    for kind in ("access", "app_password_privileged", "app_password"):
        with pytest.raises(InvalidToken, match="Bad token method"):
            check_proxy_allowed(nsid, Ctx(kind=kind))


def test_privileged_methods_need_a_privileged_app_password():
    for nsid in ("chat.bsky.convo.sendMessage", "chat.bsky.convo.listConvos", "Chat.Bsky.Convo.GetLog"):
        with pytest.raises(InvalidToken):
            check_proxy_allowed(nsid, Ctx(kind="app_password"))
        check_proxy_allowed(nsid, Ctx(kind="app_password_privileged"))
        check_proxy_allowed(nsid, Ctx(kind="access"))
    check_proxy_allowed("chat.bsky.convo.getUnreadCount", Ctx(kind="app_password"))
    check_proxy_allowed("app.bsky.feed.getTimeline", Ctx(kind="app_password"))


def test_parse_proxy_header():
    assert parse_proxy_header("did:web:api.bsky.chat#bsky_chat") == ("did:web:api.bsky.chat", "bsky_chat")
    assert parse_proxy_header(" did:plc:ar7c4by46qjdydhdevvrndac#atproto_labeler ") == (
        "did:plc:ar7c4by46qjdydhdevvrndac", "atproto_labeler")
    for bad, why in (("#x", "no did"), ("did:web:a.example", "no service id"), ("did:web:a.example#", "no service id"),
                     ("did:web:a.example#a#b", "format"), ("did:web:a.example#a b", "spaces"), ("nodid#x", "DID")):
        with pytest.raises(InvalidRequest, match=why):
            parse_proxy_header(bad)


def test_service_endpoint_matches_relative_and_absolute_ids():
    doc = {"service": [
        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": "https://pds.example"},
        {"id": "did:web:a.example#bsky_appview", "type": "BskyAppView", "serviceEndpoint": "https://app.example"},
        {"id": "#broken", "serviceEndpoint": {"not": "a string"}},
        "junk",
    ]}
    assert service_endpoint(doc, "did:web:a.example", "atproto_pds") == "https://pds.example"
    assert service_endpoint(doc, "did:web:a.example", "bsky_appview") == "https://app.example"
    assert service_endpoint(doc, "did:web:b.example", "bsky_appview") is None
    assert service_endpoint(doc, "did:web:a.example", "broken") is None
    assert service_endpoint({}, "did:web:a.example", "x") is None


def test_safe_origin():
    assert safe_origin("https://api.bsky.app", False) == "https://api.bsky.app"
    assert safe_origin("https://api.bsky.app:8443/some/path?q#f", False) == "https://api.bsky.app:8443"
    for unsafe in ("http://api.bsky.app", "https://127.0.0.1", "https://10.0.0.5", "https://localhost:99",
                   "https://[::1]", "https://169.254.169.254", "https://user:pw@api.bsky.app", "ftp://x.example",
                   "https://", "not a url"):
        with pytest.raises(InvalidRequest):
            safe_origin(unsafe, False)
    assert safe_origin("http://127.0.0.1:8080/", True) == "http://127.0.0.1:8080"
    assert safe_origin("http://[::1]:8080", True) == "http://[::1]:8080"
    with pytest.raises(InvalidRequest):
        safe_origin("https://user@x.example", True)


# ---- targets ------------------------------------------------------------------------------------

def test_default_targets_and_configured_shortcuts():
    s = Settings(appview_url="https://appview.example/", appview_did="did:web:appview.example",
                 chat_url="https://chat.example", chat_did="did:web:chat.example")
    svc, asked = make(s)

    async def go():
        try:
            t = await svc.target_for("app.bsky.feed.getTimeline", None)
            assert (t.did, t.service_id, t.url) == ("did:web:appview.example", "bsky_appview", "https://appview.example")
            t = await svc.target_for("chat.bsky.convo.listConvos", None)
            assert (t.did, t.url) == ("did:web:chat.example", "https://chat.example")
            t = await svc.target_for("app.bsky.feed.getTimeline", "did:web:appview.example#bsky_appview")
            assert t.url == "https://appview.example"
            t = await svc.target_for("chat.bsky.convo.getLog", "did:web:chat.example#bsky_chat")
            assert t.url == "https://chat.example"
            with pytest.raises(MethodNotImplemented):
                await svc.target_for("tools.ozone.moderation.getRepo", None)
            with pytest.raises(MethodNotImplemented):
                await svc.target_for("com.atproto.moderation.createReport", None)
        finally:
            await svc.aclose()

    run(go())
    assert asked == []  # the configured services need no DID resolution


def test_header_targets_resolve_once_and_refuse_unsafe_endpoints():
    labeler = "did:plc:ar7c4by46qjdydhdevvrndac"
    docs = {
        labeler: {"id": labeler, "service": [{"id": "#atproto_labeler", "serviceEndpoint": "https://mod.example"}]},
        "did:web:evil.example": {"service": [{"id": "#x", "serviceEndpoint": "http://169.254.169.254"}]},
    }
    svc, asked = make(docs=docs)

    async def go():
        try:
            for _ in range(3):
                t = await svc.target_for("com.atproto.moderation.createReport", f"{labeler}#atproto_labeler")
                assert (t.did, t.service_id, t.url) == (labeler, "atproto_labeler", "https://mod.example")
            with pytest.raises(InvalidRequest, match="no service #other"):
                await svc.target_for("app.bsky.feed.getFeed", f"{labeler}#other")
            with pytest.raises(InvalidRequest, match="could not resolve proxy did"):
                await svc.target_for("app.bsky.feed.getFeed", "did:web:unknown.example#x")
            with pytest.raises(InvalidRequest, match="https"):
                await svc.target_for("app.bsky.feed.getFeed", "did:web:evil.example#x")
        finally:
            await svc.aclose()

    run(go())
    assert asked.count(labeler) == 2  # cached after the first success (the #other miss asks again)


# ---- timeouts and unreachable upstreams --------------------------------------------------------

def test_unreachable_upstream_is_upstream_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens
    s = Settings(appview_url=f"http://127.0.0.1:{port}")
    svc, _ = make(s, connect_timeout=2, headers_timeout=2)

    async def go():
        try:
            with pytest.raises(UpstreamFailure, match="unreachable"):
                await svc.forward(Ctx(), "app.bsky.feed.getTimeline", "GET", "", {}, None)
        finally:
            await svc.aclose()

    run(go())


def test_silent_upstream_times_out_with_504():
    async def go():
        accepted: list[asyncio.StreamWriter] = []

        async def never_answer(reader, writer):
            accepted.append(writer)  # read nothing, answer nothing

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        svc, _ = make(Settings(appview_url=f"http://127.0.0.1:{port}"), headers_timeout=0.3, body_timeout=0.3)
        try:
            with pytest.raises(UpstreamTimeout, match="did not answer within 0.3 s"):
                await svc.forward(Ctx(), "app.bsky.feed.getTimeline", "GET", "limit=1", {}, None)
            assert len(accepted) == 1
        finally:
            await svc.aclose()
            for w in accepted:
                w.close()
            server.close()
            await server.wait_closed()

    run(go())


def test_other_http_methods_and_protected_nsids_are_refused_before_any_request():
    svc, asked = make()

    async def go():
        try:
            with pytest.raises(InvalidRequest, match="GET and POST"):
                await svc.forward(Ctx(), "app.bsky.feed.getTimeline", "DELETE", "", {}, None)
            with pytest.raises(InvalidToken, match="Bad token method"):
                await svc.forward(Ctx(), "com.atproto.admin.sendEmail", "POST", "",
                                  {"atproto-proxy": "did:web:x.example#svc"}, None)
        finally:
            await svc.aclose()

    run(go())
    assert asked == [] and svc.keys.calls == 0


# ---- getServiceAuth --------------------------------------------------------------------------------

def _verify(token: str, aud: str, lxm: str | None) -> dict:
    return verify_service_auth(token, lambda iss: KEY.public_key(), aud, lxm, NOW)


def test_get_service_auth_tokens():
    svc, _ = make()

    async def go():
        try:
            token = await svc.get_service_auth(Ctx(), "did:web:feeds.example", "app.bsky.feed.getFeedSkeleton", None)
            claims = _verify(token, "did:web:feeds.example", "app.bsky.feed.getFeedSkeleton")
            assert claims["iss"] == DID and claims["exp"] == NOW + 60
            token = await svc.get_service_auth(Ctx(), "did:web:x.example#svc", "com.atproto.repo.uploadBlob", NOW + 3600)
            assert _verify(token, "did:web:x.example#svc", None)["exp"] == NOW + 3600
            token = await svc.get_service_auth(Ctx(), "did:web:x.example", None, NOW + 60)
            assert "lxm" not in _verify(token, "did:web:x.example", None)
            with pytest.raises(JwtError):
                _verify(token, "did:web:other.example", None)
            cases = [
                (Ctx(), "did:web:x.example", "a.b.c", NOW - 1, BadExpiration, "in past"),
                (Ctx(), "did:web:x.example", "a.b.c", NOW + 3601, BadExpiration, "more than an hour"),
                (Ctx(), "did:web:x.example", None, NOW + 61, BadExpiration, "method-less"),
                (Ctx(), "did:web:x.example", "com.atproto.server.createAppPassword", None, InvalidRequest, "protected"),
                (Ctx(kind="app_password"), "did:web:x.example", "chat.bsky.convo.sendMessage", None, InvalidRequest, "insufficient"),
                (Ctx(), "x.example", None, None, InvalidRequest, "aud"),
                (Ctx(), "did:web:x.example#", None, None, InvalidRequest, "aud"),
                (Ctx(), "did:web:x.example", "not an nsid", None, InvalidRequest, "lxm"),
            ]
            for ctx, aud, lxm, exp, exc, match in cases:
                with pytest.raises(exc, match=match):
                    await svc.get_service_auth(ctx, aud, lxm, exp)
            await svc.get_service_auth(Ctx(kind="app_password_privileged"), "did:web:x.example", "chat.bsky.convo.sendMessage", None)
        finally:
            await svc.aclose()

    run(go())
    assert svc.keys.calls == 1  # the signing key is read from the key store once, then cached


def test_a_did_named_target_that_resolves_to_a_private_address_is_never_dialled():
    """SSRF: an atproto-proxy DID document may name any hostname; outside dev mode the
    connection backend resolves it itself and refuses non-public addresses (DNS names
    pointing inside the network included), so nothing is sent there."""
    other = "did:web:svc.example"
    docs = {other: {"id": other, "service": [{"id": "#labeler", "type": "AtprotoLabeler",
                                               "serviceEndpoint": "https://internal.example"}]}}
    looked_up: list[tuple[str, int]] = []

    async def resolver(host, port):
        looked_up.append((host, port))
        return ["10.1.2.3"]

    svc, _ = make(Settings(dev=False), docs, public_resolver=resolver, connect_timeout=2, headers_timeout=2)

    async def go():
        try:
            target = await svc.target_for("com.atproto.moderation.createReport", f"{other}#labeler")
            assert target.public_only and target.url == "https://internal.example"
            with pytest.raises(UpstreamFailure, match="unreachable"):
                await svc.forward(Ctx(), "com.atproto.moderation.createReport", "GET", "", {}, None, target=target)
        finally:
            await svc.aclose()

    run(go())
    assert looked_up == [("internal.example", 443)]
