"""Opt-in Prometheus metrics on a REAL server: off by default (404, prometheus_client never loaded);
TINYPDS_METRICS=loopback answers scrapes from this machine only (a request relayed by a local proxy
for a remote client is refused) with request, firehose and relay-health figures."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.relay_standin import RelayStandIn

from .conftest import start_server
from .test_health_relay import free_port


@pytest.fixture(scope="module")
def relay():
    r = RelayStandIn().start()
    yield r
    r.close()


def test_metrics_are_off_by_default(pds, http):
    assert http.get("/metrics").status_code == 404


def test_loopback_metrics_show_requests_firehose_and_relay_health(tmp_path, relay):
    port = free_port()
    env = {"TINYPDS_HOSTNAME": f"localhost:{port}", "TINYPDS_RELAYS": relay.url, "TINYPDS_HEALTH_INTERVAL": "1",
           "TINYPDS_METRICS": "loopback"}
    server = start_server(tmp_path / "data", extra_env=env, args=["--port", str(port)])
    try:
        relay.wait_for(lambda: (relay.host(f"localhost:{port}") or {}).get("subscribed"))
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for _ in range(3):
                assert http.get("/xrpc/com.atproto.server.describeServer").status_code == 200
            deadline = time.monotonic() + 15
            while True:
                r = http.get("/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                current = (f'relay="{relay.url}",status="active"}} 1.0' in r.text
                           and f'tinypds_relay_healthy{{relay="{relay.url}"}} 1.0' in r.text)
                if current or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            text = r.text
            assert re.search(r'tinypds_http_requests_total\{method="GET",route="/xrpc/com.atproto.server.describeServer",'
                             r'status="200"\} 3.0', text), text[:3000]
            assert "tinypds_http_request_duration_seconds_bucket" in text
            assert "tinypds_firehose_subscribers 1.0" in text and "tinypds_firehose_seq " in text
            assert f'tinypds_relay_healthy{{relay="{relay.url}"}} 1.0' in text
            assert f'tinypds_relay_host_status{{relay="{relay.url}",status="active"}} 1.0' in text
            assert "process_resident_memory_bytes" in text
            # a remote client through the local reverse proxy (X-Forwarded-For from a trusted loopback proxy)
            far = http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
            assert far.status_code == 404 and far.json()["error"] == "NotFound"
    finally:
        assert server.stop() == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
