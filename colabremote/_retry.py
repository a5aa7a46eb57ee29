"""The one retry policy: for idempotent requests only (never for anything that runs user code).

Exponential back-off with jitter, honouring ``Retry-After``, on connection errors, 429 and 5xx.
``COLABREMOTE_RETRY_WAIT=0`` (or :func:`set_wait_scale`) removes the waiting, for tests.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import tenacity

from .exceptions import ColabRemoteError

T = TypeVar("T")

_scale = float(os.environ.get("COLABREMOTE_RETRY_WAIT", "1"))


def set_wait_scale(scale: float) -> None:
    """Multiply every back-off wait by ``scale`` (0 for tests)."""
    global _scale
    _scale = scale


def wait_scale() -> float:
    """The factor every back-off wait is multiplied by (0 in tests)."""
    return _scale


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ColabRemoteError):
        return exc.retryable
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return status == 429 or status >= 500
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def _retry_after(exc: BaseException | None) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if isinstance(response, httpx.Response) else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _Wait(tenacity.wait.wait_base):
    def __init__(self) -> None:
        self._backoff = tenacity.wait_exponential(multiplier=0.5, max=20) + tenacity.wait_random(
            0, 0.5
        )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        hinted = _retry_after(outcome.exception() if outcome is not None else None)
        wait = hinted if hinted is not None else self._backoff(retry_state)
        return min(wait, 60.0) * _scale


async def retrying(operation: Callable[[], Awaitable[T]], *, attempts: int = 5) -> T:
    """Run an idempotent async operation, retrying what :func:`is_retryable` allows."""
    async for attempt in tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_retryable),
        wait=_Wait(),
        stop=tenacity.stop_after_attempt(attempts),
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # pragma: no cover
