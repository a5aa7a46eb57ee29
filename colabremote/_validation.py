"""Checks on what a user passes in, made where the value enters (a Session's options, a remote
function's timeout, ``exec``'s code), so a wrong type fails there with a message that names the
argument and says what to pass, not later as an ``AttributeError`` deep inside."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, overload

from .exceptions import ConfigurationError

__all__ = ["environment", "seconds", "secret_names", "text", "variable_name"]

#: An environment variable name every shell and OS takes: letters, digits and ``_``, not
#: starting with a digit.
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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


def variable_name(name: str, key: Any, *, quote: bool = True) -> str:
    """``key`` as an environment variable name, or a ConfigurationError naming ``name``.
    ``quote=False`` leaves the key out of the message: where secrets are named, a bad name is
    likely a value pasted in its place (``secrets=[token]``)."""
    if not isinstance(key, str) or not _VARIABLE_NAME.match(key):
        shown = repr(key) if quote else f"a {type(key).__name__} (not shown: it may be a value)"
        raise ConfigurationError(
            f"{name} names {shown}, which is not an environment variable name; use letters, "
            "digits and _, not starting with a digit (for example 'HF_TOKEN')"
        )
    return key


def environment(value: Any) -> dict[str, str]:
    """``env=``: a mapping of variable names to string values. The values are never quoted in
    an error (the caller may have put a token there after all)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"env= takes a mapping of names to strings, not {type(value).__name__}; pass "
            "for example env={'TOKENIZERS_PARALLELISM': 'false'}"
        )
    checked: dict[str, str] = {}
    for key, item in value.items():
        variable_name("env=", key)
        if not isinstance(item, str):
            raise ConfigurationError(
                f"env[{key!r}] is {type(item).__name__}, not a string; environment variables "
                f"hold text: pass env={{{key!r}: str(...)}}"
            )
        if "\0" in item:
            raise ConfigurationError(
                f"env[{key!r}] contains a NUL character, which no environment variable can hold"
            )
        checked[key] = item
    return checked


def secret_names(value: Any) -> tuple[tuple[str, ...], dict[str, str]]:
    """``secrets=``: names to read at open (a list of names) and values given outright (a
    mapping of names to values). Returned as (names to read, given values)."""
    if value is None:
        return (), {}
    if isinstance(value, Mapping):
        given: dict[str, str] = {}
        for key, item in value.items():
            variable_name("secrets=", key, quote=False)
            if not isinstance(item, str) or not item or "\0" in item:
                what = type(item).__name__ if not isinstance(item, str) else "an unusable string"
                raise ConfigurationError(
                    f"secrets[{key!r}] is {what}; a secret's value is a non-empty string "
                    f"without NUL characters. Pass its text, or list the name alone "
                    f"(secrets=[{key!r}]) to read it from the environment or the OS keyring"
                )
            given[key] = item
        return (), given
    if isinstance(value, (str, bytes)):
        # Not quoted: a lone string here may be the secret itself.
        raise ConfigurationError(
            f"secrets= takes a list of names or a mapping of names to values, not "
            f"{type(value).__name__}; pass for example secrets=['HF_TOKEN']"
        )
    try:
        names = tuple(value)
    except TypeError:
        raise ConfigurationError(
            f"secrets= takes a list of names or a mapping of names to values, not "
            f"{type(value).__name__}; pass for example secrets=['HF_TOKEN']"
        ) from None
    for key in names:
        variable_name("secrets=", key, quote=False)
    return tuple(dict.fromkeys(names)), {}
