"""Lexicon validator: the interop lexicon fixtures row by row, graphemes, params/bodies, real app.bsky lexicons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures import fixture_path, interop_root
from tinypds.core import dagcbor
from tinypds.core.cid import cid_for_raw
from tinypds.core.lexicon import (
    LexiconCatalog,
    LexiconDocError,
    LexiconNotFound,
    LexiconValidationError,
    catalog_from_docs,
    count_graphemes,
    validate_lexicon_doc,
)

_REAL_LEXICONS = Path(__file__).resolve().parents[2].parent / "shared" / "lexicons"


def _rows(name: str):
    """Fixture rows as params, collected without skipping when the fixtures are absent."""
    root = interop_root()
    if root is None or not (root / "lexicon" / name).exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"interop fixture lexicon/{name} not found"))]
    rows = json.loads((root / "lexicon" / name).read_text(encoding="utf-8"))
    return [pytest.param(r, id=f"{i}-{r['name']}") for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def fixture_catalog() -> LexiconCatalog:
    docs = [json.loads(p.read_text()) for p in sorted(fixture_path("lexicon", "catalog").glob("*.json"))]
    assert docs
    return catalog_from_docs(docs)


# ---- interop fixtures ---------------------------------------------------------------


@pytest.mark.parametrize("row", _rows("lexicon-valid.json"))
def test_valid_lexicon_docs(row):
    validate_lexicon_doc(row["lexicon"])
    LexiconCatalog().add(row["lexicon"])


@pytest.mark.parametrize("row", _rows("lexicon-invalid.json"))
def test_invalid_lexicon_docs(row):
    with pytest.raises(LexiconDocError):
        validate_lexicon_doc(row["lexicon"])
    with pytest.raises(LexiconDocError):
        LexiconCatalog().add(row["lexicon"])


@pytest.mark.parametrize("row", _rows("record-data-valid.json"))
def test_valid_record_data(fixture_catalog, row):
    value = dagcbor.from_json(row["data"])
    fixture_catalog.validate_record(value["$type"], value, rkey=row["rkey"])


@pytest.mark.parametrize("row", _rows("record-data-invalid.json"))
def test_invalid_record_data(fixture_catalog, row):
    value = dagcbor.from_json(row["data"])  # all rows are valid data model; the schema refuses them
    with pytest.raises(LexiconValidationError) as info:
        fixture_catalog.validate_record(value["$type"], value, rkey=row["rkey"])
    assert str(info.value).startswith("Record")


def test_unknown_must_be_a_plain_object(fixture_catalog):
    # the fixture rows for these also lack "integer"; check the unknown rule on its own
    blob = {"$type": "blob", "ref": cid_for_raw(b"x"), "mimeType": "text/plain", "size": 1}
    for bad, reason in ((False, "must be an object"), (b"123", "must be an object"), (blob, "must not be a blob")):
        with pytest.raises(LexiconValidationError) as info:
            fixture_catalog.validate_record(
                "example.lexicon.record", {"$type": "example.lexicon.record", "integer": 1, "unknown": bad}
            )
        assert (info.value.path, info.value.reason) == ("Record/unknown", reason)


def test_error_names_the_field(fixture_catalog):
    base = {"$type": "example.lexicon.record", "integer": 1}
    cases = {
        "lenString": ("x", "Record/lenString must not be shorter than 10 characters"),
        "rangeInteger": (9000, "Record/rangeInteger can not be greater than 20"),
        "lenArray": ([0], "Record/lenArray must not have fewer than 2 elements"),
        "array": ([1, True], "Record/array/1 must be an integer"),
        "formats": ({"did": "nope"}, "Record/formats/did must be a valid did"),
        "graphemeString": ("a" * 21, "Record/graphemeString must not be longer than 20 graphemes"),
    }
    for field, (bad, message) in cases.items():
        with pytest.raises(LexiconValidationError) as info:
            fixture_catalog.validate_record("example.lexicon.record", {**base, field: bad})
        assert str(info.value) == message
    with pytest.raises(LexiconValidationError) as info:
        fixture_catalog.validate_record("example.lexicon.record", {"$type": "example.lexicon.record"})
    assert info.value.path == "Record" and "integer" in info.value.reason


def test_record_key_type_and_type_field(fixture_catalog):
    good = {"$type": "example.lexicon.record", "integer": 1}
    fixture_catalog.validate_record("example.lexicon.record", good, rkey="demo")
    with pytest.raises(LexiconValidationError, match="Record key"):
        fixture_catalog.validate_record("example.lexicon.record", good, rkey="other")
    with pytest.raises(LexiconValidationError, match=r"Record/\$type"):
        fixture_catalog.validate_record("example.lexicon.record", {**good, "$type": "x.y.z"})
    with pytest.raises(LexiconNotFound):
        fixture_catalog.validate_record("com.example.unknownThing", {"$type": "com.example.unknownThing"})
    assert fixture_catalog.has_record("example.lexicon.record")
    assert not fixture_catalog.has_record("example.lexicon.query")


def test_duplicate_doc_refused(fixture_catalog):
    with pytest.raises(LexiconDocError):
        fixture_catalog.add(fixture_catalog.get_doc("example.lexicon.record"))


def test_params_and_bodies(fixture_catalog):
    q = "example.lexicon.query"
    assert fixture_catalog.coerce_params(q, {"stringField": "x", "integer": "7", "boolean": "true", "array": ["1", "2"]}) == {
        "stringField": "x", "integer": 7, "boolean": True, "array": [1, 2]
    }
    with pytest.raises(LexiconValidationError, match="Params/integer must be an integer"):
        fixture_catalog.coerce_params(q, {"stringField": "x", "integer": "seven"})
    with pytest.raises(LexiconValidationError, match='Params must have the property "stringField"'):
        fixture_catalog.coerce_params(q, {})
    with pytest.raises(LexiconValidationError, match="Params/handle must be a valid handle"):
        fixture_catalog.validate_params(q, {"stringField": "x", "handle": "not a handle"})
    fixture_catalog.validate_output(q, {"a": 1})
    with pytest.raises(LexiconValidationError, match="Output/b must be an integer"):
        fixture_catalog.validate_output(q, {"a": 1, "b": "2"})
    p = "example.lexicon.procedure"
    with pytest.raises(LexiconValidationError, match='Input must have the property "preferences"'):
        fixture_catalog.validate_input(p, {})
    blob = {"$type": "blob", "ref": cid_for_raw(b"x"), "mimeType": "text/plain", "size": 1}
    fixture_catalog.validate_output(p, {"blob": blob, "unknown": {"k": 1}, "array": [1]})
    with pytest.raises(LexiconNotFound):
        fixture_catalog.validate_input("example.lexicon.record", {})


# ---- graphemes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,count",
    [
        ("", 0),
        ("hello", 5),
        ("a\r\nb", 3),
        ("e\u0301", 1),  # combining acute
        ("\U0001F469\u200d\U0001F469\u200d\U0001F466\u200d\U0001F466", 1),  # family ZWJ sequence
        ("\U0001F3F3\ufe0f\u200d\U0001F308", 1),  # rainbow flag
        ("\U0001F1E9\U0001F1EA\U0001F1EB", 2),  # DE flag + lone RI
        ("\U0001F44D\U0001F3FD", 1),  # thumbs up + skin tone
        ("\u2764\ufe0f", 1),  # heart + VS16
        ("\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F", 1),  # England tag flag
        ("\u1100\u1161\u11a8", 1),  # conjoining jamo
        ("한국어", 3),
        ("日本語のテキスト", 8),
        ("a\u200db", 2),  # ZWJ between letters does not join the next letter
        ("\U0001F1E9\U0001F1EA\U0001F3F3\ufe0f\u200d\U0001F308" * 6, 12),
    ],
)
def test_count_graphemes(text, count):
    assert count_graphemes(text) == count


def test_string_lengths_are_utf8_bytes():
    cat = catalog_from_docs(
        [{"lexicon": 1, "id": "com.example.len", "defs": {"main": {"type": "string", "maxLength": 6}}}]
    )
    cat.validate("com.example.len", "ab€")  # 5 bytes
    with pytest.raises(LexiconValidationError, match="longer than 6"):
        cat.validate("com.example.len", "abcd€")  # 5 code points, 7 bytes


# ---- the real published lexicons ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_catalog() -> LexiconCatalog:
    if not _REAL_LEXICONS.is_dir():
        pytest.skip(f"published lexicons not found at {_REAL_LEXICONS}")
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(_REAL_LEXICONS.rglob("*.json"))]
    assert len(docs) > 100
    return catalog_from_docs(docs)


_DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
_POST_URI = f"at://{_DID}/app.bsky.feed.post/3k2yihcrp6f2c"
_CID = "bafyreiclp443lavogvhj3d2ob2cxbfuscni2k5jk7bebjzg7khl3esabwq"
_NOW = "2024-05-01T12:00:00.000Z"


def test_real_post(real_catalog):
    post = dagcbor.from_json(
        {
            "$type": "app.bsky.feed.post",
            "text": "hello @alice.test 👋🏽",
            "createdAt": _NOW,
            "langs": ["en"],
            "facets": [
                {
                    "index": {"byteStart": 6, "byteEnd": 17},
                    "features": [{"$type": "app.bsky.richtext.facet#mention", "did": _DID}],
                }
            ],
            "reply": {"root": {"uri": _POST_URI, "cid": _CID}, "parent": {"uri": _POST_URI, "cid": _CID}},
            "embed": {
                "$type": "app.bsky.embed.images",
                "images": [
                    {
                        "alt": "a cat",
                        "image": {"$type": "blob", "ref": {"$link": _CID}, "mimeType": "image/jpeg", "size": 1000},
                        "aspectRatio": {"width": 4, "height": 3},
                    }
                ],
            },
        }
    )
    real_catalog.validate_record("app.bsky.feed.post", post, rkey="3k2yihcrp6f2c")

    def refused(change: dict, message: str):
        with pytest.raises(LexiconValidationError) as info:
            real_catalog.validate_record("app.bsky.feed.post", {**post, **change})
        assert message in str(info.value)

    refused({"text": "é" * 301}, "Record/text must not be longer than 300 graphemes")
    refused({"text": "a" * 3001}, "Record/text must not be longer than 3000 characters")
    refused({"createdAt": "yesterday"}, "Record/createdAt must be a valid datetime")
    refused({"langs": ["english!"]}, "Record/langs/0 must be a valid language")
    bad_reply = {"root": {"uri": "https://example.com", "cid": _CID}, "parent": post["reply"]["parent"]}
    refused({"reply": bad_reply}, "Record/reply/root/uri must be a valid at-uri")
    video = {"$type": "blob", "ref": dagcbor.CID.parse(_CID), "mimeType": "video/mp4", "size": 10}
    refused({"embed": {"$type": "app.bsky.embed.images", "images": [{"alt": "", "image": video}]}},
            "Record/embed/images/0/image mimeType video/mp4 is not accepted")
    no_date = dict(post)
    del no_date["createdAt"]
    with pytest.raises(LexiconValidationError, match='Record must have the property "createdAt"'):
        real_catalog.validate_record("app.bsky.feed.post", no_date)
    # an open union takes types it does not know
    real_catalog.validate_record("app.bsky.feed.post", {**post, "embed": {"$type": "com.example.embed", "x": 1}})


def test_real_profile_and_like(real_catalog):
    profile = {"$type": "app.bsky.actor.profile", "displayName": "Alice", "description": "hi"}
    real_catalog.validate_record("app.bsky.actor.profile", profile, rkey="self")
    with pytest.raises(LexiconValidationError, match="Record key"):
        real_catalog.validate_record("app.bsky.actor.profile", profile, rkey="3k2yihcrp6f2c")
    with pytest.raises(LexiconValidationError, match="Record/displayName must not be longer than 64 graphemes"):
        real_catalog.validate_record("app.bsky.actor.profile", {**profile, "displayName": "x" * 65})
    huge = {"$type": "blob", "ref": dagcbor.CID.parse(_CID), "mimeType": "image/png", "size": 10_000_000}
    with pytest.raises(LexiconValidationError, match="Record/avatar is too big"):
        real_catalog.validate_record("app.bsky.actor.profile", {**profile, "avatar": huge})

    like = {"$type": "app.bsky.feed.like", "subject": {"uri": _POST_URI, "cid": _CID}, "createdAt": _NOW}
    real_catalog.validate_record("app.bsky.feed.like", like, rkey="3k2yihcrp6f2c")
    with pytest.raises(LexiconValidationError, match="Record/subject/uri must be a valid at-uri"):
        real_catalog.validate_record("app.bsky.feed.like", {**like, "subject": {"uri": "at://nope", "cid": _CID}})
    with pytest.raises(LexiconValidationError, match="Record/subject/cid must be a valid cid"):
        real_catalog.validate_record("app.bsky.feed.like", {**like, "subject": {"uri": _POST_URI, "cid": "x"}})
    with pytest.raises(LexiconValidationError, match="Record key"):
        real_catalog.validate_record("app.bsky.feed.like", like, rkey="self")


def test_real_createrecord_params_and_input(real_catalog):
    got = real_catalog.coerce_params("app.bsky.feed.getAuthorFeed", {"actor": "alice.test"})
    assert got["actor"] == "alice.test" and got["limit"] == 50  # default applied
    with pytest.raises(LexiconValidationError, match="Params/limit can not be greater than 100"):
        real_catalog.coerce_params("app.bsky.feed.getAuthorFeed", {"actor": "alice.test", "limit": "1000"})
    body = {"repo": _DID, "collection": "app.bsky.feed.like", "record": {"a": 1}}
    real_catalog.validate_input("com.atproto.repo.createRecord", body)
    with pytest.raises(LexiconValidationError, match="Input/collection must be a valid nsid"):
        real_catalog.validate_input("com.atproto.repo.createRecord", {**body, "collection": "like"})
