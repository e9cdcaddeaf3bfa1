"""A progress bar with sequences/s on stderr, for an interactive terminal only."""

from __future__ import annotations

import sys


class ProgressBar:
    def __init__(self, enabled: bool = True, stream=None, every_s: float = 0.2):
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.every_s, self._shown = every_s, -1.0

    def __call__(self, done: int, total: int | None, seconds: float) -> None:
        if not self.enabled or (seconds - self._shown < self.every_s and done != total):
            return
        self._shown = seconds
        rate = done / seconds if seconds > 0 else 0.0
        if total:
            filled = int(30 * done / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        self.stream.write(f"\r  extracting {bar} sequences, {rate:,.0f} sequences/s")
        if total and done >= total:
            self.stream.write("\n")
        self.stream.flush()
