"""Progress of long-running commands on stderr: a redrawn bar on a terminal, a line per 10% otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 30


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    def __init__(
        self, label: str, total: int, *, unit_bytes: bool = True, stream: TextIO | None = None, done: int = 0
    ) -> None:
        self.label, self.total, self.unit_bytes = label, total, unit_bytes
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = self._initial = done  # a resumed transfer's rate counts only this run's bytes
        self.started = time.monotonic()
        self._last_step = -1
        self._last_draw = 0.0

    def advance(self, n: int) -> None:
        self.update(self.done + n)

    def update(self, done: int) -> None:
        self.done = done
        if self.tty:
            if time.monotonic() - self._last_draw >= 0.1 or done >= self.total:
                self._last_draw = time.monotonic()
                self.stream.write("\r" + self._line(bar=True))
                self.stream.flush()
            return
        if self.total <= 0:
            return  # unknown total: the line comes from finish()
        step = min(100, done * 100 // self.total) // 10 * 10
        if step > self._last_step:
            self._last_step = step
            print(self._line(bar=False), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.total <= 0 and not self.tty:
            print(self._line(bar=False), file=self.stream, flush=True)
            return
        self.update(max(self.done, self.total))
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, bar: bool) -> str:
        if self.total <= 0:
            return f"{self.label}: {human(self.done) if self.unit_bytes else self.done}"
        fraction = min(1.0, self.done / self.total)
        amount = f"{human(self.done)}/{human(self.total)}" if self.unit_bytes else f"{self.done}/{self.total}"
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = f" {human((self.done - self._initial) / elapsed)}/s" if self.unit_bytes and self.tty else ""
        filled = int(fraction * BAR_WIDTH)
        drawn = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] " if bar else ""
        return f"{self.label}: {drawn}{fraction * 100:3.0f}% {amount}{rate}"
