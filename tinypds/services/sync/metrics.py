"""Opt-in Prometheus metrics (TINYPDS_METRICS=loopback|on): requests, latency, firehose and network health.

The sole prometheus_client importer, loaded only when metrics are on. Request figures come from an ASGI
middleware; firehose and health gauges are read from the live services at scrape time. Tricky bits: route
labels are bounded (known paths, else "/xrpc/(proxied)" or "(other)"); the registry is the app's, not global.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Iterable

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Metrics:
    """One registry for the app. Build with `open`; wire `middleware` and `render` into the app."""

    def __init__(self, settings: Any, known_paths: Iterable[str] = ()):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.settings = settings
        self.known = frozenset(known_paths)
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # RSS, CPU, open fds
        self.requests = Counter("tinypds_http_requests", "HTTP requests answered", ("method", "route", "status"),
                                registry=self.registry)
        self.latency = Histogram("tinypds_http_request_duration_seconds", "Time to the end of the response",
                                 ("method", "route"), registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.services: Any = None  # AppServices, set when the lifespan has opened them
        self.registry.register(_LiveCollector(self))

    @classmethod
    def open(cls, settings: Any, known_paths: Iterable[str] = ()) -> "Metrics | None":
        return None if settings.metrics == "off" else cls(settings, known_paths)

    def allowed(self, client_host: str | None) -> bool:
        """"loopback": only scrapes from this machine (before any proxy header is believed)."""
        return self.settings.metrics == "on" or (client_host or "") in LOOPBACK

    def route(self, path: str) -> str:
        if path in self.known:
            return path
        return "/xrpc/(proxied)" if path.startswith("/xrpc/") else "(other)"

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: counts HTTP requests and times them to the last body byte."""
        async def wrapped(scope: dict, receive: Callable, send: Callable) -> None:
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = [500]

            async def tap(message: dict) -> None:
                if message.get("type") == "http.response.start":
                    status[0] = message.get("status", 500)
                await send(message)
            try:
                await app(scope, receive, tap)
            finally:
                method, route = scope.get("method", "GET"), self.route(scope.get("path", ""))
                self.requests.labels(method, route, str(status[0])).inc()
                self.latency.labels(method, route).observe(time.perf_counter() - start)
        return wrapped

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveCollector:
    """Firehose and network-health gauges, read from the services at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        svc = self.metrics.services
        firehose = getattr(svc, "firehose", None)
        if firehose is not None:
            yield GaugeMetricFamily("tinypds_firehose_subscribers", "Live firehose subscribers",
                                    value=firehose.subscriber_count)
            yield GaugeMetricFamily("tinypds_firehose_seq", "Highest firehose seq published", value=firehose.head)
        health = getattr(svc, "health", None)
        if health is None:
            return
        rep = health.report()
        yield GaugeMetricFamily("tinypds_network_healthy", "1 when relays, AppView and handle are all fine",
                                value=1 if rep.healthy else 0)
        up = GaugeMetricFamily("tinypds_relay_healthy", "1 when the relay knows us and is current", labels=["relay"])
        seq = GaugeMetricFamily("tinypds_relay_seq", "The relay's seq for this host", labels=["relay"])
        status = GaugeMetricFamily("tinypds_relay_host_status", "The relay's status for this host (1 = current)",
                                   labels=["relay", "status"])
        crawls = GaugeMetricFamily("tinypds_relay_crawl_requests", "requestCrawl sent by the watcher",
                                   labels=["relay"])
        for r in rep.relays:
            if r.state == "unchecked":  # absent until the first check, rather than a hopeful 1
                continue
            up.add_metric([r.url], 1 if r.healthy else 0)
            if r.relay_seq is not None:
                seq.add_metric([r.url], r.relay_seq)
            status.add_metric([r.url, r.status or r.state], 1)
            crawls.add_metric([r.url], r.crawl_requests)
        yield from (up, seq, status, crawls)
        if rep.appview is not None and rep.appview.state not in ("skipped", "unchecked"):
            yield GaugeMetricFamily("tinypds_appview_handle_valid", "1 when the AppView shows our handle as valid",
                                    value=1 if rep.appview.handle_valid else 0)
            if rep.appview.latest_post_indexed is not None:
                yield GaugeMetricFamily("tinypds_appview_latest_post_indexed", "1 when our latest post is indexed",
                                        value=1 if rep.appview.latest_post_indexed else 0)
        if rep.handle is not None:
            yield GaugeMetricFamily("tinypds_handle_resolves", "1 when our handle resolves to our DID (or is a dev handle)",
                                    value=1 if rep.handle.ok else 0)
