"""A one-line live progress report (rate and ETA) that also works in logs without a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """Counts work items and a unit (tokens, sequences); redraws at most every `interval` s."""

    def __init__(self, desc: str, total: int | None, unit: str = "items", interval: float = 0.5):
        self.desc, self.total, self.unit = desc, total, unit
        self.done, self.units = 0, 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._tty = sys.stderr.isatty()
        self.interval = interval if self._tty else max(interval, 10.0)

    def update(self, items: int = 1, units: int = 0, note: str = "") -> None:
        self.done += items
        self.units += units
        now = time.perf_counter()
        if now - self._last >= self.interval or (self.total and self.done >= self.total):
            self._last = now
            self._draw(note)

    def line(self, note: str = "") -> str:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = self.units / elapsed
        total = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total and self.done:
            eta = f" eta {elapsed / self.done * (self.total - self.done):.0f}s"
        return (
            f"[{self.desc}] {self.done}{total} done, {self.units:,} {self.unit}, "
            f"{rate:,.0f} {self.unit}/s, {elapsed:.0f}s{eta}{(' ' + note) if note else ''}"
        )

    def _draw(self, note: str) -> None:
        end = "\r" if self._tty else "\n"
        sys.stderr.write(self.line(note) + end)
        sys.stderr.flush()

    def close(self, note: str = "") -> None:
        sys.stderr.write(self.line(note) + "\n")
        sys.stderr.flush()
