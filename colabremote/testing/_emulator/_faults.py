"""The emulator's fault switches: failures the real service shows, turned on from a test."""

from __future__ import annotations

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
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assign: deque[AssignFault] = deque()
        self._hangs: deque[float] = deque()
        self._paths: list[list[Any]] = []  # [path, status, remaining]
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

    def clear(self) -> None:
        """Turn every switch off."""
        with self._lock:
            self._assign.clear()
            self._hangs.clear()
            self._paths.clear()
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

    def take_path(self, path: str) -> int | None:
        with self._lock:
            for entry in self._paths:
                pattern, status, remaining = entry
                matches = (
                    path.startswith(pattern[:-1]) if pattern.endswith("*") else path == pattern
                )
                if matches and remaining > 0:
                    entry[2] = remaining - 1
                    if entry[2] == 0:
                        self._paths.remove(entry)
                    return int(status)
        return None
