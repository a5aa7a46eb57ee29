"""The emulator's fault switches: failures the real service shows, turned on from a test."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class AssignFault:
    status: int | None  # an HTTP status to answer, or None
    outcome: int | None  # an assign outcome (HTTP 200) to answer, or None


class Faults:
    """Switches for the failures the real service shows. Change them at any time from a test.

    - ``fail_next_assign(status=412|503|400|5xx)`` or ``fail_next_assign(outcome=1|2|5)``: the
      next assign POSTs (and v1beta CreateRuntime calls, mapped to operation errors) fail that way.
    - ``assign_delay``: seconds an assign POST takes. The assignment is committed *before* the
      wait, so a client that times out finds it with a same-``nbh`` GET (as the live service).
    - ``hang_keepalive(seconds, times=1)``: the next keep-alive pings are recorded as activity and
      then answered only after ``seconds`` (longer than the client's time-out, as the live TFE).
    - ``fail_next(path, status=503, times=1)``: the next ``times`` requests whose path equals
      ``path`` (or starts with it, when it ends with ``*``) get ``status``. Works on the control
      plane and on runtime proxies.
    - ``refresh_invalid_grant``: number of refresh-token grants to refuse with ``invalid_grant``.
    - ``deny_next_authorization``: number of authorization requests answered ``access_denied``.
    - ``hold_next(path)``: the next request to a runtime proxy whose path matches (as in
      ``fail_next``; a kernel WebSocket's upgrade too) waits until the returned
      :class:`Hold` is released (at most ``Hold.limit`` seconds): a reconnection the test can
      act during.
    - ``swallow_frame(marker)``: the next WebSocket message from a client to a kernel that
      contains ``marker`` (bytes) is not relayed: a message caught in transit. The returned
      event is set when that happens; nothing else changes (cut the connection with
      ``colabremote.testing.drop_connection``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assign: deque[AssignFault] = deque()
        self._hangs: deque[float] = deque()
        self._paths: list[list[Any]] = []  # [path, status, remaining]
        self._holds: list[tuple[str, Hold]] = []
        self._swallows: list[tuple[bytes, threading.Event]] = []
        self.assign_delay: float = 0.0
        self.refresh_invalid_grant: int = 0
        self.deny_next_authorization: int = 0

    def fail_next_assign(
        self, status: int | None = None, *, outcome: int | None = None, times: int = 1
    ) -> None:
        if (status is None) == (outcome is None):
            raise ValueError("give exactly one of status and outcome")
        with self._lock:
            self._assign.extend(AssignFault(status, outcome) for _ in range(times))

    def hang_keepalive(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._hangs.extend([seconds] * times)

    def fail_next(self, path: str, status: int = 503, times: int = 1) -> None:
        with self._lock:
            self._paths.append([path, status, times])

    def hold_next(self, path: str) -> Hold:
        hold = Hold()
        with self._lock:
            self._holds.append((path, hold))
        return hold

    def swallow_frame(self, marker: bytes) -> threading.Event:
        if not marker:
            raise ValueError("give a non-empty marker: the bytes that pick the message")
        swallowed = threading.Event()
        with self._lock:
            self._swallows.append((bytes(marker), swallowed))
        return swallowed

    def clear(self) -> None:
        """Turn every switch off (and release held requests)."""
        with self._lock:
            self._assign.clear()
            self._hangs.clear()
            self._paths.clear()
            holds, self._holds = self._holds, []
            self._swallows.clear()
        for _, hold in holds:
            hold.release()
        self.assign_delay = 0.0
        self.refresh_invalid_grant = 0
        self.deny_next_authorization = 0

    # Used by the handlers.

    def take_assign(self) -> AssignFault | None:
        with self._lock:
            return self._assign.popleft() if self._assign else None

    def take_hang(self) -> float:
        with self._lock:
            return self._hangs.popleft() if self._hangs else 0.0

    def take_hold(self, path: str) -> Hold | None:
        with self._lock:
            for entry in self._holds:
                if _matches(entry[0], path):
                    self._holds.remove(entry)
                    return entry[1]
        return None

    def take_swallow(self, message: str | bytes) -> bool:
        """Whether to drop this client message instead of relaying it (and note that it was)."""
        with self._lock:
            if not self._swallows:
                return False
            data = message.encode() if isinstance(message, str) else message
            for entry in self._swallows:
                if entry[0] in data:
                    self._swallows.remove(entry)
                    entry[1].set()
                    return True
        return False

    def take_path(self, path: str) -> int | None:
        with self._lock:
            for entry in self._paths:
                pattern, status, remaining = entry
                if _matches(pattern, path) and remaining > 0:
                    entry[2] = remaining - 1
                    if entry[2] == 0:
                        self._paths.remove(entry)
                    return int(status)
        return None


def _matches(pattern: str, path: str) -> bool:
    """A path equals ``pattern``, or starts with it when it ends with ``*``."""
    return path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern


class Hold:
    """A request held by ``Faults.hold_next``: ``arrived`` is set when it comes, and it goes on
    when :meth:`release` is called, or after ``limit`` seconds, so a test that fails to release
    it cannot hang the emulator."""

    limit: float = 60.0

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    async def wait(self) -> None:
        """Called by the proxy: note the arrival, then wait for the release."""
        self.arrived.set()
        await asyncio.to_thread(self._released.wait, self.limit)
