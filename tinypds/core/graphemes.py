"""Grapheme counting for lexicon maxGraphemes/minGraphemes: `count_graphemes(s)`.

Pure, stdlib only (unicodedata, bisect); must not import other tinypds modules or third-party libs.
Tricky bits: an approximation of UAX #29 extended grapheme clusters (CRLF, Hangul syllables,
emoji ZWJ sequences, regional-indicator pairs, combining marks); Extended_Pictographic is
approximated by code-point ranges. ASCII takes a fast path (only CRLF joins).
"""

from __future__ import annotations

import bisect
import unicodedata

_OTHER, _CR, _LF, _CONTROL, _EXTEND, _ZWJ, _RI, _L, _V, _T, _LV, _LVT, _PICT = range(13)
# Extended_Pictographic, approximated by ranges (start, end inclusive), sorted by start
_PICT_RANGES = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122),
    (0x2139, 0x2139), (0x2194, 0x21AA), (0x231A, 0x23FF), (0x24C2, 0x24C2), (0x25AA, 0x25FE),
    (0x2600, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B55), (0x3030, 0x3030), (0x303D, 0x303D),
    (0x3297, 0x3299), (0x1F000, 0x1FAFF), (0x1FC00, 0x1FFFD),
)
_PICT_STARTS = [r[0] for r in _PICT_RANGES]


def _gclass(ch: str) -> int:
    cp = ord(ch)
    if cp == 0x0D:
        return _CR
    if cp == 0x0A:
        return _LF
    if cp == 0x200D:
        return _ZWJ
    if 0x1F1E6 <= cp <= 0x1F1FF:
        return _RI
    if 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F or cp == 0x200C:
        return _EXTEND  # emoji modifiers, tag characters, ZWNJ
    if 0x1100 <= cp <= 0xD7FB:  # Hangul jamo and syllables
        if 0xAC00 <= cp <= 0xD7A3:
            return _LV if (cp - 0xAC00) % 28 == 0 else _LVT
        if cp <= 0x115F or 0xA960 <= cp <= 0xA97C:
            return _L
        if 0x1160 <= cp <= 0x11A7 or 0xD7B0 <= cp <= 0xD7C6:
            return _V
        if 0x11A8 <= cp <= 0x11FF or 0xD7CB <= cp <= 0xD7FB:
            return _T
    cat = unicodedata.category(ch)
    if cat[0] == "M":
        return _EXTEND  # Mn, Me and spacing marks (GB9a)
    if cat in ("Cc", "Zl", "Zp", "Cf"):
        return _CONTROL
    i = bisect.bisect_right(_PICT_STARTS, cp) - 1
    if i >= 0 and cp <= _PICT_RANGES[i][1]:
        return _PICT
    return _OTHER


_GCLASS_CACHE: dict[str, int] = {}  # char -> class; a pure memo, cleared when it grows


def count_graphemes(s: str) -> int:
    """Number of user-perceived characters (extended grapheme clusters), approximately."""
    if s.isascii():
        return len(s) - s.count("\r\n")
    n = 0
    prev = -1
    ri_run = 0  # regional indicators seen in a row
    pict_seq = False  # inside ExtPict Extend* (GB11)
    pict_zwj = False  # ... followed by ZWJ
    cache = _GCLASS_CACHE
    if len(cache) > 4096:
        cache.clear()
    for ch in s:
        c = cache.get(ch)
        if c is None:
            c = cache[ch] = _gclass(ch)
        if c == _OTHER:  # the common case: always starts a new cluster
            n += 1
            ri_run = 0
            pict_seq = pict_zwj = False
            prev = c
            continue
        if prev == -1:
            join = False
        elif prev == _CR and c == _LF:
            join = True
        elif prev in (_CR, _LF, _CONTROL) or c in (_CR, _LF, _CONTROL):
            join = False
        elif prev == _L and c in (_L, _V, _LV, _LVT):
            join = True
        elif prev in (_LV, _V) and c in (_V, _T):
            join = True
        elif prev in (_LVT, _T) and c == _T:
            join = True
        elif c in (_EXTEND, _ZWJ):
            join = True
        elif c == _PICT and pict_zwj:
            join = True
        elif c == _RI and prev == _RI and ri_run % 2 == 1:
            join = True
        else:
            join = False
        if not join:
            n += 1
        ri_run = ri_run + 1 if c == _RI else 0
        pict_zwj = pict_seq and c == _ZWJ
        pict_seq = c == _PICT or (pict_seq and c == _EXTEND)
        prev = c
    return n
