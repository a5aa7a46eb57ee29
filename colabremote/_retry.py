"""The one retry policy: for idempotent requests only (never for anything that runs user code).

:func:`retrying` runs an operation again while :func:`is_retryable` allows it: up to ``attempts``
tries, never starting a wait that would end past ``deadline`` seconds, with exponential back-off
and jitter, honouring ``Retry-After``, and one INFO line per retry on ``colabremote.retry``.
``COLABREMOTE_RETRY_WAIT=0`` (or :func:`set_wait_scale`) removes the waiting, for tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import tenacity

from .exceptions import ColabRemoteError

__all__ = ["is_retryable", "retrying", "set_wait_scale", "wait_scale"]

T = TypeVar("T")

log = logging.getLogger("colabremote.retry")

_scale = float(os.environ.get("COLABREMOTE_RETRY_WAIT", "1"))
_RETRY_AFTER_CAP = 60.0  # seconds: a longer hint is not waited out in full


def set_wait_scale(scale: float) -> None:
    """Multiply every back-off wait by ``scale`` (0 for tests)."""
    global _scale
    _scale = scale


def wait_scale() -> float:
    """The factor every back-off wait is multiplied by (0 in tests)."""
    return _scale


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again may help: our errors say so themselves (``retryable``); from httpx,
    a 429 or 5xx answer and any transport failure (no answer) may pass on another try."""
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
    """``first * 2**(n-1)`` (at most ``longest``) plus up to ``jitter`` seconds, or the server's
    ``Retry-After``; then scaled by :func:`wait_scale`."""

    def __init__(self, first: float, longest: float, jitter: float) -> None:
        self._backoff = tenacity.wait_exponential(multiplier=first, max=longest)
        self._jitter = tenacity.wait_random(0, jitter) if jitter > 0 else tenacity.wait_none()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        hinted = _retry_after(outcome.exception() if outcome is not None else None)
        if hinted is not None:
            wait = min(hinted, _RETRY_AFTER_CAP)
        else:
            wait = self._backoff(retry_state) + self._jitter(retry_state)
        return wait * _scale


def _describe(exc: BaseException | None) -> str:
    """What failed, for the log: our messages (secret-free by construction), else the type and
    an HTTP status; never httpx's text, which may quote a URL with a token in it."""
    if isinstance(exc, ColabRemoteError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = 5,
    deadline: float | None = 120.0,
    first_wait: float = 0.5,
    longest_wait: float = 20.0,
    jitter: float = 0.5,
    retry_if: Callable[[BaseException], bool] = is_retryable,
) -> T:
    """Run ``operation`` until it succeeds, ``retry_if`` refuses its error, ``attempts`` are
    used up or the next wait would end past ``deadline`` seconds (``None``: no deadline); the
    last error is raised as it is. ``what`` names the operation in the log line per retry."""

    def log_retry(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "retrying %s after %s (attempt %d of %d failed; waiting %.3g s)",
            what,
            _describe(outcome.exception() if outcome is not None else None),
            state.attempt_number,
            attempts,
            wait,
        )

    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(attempts)
    if deadline is not None:
        stop = stop | tenacity.stop_before_delay(deadline)
    async for attempt in tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(retry_if),
        wait=_Wait(first_wait, longest_wait, jitter),
        stop=stop,
        before_sleep=log_retry,
        reraise=True,
    ):
        with attempt:
            return await operation()
    raise AssertionError("unreachable")  # pragma: no cover
