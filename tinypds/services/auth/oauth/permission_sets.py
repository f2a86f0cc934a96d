"""OAuth permission sets (`include:<nsid>` scopes): resolve the set's lexicon and expand it.

Resolution as the reference does it: DNS TXT `_lexicon.<authority>` ("did=...") -> that DID's
PDS -> its `com.atproto.lexicon.schema` record with rkey <nsid>; a set published by this
server's own account is read from the local repo. Only `repo:` and `rpc:` grants whose every
collection/method lies under the set's own namespace (the NSID minus its name) are taken;
`rpc` grants with `aud: "inherit"` (or inheritAud) take the include's `aud`. Results are
cached for minutes and the last good copy is kept when a later resolution fails. Imports
services.identity (DNS, DIDs) and .scopes; no HTTP types; httpx only through the DID resolver's
lazy client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urlencode

from .scopes import ScopeError, parse_permission

SCHEMA_COLLECTION = "com.atproto.lexicon.schema"
CACHE_SECONDS = 300.0
MAX_SETS = 256
MAX_PERMISSIONS = 64
DOC_MAX_BYTES = 256 * 1024

LocalRecord = Callable[[str, str, str], Awaitable[dict | None]]  # (did, collection, rkey) -> record value


class PermissionSetError(ScopeError):
    """The set cannot be resolved or is not a permission set; the message names it."""


@dataclass(frozen=True)
class PermissionSet:
    nsid: str
    title: str | None = None
    title_lang: dict = field(default_factory=dict)
    detail: str | None = None
    detail_lang: dict = field(default_factory=dict)
    permissions: tuple[dict, ...] = ()  # the lexicon's permission objects, unfiltered

    def text(self, lang: str | None = None) -> tuple[str, str | None]:
        """(title, detail) in `lang` (an Accept-Language list is fine) where the set gives it."""
        for tag in _langs(lang):
            if tag in self.title_lang:
                return self.title_lang[tag], self.detail_lang.get(tag, self.detail)
        return self.title or self.nsid, self.detail


def _langs(header: str | None) -> list[str]:
    tags = []
    for part in (header or "").split(","):
        tag = part.split(";", 1)[0].strip()
        if tag and tag != "*":
            tags.append(tag)
            if "-" in tag:
                tags.append(tag.split("-", 1)[0])
    return tags


def namespace(nsid: str) -> str:
    return nsid.rsplit(".", 1)[0]


def authority_domain(nsid: str) -> str:
    """com.example.auth.full -> auth.example.com (the NSID's authority, as a domain)."""
    return ".".join(reversed(namespace(nsid).split(".")))


def _under(ns: str, item: str) -> bool:
    if item == "*" or "." not in item:
        return False
    item_ns = namespace(item)
    return item_ns == ns or item_ns.startswith(ns + ".")


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def grants(pset: PermissionSet, aud: str | None) -> list[str]:
    """The set's repo:/rpc: grants under its own namespace, as scope strings (others dropped)."""
    ns = namespace(pset.nsid)
    out: list[str] = []
    for p in pset.permissions[:MAX_PERMISSIONS]:
        if not isinstance(p, dict) or p.get("type", "permission") != "permission":
            continue
        resource = p.get("resource")
        if resource == "repo":
            collections = _strings(p.get("collection"))
            if not collections or not all(_under(ns, c) for c in collections):
                continue
            params = [("collection", c) for c in collections]
            actions = _strings(p.get("action"))
            if actions:
                params += [("action", a) for a in actions]
            token = "repo?" + urlencode(params)
        elif resource == "rpc":
            methods = _strings(p.get("lxm"))
            if not methods or not all(_under(ns, m) for m in methods):
                continue
            target = p.get("aud")
            if target == "inherit" or p.get("inheritAud") is True:
                target = aud
            if not isinstance(target, str) or not target:
                continue
            token = "rpc?" + urlencode([("lxm", m) for m in methods] + [("aud", target)])
        else:
            continue
        try:
            parse_permission(token)
        except ScopeError:
            continue
        out.append(token)
    return out


def parse_set(nsid: str, doc: Any) -> PermissionSet:
    if not isinstance(doc, dict) or doc.get("id") != nsid:
        raise PermissionSetError(f"permission set {nsid!r}: the published lexicon has another id")
    main = (doc.get("defs") or {}).get("main") if isinstance(doc.get("defs"), dict) else None
    if not isinstance(main, dict) or main.get("type") != "permission-set":
        raise PermissionSetError(f"{nsid!r} is not a permission set")
    perms = main.get("permissions")

    def lang_map(v: Any) -> dict:
        return {k: s for k, s in v.items() if isinstance(k, str) and isinstance(s, str)} if isinstance(v, dict) else {}

    return PermissionSet(
        nsid=nsid,
        title=main.get("title") if isinstance(main.get("title"), str) else None,
        title_lang=lang_map(main.get("title:lang")),
        detail=main.get("detail") if isinstance(main.get("detail"), str) else None,
        detail_lang=lang_map(main.get("detail:lang")),
        permissions=tuple(p for p in perms if isinstance(p, dict)) if isinstance(perms, list) else (),
    )


class PermissionSetResolver:
    def __init__(self, *, dns_txt: Callable[[str], Awaitable[list[str]]], dids: Any, local_did: Callable[[], str | None],
                 local_record: LocalRecord, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._dns_txt = dns_txt
        self._dids = dids  # services.identity.DidResolver (its lazy httpx client fetches the record too)
        self._local_did = local_did
        self._local_record = local_record
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, PermissionSet]] = {}  # nsid -> (fetched at, last good copy)

    async def resolve(self, nsid: str, *, fresh: bool = False, stale_ok: bool = False) -> PermissionSet:
        """The set (cached for minutes; on failure the last good copy); PermissionSetError if none.
        `stale_ok`: any cached copy will do (a request's token check never waits on the network
        once the set is known; refreshes look it up again)."""
        hit = self._cache.get(nsid)
        if hit is not None and not fresh and (stale_ok or self.clock() - hit[0] < self.cache_seconds):
            return hit[1]
        try:
            pset = await self._fetch(nsid)
        except PermissionSetError:
            if hit is not None:
                return hit[1]
            raise
        except Exception as exc:  # noqa: BLE001  (network, DID and record errors of every kind)
            if hit is not None:
                return hit[1]
            raise PermissionSetError(f"permission set {nsid!r} could not be resolved: "
                                     f"{getattr(exc, 'message', None) or type(exc).__name__}") from None
        if len(self._cache) >= MAX_SETS and nsid not in self._cache:
            self._cache.pop(next(iter(self._cache)))
        self._cache[nsid] = (self.clock(), pset)
        return pset

    async def _fetch(self, nsid: str) -> PermissionSet:
        domain = authority_domain(nsid)
        records = await self._dns_txt(f"_lexicon.{domain}")
        dids = [r[4:].strip() for r in records if r.startswith("did=")]
        if len(dids) != 1 or not dids[0].startswith("did:"):
            raise PermissionSetError(f"permission set {nsid!r} could not be resolved: no single did= TXT record at _lexicon.{domain}")
        did = dids[0]
        if did == self._local_did():
            value = await self._local_record(did, SCHEMA_COLLECTION, nsid)
            if value is None:
                raise PermissionSetError(f"permission set {nsid!r} is not published in this server's repository")
            return parse_set(nsid, value)
        from ...identity.resolver import doc_pds_endpoint
        from ...identity.plc import fetch_capped

        doc = await self._dids.resolve(did)
        pds = doc_pds_endpoint(doc)
        if not pds:
            raise PermissionSetError(f"permission set {nsid!r}: {did} names no PDS")
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.repo.getRecord?" + urlencode(
            {"repo": did, "collection": SCHEMA_COLLECTION, "rkey": nsid})
        status, body = await fetch_capped(self._dids._http(), "GET", url, what=f"the lexicon host of {nsid}",
                                          max_bytes=DOC_MAX_BYTES)
        if status != 200:
            raise PermissionSetError(f"permission set {nsid!r} could not be resolved: its record answered {status}")
        import json

        try:
            value = json.loads(body)["value"]
        except (ValueError, KeyError, TypeError):
            raise PermissionSetError(f"permission set {nsid!r}: the record is not valid JSON") from None
        return parse_set(nsid, value)

    async def expand(self, tokens: tuple[str, ...] | list[str], *, fresh: bool = False,
                     stale_ok: bool = False) -> tuple[str, ...]:
        """The scope tokens with each include: token followed by the grants it stands for."""
        out: list[str] = []
        for token in tokens:
            out.append(token)
            perm = parse_permission(token) if token.startswith("include:") or token.startswith("include?") else None
            if perm is None or perm.resource != "include":
                continue
            pset = await self.resolve(perm.values[0], fresh=fresh, stale_ok=stale_ok)
            out.extend(g for g in grants(pset, perm.aud) if g not in out)
        return tuple(out)

    def cached(self, nsid: str) -> PermissionSet | None:
        hit = self._cache.get(nsid)
        return hit[1] if hit else None


def for_app(svc: Any) -> PermissionSetResolver:
    """The resolver on the app's own services: DNS as the handle resolver asks it, DID documents
    through the identity resolver (same caches and client), this account's sets from its repo."""
    resolver = svc.identity.resolver

    async def local_record(did: str, collection: str, rkey: str) -> dict | None:
        repo = svc.repo
        view = repo.get_record(collection, rkey) if repo is not None else None
        return view.value if view is not None else None

    return PermissionSetResolver(dns_txt=resolver.handles._dns_txt, dids=resolver.dids,
                                 local_did=lambda: svc.account.did if svc.account is not None else None,
                                 local_record=local_record)


def oauth_service(svc: Any) -> Any:
    """The app's OAuthService (with permission sets), built on first use and kept on `svc`."""
    if svc.oauth is None and svc.db is not None:
        from .server import OAuthService

        svc.oauth = OAuthService(svc.db, issuer=svc.settings.public_url,
                                 permission_sets=for_app(svc) if svc.identity is not None else None)
    return svc.oauth
