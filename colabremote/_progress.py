"""A one-line progress display for long transfers: shown on a terminal, silent elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress("uploading data.bin", total)``; call ``advance(n)``, then ``done()``.

    Draws on ``stream`` (stderr by default) only when it is a terminal and ``enabled`` is true,
    at most ten times a second.
    """

    def __init__(
        self, label: str, total: int, *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done_bytes = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream is not None and self.stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self.done_bytes += count
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw(final=False)

    def done(self) -> None:
        if self.enabled:
            self._draw(final=True)

    def _draw(self, *, final: bool) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done_bytes / elapsed / 1e6
        share = self.done_bytes / self.total if self.total else 1.0
        width = 24
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        line = (
            f"\r{self.label} [{bar}] {share:4.0%} "
            f"{self.done_bytes / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"
        )
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()
