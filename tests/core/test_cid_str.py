"""CID string form: the fast base32 encoder equals RFC 4648 base32 (lower, unpadded) for every length."""

from __future__ import annotations

import base64
import random

from tinypds.core.cid import CID, b32_lower, cid_for_dagcbor, cid_for_raw


def test_b32_lower_matches_base64_for_every_length():
    rng = random.Random(7)
    for n in range(0, 90):
        for _ in range(20):
            data = bytes(rng.randrange(256) for _ in range(n))
            assert b32_lower(data) == base64.b32encode(data).decode().lower().rstrip("="), (n, data.hex())
    assert b32_lower(b"\xff" * 37) == base64.b32encode(b"\xff" * 37).decode().lower().rstrip("=")
    assert b32_lower(b"\x00" * 36) == "a" * 58


def test_cid_strings_round_trip():
    for cid in (cid_for_dagcbor(b"\xa0"), cid_for_raw(b"blob bytes"), cid_for_dagcbor(b"x" * 1000)):
        text = str(cid)
        assert text.startswith("b") and text == "b" + base64.b32encode(cid).decode().lower().rstrip("=")
        assert CID.parse(text) == cid
    assert str(cid_for_dagcbor(b"\xa0")) == "bafyreigbtj4x7ip5legnfznufuopl4sg4knzc2cof6duas4b3q2fy6swua"
