"""The emulator's clock: every expiry, TTL and idle decision reads it, so tests can move time.

``ColabEmulator(clock=ManualClock())`` freezes the emulator's time; ``clock.advance(seconds)``
moves it on, so a token TTL or an idle timeout runs out at once, without sleeping. Expiry is
checked when a request comes; idle runtimes are released and v1beta operations completed by the
emulator's housekeeping, which ``emu.tick()`` runs at once (it also runs ten times a second).
The delays the emulator puts on its answers (``faults.assign_delay``, ``faults.hang_keepalive``,
the longest a WaitOperation call blocks) stay real time: they exist to meet a client's real
time-outs.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the emulator asks a clock: wall time for expiry stamps, monotonic time for timers."""

    def time(self) -> float:
        """Seconds since the epoch (as :func:`time.time`)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go back (as :func:`time.monotonic`)."""
        ...


class SystemClock:
    """The real clock, the emulator's default."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "<SystemClock>"


class ManualClock:
    """A clock that stands still until a test calls :meth:`advance` (from any thread).

    ``start`` is its wall time, in seconds since the epoch (default: the real time when it is
    made), so expiry stamps the emulator hands out still look like dates near today.
    """

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._start = time.time() if start is None else start
        self._elapsed = 0.0

    def time(self) -> float:
        with self._lock:
            return self._start + self._elapsed

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` (never back)."""
        if seconds < 0:
            raise ValueError("a clock does not go back: seconds must be >= 0")
        with self._lock:
            self._elapsed += seconds

    def __repr__(self) -> str:
        return f"<ManualClock elapsed={self.monotonic():g}s>"
