"""Relay-safe write budget: commits per second / hour / day, checked before a write.

No HTTP types (RateLimitExceeded carries the `ratelimit-*` headers the one error handler
sends). Relays throttle a new host at about 50 events/s, 2,600/hour and 21,000/day and a
throttled host stays stuck for hours, so the defaults stay under those; history belongs in
a CAR import, which emits no per-record events. `enabled=False` (TINYPDS_WRITE_RATE_LIMIT=0)
turns it off. Tricky bits: windows are fixed (aligned to the clock, like the reset header
says) and checked all-or-nothing, so a refused write consumes nothing from any window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from ...errors import RateLimitExceeded


@dataclass
class Window:
    name: str
    seconds: int
    limit: int
    start: float = 0.0
    used: int = 0

    def roll(self, now: float) -> None:
        start = math.floor(now / self.seconds) * self.seconds
        if start != self.start:
            self.start = start
            self.used = 0

    @property
    def reset(self) -> int:
        return int(self.start + self.seconds)


DEFAULT_WINDOWS = (("second", 1, 50), ("hour", 3600, 2600), ("day", 86400, 21000))


class WriteRateLimiter:
    """One account's commit budget. `acquire(n)` before a write; it raises when over budget."""

    def __init__(self, enabled: bool = True, windows: tuple[tuple[str, int, int], ...] = DEFAULT_WINDOWS,
                 clock: Callable[[], float] = time.time):
        self.enabled = enabled
        self.windows = [Window(name, seconds, limit) for name, seconds, limit in windows]
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: object, **kw: object) -> "WriteRateLimiter":
        return cls(enabled=bool(getattr(settings, "write_rate_limit", 1)), **kw)  # type: ignore[arg-type]

    def acquire(self, n: int = 1) -> dict[str, str]:
        """Count `n` commits; returns the ratelimit headers for the tightest window.

        Raises RateLimitExceeded (429, with headers) and counts nothing if any window is full."""
        if not self.enabled:
            return {}
        now = self.clock()
        for w in self.windows:
            w.roll(now)
        for w in self.windows:
            if w.used + n > w.limit:
                raise RateLimitExceeded(
                    f"Rate Limit Exceeded: at most {w.limit} writes per {w.name}, to stay within what relays accept",
                    headers=self._headers(w, now),
                )
        for w in self.windows:
            w.used += n
        tightest = min(self.windows, key=lambda w: (w.limit - w.used) / w.limit)
        return self._headers(tightest, now)

    def refund(self, n: int = 1) -> None:
        """Give back commits counted for a write that then failed."""
        for w in self.windows:
            w.used = max(0, w.used - n)

    def _headers(self, w: Window, now: float) -> dict[str, str]:
        return {
            "ratelimit-limit": str(w.limit),
            "ratelimit-remaining": str(max(0, w.limit - w.used)),
            "ratelimit-reset": str(w.reset),
            "ratelimit-policy": f"{w.limit};w={w.seconds}",
        }
