"""Values checked where the user passes them: a wrong type or a senseless number fails at once,
as a ConfigurationError that names the argument, before any kernel or server is involved."""

from __future__ import annotations

import math
from typing import Any

import pytest

import colabremote as cr
from colabremote._backends.colab import (
    PROXY_REFRESH_MARGIN,
    PROXY_REFRESH_MIN_INTERVAL,
    proxy_refresh_delay,
)
from colabremote._validation import seconds
from colabremote.exceptions import ConfigurationError


def double(x: int) -> int:
    return 2 * x


BAD_TIMEOUTS = ["5", math.nan, math.inf, -math.inf, 0, -1, True, False, [5]]


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_remote_timeouts_must_be_positive_finite_numbers(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout="):
        cr.remote(double, timeout=timeout)
    with pytest.raises(ConfigurationError, match="timeout="):
        cr.remote(double).with_options(timeout=timeout)


@pytest.mark.parametrize("timeout", [0.5, 5, 3600.0, None])
def test_good_timeouts_pass(timeout: Any) -> None:
    assert cr.remote(double, timeout=timeout).timeout == timeout


def test_remote_needs_a_function() -> None:
    with pytest.raises(ConfigurationError, match="decorates a function"):
        cr.remote(42)  # type: ignore[call-overload]


def test_exec_checks_its_arguments_before_opening() -> None:
    session = cr.Session("local", progress=False)
    with pytest.raises(ConfigurationError, match="code=123"):
        session.exec(123)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timeout="):
        session.exec("pass", timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timeout="):
        session.exec("pass", timeout=math.nan)
    assert not session.closed and repr(session).endswith("state='new'>")  # nothing started
    session.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("gpu", 4),
        ("tpu", True),
        ("runtime_version", 2025),
        ("endpoint", 7),
        ("high_memory", "yes"),
        ("release", 1),
        ("keep_alive_seconds", 0),
        ("keep_alive_seconds", 0.001),
        ("keep_alive_seconds", True),
        ("keep_alive_seconds", math.nan),
        ("assign_timeout", 0),
        ("assign_timeout", "200"),
        ("assign_timeout", math.inf),
    ],
)
def test_colab_options_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=f"{option}="):
        cr.Session("colab", credentials=_NoToken(), **{option: value})


def test_session_callbacks_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="on_output="):
        cr.Session("local", on_output="stdout")  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="progress="):
        cr.Session("local", progress="loud")  # type: ignore[call-overload]


def test_seconds_with_a_minimum() -> None:
    assert seconds("keep_alive_seconds", 1, minimum=1.0, optional=False) == 1.0
    with pytest.raises(ConfigurationError, match="at least 1 seconds"):
        seconds("keep_alive_seconds", 0.5, minimum=1.0, optional=False)
    with pytest.raises(ConfigurationError, match="keep_alive_seconds=None"):
        seconds("keep_alive_seconds", None, minimum=1.0, optional=False)


def test_proxy_refresh_margin_scales_with_the_token_lifetime() -> None:
    # A token of an hour: 5 minutes before it expires.
    assert proxy_refresh_delay(3600.0, 3600.0) == 3600.0 - PROXY_REFRESH_MARGIN
    # A token of a minute: half-way, not at once and over again.
    assert proxy_refresh_delay(60.0, 60.0) == 30.0
    # However short the token, scheduled refreshes are rate-limited.
    assert proxy_refresh_delay(2.0, 2.0) == PROXY_REFRESH_MIN_INTERVAL
    assert proxy_refresh_delay(60.0, -5.0) == PROXY_REFRESH_MIN_INTERVAL
    # Unknown lifetime: the full margin; unknown expiry: a routine check later.
    assert proxy_refresh_delay(None, 1000.0) == 1000.0 - PROXY_REFRESH_MARGIN
    assert proxy_refresh_delay(None, None) == 600.0


class _NoToken:
    """Credentials that must never be asked: validation fails before anything is sent."""

    source = "test"

    async def token(self) -> str:
        raise AssertionError("validation should fail before any request")

    def invalidate(self) -> None:
        raise AssertionError("validation should fail before any request")
