"""AppView / chat proxying through the REAL server, against stand-in services on 127.0.0.1.

The account is a did:web on the PDS's own loopback port (`tinypds init --did-method web
--dev`), so the stand-ins verify every service-auth JWT with the atproto SDK against the
signing key in our DID document (aud, lxm, exp, jti checked; see proxy_standin.py).
Covers: default targets, atproto-proxy resolution through a did:web document, header
filtering both ways, request and response streaming (50 MB with flat server memory),
error pass-through, unreachable upstreams, app-password rules, getServiceAuth and
preferences.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from atproto_core.did_doc import DidDocument
from atproto_identity.did.atproto_data import ensure_atproto_key
from atproto_server.auth.jwt import verify_jwt

from .conftest import REPO_ROOT, RunningServer, server_env, start_server
from .proxy_standin import CHUNK, StandIn

PASSWORD = "proxy-test-password-1"
HANDLE = "alice.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    pds: RunningServer
    did: str
    appview: StandIn
    chat: StandIn
    other: StandIn
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str = "full") -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return httpx.Client(base_url=self.pds.url, headers=headers, timeout=30)


def _session(url: str, identifier: str, password: str) -> str:
    r = httpx.post(f"{url}/xrpc/com.atproto.server.createSession", json={"identifier": identifier, "password": password}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["accessJwt"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    appview, chat = StandIn("appview").start(), StandIn("chat").start()
    other = StandIn("other", extra_services={"dead": f"http://127.0.0.1:{free_port()}"}).start()
    port = free_port()
    root = tmp_path_factory.mktemp("proxy")
    data, key_file = root / "data", root / "keys.json"
    env = {
        "TINYPDS_HOSTNAME": f"localhost:{port}",
        "TINYPDS_KEY_FILE": str(key_file),
        "TINYPDS_APPVIEW_URL": appview.url,
        "TINYPDS_APPVIEW_DID": appview.did,
        "TINYPDS_CHAT_URL": chat.url,
        "TINYPDS_CHAT_DID": chat.did,
    }
    init = subprocess.run(
        [sys.executable, "-m", "tinypds.cli", "--data", str(data), "init", "--handle", HANDLE, "--hostname",
         f"localhost:{port}", "--did-method", "web", "--dev", "--password-stdin", "--keyring-backend", "file",
         "--key-file", str(key_file)],
        input=PASSWORD + "\n", text=True, env=server_env(env), cwd=REPO_ROOT, capture_output=True, timeout=120,
    )
    assert init.returncode == 0, init.stderr
    pds = start_server(data, extra_env=env, args=["--port", str(port), "--no-dev-account"])
    lab = Lab(pds=pds, did=f"did:web:localhost%3A{port}", appview=appview, chat=chat, other=other)
    try:
        lab.tokens["full"] = _session(pds.url, HANDLE, PASSWORD)
        with lab.client() as c:
            for name, privileged in (("plain", False), ("priv", True)):
                r = c.post("/xrpc/com.atproto.server.createAppPassword", json={"name": name, "privileged": privileged})
                assert r.status_code == 200, r.text
                lab.tokens[name] = _session(pds.url, HANDLE, r.json()["password"])
        yield lab
    finally:
        rc = pds.stop()
        for s in (appview, chat, other):
            s.stop()
    assert rc == 0, pds.stderr()
    assert "Traceback" not in pds.stderr(), pds.stderr()


def assert_xrpc_error(resp: httpx.Response, status: int, error: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == error, body
    assert isinstance(body.get("message"), str)
    return body


# ---- targets and service auth --------------------------------------------------------------

def test_default_appview_gets_verified_service_auth_and_filtered_headers(lab):
    with lab.client() as c:
        r = c.get(
            "/xrpc/app.bsky.feed.getTimeline",
            params={"limit": "3", "cursor": "a b/c"},
            headers={"accept-language": "fr, en;q=0.5", "atproto-accept-labelers": "did:plc:aaa;redact",
                     "x-bsky-topics": "cats", "x-atproto-extra": "yes", "cookie": "pds=secret", "dpop": "nope",
                     "x-forwarded-for": "1.2.3.4"},
        )
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["service"] == "appview" and echo["nsid"] == "app.bsky.feed.getTimeline"
    assert echo["iss"] == lab.did and echo["aud"] == lab.appview.did and echo["lxm"] == "app.bsky.feed.getTimeline"
    assert echo["query"] == "limit=3&cursor=a+b%2Fc"
    sent = echo["headers"]
    assert sent["accept-language"] == "fr, en;q=0.5"
    assert sent["atproto-accept-labelers"] == "did:plc:aaa;redact"
    assert sent["x-bsky-topics"] == "cats" and sent["x-atproto-extra"] == "yes"
    for private in ("cookie", "dpop", "x-forwarded-for", "atproto-proxy"):
        assert private not in sent
    assert lab.tokens["full"] not in sent["authorization"]
    # response: content and atproto headers pass, the upstream's private ones do not
    assert r.headers["atproto-content-labelers"] == "did:plc:labelerlabelerlabeler"
    assert r.headers["atproto-repo-rev"] == "3kabc"
    assert r.headers["content-language"] == "en"
    assert r.headers["content-type"].startswith("application/json")
    assert "set-cookie" not in r.headers and "x-upstream-private" not in r.headers
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"
    assert not lab.appview.failures


def test_each_call_gets_a_fresh_token(lab):
    with lab.client() as c:
        jtis = {c.get("/xrpc/app.bsky.actor.getProfile", params={"actor": HANDLE}).json()["jti"] for _ in range(3)}
    assert len(jtis) == 3


def test_post_body_streams_through(lab):
    body = b'{"serviceDid":"did:web:push.example","token":"' + b"t" * 2_000_000 + b'","platform":"web","appId":"x"}'
    with lab.client() as c:
        r = c.post("/xrpc/app.bsky.notification.registerPush", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    echo = r.json()
    assert echo["method"] == "POST" and echo["lxm"] == "app.bsky.notification.registerPush"
    assert echo["body_len"] == len(body) and echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["content-type"] == "application/json"


def test_head_is_proxied_without_a_body(lab):
    before = len(lab.appview.received)
    with lab.client() as c:
        r = c.head("/xrpc/app.bsky.actor.getProfile", params={"actor": HANDLE})
        assert r.status_code == 200 and r.content == b""
        assert c.get("/xrpc/app.bsky.actor.getProfile", params={"actor": HANDLE}).status_code == 200  # pool still fine
    assert [e["method"] for e in lab.appview.received[before:]] == ["HEAD", "GET"]


def test_chat_goes_to_the_chat_service(lab):
    with lab.client() as c:
        r1 = c.get("/xrpc/chat.bsky.convo.listConvos")
        r2 = c.get("/xrpc/chat.bsky.convo.getLog", headers={"atproto-proxy": f"{lab.chat.did}#bsky_chat"})
    for r, nsid in ((r1, "chat.bsky.convo.listConvos"), (r2, "chat.bsky.convo.getLog")):
        assert r.status_code == 200, r.text
        assert r.json()["service"] == "chat" and r.json()["aud"] == lab.chat.did and r.json()["lxm"] == nsid


def test_atproto_proxy_header_resolves_a_did_web_document(lab):
    with lab.client() as c:
        r = c.get("/xrpc/app.bsky.unspecced.getAgeAssuranceState", headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert r.status_code == 200, r.text
        assert r.json()["service"] == "other" and r.json()["aud"] == lab.other.did
        # also namespaces with no default (labelers, ozone, feed generators)
        r = c.get("/xrpc/tools.ozone.moderation.getRepo", params={"did": lab.did},
                  headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert r.status_code == 200 and r.json()["lxm"] == "tools.ozone.moderation.getRepo"
        body = assert_xrpc_error(c.get("/xrpc/app.bsky.feed.getFeed", headers={"atproto-proxy": f"{lab.other.did}#nope"}),
                                 400, "InvalidRequest")
        assert "nope" in body["message"]
        for bad in ("#bsky_appview", lab.other.did, f"{lab.other.did}#a#b", "not-a-did#x", f"{lab.other.did}# x"):
            assert_xrpc_error(c.get("/xrpc/app.bsky.feed.getFeed", headers={"atproto-proxy": bad}), 400, "InvalidRequest")
        assert_xrpc_error(c.get("/xrpc/tools.ozone.moderation.getRepo"), 501, "MethodNotImplemented")


def test_browser_preflight_and_exposed_headers(lab):
    r = httpx.options(f"{lab.pds.url}/xrpc/app.bsky.feed.getTimeline", headers={
        "origin": "https://bsky.app", "access-control-request-method": "GET",
        "access-control-request-headers": "authorization,atproto-proxy,atproto-accept-labelers"}, timeout=10)
    assert r.status_code in (200, 204), r.text
    allowed = r.headers.get("access-control-allow-headers", "").lower()
    assert allowed == "*" or all(h in allowed for h in ("authorization", "atproto-proxy", "atproto-accept-labelers"))
    with lab.client() as c:
        r = c.get("/xrpc/app.bsky.feed.getTimeline", headers={"origin": "https://bsky.app"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://bsky.app")


def test_unauthenticated_proxy_calls_are_refused(lab):
    before = len(lab.other.received)
    with lab.client(who="") as c:
        assert_xrpc_error(c.get("/xrpc/app.bsky.feed.getTimeline"), 401, "AuthenticationRequired")
        r = c.get("/xrpc/app.bsky.feed.getTimeline", headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert_xrpc_error(r, 401, "AuthenticationRequired")
        assert_xrpc_error(c.get("/xrpc/com.example.nothing.here"), 501, "MethodNotImplemented")
    assert len(lab.other.received) == before


# ---- bodies, errors, failures ---------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    """Current resident memory of the server (VmHWM is useless here: argon2 sign-ins peak higher)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_large_response_streams_with_flat_server_memory(lab):
    size = 50 * 1024 * 1024
    block = bytes(range(256)) * (CHUNK // 256)
    pid = lab.pds.proc.pid
    with lab.client() as c:
        assert c.get("/xrpc/app.bsky.test.big", params={"size": str(4 * CHUNK)}).status_code == 200  # warm up
        before = peak = _rss_kib(pid)
        got, digest = 0, hashlib.sha256()
        with c.stream("GET", "/xrpc/app.bsky.test.big", params={"size": str(size)}) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(size)
            for chunk in r.iter_raw():
                got += len(chunk)
                digest.update(chunk)
                if got % (1024 * 1024) < len(chunk):  # sample the server's memory about once per MiB
                    peak = max(peak, _rss_kib(pid))
    expected = hashlib.sha256()
    for _ in range(size // CHUNK):
        expected.update(block)
    assert got == size and digest.hexdigest() == expected.hexdigest()
    growth_mib = (peak - before) / 1024
    assert growth_mib < 20, f"server RSS grew by {growth_mib:.1f} MiB while relaying 50 MiB"


def test_compressed_responses_pass_unchanged(lab):
    with lab.client() as c:
        r = c.get("/xrpc/app.bsky.test.gzip", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["headers"]["accept-encoding"] == "gzip"


def test_proxied_answers_are_private(lab):
    """As the reference marks them: Cache-Control: private and Vary: Authorization (issue 14)."""
    with lab.client() as c:
        for r in (c.get("/xrpc/app.bsky.feed.getTimeline"),
                  c.get("/xrpc/app.bsky.test.fail", params={"status": "404", "error": "NotFound"})):
            assert r.headers["cache-control"] == "private", r.headers
            assert "authorization" in [v.strip().lower() for v in ",".join(r.headers.get_list("vary")).split(",")]


def test_upstream_errors_pass_through(lab):
    with lab.client() as c:
        r = c.get("/xrpc/app.bsky.test.fail", params={"status": "404", "error": "NotFound"})
        assert assert_xrpc_error(r, 404, "NotFound")["message"] == "stand-in says no"
        r = c.get("/xrpc/app.bsky.test.fail", params={"status": "400", "error": "BlockedActor"})
        assert assert_xrpc_error(r, 400, "BlockedActor")["message"] == "stand-in says no"
        r = c.get("/xrpc/app.bsky.test.fail", params={"status": "429", "error": "RateLimitExceeded"})
        assert_xrpc_error(r, 429, "RateLimitExceeded")
        assert r.headers["retry-after"] == "7" and "set-cookie" not in r.headers
        # the reference turns an upstream 500 into 502 UpstreamFailure-status with the upstream's name
        assert_xrpc_error(c.get("/xrpc/app.bsky.test.fail", params={"status": "500", "error": "InternalServerError"}),
                          502, "InternalServerError")
        assert_xrpc_error(c.get("/xrpc/app.bsky.test.notjson"), 503, "NotEnoughResources")


def test_upstream_dropping_mid_body_truncates_the_response(lab):
    with lab.client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get("/xrpc/app.bsky.test.cut")
        assert c.get("/xrpc/app.bsky.feed.getTimeline").status_code == 200


def test_client_leaving_mid_body_is_harmless(lab):
    with lab.client() as c:
        with c.stream("GET", "/xrpc/app.bsky.test.big", params={"size": str(50 * 1024 * 1024)}) as r:
            assert r.status_code == 200
            next(r.iter_raw())
    with lab.client() as c:
        assert c.get("/xrpc/app.bsky.feed.getTimeline").status_code == 200


def test_unreachable_upstream_is_502(lab):
    with lab.client() as c:
        body = assert_xrpc_error(c.get("/xrpc/app.bsky.feed.getTimeline", headers={"atproto-proxy": f"{lab.other.did}#dead"}),
                                 502, "UpstreamFailure")
    assert "unreachable" in body["message"]


# ---- app passwords and protected methods ----------------------------------------------------

def test_app_password_rules_follow_the_reference(lab):
    with lab.client("plain") as c:
        assert c.get("/xrpc/app.bsky.feed.getTimeline").status_code == 200
        assert c.get("/xrpc/chat.bsky.convo.getUnreadCount").status_code == 200  # not a privileged method
        body = assert_xrpc_error(c.get("/xrpc/chat.bsky.convo.listConvos"), 400, "InvalidToken")
        assert body["message"] == "Bad token method"
        assert_xrpc_error(c.post("/xrpc/chat.bsky.convo.sendMessage", json={"convoId": "x", "message": {"text": "hi"}}),
                          400, "InvalidToken")
    with lab.client("priv") as c:
        assert c.get("/xrpc/chat.bsky.convo.listConvos").status_code == 200
    with lab.client() as c:
        r = c.post("/xrpc/com.atproto.admin.sendEmail", json={}, headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert_xrpc_error(r, 400, "InvalidToken")
        # served here since issue 14: answered locally whatever the atproto-proxy header says
        r = c.post("/xrpc/com.atproto.server.requestEmailUpdate", json={},
                   headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert_xrpc_error(r, 400, "InvalidRequest")
    assert not any(e["nsid"].startswith("com.atproto.") for e in lab.other.received)


# ---- getServiceAuth ---------------------------------------------------------------------------

def _doc_key(lab: Lab) -> str:
    doc = httpx.get(f"http://localhost:{lab.pds.url.rsplit(':', 1)[1]}/.well-known/did.json", timeout=10).json()
    return ensure_atproto_key(DidDocument.from_dict(doc))


def test_get_service_auth(lab):
    key = _doc_key(lab)
    with lab.client() as c:
        r = c.get("/xrpc/com.atproto.server.getServiceAuth", params={"aud": "did:web:feeds.example", "lxm": "app.bsky.feed.getFeedSkeleton"})
        assert r.status_code == 200, r.text
        payload = verify_jwt(r.json()["token"], lambda iss, fresh: key, "did:web:feeds.example")
        assert payload.iss == lab.did and payload.model_extra["lxm"] == "app.bsky.feed.getFeedSkeleton"
        assert payload.exp - payload.iat == 60
        far = payload.iat + 1800
        r = c.get("/xrpc/com.atproto.server.getServiceAuth", params={"aud": "did:web:x.example#svc", "lxm": "com.atproto.repo.uploadBlob", "exp": str(far)})
        assert r.status_code == 200 and verify_jwt(r.json()["token"], lambda i, f: key, "did:web:x.example#svc").exp == far
        q = "/xrpc/com.atproto.server.getServiceAuth"
        assert_xrpc_error(c.get(q, params={"aud": "did:web:x.example", "exp": str(far)}), 400, "BadExpiration")
        assert_xrpc_error(c.get(q, params={"aud": "did:web:x.example", "lxm": "a.b.c", "exp": str(far + 7200)}), 400, "BadExpiration")
        assert_xrpc_error(c.get(q, params={"aud": "did:web:x.example", "lxm": "a.b.c", "exp": "1"}), 400, "BadExpiration")
        assert_xrpc_error(c.get(q, params={"aud": "did:web:x.example", "lxm": "com.atproto.server.createAppPassword"}), 400, "InvalidRequest")
        assert_xrpc_error(c.get(q, params={"aud": "nope"}), 400, "InvalidRequest")
    with lab.client("plain") as c:
        r = c.get(q, params={"aud": lab.chat.did, "lxm": "chat.bsky.convo.sendMessage"})
        assert "insufficient access" in assert_xrpc_error(r, 400, "InvalidRequest")["message"]
        assert c.get(q, params={"aud": lab.appview.did, "lxm": "app.bsky.feed.getTimeline"}).status_code == 200
    with lab.client("priv") as c:
        assert c.get(q, params={"aud": lab.chat.did, "lxm": "chat.bsky.convo.sendMessage"}).status_code == 200


# ---- preferences ------------------------------------------------------------------------------

PREFS = [
    {"$type": "app.bsky.actor.defs#adultContentPref", "enabled": False},
    {"$type": "app.bsky.actor.defs#savedFeedsPrefV2", "items": [
        {"id": "3l", "type": "timeline", "value": "following", "pinned": True}]},
    {"$type": "app.bsky.actor.defs#personalDetailsPref", "birthDate": "1990-04-01T00:00:00.000Z"},
    {"$type": "app.bsky.actor.defs#someFuturePref", "anything": {"goes": [1, 2]}},
]


def test_preferences_round_trip_and_app_password_view(lab):
    with lab.client() as c:
        r = c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": PREFS})
        assert r.status_code == 200, r.text
        got = c.get("/xrpc/app.bsky.actor.getPreferences").json()["preferences"]
    assert got[:4] == PREFS
    assert got[4] == {"$type": "app.bsky.actor.defs#declaredAgePref", "isOverAge13": True, "isOverAge16": True, "isOverAge18": True}
    with lab.client("priv") as c:
        seen = c.get("/xrpc/app.bsky.actor.getPreferences").json()["preferences"]
        assert [p["$type"] for p in seen] == [p["$type"] for p in PREFS if "personal" not in p["$type"]] + [
            "app.bsky.actor.defs#declaredAgePref"]
        body = assert_xrpc_error(c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": PREFS}), 400, "InvalidRequest")
        assert "personalDetailsPref" in body["message"]
        assert c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": PREFS[:1]}).status_code == 200
    with lab.client() as c:  # the app password's put kept the birth date
        types = [p["$type"] for p in c.get("/xrpc/app.bsky.actor.getPreferences").json()["preferences"]]
    assert types == ["app.bsky.actor.defs#personalDetailsPref", "app.bsky.actor.defs#adultContentPref",
                     "app.bsky.actor.defs#declaredAgePref"]
    assert not any(e["nsid"].endswith("Preferences") for e in lab.appview.received)


def test_put_preferences_validation(lab):
    with lab.client() as c:
        for prefs in ([{"enabled": True}], [{"$type": "com.example.pref"}], "nope",
                      [{"$type": "app.bsky.actor.defs#adultContentPref", "enabled": "yes"}],
                      [{"$type": "app.bsky.actor.defs#personalDetailsPref", "birthDate": "yesterday"}]):
            assert_xrpc_error(c.post("/xrpc/app.bsky.actor.putPreferences", json={"preferences": prefs}), 400, "InvalidRequest")


def test_preferences_go_to_another_appview_when_asked(lab):
    with lab.client() as c:
        r = c.get("/xrpc/app.bsky.actor.getPreferences", headers={"atproto-proxy": f"{lab.other.did}#my_appview"})
        assert r.status_code == 200 and r.json()["service"] == "other"
        r = c.get("/xrpc/app.bsky.actor.getPreferences", headers={"atproto-proxy": f"{lab.appview.did}#bsky_appview"})
        assert r.status_code == 200 and "preferences" in r.json()
