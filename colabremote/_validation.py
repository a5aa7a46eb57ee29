"""Checks on what a user passes in, made where the value enters (a Session's options, a remote
function's timeout, ``exec``'s code), so a wrong type fails there with a message that names the
argument and says what to pass, not later as an ``AttributeError`` deep inside."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

from .exceptions import ConfigurationError

__all__ = ["seconds", "text"]


@overload
def seconds(
    name: str, value: Any, *, minimum: float = ..., optional: Literal[False], example: str = ...
) -> float: ...


@overload
def seconds(
    name: str, value: Any, *, minimum: float = ..., optional: bool = ..., example: str = ...
) -> float | None: ...


def seconds(
    name: str, value: Any, *, minimum: float = 0.0, optional: bool = True, example: str = "30"
) -> float | None:
    """``value`` as a number of seconds: a finite int or float above ``minimum`` (at least it,
    when ``minimum`` is positive). ``None`` passes when ``optional``. ``bool`` is refused: it is
    an int to Python, never a duration to a reader."""
    if value is None and optional:
        return None
    none_hint = " or None for no limit" if optional else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{name}={value!r} is not a number of seconds; pass a number such as "
            f"{name}={example}{none_hint}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ConfigurationError(
            f"{name}={value!r} is not a usable number of seconds; pass a finite number such as "
            f"{name}={example}{none_hint}"
        )
    if minimum > 0 and number < minimum:
        raise ConfigurationError(
            f"{name}={value!r} is too short; pass at least {minimum:g} seconds "
            f"(for example {name}={example})"
        )
    if minimum <= 0 and number <= minimum:
        raise ConfigurationError(
            f"{name}={value!r} is not a positive number of seconds; pass one such as "
            f"{name}={example}{none_hint}"
        )
    return number


def text(name: str, value: Any, *, what: str, example: str, optional: bool = False) -> None:
    """A ConfigurationError unless ``value`` is a string (or ``None``, when ``optional``): it
    says that ``name`` takes ``what``, for example ``example``."""
    if (value is None and optional) or isinstance(value, str):
        return
    raise ConfigurationError(
        f"{name}={value!r} is not {what}; pass a string such as {name}={example}"
    )
