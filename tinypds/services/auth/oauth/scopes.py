"""atproto OAuth scopes: parse the scope string, decide what a grant allows, say it in words.

Owns the permission grammar (`resource[:positional][?param=value&...]`, atproto.com/specs/
permission), the transitional scopes and `scope_allows(scopes, action)`, which the XRPC
layer asks before a write, an upload, a proxied call or an account/identity change. Pure:
imports nothing from tinypds but errors. Tricky bits: `include:` permission sets are parsed
here but resolved and expanded by .permission_sets (a granted include: token itself allows
nothing; its expansion does); `rpc:*` with `aud=*` is invalid; transition:generic excludes
chat.bsky.* and account/identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qsl

from ....errors import Forbidden

TRANSITIONAL = ("transition:generic", "transition:chat.bsky", "transition:email")
SUPPORTED = ("atproto", *TRANSITIONAL, "repo", "rpc", "blob", "account", "identity", "include")
REPO_ACTIONS = ("create", "update", "delete")
ACCOUNT_ATTRS = ("email", "repo", "status")
_NSID = re.compile(r"^[a-zA-Z](?:[a-zA-Z0-9-]{0,62})(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,62})?)+$")
_MIME = re.compile(r"^(\*/\*|[a-z0-9][a-z0-9.+-]*/(\*|[a-z0-9][a-z0-9.+-]*))$")
_AUD = re.compile(r"^(\*|did:[a-z]+:[a-zA-Z0-9._:%-]+(#[a-zA-Z0-9._-]+)?)$")


class ScopeError(ValueError):
    """A scope string (or one of its tokens) is malformed or unsupported."""


class ScopeMissingError(Forbidden):
    """An OAuth token lacks the permission the call needs (403)."""


# ---- actions the XRPC layer asks about ------------------------------------------------------


@dataclass(frozen=True)
class RepoWrite:
    collection: str
    action: str  # create | update | delete

    def scope(self) -> str:
        return f"repo:{self.collection}?action={self.action}"


@dataclass(frozen=True)
class BlobUpload:
    mime: str

    def scope(self) -> str:
        return f"blob:{self.mime}"


@dataclass(frozen=True)
class RpcCall:
    lxm: str
    aud: str  # did#service_id of the target

    def scope(self) -> str:
        return f"rpc:{self.lxm}?aud={self.aud}"


@dataclass(frozen=True)
class AccountAccess:
    attr: str  # email | repo | status
    action: str = "read"  # read | manage

    def scope(self) -> str:
        return f"account:{self.attr}" + ("?action=manage" if self.action == "manage" else "")


@dataclass(frozen=True)
class IdentityChange:
    attr: str  # handle | *

    def scope(self) -> str:
        return f"identity:{self.attr}"


Action = RepoWrite | BlobUpload | RpcCall | AccountAccess | IdentityChange


# ---- parsed permissions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Permission:
    resource: str
    values: tuple[str, ...]  # collections / lxms / mimes / attr / nsid
    actions: tuple[str, ...] = ()
    aud: str | None = None


_POSITIONAL_PARAM = {"repo": "collection", "rpc": "lxm", "blob": "accept", "account": "attr", "identity": "attr", "include": "nsid"}
_ALLOWED_PARAMS = {
    "repo": {"collection", "action"},
    "rpc": {"lxm", "aud"},
    "blob": {"accept"},
    "account": {"attr", "action"},
    "identity": {"attr"},
    "include": {"nsid", "aud"},
}


def parse_permission(token: str) -> Permission | None:
    """One scope token -> Permission (None for `atproto` and the transitional scopes)."""
    if token == "atproto" or token in TRANSITIONAL:
        return None
    head, _, query = token.partition("?")
    resource, _, positional = head.partition(":")
    if resource not in _POSITIONAL_PARAM:
        raise ScopeError(f"unsupported scope {token!r}")
    params: dict[str, list[str]] = {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)) if query else []:
        if k not in _ALLOWED_PARAMS[resource]:
            raise ScopeError(f"unknown parameter {k!r} in scope {token!r}")
        params.setdefault(k, []).append(v)
    main = _POSITIONAL_PARAM[resource]
    if positional and main in params:
        raise ScopeError(f"scope {token!r} names {main} twice")
    values = tuple([positional] if positional else params.pop(main, []))
    params.pop(main, None)
    if not values:
        raise ScopeError(f"scope {token!r} needs a {main}")

    def single(name: str) -> str | None:
        got = params.get(name, [])
        if len(got) > 1:
            raise ScopeError(f"parameter {name!r} given twice in scope {token!r}")
        return got[0] if got else None

    if resource == "repo":
        for c in values:
            if c != "*" and not _NSID.match(c):
                raise ScopeError(f"invalid collection in scope {token!r}")
        actions = tuple(params.get("action") or REPO_ACTIONS)
        if any(a not in REPO_ACTIONS for a in actions):
            raise ScopeError(f"invalid action in scope {token!r}")
        return Permission("repo", values, tuple(sorted(set(actions))))
    if resource == "rpc":
        aud = single("aud")
        if aud is None or not _AUD.match(aud):
            raise ScopeError(f"scope {token!r} needs a valid aud (a service DID with #fragment, or *)")
        for m in values:
            if m != "*" and not _NSID.match(m):
                raise ScopeError(f"invalid method in scope {token!r}")
        if "*" in values and aud == "*":
            raise ScopeError(f"scope {token!r} may not combine lxm=* and aud=*")
        return Permission("rpc", values, aud=aud)
    if resource == "blob":
        if any(not _MIME.match(m) for m in values):
            raise ScopeError(f"invalid MIME pattern in scope {token!r}")
        return Permission("blob", values)
    if resource == "account":
        action = single("action") or "read"
        if len(values) != 1 or values[0] not in ACCOUNT_ATTRS or action not in ("read", "manage"):
            raise ScopeError(f"invalid scope {token!r}")
        return Permission("account", values, (action,))
    if resource == "identity":
        if len(values) != 1 or values[0] not in ("handle", "*"):
            raise ScopeError(f"invalid scope {token!r}")
        return Permission("identity", values)
    # include: a permission set; resolved and expanded by .permission_sets
    if len(values) != 1 or not _NSID.match(values[0]):
        raise ScopeError(f"invalid scope {token!r}")
    return Permission("include", values, aud=single("aud"))


def parse_scope(scope: str, *, allow_include: bool = False) -> tuple[str, ...]:
    """Validate a requested scope string for PAR -> its distinct tokens, in order.

    `atproto` is required; `include:` permission sets are refused unless `allow_include`
    (the caller then resolves them: services.auth.oauth.permission_sets)."""
    tokens = tuple(dict.fromkeys(t for t in (scope or "").split(" ") if t))
    if "atproto" not in tokens:
        raise ScopeError('the "atproto" scope is required')
    for t in tokens:
        perm = parse_permission(t)
        if perm is not None and perm.resource == "include" and not allow_include:
            raise ScopeError(f"permission set {t!r} cannot be resolved by this server; request its permissions directly")
    return tokens


def include_tokens(tokens: Iterable[str]) -> list[tuple[str, str, str | None]]:
    """(token, nsid, aud) of each include: token."""
    out = []
    for t in tokens:
        try:
            perm = parse_permission(t)
        except ScopeError:
            continue
        if perm is not None and perm.resource == "include":
            out.append((t, perm.values[0], perm.aud))
    return out


def _mime_matches(pattern: str, mime: str) -> bool:
    mime = mime.split(";", 1)[0].strip().lower()
    if pattern == "*/*":
        return True
    if pattern.endswith("/*"):
        return mime.split("/", 1)[0] == pattern[:-2]
    return mime == pattern


def scope_allows(scopes: Iterable[str], action: Action) -> bool:
    """True iff the granted scope tokens allow `action`."""
    tokens = set(scopes)
    generic = "transition:generic" in tokens
    if isinstance(action, RpcCall) and action.lxm.startswith("chat.bsky.") and "transition:chat.bsky" in tokens:
        return True
    if generic and isinstance(action, (RepoWrite, BlobUpload)):
        return True
    if generic and isinstance(action, RpcCall) and not action.lxm.startswith("chat.bsky."):
        return True
    if generic and isinstance(action, AccountAccess) and action.action == "read" and action.attr != "email":
        return True
    if "transition:email" in tokens and action == AccountAccess("email", "read"):
        return True
    for t in tokens:
        try:
            perm = parse_permission(t)
        except ScopeError:
            continue
        if perm is not None and _perm_allows(perm, action):
            return True
    return False


def _perm_allows(perm: Permission, action: Action) -> bool:
    if isinstance(action, RepoWrite):
        return perm.resource == "repo" and action.action in perm.actions and ("*" in perm.values or action.collection in perm.values)
    if isinstance(action, BlobUpload):
        return perm.resource == "blob" and any(_mime_matches(p, action.mime) for p in perm.values)
    if isinstance(action, RpcCall):
        # a bare DID (getServiceAuth's aud) matches a permission for any of that DID's services
        aud_ok = perm.aud in ("*", action.aud) or ("#" not in action.aud and (perm.aud or "").split("#")[0] == action.aud)
        return perm.resource == "rpc" and ("*" in perm.values or action.lxm in perm.values) and aud_ok
    if isinstance(action, AccountAccess):
        if perm.resource != "account" or perm.values[0] != action.attr:
            return False
        return action.action == "read" or "manage" in perm.actions
    if isinstance(action, IdentityChange):
        return perm.resource == "identity" and (perm.values[0] == "*" or perm.values[0] == action.attr)
    return False


def require(scopes: Iterable[str], action: Action) -> None:
    """Raise ScopeMissingError (403) unless the scopes allow `action`."""
    if not scope_allows(scopes, action):
        raise ScopeMissingError(f'Missing required scope "{action.scope()}"')


# ---- words for the consent page ----------------------------------------------------------------


def describe(tokens: Iterable[str], sets: dict[str, tuple[str, str | None]] | None = None) -> list[str]:
    """Plain-language lines for the consent page, one per granted permission; an include:
    token is shown by its set's own (title, detail) from `sets` (nsid -> words)."""
    lines: list[str] = []
    for t in tokens:
        if t.startswith("include:") or t.startswith("include?"):
            for _, nsid, _aud in include_tokens([t]):
                title, detail = (sets or {}).get(nsid, (nsid, None))
                lines.append(f"{title}: {detail}" if detail else title)
            continue
        if t == "atproto":
            lines.append("Know your account identifier (DID) and handle")
        elif t == "transition:generic":
            lines.append("Read and write everything in your public repository, upload media, and use apps and feeds on your behalf (like an app password)")
        elif t == "transition:chat.bsky":
            lines.append("Read and send your Bluesky direct messages")
        elif t == "transition:email":
            lines.append("See your email address")
        else:
            perm = parse_permission(t)
            if perm is None:
                continue
            if perm.resource == "repo":
                what = ", ".join("any collection" if v == "*" else v for v in perm.values)
                lines.append(f"{'/'.join(a.capitalize() for a in perm.actions)} records in {what}")
            elif perm.resource == "rpc":
                aud = "any service" if perm.aud == "*" else perm.aud
                methods = ", ".join("any method" if v == "*" else v for v in perm.values)
                lines.append(f"Call {methods} on {aud} as you")
            elif perm.resource == "blob":
                lines.append(f"Upload files of type {', '.join(perm.values)}")
            elif perm.resource == "account":
                lines.append(f"{'Manage' if 'manage' in perm.actions else 'See'} your account {perm.values[0]}")
            elif perm.resource == "identity":
                lines.append("Change your handle" if perm.values[0] == "handle" else "Change your identity (handle and DID document)")
    return lines
