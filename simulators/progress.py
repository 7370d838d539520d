"""A one-line progress bar on stderr for simulation runs, shown only on a terminal or when asked."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws `label [#####.....] 42%` in place at most ten times a second."""

    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self._last = 0.0
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if percent == self._shown or (percent < 100 and now - self._last < 0.1):
            return
        self._last = now
        self._shown = percent
        filled = percent * 30 // 100
        bar = "#" * filled + "." * (30 - filled)
        end = "\n" if percent >= 100 else ""
        self.stream.write(f"\r{self.label} [{bar}] {percent:3d}%{end}")
        self.stream.flush()
