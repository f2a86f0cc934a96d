"""The health watcher against the stand-in relay on loopback (real HTTP, a real SQLite file, a fake clock):
each relay state ends with the right action (a crawl request, or a warning when nothing can
help), crawl requests are rate-limited, the report is stored for `tinypds status`."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.relay_standin import Host, RelayStandIn
from tinypds.config import Settings
from tinypds.services.sync.health import HealthWatcher
from tinypds.services.sync.health_checks import probe_handle
from tinypds.services.sync.health_report import HealthReport, load_report, report_lines

from .repo_helpers import DID, open_env

HOST = "localhost:9"  # nothing listens there: the stand-in's own subscription attempts fail quietly
NOW = "2026-01-01T00:00:00.000Z"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Subs:
    subscriber_count = 0


@pytest.fixture(scope="module")
def relay():
    r = RelayStandIn().start()
    yield r
    r.close()


@pytest.fixture
def env(tmp_path, relay):
    e = open_env(tmp_path)
    relay._do(lambda: (relay.hosts.clear(), relay.repos.clear(), relay.banned.clear(), relay.crawl_requests.clear()))
    yield e
    e.db.close()


def watcher(env, relay, clock, **kw) -> HealthWatcher:
    settings = Settings(data_dir=env.dir, hostname=HOST, relays=(relay.url,), health_interval=60,
                        health_lag_seconds=120, appview_url="https://appview.invalid")
    return HealthWatcher(settings, env.db, firehose=kw.pop("firehose", Subs()), clock=clock, probe_timeout=3, **kw)


def post(env, text="hi") -> str:
    async def go():
        return await env.repo.create_record("app.bsky.feed.post", {"$type": "app.bsky.feed.post", "text": text,
                                                                   "createdAt": NOW})
    asyncio.run(go())
    return env.db.read(lambda c: c.execute("SELECT rev FROM repo_root").fetchone()[0])


def known(relay, rev=None, status="active", seq=5) -> None:
    def f():
        relay.hosts[HOST] = Host(status=status, seq=seq, dids={DID})
        relay.repos[DID] = {"active": True, "status": None, "rev": rev, "cid": None}
    relay._do(f)


def test_a_relay_that_forgot_us_gets_a_crawl_request_and_status_shows_before_and_after(env, relay):
    rev = post(env)
    w = watcher(env, relay, Clock())
    report = asyncio.run(w.check_now())
    r = report.relays[0]
    assert relay.crawls_for(HOST) == 1
    assert (r.state, r.status, r.repo) == ("healing", "unknown", "not known")
    assert r.problem == "the relay does not know this host" and r.last_crawl_requested and r.crawl_requests == 1
    assert r.our_rev == rev and not report.healthy
    stored = load_report(env.db.read)  # what `tinypds status` (another process) reads
    assert stored.relays[0].last_crawl_reason.startswith("the relay does not know this host")
    assert stored.to_json() == HealthReport.from_json(report.to_json()).to_json()
    line = dict((label, (value, ok)) for label, value, ok in report_lines(stored))[f"relay {relay.url}"]
    assert "healing" in line[0] and "host unknown" in line[0] and line[1] is False

    known(relay, rev=rev)  # the relay caught up: the same check is now healthy, no new request
    clock = Clock()
    w2 = watcher(env, relay, clock)
    report = asyncio.run(w2.check_now())
    assert report.relays[0].state == "ok" and report.relays[0].relay_rev == rev and report.healthy
    assert relay.crawls_for(HOST) == 1


@pytest.mark.parametrize("status", ["offline", "idle"])
def test_offline_or_idle_gets_a_crawl_request(env, relay, status):
    rev = post(env)
    known(relay, rev=rev, status=status)
    report = asyncio.run(watcher(env, relay, Clock()).check_now())
    assert relay.crawls_for(HOST) == 1
    assert report.relays[0].state == "healing" and report.relays[0].problem == f"the relay calls this host {status}"


@pytest.mark.parametrize("status", ["throttled", "banned"])
def test_throttled_or_banned_is_a_warning_not_a_crawl(env, relay, status, caplog):
    rev = post(env)
    known(relay, rev=rev, status=status)
    w = watcher(env, relay, Clock())
    with caplog.at_level(logging.WARNING, logger="tinypds.health"):
        report = asyncio.run(w.check_now())
        asyncio.run(w.check_now())
    assert relay.crawls_for(HOST) == 0
    assert report.relays[0].state == "stuck" and status.rstrip("ed") in report.relays[0].problem
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and relay.url in r.getMessage()]
    assert len(warnings) == 1, "one warning per episode, not one per round"


def test_lag_within_the_grace_waits_then_one_crawl_per_interval(env, relay):
    old = post(env, "one")
    known(relay, rev=old)
    post(env, "two")
    clock = Clock()
    w = watcher(env, relay, clock)
    report = asyncio.run(w.check_now())
    assert report.relays[0].state == "ok" and "within the grace" in report.relays[0].problem
    assert relay.crawls_for(HOST) == 0
    clock.t += 121
    report = asyncio.run(w.check_now())
    assert report.relays[0].state == "healing" and "lagged our rev for 121 s" in report.relays[0].problem
    assert relay.crawls_for(HOST) == 1
    clock.t += 30  # still lagging, but inside the interval: no second request
    asyncio.run(w.check_now())
    assert relay.crawls_for(HOST) == 1
    clock.t += 31
    asyncio.run(w.check_now())
    assert relay.crawls_for(HOST) == 2


def test_outage_backs_off_then_recovery_crawls_at_once(env, relay, caplog):
    rev = post(env)
    known(relay, rev=rev)
    clock = Clock()
    w = watcher(env, relay, clock)
    assert asyncio.run(w.check_now()).relays[0].state == "ok"
    relay.go_down()
    try:
        delays = []
        with caplog.at_level(logging.WARNING, logger="tinypds.health"):
            for _ in range(4):
                r = asyncio.run(w.check_now()).relays[0]
                delays.append(w.relays[0].next_check - clock.t)
                clock.t += 1000
        assert r.state == "unreachable" and "connection refused" in r.problem and r.unreachable_since
        assert delays == [120, 240, 480, 960], "exponential backoff from the interval"
        assert not any("has been unreachable" in x.getMessage() for x in caplog.records), "not yet an hour"
        clock.t += 1000  # over an hour down: one warning
        with caplog.at_level(logging.WARNING, logger="tinypds.health"):
            asyncio.run(w.check_now())
        assert sum("has been unreachable" in x.getMessage() for x in caplog.records) == 1
    finally:
        relay.come_back()
    r = asyncio.run(w.check_now()).relays[0]
    assert relay.crawls_for(HOST) == 1
    assert r.state == "healing" and r.problem == "our requests reach the relay again after an outage"


def test_writes_with_no_subscriber_request_one_crawl(env, relay):
    known(relay)
    clock = Clock()
    subs = Subs()
    w = watcher(env, relay, clock, firehose=subs)

    async def writes():
        subs.subscriber_count = 1
        w.note_write()  # someone listens: nothing to do
        await asyncio.sleep(0.2)
        assert relay.crawls_for(HOST) == 0
        subs.subscriber_count = 0
        for _ in range(5):
            w.note_write()
        await asyncio.sleep(0.5)
        await asyncio.gather(*w._tasks)
    asyncio.run(writes())
    assert relay.crawls_for(HOST) == 1
    assert w.report().relays[0].last_crawl_reason == "writes while no relay is subscribed to our firehose"


def test_a_repo_the_relay_does_not_know_is_re_announced_after_the_crawl(env, relay):
    known(relay)
    relay._do(lambda: relay.repos.clear())
    calls = []

    async def reannounce():
        calls.append(1)
    report = asyncio.run(watcher(env, relay, Clock(), reannounce=reannounce).check_now())
    assert report.relays[0].problem == "the relay does not know our repo" and calls == [1]


def test_handle_resolution_reasons(relay):
    dev = asyncio.run(probe_handle("alice.test", DID))
    assert dev.ok and dev.dev and "dev identity" in dev.reason

    async def no_txt(name):
        assert name == "_atproto.alice.example.com"
        return []
    bad = asyncio.run(probe_handle("alice.example.com", DID, dns_txt=no_txt,
                                   well_known_url=lambda h: f"{relay.url}/.well-known/atproto-did"))
    assert not bad.ok and "no TXT record at _atproto.alice.example.com" in bad.reason and "HTTP 404" in bad.reason

    async def txt(name):
        return [f"did={DID}"]
    good = asyncio.run(probe_handle("alice.example.com", DID, dns_txt=txt,
                                    well_known_url=lambda h: "http://127.0.0.1:9/.well-known/atproto-did"))
    assert good.ok and good.dns == f"TXT names {DID}" and "connection refused" in good.well_known


def test_status_shows_the_stored_network_section_and_fails_when_unhealthy(env, relay):
    from tinypds.services.ops.status import status_report

    settings = Settings(data_dir=env.dir, hostname=HOST, relays=(relay.url,), keyring_backend="file")
    lines, report = status_report(settings, network=False)
    net = [x for x in lines if x.label.startswith(("network", "relay"))]
    assert report is None and net[0].value.startswith("no health check stored yet") and net[0].ok

    asyncio.run(watcher(env, relay, Clock()).check_now())  # the relay does not know us
    lines, report = status_report(settings, network=False)
    relay_line = next(x for x in lines if x.label == f"relay {relay.url}")
    assert not relay_line.ok and "healing: the relay does not know this host" in relay_line.value
    crawl_line = lines[lines.index(relay_line) + 1]
    assert "last crawl requested 20" in crawl_line.value and "(the relay does not know this host)" in crawl_line.value
    handle_line = next(x for x in lines if x.label == "handle resolution")
    assert handle_line.ok and "dev identity" in handle_line.value
    assert report.relays[0].status == "unknown" and not report.healthy


def test_metrics_expose_requests_firehose_and_relay_health(env, relay):
    import sys

    from tinypds.services.sync.metrics import Metrics

    settings = Settings(data_dir=env.dir, metrics="loopback")
    assert Metrics.open(settings.replace(metrics="off")) is None
    m = Metrics.open(settings, known_paths={"/xrpc/com.atproto.repo.createRecord"})
    assert "prometheus_client" in sys.modules and m.allowed("127.0.0.1") and not m.allowed("203.0.113.9")

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message):
        pass
    wrapped = m.middleware(app)
    for path in ("/xrpc/com.atproto.repo.createRecord", "/xrpc/app.bsky.feed.getTimeline", "/x"):
        asyncio.run(wrapped({"type": "http", "method": "POST", "path": path}, None, ignore))
    w = watcher(env, relay, Clock())
    asyncio.run(w.check_now())

    class Svc:
        firehose = type("F", (), {"subscriber_count": 3, "head": 42})()
        health = w
    m.services = Svc()
    text = m.render()[0].decode()
    assert 'tinypds_http_requests_total{method="POST",route="/xrpc/com.atproto.repo.createRecord",status="201"} 1.0' in text
    assert 'route="/xrpc/(proxied)"' in text and 'route="(other)"' in text and "getTimeline" not in text
    assert "tinypds_firehose_subscribers 3.0" in text and "tinypds_firehose_seq 42.0" in text
    assert f'tinypds_relay_healthy{{relay="{relay.url}"}} 0.0' in text
    assert f'tinypds_relay_host_status{{relay="{relay.url}",status="unknown"}} 1.0' in text
    assert "tinypds_network_healthy 0.0" in text and "tinypds_handle_resolves 1.0" in text


def test_a_subscribed_relay_that_missed_our_commits_gets_a_sync_event(env, relay):
    post(env)
    known(relay, rev=None)  # knows the account (say from #identity) but saw none of its commits

    class Notified(Subs):
        calls = 0

        def notify(self):
            self.calls += 1
    clock, fh = Clock(), Notified()
    w = watcher(env, relay, clock, firehose=fh)
    assert asyncio.run(w.check_now()).relays[0].state == "ok"  # within the grace
    clock.t += 121
    report = asyncio.run(w.check_now())
    last = env.db.read(lambda c: c.execute("SELECT type FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0])
    assert report.relays[0].state == "healing" and last == "#sync" and fh.calls == 1
    assert relay.crawls_for(HOST) == 1


def test_the_dns_check_runs_in_a_child_process_and_says_no_record(monkeypatch):
    import sys

    from tinypds.services.sync.health_checks import dns_txt_isolated

    before = "dns" in sys.modules
    found = asyncio.run(dns_txt_isolated("_atproto.no-such-name.invalid", 2))
    assert found == [] and ("dns" in sys.modules) == before, "dnspython stays out of this process"
    bad = asyncio.run(probe_handle("alice.no-such-name.invalid", DID,
                                   well_known_url=lambda h: "http://127.0.0.1:9/.well-known/atproto-did"))
    assert not bad.ok and "no TXT record at _atproto.alice.no-such-name.invalid" in bad.reason


def test_an_appview_that_wants_service_auth_gets_a_token_signed_with_our_key(env):
    import time as _time

    from tinypds.core.jwt import JwtError, verify_service_auth

    from .repo_helpers import fixed_key

    class AuthAppView(RelayStandIn):
        """getProfile/getPosts only with a valid service-auth JWT (iss our DID, aud its DID, lxm the method)."""
        seen: list = []

        def _handle(self, method, path, q, body):
            nsid = path.removeprefix("/xrpc/")
            auth = self.request_headers.get(b"authorization", b"").decode()
            if not auth.startswith("Bearer "):
                self.seen.append((nsid, "anonymous"))
                return 401, {"error": "AuthMissing", "message": "Authentication Required"}
            try:
                verify_service_auth(auth[7:], lambda iss: fixed_key(DID).public_key() if iss == DID else {}[iss],
                                    "did:web:appview.test", nsid, int(_time.time()))
            except JwtError as exc:
                return 401, {"error": "BadJwt", "message": str(exc)}
            self.seen.append((nsid, "authed"))
            if nsid == "app.bsky.actor.getProfile":
                return 200, {"did": q["actor"], "handle": "alice.test"}
            return 200, {"posts": [{"uri": q["uris"]}]}

    av = AuthAppView().start()
    try:
        post(env)
        settings = Settings(data_dir=env.dir, hostname=HOST, relays=(), appview_url=av.url,
                            appview_did="did:web:appview.test", health_interval=60)
        w = HealthWatcher(settings, env.db, firehose=Subs(), keys=env.keys, probe_timeout=3)
        a = asyncio.run(w.check_now()).appview
    finally:
        av.close()
    assert (a.state, a.handle_valid, a.handle_shown, a.latest_post_indexed) == ("ok", True, "alice.test", True)
    assert AuthAppView.seen == [("app.bsky.actor.getProfile", "anonymous"), ("app.bsky.actor.getProfile", "authed"),
                                ("app.bsky.feed.getPosts", "anonymous"), ("app.bsky.feed.getPosts", "authed")]
