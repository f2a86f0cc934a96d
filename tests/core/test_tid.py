"""TID syntax (interop fixtures), encoding, and TidClock monotonicity."""

from __future__ import annotations

import pytest

from tests.fixtures import fixture_lines
from tinypds.core.tid import (
    TidClock,
    is_valid_tid,
    tid_clock_id,
    tid_from_int,
    tid_from_parts,
    tid_timestamp_us,
    tid_to_int,
)


def test_valid_fixtures():
    lines = fixture_lines("syntax", "tid_syntax_valid.txt")
    assert lines
    for line in lines:
        assert is_valid_tid(line), line
        assert tid_from_int(tid_to_int(line)) == line


def test_invalid_fixtures():
    lines = fixture_lines("syntax", "tid_syntax_invalid.txt")
    assert lines
    for line in lines:
        assert not is_valid_tid(line), line
        with pytest.raises(ValueError):
            tid_to_int(line)


def test_trailing_newline_and_non_strings_rejected():
    assert not is_valid_tid("3jzfcijpj2z2a\n")
    assert not is_valid_tid(None)
    assert not is_valid_tid(12)


def test_parts_round_trip_and_known_values():
    assert tid_from_parts(0, 0) == "2222222222222"
    us = 1_700_000_000_123_456
    t = tid_from_parts(us, 17)
    assert len(t) == 13 and is_valid_tid(t)
    assert tid_timestamp_us(t) == us
    assert tid_clock_id(t) == 17
    assert tid_from_parts((1 << 53) - 1, 1023) == "bzzzzzzzzzzzz"


def test_string_order_is_numeric_order():
    values = [0, 1, 31, 32, 1023, 1024, 10**15, 2**52, 2**53 - 1]
    tids = [tid_from_parts(v, 5) for v in values]
    assert tids == sorted(tids)


@pytest.mark.parametrize("us,clock", [(-1, 0), (2**53, 0), (0, -1), (0, 1024)])
def test_parts_out_of_range(us, clock):
    with pytest.raises(ValueError):
        tid_from_parts(us, clock)


def test_clock_strictly_increasing_when_time_stalls_or_goes_back():
    times = iter([1000, 1000, 1000, 900, 500, 2000, 1999])
    clock = TidClock(lambda: next(times), clock_id=3)
    out = [clock.next() for _ in range(7)]
    assert all(a < b for a, b in zip(out, out[1:]))
    assert [tid_timestamp_us(t) for t in out] == [1000, 1001, 1002, 1003, 1004, 2000, 2001]
    assert all(tid_clock_id(t) == 3 for t in out)


def test_next_after_rev_from_the_future():
    clock = TidClock(lambda: 1_000_000, clock_id=0)
    future = tid_from_parts(5_000_000, 999)
    t = clock.next_after(future)
    assert t > future
    assert clock.next() > t
    assert clock.next_after(None) > t
    # an older rev does not pull the clock back
    old = tid_from_parts(10, 0)
    assert clock.next_after(old) > t


def test_clock_id_validated():
    with pytest.raises(ValueError):
        TidClock(lambda: 0, clock_id=1024)
