"""Probes for the health watcher: what a relay, the AppView and the handle's resolvers say about us.

Each probe is bounded (timeouts, capped bodies) and never raises: trouble is data. HTTP via http.client in a
worker thread (no httpx in an idle server); DNS TXT via services.identity in a child process. Tricky bit: an
XRPC error answer means "reachable, said no"; only a transport failure or a 5xx counts as unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlencode, urljoin, urlsplit

MAX_BODY = 256 * 1024
HOST_STATUSES = ("active", "idle", "offline", "throttled", "banned")
TokenFor = Callable[[str], Awaitable[str | None]]  # lxm -> service-auth JWT for the AppView (or None)


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange: `status` None when the request never got an answer (then `error` says why)."""

    status: int | None
    body: dict | None = None
    error: str | None = None
    text: str = ""

    @property
    def reachable(self) -> bool:
        return self.status is not None and self.status < 500

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def xrpc_error(self) -> str | None:
        if self.status is None or self.status < 400:
            return None
        return str((self.body or {}).get("error") or f"HTTP {self.status}")

    def why(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        message = (self.body or {}).get("message")
        return f"HTTP {self.status} {self.xrpc_error or ''}".strip() + (f": {message}" if message else "")


def _request_blocking(url: str, headers: dict[str, str], timeout: float, redirects: int) -> Answer:
    import http.client
    import ssl

    for _ in range(redirects + 1):
        parts = urlsplit(url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context())
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
        else:
            return Answer(None, error=f"not an http(s) URL: {url}")
        try:
            conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                         headers={"Accept": "application/json", "User-Agent": "tinypds-health", **headers})
            resp = conn.getresponse()
            raw = resp.read(MAX_BODY)
            location = resp.getheader("Location")
        finally:
            conn.close()
        if resp.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        text = raw.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        return Answer(resp.status, body if isinstance(body, dict) else None, text=text[:2048])
    return Answer(None, error="too many redirects")


async def http_get(url: str, params: dict[str, str | int] | None = None, *, headers: dict[str, str] | None = None,
                   timeout: float = 10.0, redirects: int = 0) -> Answer:
    """GET `url` (+ query `params`); never raises: a failure is Answer(None, error=...)."""
    if params:
        url = f"{url}?{urlencode(params)}"
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_request_blocking, url, headers or {}, timeout, redirects), timeout * (redirects + 2))
    except asyncio.TimeoutError:
        return Answer(None, error=f"timed out after {timeout:g} s")
    except ConnectionRefusedError:
        return Answer(None, error="connection refused")
    except OSError as exc:
        return Answer(None, error=f"{type(exc).__name__}: {exc}".rstrip(": "))
    except Exception as exc:  # noqa: BLE001 - http.client raises several unrelated types
        return Answer(None, error=f"{type(exc).__name__}: {exc}".rstrip(": "))


# ---- relays --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RelayProbe:
    """What one relay says about our host and our repo."""

    reachable: bool
    error: str | None = None  # why unreachable
    host_status: str | None = None  # HOST_STATUSES, "unknown" (HostNotFound) or None (not implemented)
    host_seq: int | None = None
    account_count: int | None = None
    repo_known: bool | None = None  # None: the relay would not say
    repo_active: bool | None = None
    repo_status: str | None = None  # takendown, deactivated, throttled, ... when not active
    rev: str | None = None
    commit_cid: str | None = None


async def probe_relay(base_url: str, hostname: str, did: str | None, timeout: float = 10.0) -> RelayProbe:
    """getHostStatus for our hostname, then getRepoStatus (and getLatestCommit if no rev) for our DID."""
    base = base_url.rstrip("/") + "/xrpc/com.atproto.sync."
    host = await http_get(base + "getHostStatus", {"hostname": hostname}, timeout=timeout)
    if not host.reachable:
        return RelayProbe(False, error=host.why())
    status: str | None = None
    seq = count = None
    if host.ok and host.body is not None:
        raw = host.body.get("status")
        status = raw if isinstance(raw, str) and raw else "active"
        seq = host.body.get("seq") if isinstance(host.body.get("seq"), int) else None
        count = host.body.get("accountCount") if isinstance(host.body.get("accountCount"), int) else None
    elif host.xrpc_error == "HostNotFound":
        status = "unknown"  # any other refusal: the relay does not implement it (status stays None)
    if did is None:
        return RelayProbe(True, host_status=status, host_seq=seq, account_count=count)
    repo = await http_get(base + "getRepoStatus", {"did": did}, timeout=timeout)
    if not repo.reachable:
        return RelayProbe(False, error=repo.why(), host_status=status, host_seq=seq, account_count=count)
    known = active = rev = repo_status = cid = None
    if repo.ok and repo.body is not None:
        known, active = True, bool(repo.body.get("active"))
        repo_status = repo.body.get("status") if isinstance(repo.body.get("status"), str) else None
        rev = repo.body.get("rev") if isinstance(repo.body.get("rev"), str) else None
    elif repo.xrpc_error == "RepoNotFound":
        known = False
    if known is not False and rev is None and active is not False:
        latest = await http_get(base + "getLatestCommit", {"did": did}, timeout=timeout)
        if latest.ok and latest.body is not None:
            known = True if known is None else known
            rev = latest.body.get("rev") if isinstance(latest.body.get("rev"), str) else None
            cid = latest.body.get("cid") if isinstance(latest.body.get("cid"), str) else None
        elif latest.xrpc_error == "RepoNotFound" and known is None:
            known = False
    return RelayProbe(True, host_status=status, host_seq=seq, account_count=count, repo_known=known,
                      repo_active=active, repo_status=repo_status, rev=rev, commit_cid=cid)


