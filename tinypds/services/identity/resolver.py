"""Identity resolution: DIDs (did:plc via the directory, did:web via /.well-known/did.json)
and handles (DNS TXT `_atproto.HANDLE`, then HTTPS /.well-known/atproto-did), bidirectional.

Owns the outbound lookups (bounded: timeouts, byte caps, a small TTL cache) and the sole
`dnspython` import. No SQL, no HTTP-server types. Tricky bits: a handle resolves only if
exactly one DID answers (two different TXT DIDs = unresolved); a handle counts only if the
DID document names it back; did:web is host-only (no paths), http only for loopback hosts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import unquote

from ...core.crypto import parse_multibase_key
from ...core.syntax import InvalidSyntax, is_valid_did, parse_did, parse_handle
from ...errors import DidNotFound, HandleNotFound, InvalidRequest, UpstreamFailure, XrpcError
from .plc import DidDeactivated, LazyHttpClient, PlcClient, fetch_capped

if TYPE_CHECKING:
    import httpx  # annotations only: the client is made on first use (plc.LazyHttpClient)

log = logging.getLogger("tinypds.identity")

HTTP_TIMEOUT = 5.0
DNS_TIMEOUT = 3.0
DOC_MAX_BYTES = 64 * 1024
HANDLE_DID_MAX_BYTES = 2048
CACHE_TTL_SECONDS = 300.0
CACHE_SIZE = 512
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")

DnsTxt = Callable[[str], Awaitable[list[str]]]


async def system_dns_txt(name: str, timeout: float = DNS_TIMEOUT) -> list[str]:
    """TXT strings of `name` via the system's resolvers; [] when absent or unreachable."""
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers, dns.exception.Timeout):
        return []
    except dns.exception.DNSException as exc:
        log.info("DNS TXT lookup of %s failed: %s", name, type(exc).__name__)
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def dns_txt_at(nameserver: str, port: int = 53, timeout: float = DNS_TIMEOUT) -> DnsTxt:
    """A DnsTxt that asks one given server (a configured resolver, or a test's stand-in on loopback)."""

    async def lookup(name: str) -> list[str]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [nameserver]
        resolver.port = port
        try:
            answer = await resolver.resolve(name, "TXT", lifetime=timeout)
        except dns.exception.DNSException as exc:
            log.info("DNS TXT lookup of %s at %s failed: %s", name, nameserver, type(exc).__name__)
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]

    return lookup


class _TtlCache:
    def __init__(self, ttl: float, size: int, clock: Callable[[], float]):
        self.ttl, self.size, self.clock = ttl, size, clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        hit = self._items.get(key)
        if hit is None or hit[0] < self.clock():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: str, value: Any) -> None:
        self._items[key] = (self.clock() + self.ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)


# ---- DID documents ------------------------------------------------------------------------


def doc_handle(doc: dict) -> str | None:
    """The first at:// handle the document claims (not yet verified)."""
    for aka in doc.get("alsoKnownAs") or ():
        if isinstance(aka, str) and aka.startswith("at://"):
            try:
                return parse_handle(aka[5:])
            except InvalidSyntax:
                return None
    return None


def doc_pds_endpoint(doc: dict) -> str | None:
    for svc in doc.get("service") or ():
        if isinstance(svc, dict) and str(svc.get("id", "")).endswith("#atproto_pds") \
                and svc.get("type") == "AtprotoPersonalDataServer" and isinstance(svc.get("serviceEndpoint"), str):
            return svc["serviceEndpoint"]
    return None


def doc_signing_key(doc: dict) -> str | None:
    """did:key of the `#atproto` verification method (Multikey or the legacy 2019 suites)."""
    for vm in doc.get("verificationMethod") or ():
        if isinstance(vm, dict) and str(vm.get("id", "")).endswith("#atproto"):
            try:
                return parse_multibase_key(vm.get("publicKeyMultibase"), vm.get("type")).did_key()
            except ValueError:
                return None
    return None


def did_web_host(did: str) -> str:
    """`did:web:host%3Aport` -> `host:port`; paths (extra ':') are not atproto did:webs."""
    rest = did[len("did:web:"):]
    if not rest or ":" in rest:
        raise InvalidRequest(f"unsupported did:web (atproto allows a bare host only): {did}")
    return unquote(rest).lower()


def _is_loopback(host: str) -> bool:
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return bare in LOOPBACK_HOSTS or bare.endswith(".localhost")


