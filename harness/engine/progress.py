"""Progress of a sweep: a one-line bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """done / failed / total, rate and ETA.

    On a terminal the line is redrawn in place (at most 10 times a second); when
    the stream is a file or a pipe (CI, `ray job` logs) a plain line is printed
    every `log_every` seconds and at the end, so logs stay readable.
    """

    def __init__(self, total: int, stream: TextIO | None = None, label: str = "units",
                 log_every: float = 10.0, tty: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.label = label
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_every = log_every
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = (-1, -1)

    def update(self, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        self._draw(final=False)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        finished = self.done + self.failed
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = (self.total - finished) / rate if rate > 0 else float("nan")
        eta_text = _clock(eta) if eta == eta else "?"
        pct = 100.0 * finished / self.total if self.total else 100.0
        width = 24
        filled = int(width * finished / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (f"[{bar}] {pct:5.1f}% {self.label}: {self.done} done, {self.failed} failed, "
                f"{self.total} total | {rate:.2f}/s | elapsed {_clock(elapsed)} | ETA {eta_text}")

    def _draw(self, final: bool) -> None:
        now = time.monotonic()
        interval = 0.1 if self.tty else self.log_every
        if not final and now - self._last_draw < interval:
            return
        if final and self._drawn == (self.done, self.failed):
            if self.tty:
                self.stream.write("\n")
            return
        self._last_draw = now
        self._drawn = (self.done, self.failed)
        if self.tty:
            self.stream.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._draw(final=True)
