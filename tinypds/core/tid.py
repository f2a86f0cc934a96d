"""TIDs (timestamp identifiers): syntax, encode/decode, and a monotonic clock.

Pure: the clock reads time only through the injected `now_us` callable. Imports stdlib only.
Tricky bits: a TID is a 64-bit integer with the top bit 0 (53-bit microseconds since the
epoch, then a 10-bit clock id) written as 13 chars of base32-sortable; the syntax admits
first chars "234567abcdefghij" but generated TIDs start at most with 'b'; string order
equals numeric order. Revs must increase strictly
even if the wall clock steps back or an imported repo carries a rev from the future.
"""

from __future__ import annotations

import re
from typing import Callable

ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_TID_RE = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")

MAX_TIMESTAMP_US = (1 << 53) - 1
MAX_CLOCK_ID = (1 << 10) - 1


def is_valid_tid(s: object) -> bool:
    return isinstance(s, str) and _TID_RE.fullmatch(s) is not None


def tid_from_int(n: int) -> str:
    """13-char TID for a 64-bit integer (the spec's syntax admits first chars up to 'j')."""
    if not 0 <= n < (1 << 64):
        raise ValueError("TID integer out of range")
    out = []
    for _ in range(13):
        out.append(ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(out))


def tid_to_int(tid: str) -> int:
    """Integer value of a TID; raises ValueError on invalid syntax."""
    if not is_valid_tid(tid):
        raise ValueError(f"invalid TID: {tid!r}")
    n = 0
    for ch in tid:
        n = (n << 5) | _INDEX[ch]
    return n


def tid_from_parts(timestamp_us: int, clock_id: int) -> str:
    if not 0 <= timestamp_us <= MAX_TIMESTAMP_US:
        raise ValueError("TID timestamp out of range")
    if not 0 <= clock_id <= MAX_CLOCK_ID:
        raise ValueError("TID clock id out of range (0..1023)")
    return tid_from_int((timestamp_us << 10) | clock_id)


def tid_timestamp_us(tid: str) -> int:
    return tid_to_int(tid) >> 10


def tid_clock_id(tid: str) -> int:
    return tid_to_int(tid) & MAX_CLOCK_ID


class TidClock:
    """Hands out strictly increasing TIDs from an injected microsecond clock.

    Not thread-safe by itself: call it from the one place that orders writes.
    """

    def __init__(self, now_us: Callable[[], int], clock_id: int):
        if not 0 <= clock_id <= MAX_CLOCK_ID:
            raise ValueError("TID clock id out of range (0..1023)")
        self._now_us = now_us
        self._clock_id = clock_id
        self._last_us = -1

    def next(self) -> str:
        """A TID greater than every TID this clock returned before."""
        us = max(int(self._now_us()), self._last_us + 1)
        self._last_us = us
        return tid_from_parts(us, self._clock_id)

    def next_after(self, rev: str | None) -> str:
        """A TID greater than both `rev` (e.g. the repo's current rev) and any earlier output."""
        if rev is not None:
            self._last_us = max(self._last_us, tid_timestamp_us(rev))
        return self.next()