class DidResolver(LazyHttpClient):
    """DID -> DID document, cached for `cache_ttl` seconds."""

    def __init__(self, plc_url: str, *, client: httpx.AsyncClient | None = None, timeout: float = HTTP_TIMEOUT,
                 cache_ttl: float = CACHE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic):
        super().__init__(client, timeout)
        self.plc_url = plc_url.rstrip("/")
        self._cache = _TtlCache(cache_ttl, CACHE_SIZE, clock)

    def invalidate(self, did: str) -> None:
        self._cache.drop(did)

    async def resolve(self, did: str, *, fresh: bool = False) -> dict:
        try:
            did = parse_did(did)
        except InvalidSyntax as exc:
            raise InvalidRequest(str(exc)) from None
        if not fresh and (doc := self._cache.get(did)) is not None:
            return doc
        if did.startswith("did:plc:"):
            doc = await PlcClient(self.plc_url, client=self._http()).get_document(did)
        elif did.startswith("did:web:"):
            doc = await self._resolve_web(did)
        else:
            raise DidNotFound(f"unsupported DID method: {did.split(':')[1]}")
        self._cache.put(did, doc)
        return doc

    async def _resolve_web(self, did: str) -> dict:
        host = did_web_host(did)
        scheme = "http" if _is_loopback(host) else "https"
        url = f"{scheme}://{host}/.well-known/did.json"
        status, body = await fetch_capped(self._http(), "GET", url, what=f"the did:web host {host}", max_bytes=DOC_MAX_BYTES)
        if status == 404:
            raise DidNotFound(f"{did} has no DID document at {url}")
        if status == 410:
            raise DidDeactivated(f"{did} is deactivated")
        if status != 200:
            raise UpstreamFailure(f"{url} answered HTTP {status}")
        try:
            doc = json.loads(body)
        except ValueError:
            raise UpstreamFailure(f"{url} did not answer JSON") from None
        if not isinstance(doc, dict) or doc.get("id") != did:
            raise UpstreamFailure(f"{url} answered a document that is not {did}'s")
        return doc


# ---- handles ---------------------------------------------------------------------------------


class HandleResolver(LazyHttpClient):
    """Handle -> DID via DNS TXT then HTTPS well-known. `dns_txt` and `well_known_url` are
    injectable (tests use a loopback server and no real DNS)."""

    http_options = {"follow_redirects": True, "max_redirects": 3}

    def __init__(self, *, dns_txt: DnsTxt | None = None, client: httpx.AsyncClient | None = None,
                 timeout: float = HTTP_TIMEOUT, well_known_url: Callable[[str], str] | None = None,
                 cache_ttl: float = CACHE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic):
        super().__init__(client, timeout)
        self._dns_txt = dns_txt or system_dns_txt
        self._url = well_known_url or (lambda h: f"https://{h}/.well-known/atproto-did")
        self._cache = _TtlCache(cache_ttl, CACHE_SIZE, clock)

    def invalidate(self, handle: str) -> None:
        self._cache.drop(handle.lower())

    async def resolve(self, handle: str, *, fresh: bool = False) -> str | None:
        """The DID the handle points at, or None if it does not resolve (unambiguously)."""
        handle = parse_handle(handle)
        if not fresh and (did := self._cache.get(handle)) is not None:
            return did
        did = await self._from_dns(handle)
        if did is None:
            did = await self._from_https(handle)
        if did is not None:
            self._cache.put(handle, did)
        return did

    async def _from_dns(self, handle: str) -> str | None:
        try:
            records = await asyncio.wait_for(self._dns_txt(f"_atproto.{handle}"), self._timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            log.info("DNS lookup for %s failed: %s", handle, type(exc).__name__)
            return None
        dids = {r.strip()[4:] for r in records if r.strip().startswith("did=")}
        dids = {d for d in dids if is_valid_did(d)}
        return dids.pop() if len(dids) == 1 else None

    async def _from_https(self, handle: str) -> str | None:
        url = self._url(handle)
        try:
            status, body = await fetch_capped(self._http(), "GET", url, what=f"https://{handle}",
                                              max_bytes=HANDLE_DID_MAX_BYTES)
        except XrpcError as exc:
            log.info("well-known lookup for %s failed: %s", handle, exc.message)
            return None
        if status != 200:
            return None
        lines = body.decode("utf-8", "replace").strip().splitlines()
        did = lines[0].strip() if lines else ""
        return did if is_valid_did(did) else None


class IdentityResolver:
    """Both resolvers plus the bidirectional check (a handle counts only if the doc names it back)."""

    def __init__(self, dids: DidResolver, handles: HandleResolver):
        self.dids = dids
        self.handles = handles

    async def aclose(self) -> None:
        await self.dids.aclose()
        await self.handles.aclose()

    async def resolve_handle(self, handle: str) -> str:
        did = await self.handles.resolve(handle)
        if did is None:
            raise HandleNotFound(f"Unable to resolve handle: {handle}")
        return did

    async def verified_handle(self, did: str, doc: dict) -> str:
        """The doc's handle if it resolves back to `did`, else 'handle.invalid'."""
        handle = doc_handle(doc)
        if handle is None:
            return "handle.invalid"
        return handle if await self.handles.resolve(handle) == did else "handle.invalid"

    async def resolve_identity(self, identifier: str, *, fresh: bool = False) -> dict:
        """{did, handle, didDoc} with a bidirectionally verified handle (identityInfo)."""
        if identifier.startswith("did:"):
            did = identifier
            doc = await self.dids.resolve(did, fresh=fresh)
            return {"did": did, "handle": await self.verified_handle(did, doc), "didDoc": doc}
        handle = parse_handle(identifier)
        if fresh:
            self.handles.invalidate(handle)
        did = await self.resolve_handle(handle)
        doc = await self.dids.resolve(did, fresh=fresh)
        return {"did": did, "handle": handle if doc_handle(doc) == handle else "handle.invalid", "didDoc": doc}
