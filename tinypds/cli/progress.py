"""Progress reporting on stderr: a bar when a terminal is attached, periodic lines otherwise.

Used by long CLI work (import, export, verify, backup, migration). No dependencies.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None = None, unit: str = "", stream=None, interval: float = 0.5):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if self.tty else max(interval, 5.0)
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._render(now)

    def _render(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.count / elapsed
        if self.total:
            frac = min(self.count / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"{self.label}: [{bar:<30}] {self.count}/{self.total} {self.unit} ({rate:,.0f}/s)"
        else:
            text = f"{self.label}: {self.count:,} {self.unit} ({rate:,.0f}/s, {elapsed:.1f}s)"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        self._render(time.monotonic(), final=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.done()
        elif self.tty:
            self.stream.write("\n")