# ---- the AppView ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AppViewProbe:
    reachable: bool
    error: str | None = None
    known: bool = False  # getProfile found our DID
    handle: str | None = None  # the handle the AppView shows ("handle.invalid" when it could not verify it)
    latest_post_indexed: bool | None = None  # None: we have no post, or it could not be asked


async def _get_authed(url: str, params: dict, lxm: str, token_for: TokenFor | None, timeout: float) -> Answer:
    ans = await http_get(url + lxm, params, timeout=timeout)
    if ans.status in (401, 403) and token_for is not None:  # this AppView wants service auth
        token = await token_for(lxm)
        if token:
            ans = await http_get(url + lxm, params, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    return ans


async def probe_appview(appview_url: str, did: str, latest_post_uri: str | None, *,
                        token_for: TokenFor | None = None, timeout: float = 10.0) -> AppViewProbe:
    """app.bsky.actor.getProfile (handle valid?) and app.bsky.feed.getPosts for our latest post (indexed?)."""
    base = appview_url.rstrip("/") + "/xrpc/"
    prof = await _get_authed(base, {"actor": did}, "app.bsky.actor.getProfile", token_for, timeout)
    if not prof.reachable:
        return AppViewProbe(False, error=prof.why())
    if not prof.ok or prof.body is None:
        # unknown actor (InvalidRequest "Profile not found") or an auth refusal: reachable, not known
        return AppViewProbe(True, error=prof.why())
    handle = prof.body.get("handle") if isinstance(prof.body.get("handle"), str) else None
    indexed = None
    if latest_post_uri is not None:
        posts = await _get_authed(base, {"uris": latest_post_uri}, "app.bsky.feed.getPosts", token_for, timeout)
        if posts.ok and posts.body is not None and isinstance(posts.body.get("posts"), list):
            indexed = any(isinstance(p, dict) and p.get("uri") == latest_post_uri for p in posts.body["posts"])
    return AppViewProbe(True, known=True, handle=handle, latest_post_indexed=indexed)


# ---- our handle ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HandleProbe:
    handle: str
    ok: bool
    dev: bool = False  # a .test handle: a dev identity, resolvable only inside a lab
    dns: str = ""  # what DNS TXT _atproto.<handle> said
    well_known: str = ""  # what https://<handle>/.well-known/atproto-did said
    reason: str | None = None  # why it does not resolve to our DID


DnsTxt = Callable[[str], Awaitable[list[str]]]
_TXT_CHILD = """import asyncio, json, sys
from tinypds.services.identity.resolver import system_dns_txt
print(json.dumps(asyncio.run(system_dns_txt(sys.argv[1], float(sys.argv[2])))))"""


async def dns_txt_isolated(name: str, timeout: float = 5.0) -> list[str]:
    """TXT strings of `name` via services.identity (the dnspython owner) in a short-lived child process,
    so dnspython (~5 MB) never stays loaded in the long-running server for a check every few minutes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _TXT_CHILD, name, str(timeout), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 15)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise OSError(f"the DNS lookup process failed (exit {proc.returncode})")
    found = json.loads(out or b"[]")
    return [str(x) for x in found] if isinstance(found, list) else []


async def probe_handle(handle: str, did: str, *, dns_txt: DnsTxt | None = None,
                       well_known_url: Callable[[str], str] | None = None, timeout: float = 5.0) -> HandleProbe:
    """Resolve `handle` both ways a resolver may (DNS TXT, HTTPS well-known) and say which gave our DID."""
    if handle.endswith(".test"):
        return HandleProbe(handle, ok=True, dev=True,
                           reason="dev identity: .test handles resolve only inside a lab, not on the network")
    if dns_txt is None:
        dns_txt = dns_txt_isolated
    try:
        records = await asyncio.wait_for(dns_txt(f"_atproto.{handle}"), timeout + 15)
        dids = sorted({r.strip()[4:] for r in records if r.strip().startswith("did=")})
    except (asyncio.TimeoutError, OSError) as exc:
        dids, dns_err = [], f"DNS lookup failed ({type(exc).__name__})"
    else:
        dns_err = None
    if dns_err:
        dns = dns_err
    elif not dids:
        dns = f"no TXT record at _atproto.{handle}"
    elif dids == [did]:
        dns = f"TXT names {did}"
    elif len(dids) > 1:
        dns = f"TXT names several DIDs ({', '.join(dids)})"
    else:
        dns = f"TXT names {dids[0]}, not {did}"
    url = (well_known_url or (lambda h: f"https://{h}/.well-known/atproto-did"))(handle)
    ans = await http_get(url, timeout=timeout, redirects=3)
    got = ans.text.strip().splitlines()[0].strip() if ans.ok and ans.text.strip() else ""
    if ans.status is None:
        wk = f"{url}: {ans.error}"
    elif not ans.ok:
        wk = f"{url}: HTTP {ans.status}"
    elif got == did:
        wk = f"{url} names {did}"
    else:
        wk = f"{url} answers {got[:80]!r}, not {did}"
    ok = dids == [did] or got == did
    reason = None if ok else f"DNS: {dns}; HTTPS: {wk}"
    return HandleProbe(handle, ok=ok, dns=dns, well_known=wk, reason=reason)
