"""Sliding-window failure counters (sign-in throttles for sessions and the OAuth page).

Pure bookkeeping in memory, bounded in size; the clock is injected. No I/O, no HTTP types.
"""

from __future__ import annotations

import collections
from typing import Callable


class FailureThrottle:
    """Sliding-window failure counters by key (IP or account); bounded in size."""

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float], max_keys: int = 10_000):
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._hits: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, key: str) -> collections.deque[float] | None:
        hits = self._hits.get(key)
        if hits is None:
            return None
        cutoff = self.clock() - self.window
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if not hits:
            del self._hits[key]
            return None
        return hits

    def blocked(self, key: str) -> bool:
        hits = self._recent(key)
        return hits is not None and len(hits) >= self.limit

    def record(self, key: str) -> None:
        hits = self._recent(key)
        if hits is None:
            hits = self._hits[key] = collections.deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        hits.append(self.clock())
