"""Every line of the atproto interop syntax fixtures, plus a few behaviours the fixtures don't pin."""

from __future__ import annotations

import pytest

from tests.fixtures import fixture_lines, interop_root
from tinypds.core import syntax as sx

# fixture file stem -> (parser, boolean twin)
_KINDS = {
    "did": (sx.parse_did, sx.is_valid_did),
    "handle": (sx.parse_handle, sx.is_valid_handle),
    "nsid": (sx.parse_nsid, sx.is_valid_nsid),
    "recordkey": (sx.parse_rkey, sx.is_valid_rkey),
    "tid": (sx.parse_tid, sx.is_valid_tid),
    "aturi": (sx.parse_aturi, sx.is_valid_aturi),
    "atidentifier": (sx.parse_at_identifier, sx.is_valid_at_identifier),
    "datetime": (sx.parse_datetime, sx.is_valid_datetime),
    "language": (sx.parse_language, sx.is_valid_language),
    "cid": (sx.parse_cid_string, sx.is_valid_cid_string),
    "uri": (sx.parse_uri, sx.is_valid_uri),
}


def _cases(suffix: str):
    """(kind, line) params for every fixture line of files ending in `suffix`; collected without skipping."""
    if interop_root() is None:
        return [pytest.param(None, None, marks=pytest.mark.skip(reason="interop fixtures not found"))]
    out = []
    for kind in _KINDS:
        kinds = [f"{kind}_syntax{suffix}"]
        if suffix == "_invalid" and kind in ("datetime", "language"):
            kinds.append(f"{kind}_parse_invalid")  # semantically invalid: must also be refused
        for stem in kinds:
            path = interop_root() / "syntax" / f"{stem}.txt"
            if not path.exists():
                continue
            for i, line in enumerate(fixture_lines("syntax", f"{stem}.txt")):
                out.append(pytest.param(kind, line, id=f"{stem}:{i}"))
    return out


@pytest.mark.parametrize("kind,line", _cases("_valid"))
def test_valid_fixture_lines_parse(kind, line):
    parse, is_valid = _KINDS[kind]
    assert is_valid(line), line
    parse(line)  # must not raise


@pytest.mark.parametrize("kind,line", _cases("_invalid"))
def test_invalid_fixture_lines_raise(kind, line):
    parse, is_valid = _KINDS[kind]
    assert not is_valid(line), line
    with pytest.raises(sx.InvalidSyntax):
        parse(line)


def test_fixture_files_are_all_covered():
    root = interop_root()
    if root is None:
        pytest.skip("interop fixtures not found")
    covered = {f"{k}_syntax_{v}" for k in _KINDS for v in ("valid", "invalid")}
    covered |= {"datetime_parse_invalid", "language_parse_invalid"}
    present = {p.stem for p in (root / "syntax").glob("*.txt")}
    assert present <= covered, present - covered


def test_handle_is_normalized_to_lowercase():
    assert sx.parse_handle("Alice.Example.COM") == "alice.example.com"
    assert sx.parse_at_identifier("Alice.Test") == "alice.test"
    assert sx.parse_at_identifier("did:plc:ABC") == "did:plc:ABC"


def test_handle_policy_is_separate_from_syntax():
    for h in ("laptop.local", "x.onion", "a.invalid", "host.localhost", "a.internal", "a.example", "a.alt", "a.arpa"):
        assert sx.is_valid_handle(h)
        assert not sx.handle_is_allowed_for_account(h)
    assert sx.handle_is_allowed_for_account("alice.bsky.social")
    assert sx.handle_is_allowed_for_account("Alice.TEST")
    assert not sx.handle_is_allowed_for_account("Laptop.LOCAL")


def test_aturi_parts_and_str_round_trip():
    u = sx.parse_aturi("at://did:plc:abc123/app.bsky.feed.post/3jzfcijpj2z2a")
    assert (u.authority, u.collection, u.rkey) == ("did:plc:abc123", "app.bsky.feed.post", "3jzfcijpj2z2a")
    assert str(u) == "at://did:plc:abc123/app.bsky.feed.post/3jzfcijpj2z2a"
    bare = sx.parse_aturi("at://alice.test")
    assert (bare.collection, bare.rkey) == (None, None)
    assert str(bare) == "at://alice.test"
    assert str(sx.AtUri("did:plc:x", "app.bsky.feed.like")) == "at://did:plc:x/app.bsky.feed.like"


def test_datetime_calendar_rules():
    assert sx.is_valid_datetime("2024-02-29T00:00:00Z")
    assert not sx.is_valid_datetime("2023-02-29T00:00:00Z")
    assert not sx.is_valid_datetime("2024-04-31T00:00:00Z")
    assert sx.is_valid_datetime("0000-01-01T01:00:00+01:00")
    assert not sx.is_valid_datetime("1985-04-12T23:20:50Z-00:00")


def test_non_strings_are_invalid_not_crashes():
    for parse, is_valid in _KINDS.values():
        for bad in (None, 12, b"did:plc:abc", ["x"]):
            assert not is_valid(bad)
            with pytest.raises(sx.InvalidSyntax):
                parse(bad)


def test_error_message_is_bounded():
    with pytest.raises(sx.InvalidSyntax) as info:
        sx.parse_uri("x" * 10000)
    assert len(str(info.value)) < 120
