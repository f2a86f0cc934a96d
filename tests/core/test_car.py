"""CAR v1: fixture files, streaming in odd chunk sizes, and every kind of corruption."""

import base64
import io
import json

import pytest

from tinypds.core import dagcbor
from tinypds.core.car import CarError, CarParser, encode_block, encode_header, read_car_bytes, read_car_stream, write_car
from tinypds.core.cid import CID, cid_for_dagcbor
from tests.fixtures import fixture_path


def _b64(s):
    return base64.b64decode(s + "=" * (-len(s) % 4))


def _fixtures():
    return json.loads(fixture_path("car", "car-file-fixtures.json").read_text())


def test_car_fixtures_read_and_rewrite():
    rows = _fixtures()
    assert rows
    for row in rows:
        car = _b64(row["car"]) if "car" in row else bytes.fromhex(row["carHex"])
        roots, blocks = read_car_bytes(car)
        assert [str(r) for r in roots] == ([row["root"]] if "root" in row else row["roots"])
        assert [str(c) for c, _ in blocks] == [b["cid"] for b in row["blocks"]]
        assert [d for _, d in blocks] == [_b64(b["bytes"]) for b in row["blocks"]]
        assert b"".join(write_car(roots, blocks, chunk_size=7)) == car


@pytest.mark.parametrize("chunk", [1, 3, 64, 100000])
def test_streaming_any_chunk_size(chunk):
    blocks = []
    for i in range(50):
        data = dagcbor.encode({"i": i, "pad": "x" * (i * 37)})
        blocks.append((cid_for_dagcbor(data), data))
    car = b"".join(write_car([blocks[0][0]], blocks))
    roots, it = read_car_stream(io.BytesIO(car), chunk_size=chunk)
    assert roots == [blocks[0][0]]
    assert list(it) == blocks


def _car(blocks, roots=None):
    roots = roots if roots is not None else [blocks[0][0]]
    return encode_header(roots) + b"".join(encode_block(c, d) for c, d in blocks)


def _blocks(n=3):
    out = []
    for i in range(n):
        d = dagcbor.encode({"n": i})
        out.append((cid_for_dagcbor(d), d))
    return out


def test_hash_mismatch_rejected():
    blocks = _blocks()
    cid, data = blocks[1]
    bad = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(CarError, match="does not match"):
        read_car_bytes(_car([blocks[0], (cid, bad), blocks[2]]))


def test_truncated_rejected():
    car = _car(_blocks())
    for cut in (1, 5, len(car) - 1, len(car) - 10):
        with pytest.raises(CarError, match="truncated|header"):
            read_car_bytes(car[:cut])


def test_bad_headers():
    with pytest.raises(CarError):
        read_car_bytes(b"\x05" + dagcbor.encode({"version": 2, "roots": []})[:5])
    hdr = dagcbor.encode({"version": 2, "roots": []})
    from tinypds.core.car import encode_varint

    with pytest.raises(CarError, match="version"):
        read_car_bytes(encode_varint(len(hdr)) + hdr)
    hdr = dagcbor.encode({"version": 1, "roots": ["notacid"]})
    with pytest.raises(CarError, match="roots"):
        read_car_bytes(encode_varint(len(hdr)) + hdr)
    with pytest.raises(CarError):
        read_car_bytes(b"\xff\xff\xff\xff\x0f")


def test_huge_block_length_refused_without_allocating():
    car = encode_header([_blocks(1)[0][0]]) + b"\xff\xff\xff\xff\x0f"
    p = CarParser()
    with pytest.raises(CarError, match="exceeds"):
        p.feed(car)


def test_empty_roots_allowed_by_parser():
    roots, blocks = read_car_bytes(_car(_blocks(), roots=[]))
    assert roots == [] and len(blocks) == 3
