"""A one-line progress bar for the command line (image imports)."""
from __future__ import annotations

import sys
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    """Call it with (done, total) bytes; it redraws one line on a terminal.

    On anything but a terminal it stays silent, so that logs and pipes get
    no carriage returns; `close()` ends the line."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._shown = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        permille = 1000 if total <= 0 else min(1000, done * 1000 // total)
        if permille == self._shown:
            return   # redraw only when the figure changes
        self._shown = permille
        filled = _WIDTH * permille // 1000
        bar = "#" * filled + "." * (_WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {permille / 10:5.1f}% "
                          f"{_mb(done)}/{_mb(total)} MB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._shown >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"
