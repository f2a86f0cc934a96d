"""The network-health report: typed facts about relays, the AppView and our handle, as JSON and as lines.

The watcher fills a HealthReport and stores it in the database; `tinypds status` (another process) and the
owner's page read it with `load_report`. No HTTP types, no SQL (store.health). A dev identity (a `.test`
handle, a loopback server) is reported as such, never as a failure.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RelayHealth:
    """One relay's view of us. `state`: ok | healing | stuck | unreachable | unchecked."""

    url: str
    state: str = "unchecked"
    status: str | None = None  # the relay's host status: active, idle, offline, throttled, banned, unknown
    relay_seq: int | None = None
    our_seq: int | None = None
    relay_rev: str | None = None
    our_rev: str | None = None
    repo: str | None = None  # active | not known | <its status>
    problem: str | None = None
    last_checked: str | None = None
    last_ok: str | None = None
    last_crawl_requested: str | None = None
    last_crawl_reason: str | None = None
    crawl_requests: int = 0
    unreachable_since: str | None = None

    @property
    def healthy(self) -> bool:
        return self.state in ("ok", "unchecked")


@dataclass
class AppViewHealth:
    url: str
    state: str = "unchecked"  # ok | problem | unreachable | unchecked | skipped
    handle_shown: str | None = None  # the handle the AppView displays for our DID
    handle_valid: bool | None = None
    latest_post: str | None = None  # at:// URI of our latest post
    latest_post_indexed: bool | None = None
    problem: str | None = None
    last_checked: str | None = None

    @property
    def healthy(self) -> bool:
        return self.state in ("ok", "unchecked", "skipped")


@dataclass
class HandleHealth:
    handle: str
    ok: bool = True
    dev: bool = False
    dns: str = ""
    well_known: str = ""
    reason: str | None = None
    last_checked: str | None = None


@dataclass
class HealthReport:
    """Everything the watcher knows; `healthy` is False when any part needs the owner."""

    checked_at: str | None = None
    did: str | None = None
    our_seq: int | None = None
    our_rev: str | None = None
    subscribers: int | None = None  # live firehose subscribers when last checked
    relays: list[RelayHealth] = field(default_factory=list)
    appview: AppViewHealth | None = None
    handle: HandleHealth | None = None
    note: str | None = None  # e.g. why nothing is checked (dev server, watcher off)

    @property
    def healthy(self) -> bool:
        return (all(r.healthy for r in self.relays)
                and (self.appview is None or self.appview.healthy)
                and (self.handle is None or self.handle.ok))

    def to_json(self) -> dict:
        doc = dataclasses.asdict(self)
        doc["healthy"] = self.healthy
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> "HealthReport":
        def build(kind: type, raw: Any) -> Any:
            if not isinstance(raw, dict):
                return None
            names = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: v for k, v in raw.items() if k in names})

        base = {k: doc.get(k) for k in ("checked_at", "did", "our_seq", "our_rev", "subscribers", "note")}
        return cls(**base, relays=[r for r in (build(RelayHealth, x) for x in doc.get("relays") or []) if r],
                   appview=build(AppViewHealth, doc.get("appview")), handle=build(HandleHealth, doc.get("handle")))


def load_report(conn_reader: Any) -> HealthReport | None:
    """The last stored report. `conn_reader(fn)` runs fn(conn) in a read snapshot (Database.read or ops.read_only)."""
    from ...store.health import get_report

    doc = conn_reader(get_report)
    return HealthReport.from_json(doc) if doc else None


def _yes(flag: bool | None, yes: str, no: str, unknown: str = "not checked") -> str:
    return unknown if flag is None else (yes if flag else no)


def report_lines(report: HealthReport | None) -> list[tuple[str, str, bool]]:
    """(label, value, ok) lines for `tinypds status`'s network section."""
    if report is None:
        return [("network", "no health check stored yet (the server checks every TINYPDS_HEALTH_INTERVAL s)", True)]
    out: list[tuple[str, str, bool]] = [("network checked", f"{report.checked_at or 'never'}", True)]
    if report.note:
        out.append(("network", report.note, True))
    for r in report.relays:
        seq = f"seq {r.relay_seq if r.relay_seq is not None else '?'} (ours {r.our_seq if r.our_seq is not None else '?'})"
        rev = f"rev {r.relay_rev or '?'} (ours {r.our_rev or '?'})"
        state = r.state + (f": {r.problem}" if r.problem else "")
        out.append((f"relay {r.url}", f"{state}; host {r.status or '?'}; repo {r.repo or '?'}; {seq}; {rev}", r.healthy))
        crawl = (f"{r.last_crawl_requested} ({r.last_crawl_reason})" if r.last_crawl_requested else "never")
        out.append(("  checked", f"{r.last_checked or 'never'}; last crawl requested {crawl}", True))
    if report.appview is not None:
        a = report.appview
        if a.state == "skipped":
            out.append((f"appview {a.url}", a.problem or "not checked", True))
        else:
            handle = _yes(a.handle_valid, f"handle valid ({a.handle_shown})",
                          "handle invalid at the AppView" + (f" (shows {a.handle_shown})" if a.handle_shown else ""))
            post = ("no post yet" if a.latest_post is None and a.state == "ok"
                    else _yes(a.latest_post_indexed, "latest post seen", "latest post NOT seen"))
            text = f"{a.state}; {handle}; {post}" + (f"; {a.problem}" if a.problem and a.state != "ok" else "")
            out.append((f"appview {a.url}", text, a.healthy))
            out.append(("  checked", a.last_checked or "never", True))
    if report.handle is not None:
        h = report.handle
        if h.dev:
            out.append(("handle resolution", f"{h.handle}: {h.reason}", True))
        elif h.ok:
            out.append(("handle resolution", f"{h.handle}: ok ({h.dns}; {h.well_known})", True))
        else:
            out.append(("handle resolution", f"{h.handle} does not resolve to our DID: {h.reason}", False))
    return out
