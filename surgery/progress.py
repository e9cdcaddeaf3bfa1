"""One progress facility for every command: what stage the work is in, on stderr.

The library reports stages by calling `progress("loading the model")` and counted work through
`progress.counter(...)`; it never prints. How that shows is chosen once, here:

- a terminal: a bar redrawn in place, only for work that lasts over a second, cleared at the end;
- a pipe or a file (CI, `2> log`): one line every `every_s` seconds, e.g. "  … verifying (12 s)";
- off: nothing (the default with --json, or --no-progress).

`mode`: "auto" (on, except with --json), "on" or "off". $LSTM_SURGERY_PROGRESS ("auto", "1"/"on",
"0"/"off") sets the default, so a CI job or a test suite can choose once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

from surgery.errors import UsageError

PROGRESS_ENV = "LSTM_SURGERY_PROGRESS"
TERMINAL_DELAY_S = 1.0  # a bar only for work that lasts longer than this
TERMINAL_EVERY_S = 0.2
PIPED_EVERY_S = 5.0
_MODES = {"auto": "auto", "1": "on", "on": "on", "true": "on", "0": "off", "off": "off", "false": "off"}


def resolve_mode(flag: bool | None, as_json: bool = False, environ=os.environ) -> str:
    """--progress (True) / --no-progress (False) / neither (None: $LSTM_SURGERY_PROGRESS, else
    auto) -> "on" or "off"; auto is off with --json, whose stdout a program reads."""
    if flag is not None:
        return "on" if flag else "off"
    raw = environ.get(PROGRESS_ENV, "auto").strip().lower() or "auto"
    if raw not in _MODES:
        raise UsageError(f"${PROGRESS_ENV}={raw!r}: use auto, 1 or 0")
    mode = _MODES[raw]
    return ("off" if as_json else "on") if mode == "auto" else mode


class Progress:
    """Callable with a stage message; `counter()` for work counted in items; `close()` at the end.
    A background thread draws, so a long stage without calls still shows it is alive."""

    def __init__(self, mode: str = "on", stream: TextIO | None = None, *, terminal: bool | None = None,
                 every_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        if mode not in ("on", "off"):
            raise UsageError(f"progress mode {mode!r}: on or off")
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = mode == "on"
        self.terminal = _isatty(self.stream) if terminal is None else terminal
        self.every_s = every_s if every_s is not None else (TERMINAL_EVERY_S if self.terminal else PIPED_EVERY_S)
        self.clock = clock
        self.started = clock()
        self.stage = "starting"
        self.count: tuple[int, int | None, str] | None = None  # (done, total, unit)
        self.lines = 0  # piped lines written, for tests
        self._drawn = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what the library calls -------------------------------------------------------------
    def __call__(self, message: str) -> None:
        self.stage, self.count = message, None
        self._start()

    def counter(self, stage: str, unit: str) -> Callable[[int, int | None, float], None]:
        """A callable(done, total or None, seconds) for work counted in `unit`s."""
        self(stage)

        def update(done: int, total: int | None, _seconds: float) -> None:
            self.count = (done, total, unit)

        return update

    # -- drawing -----------------------------------------------------------------------------
    def render(self, now: float | None = None) -> str:
        """The current line (without the terminal's carriage return), e.g. '  … verifying (12 s)'."""
        elapsed = int((self.clock() if now is None else now) - self.started)
        detail = ""
        if self.count is not None:
            done, total, unit = self.count
            rate = done / max(self.clock() - self.started, 1e-9)
            detail = f" {done}/{total} {unit}" if total else f" {done} {unit}"
            detail += f", {rate:,.0f} {unit}/s"
            if self.terminal and total:
                filled = int(20 * min(done, total) / total)
                detail = f" [{'#' * filled}{'.' * (20 - filled)}]" + detail
        elif self.terminal:  # no fraction known: a block that moves, so a stall is visible
            position = int((self.clock() if now is None else now) * 5) % 16
            detail = " [" + " " * position + "###" + " " * (15 - position) + "]"
        return f"  … {self.stage}{detail} ({elapsed} s)"

    def tick(self, now: float | None = None) -> None:
        """Draw once (the thread calls this every `every_s`)."""
        if not self.enabled:
            return
        now = self.clock() if now is None else now
        if self.terminal:
            if now - self.started < TERMINAL_DELAY_S:
                return
            line = self.render(now)
            width = _terminal_width()
            self.stream.write("\r" + line[: width - 1].ljust(width - 1))
            self._drawn = True
        else:
            self.stream.write(self.render(now) + "\n")
            self.lines += 1
        self.stream.flush()

    def _start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lstm-surgery-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.tick()
            except (OSError, ValueError):  # stderr closed under us: stop drawing, never fail the work
                return

    def close(self) -> None:
        """Stop drawing; on a terminal, leave the line empty for what the command prints next."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._drawn:
            try:
                self.stream.write("\r" + " " * (_terminal_width() - 1) + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def silent() -> Progress:
    return Progress("off")


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _terminal_width() -> int:
    try:
        return max(os.get_terminal_size(2).columns, 20)
    except OSError:
        return 80
