"""Issue 15 end to end: a REAL tinypds server (subprocess, 127.0.0.1) and the stand-in relay on loopback.

The stand-in subscribes to the server's firehose after its startup requestCrawl; then each
case changes what the relay knows (forgets us, calls us offline, lags, throttles, bans, goes
down and comes back, silently drops our subscription) and waits for the server's health
watcher (1 s interval here) to take the right action: a crawl request reaching the relay, or
a warning in the server's log when nothing can help. `tinypds status --json` (a separate
process reading the SQLite file) shows the relay's view before and after.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.relay_standin import RelayStandIn

from .conftest import REPO_ROOT, server_env, start_server

NOW = "2026-01-01T00:00:00.000Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, tmp) -> None:
        self.relay = RelayStandIn().start()
        port = free_port()
        self.host = f"localhost:{port}"
        self.env = {"TINYPDS_HOSTNAME": self.host, "TINYPDS_RELAYS": self.relay.url, "TINYPDS_HEALTH_INTERVAL": "1",
                    "TINYPDS_HEALTH_LAG_SECONDS": "2", "TINYPDS_LOG_LEVEL": "warning"}
        self.server = start_server(tmp / "data", extra_env=self.env, args=["--port", str(port)])
        self.http = httpx.Client(base_url=self.server.url, timeout=30)
        r = self.http.post("/xrpc/com.atproto.server.createSession",
                           json={"identifier": self.server.handle, "password": self.server.password})
        assert r.status_code == 200, r.text
        self.http.headers["Authorization"] = "Bearer " + r.json()["accessJwt"]

    def post(self, text: str) -> str:
        r = self.http.post("/xrpc/com.atproto.repo.createRecord", json={
            "repo": self.server.did, "collection": "app.bsky.feed.post",
            "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": NOW}})
        assert r.status_code == 200, r.text
        return r.json()["commit"]["rev"]

    def status(self) -> tuple[int, dict]:
        env = {k: v for k, v in server_env(self.env).items()}
        out = subprocess.run([sys.executable, "-m", "tinypds.cli", "--data", str(self.server.data_dir), "status",
                              "--offline", "--json"], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60)
        assert out.returncode in (0, 1), out.stderr
        return out.returncode, json.loads(out.stdout)

    def relay_view(self) -> dict:
        doc = self.status()[1]["network"]
        return doc["relays"][0] if doc else {}

    def wait_view(self, pred, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        view: dict = {}
        while time.monotonic() < deadline:
            view = self.relay_view()
            if view and pred(view):
                return view
            time.sleep(0.3)
        raise AssertionError(f"status never showed the expected relay view; last: {view}")

    def close(self) -> None:
        self.http.close()
        rc = self.server.stop()
        self.relay.close()
        assert rc == 0, self.server.stderr()
        assert "Traceback" not in self.server.stderr(), self.server.stderr()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("health"))
    yield lab
    lab.close()


def healthy_and_current(lab: Lab, rev: str) -> dict:
    return lab.wait_view(lambda v: v["state"] == "ok" and v["relay_rev"] == rev and v["status"] == "active")


def test_startup_crawl_subscribes_the_relay_and_status_is_healthy(lab):
    lab.relay.wait_for(lambda: (lab.relay.host(lab.host) or {}).get("subscribed"))
    rev = lab.post("hello relay")
    view = healthy_and_current(lab, rev)
    assert view["our_rev"] == rev and view["repo"] == "active" and view["relay_seq"] == view["our_seq"]
    rc, doc = lab.status()
    line = next(x for x in doc["lines"] if x["label"] == f"relay {lab.relay.url}")
    assert rc == 0 and doc["ok"] and line["ok"] and line["value"].startswith("ok; host active; repo active")


def test_a_relay_that_forgets_us_gets_a_crawl_request_within_the_interval(lab):
    before = lab.relay.crawls_for(lab.host)
    lab.relay.forget(lab.host)
    lab.relay.wait_for(lambda: lab.relay.crawls_for(lab.host) > before, timeout=10)
    view = lab.wait_view(lambda v: v["last_crawl_reason"] == "the relay does not know this host")
    assert view["last_crawl_requested"]
    # the relay subscribed again; the watcher re-announced us, so it knows the repo; the next write is current
    lab.relay.wait_for(lambda: (lab.relay.host(lab.host) or {}).get("subscribed"))
    healthy_and_current(lab, lab.post("after forgetting"))


@pytest.mark.parametrize("status", ["offline", "idle"])
def test_offline_or_idle_is_healed_by_a_crawl_request(lab, status):
    before = lab.relay.crawls_for(lab.host)
    lab.relay.set_status(lab.host, status)
    lab.relay.wait_for(lambda: lab.relay.crawls_for(lab.host) > before, timeout=10)
    lab.wait_view(lambda v: v["last_crawl_reason"] == f"the relay calls this host {status}")
    lab.relay.wait_for(lambda: (lab.relay.host(lab.host) or {}).get("subscribed"))
    healthy_and_current(lab, lab.post(f"after {status}"))


def test_a_lagging_relay_gets_a_crawl_request_after_the_grace(lab):
    lab.relay.lag(lab.host)
    before = lab.relay.crawls_for(lab.host)
    t0 = time.monotonic()
    lab.post("while the relay lags")
    view = lab.wait_view(lambda v: (v["last_crawl_reason"] or "").startswith("the relay has lagged our rev"))
    assert time.monotonic() - t0 >= 2, "not before the grace"
    assert lab.relay.crawls_for(lab.host) > before and view["relay_rev"] < view["our_rev"]
    lab.relay.lag(lab.host, False)
    healthy_and_current(lab, lab.post("relay caught up"))


@pytest.mark.parametrize("status,words", [("throttled", "throttles this host"), ("banned", "BANNED")])
def test_throttled_or_banned_warns_and_does_not_crawl(lab, status, words):
    lab.relay.set_status(lab.host, status)
    before = lab.relay.crawls_for(lab.host)
    view = lab.wait_view(lambda v: v["state"] == "stuck")
    rc, doc = lab.status()
    assert rc == 1 and not doc["ok"] and view["status"] == status
    deadline = time.monotonic() + 10
    while words not in lab.server.stderr() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert words in lab.server.stderr()
    assert lab.server.stderr().count(words) == 1, "one warning per episode"
    time.sleep(2.5)
    assert lab.relay.crawls_for(lab.host) == before, "a crawl request cannot lift a throttle or a ban"
    lab.relay._do(lambda: lab.relay.banned.discard(lab.host))
    lab.relay.set_status(lab.host, "offline")  # lifted on the relay's side: healed like any offline host
    lab.relay.wait_for(lambda: (lab.relay.host(lab.host) or {}).get("subscribed"))
    healthy_and_current(lab, lab.post(f"after {status}"))


def test_outage_then_recovery_crawls_at_once(lab):
    lab.relay.go_down()
    try:
        view = lab.wait_view(lambda v: v["state"] == "unreachable")
        assert "connection refused" in view["problem"] and view["unreachable_since"]
        rc, _ = lab.status()
        assert rc == 1
        before = lab.relay.crawls_for(lab.host)
    finally:
        lab.relay.come_back()
    lab.relay.wait_for(lambda: lab.relay.crawls_for(lab.host) > before, timeout=15)
    lab.wait_view(lambda v: v["last_crawl_reason"] == "our requests reach the relay again after an outage")


def test_writes_while_nobody_is_subscribed_request_a_crawl(lab):
    lab.relay.wait_for(lambda: (lab.relay.host(lab.host) or {}).get("subscribed"))
    time.sleep(1.2)  # past the one-request-per-interval window of the previous case
    lab.relay.drop(lab.host)  # the relay lost the connection and has not noticed
    time.sleep(0.5)
    before = lab.relay.crawls_for(lab.host)
    lab.post("nobody listens")
    lab.relay.wait_for(lambda: lab.relay.crawls_for(lab.host) > before, timeout=5)
    lab.wait_view(lambda v: v["last_crawl_reason"] == "writes while no relay is subscribed to our firehose")
