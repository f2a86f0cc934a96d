"""DAG-CBOR and CID: every data-model fixture, plus strictness checks."""

import base64
import json

import pytest

from tinypds.core import dagcbor
from tinypds.core.cid import CID, cid_for_dagcbor, cid_for_raw
from tests.fixtures import fixture_lines, fixture_path


def _load(name):
    return json.loads(fixture_path("data-model", name).read_text())


def _b64(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


def test_data_model_fixtures_roundtrip():
    rows = _load("data-model-fixtures.json")
    assert rows
    for row in rows:
        value = dagcbor.from_json(row["json"])
        encoded = dagcbor.encode(value)
        assert encoded == _b64(row["cbor_base64"])
        assert str(cid_for_dagcbor(encoded)) == row["cid"]
        assert dagcbor.to_json(dagcbor.decode(encoded)) == row["json"]


@pytest.mark.parametrize("idx", range(5))
def test_data_model_valid(idx):
    rows = _load("data-model-valid.json")
    if idx >= len(rows):
        pytest.skip("fewer rows")
    value = dagcbor.from_json(rows[idx]["json"])
    assert dagcbor.decode(dagcbor.encode(value)) == value


def test_data_model_invalid_all_rejected():
    rows = _load("data-model-invalid.json")
    assert rows
    for row in rows:
        with pytest.raises(dagcbor.DagCborError):
            value = dagcbor.from_json(row["json"])
            if type(value) is not dict:
                raise dagcbor.DagCborError("top-level must be an object")


@pytest.mark.parametrize(
    "hexdata,why",
    [
        ("f93c00", "float16"),
        ("fb3ff8000000000000", "float64"),
        ("a2616201616101", "unsorted keys"),
        ("1817", "non-minimal int"),
        ("9f01ff", "indefinite array"),
        ("c11a514b67b0", "datetime tag"),
        ("a10101", "int map key"),
        ("f7", "undefined"),
        ("c34a01000000000000000000", "bignum"),
        ("0001", "trailing bytes"),
        ("d82a4400616263", "bad CID link"),
        ("d82b4100", "unknown tag"),
        ("a261610161610102", "duplicate keys"),
        ("", "empty"),
    ],
)
def test_strict_decode_rejects(hexdata, why):
    with pytest.raises(dagcbor.DagCborError):
        dagcbor.decode(bytes.fromhex(hexdata))


def test_encode_refuses_float_and_sorts_keys():
    with pytest.raises(dagcbor.DagCborError):
        dagcbor.encode({"a": 1.5})
    enc = dagcbor.encode({"bb": 1, "a": 2, "c": 3})
    assert list(dagcbor.decode(enc).keys()) == ["a", "c", "bb"]


def test_cid_string_roundtrip_and_fixtures():
    for line in fixture_lines("syntax", "cid_syntax_valid.txt"):
        s = line.strip()
        try:
            cid = CID.parse(s)
        except ValueError:
            continue  # syntax-valid but not a CIDv1 we decode (e.g. contrived multibases)
        assert CID.parse(str(cid)) == cid
    c = cid_for_raw(b"hello")
    assert str(c).startswith("bafkrei")
    assert CID.parse(str(c)) == c and c.codec == 0x55 and c.matches(b"hello")
    assert not c.matches(b"hellO")
    with pytest.raises(ValueError):
        CID.parse("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR")
    with pytest.raises(ValueError):
        CID.parse("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdI")


def test_blob_refs_found():
    rec = dagcbor.from_json(
        {
            "$type": "app.bsky.feed.post",
            "embed": {"images": [{"image": {"$type": "blob", "ref": {"$link": str(cid_for_raw(b"x"))}, "mimeType": "image/png", "size": 1}}]},
        }
    )
    refs = list(dagcbor.iter_blob_refs(rec))
    assert refs == [(cid_for_raw(b"x"), "image/png", 1)]
