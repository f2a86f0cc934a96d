"""include: permission sets resolved for real: a DNS stand-in on loopback (UDP, answered with
dnspython's message classes) gives the _lexicon TXT record, a did:web host on loopback serves
the DID document and the com.atproto.lexicon.schema record; a set of our own account is read
locally. Checks the namespace rule, inherit-aud, caching with the last good copy, languages,
and invalid_scope naming an unresolvable set."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from tinypds.services.identity.resolver import DidResolver, dns_txt_at
from tinypds.services.auth.oauth.permission_sets import PermissionSetError, PermissionSetResolver, grants
from tinypds.services.auth.oauth.scopes import RepoWrite, RpcCall, describe, parse_scope, scope_allows

NSID = "com.example.calendar.authFull"
LOCAL_DID = "did:plc:localaccount0000000000000"


class DnsStandIn:
    """A tiny authoritative DNS server for TXT records on 127.0.0.1 (UDP), bounded to this test."""

    def __init__(self, records: dict[str, list[str]]):
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.queries = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (socket.timeout, OSError):
                continue
            self.queries += 1
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            q = query.question[0]
            name = q.name.to_text().rstrip(".").lower()
            if q.rdtype == dns.rdatatype.TXT and name in self.records:
                response.answer.append(dns.rrset.from_text_list(q.name, 60, "IN", "TXT",
                                                                [json.dumps(t) for t in self.records[name]]))
            else:
                response.set_rcode(3)  # NXDOMAIN
            self.sock.sendto(response.to_wire(), addr)

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


class LexiconHost:
    """did:web:127.0.0.1%3APORT with its DID document and getRecord for lexicon schema records."""

    def __init__(self):
        host = self
        self.records: dict[str, dict] = {}
        self.fail = False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                url = urlsplit(self.path)
                if host.fail:
                    return self._send(500, {"error": "InternalServerError"})
                if url.path == "/.well-known/did.json":
                    return self._send(200, {"id": host.did, "service": [
                        {"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": host.url}]})
                if url.path == "/xrpc/com.atproto.repo.getRecord":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    rec = host.records.get(q.get("rkey", ""))
                    if q.get("repo") != host.did or q.get("collection") != "com.atproto.lexicon.schema" or rec is None:
                        return self._send(400, {"error": "RecordNotFound"})
                    return self._send(200, {"uri": "at://x", "cid": "bafy", "value": rec})
                self._send(404, {})

            def _send(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self.did = f"did:web:127.0.0.1%3A{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def calendar_set(title="Calendar", extra=()):
    return {"lexicon": 1, "id": NSID, "defs": {"main": {
        "type": "permission-set", "title": title, "title:lang": {"de": "Kalender"},
        "detail": "Manage your events", "detail:lang": {"de": "Termine verwalten"},
        "permissions": [
            {"type": "permission", "resource": "repo", "collection": ["com.example.calendar.event", "com.example.calendar.rsvp"]},
            {"type": "permission", "resource": "repo", "collection": ["app.bsky.feed.post"]},  # outside: dropped
            {"type": "permission", "resource": "repo", "collection": ["*"]},  # wildcard: dropped
            {"type": "permission", "resource": "rpc", "lxm": ["com.example.calendar.getEvents"], "aud": "inherit"},
            {"type": "permission", "resource": "rpc", "lxm": ["com.example.other.call"], "aud": "*"},  # sibling ns: dropped
            {"type": "permission", "resource": "account", "attr": "email"},  # not repo/rpc: dropped
            {"type": "permission", "resource": "blob", "accept": ["*/*"]},  # not repo/rpc: dropped
            *extra,
        ]}}}


@pytest.fixture
def world():
    host = LexiconHost()
    dnsd = DnsStandIn({"_lexicon.calendar.example.com": [f"did={host.did}"],
                       "_lexicon.mine.example.org": [f"did={LOCAL_DID}"]})
    host.records[NSID] = calendar_set()
    local = {"org.example.mine.basic": {"lexicon": 1, "id": "org.example.mine.basic", "defs": {"main": {
        "type": "permission-set", "title": "Mine",
        "permissions": [{"type": "permission", "resource": "repo", "collection": ["org.example.mine.note"], "action": ["create"]}]}}}}
    dids = DidResolver("http://127.0.0.1:9")  # PLC is never asked in these tests

    async def local_record(did, collection, rkey):
        assert did == LOCAL_DID and collection == "com.atproto.lexicon.schema"
        return local.get(rkey)

    class Clock:
        t = 1000.0

        def __call__(self):
            return self.t

    clock = Clock()
    resolver = PermissionSetResolver(dns_txt=dns_txt_at("127.0.0.1", dnsd.port), dids=dids, local_did=lambda: LOCAL_DID,
                                     local_record=local_record, clock=clock)
    yield resolver, host, dnsd, clock
    asyncio.run(dids.aclose())
    dnsd.close()
    host.close()


def run(coro):
    return asyncio.run(coro)


def test_expansion_takes_only_repo_and_rpc_grants_under_the_sets_namespace(world):
    resolver, host, dnsd, _ = world
    aud = "did:web:api.calendar.example.com#calendar"
    tokens = parse_scope(f"atproto include:{NSID}?aud={aud.replace('#', '%23')}", allow_include=True)
    expanded = run(resolver.expand(tokens))
    assert dnsd.queries >= 1
    grants_only = [t for t in expanded if t not in tokens]
    assert len(grants_only) == 2, grants_only
    assert scope_allows(expanded, RepoWrite("com.example.calendar.event", "create"))
    assert scope_allows(expanded, RepoWrite("com.example.calendar.rsvp", "delete"))
    assert not scope_allows(expanded, RepoWrite("app.bsky.feed.post", "create"))
    assert scope_allows(expanded, RpcCall("com.example.calendar.getEvents", aud))
    assert not scope_allows(expanded, RpcCall("com.example.calendar.getEvents", "did:web:evil.example#x"))
    assert not scope_allows(expanded, RpcCall("com.example.other.call", aud))
    assert not scope_allows(tokens, RepoWrite("com.example.calendar.event", "create"))  # the bare include grants nothing


def test_inherit_without_an_aud_is_dropped_and_sets_read_locally(world):
    resolver, *_ = world
    pset = run(resolver.resolve(NSID))
    assert all(not g.startswith("rpc") for g in grants(pset, None))
    expanded = run(resolver.expand(("atproto", "include:org.example.mine.basic")))
    assert scope_allows(expanded, RepoWrite("org.example.mine.note", "create"))
    assert not scope_allows(expanded, RepoWrite("org.example.mine.note", "delete"))


def test_unresolvable_sets_name_themselves(world):
    resolver, host, *_ = world
    for nsid, words in (("com.nowhere.set.basic", "no single did= TXT record"),
                        ("org.example.mine.absent", "not published in this server's repository")):
        with pytest.raises(PermissionSetError) as e:
            run(resolver.resolve(nsid))
        assert nsid in str(e.value) and words in str(e.value)
    host.records[NSID] = {"lexicon": 1, "id": NSID, "defs": {"main": {"type": "query"}}}
    with pytest.raises(PermissionSetError, match="is not a permission set"):
        run(resolver.resolve(NSID))


def test_cache_minutes_and_the_last_good_copy(world):
    resolver, host, _, clock = world
    assert run(resolver.resolve(NSID)).title == "Calendar"
    host.records[NSID] = calendar_set(title="Calendar v2")
    assert run(resolver.resolve(NSID)).title == "Calendar"  # cached
    clock.t += resolver.cache_seconds + 1
    assert run(resolver.resolve(NSID)).title == "Calendar v2"  # looked up again
    host.records[NSID] = calendar_set(title="Calendar v3")
    clock.t += resolver.cache_seconds + 1
    assert run(resolver.resolve(NSID, stale_ok=True)).title == "Calendar v2"  # a token check: no network wait
    host.fail = True
    assert run(resolver.resolve(NSID, fresh=True)).title == "Calendar v2"  # the host is down: last good copy


def test_consent_words_in_the_users_language(world):
    resolver, *_ = world
    pset = run(resolver.resolve(NSID))
    assert pset.text("de-CH,de;q=0.9,en;q=0.5") == ("Kalender", "Termine verwalten")
    assert pset.text("fr") == ("Calendar", "Manage your events")
    lines = describe(["atproto", f"include:{NSID}"], {NSID: pset.text("de")})
    assert lines[-1] == "Kalender: Termine verwalten"


def test_oauth_service_refuses_an_unresolvable_set_with_invalid_scope(world, tmp_path):
    from tinypds.services.auth.oauth.server import OAuthError, OAuthService
    from tinypds.store.db import Database

    resolver, *_ = world
    db = Database.open(tmp_path / "t.sqlite")
    try:
        oauth = OAuthService(db, issuer="http://localhost:2583", permission_sets=resolver)
        with pytest.raises(OAuthError) as e:
            run(oauth.expand_scope(("atproto", "include:com.nowhere.set.basic"), fresh=True, strict=True))
        assert e.value.error == "invalid_scope" and "com.nowhere.set.basic" in e.value.description
        got = run(oauth.expand_scope(("atproto", f"include:{NSID}")))
        assert any(t.startswith("repo?collection=com.example.calendar.event") for t in got)
        # without a resolver, include: stays refused at PAR as before
        with pytest.raises(Exception, match="cannot be resolved"):
            parse_scope(f"atproto include:{NSID}")
    finally:
        db.close()
