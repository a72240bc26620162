"""A one-line live progress display: a bar, counts, a rate and the elapsed time.

On a terminal the line redraws in place; elsewhere (a pipe, CI logs) a line is printed at
most once per ``plain_interval`` seconds, so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import Mapping, TextIO

BAR_WIDTH = 28


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, plain_interval: float = 1.0) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self.plain_interval = plain_interval
        self.started = time.monotonic()
        self._last_plain: float | None = None  # the first update always prints
        self._width = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def render(self, done: int, details: Mapping[str, int] | None = None) -> str:
        filled = int(BAR_WIDTH * min(done, self.total) / self.total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        elapsed = self.elapsed
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label} [{bar}] {done}/{self.total} {100 * done // self.total:3d}%"]
        if details:
            parts.append(" ".join(f"{key} {value}" for key, value in details.items()))
        parts.append(f"{rate:,.0f}/s {elapsed:5.1f}s")
        return " | ".join(parts)

    def update(self, done: int, details: Mapping[str, int] | None = None, *, final: bool = False) -> None:
        line = self.render(done, details)
        if self.interactive:
            self.stream.write("\r" + line.ljust(self._width) + ("\n" if final else ""))
            self._width = len(line)
        elif final or self._last_plain is None or time.monotonic() - self._last_plain >= self.plain_interval:
            self._last_plain = time.monotonic()
            self.stream.write(line + "\n")
        self.stream.flush()
