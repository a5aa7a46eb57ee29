"""The runtime as a workspace: packages installed on it and shell commands run on it.

Each operation is a small function sent to the kernel by value and run through the session's
ordinary call path, so it needs nothing installed there and its output streams back live.
"""

from __future__ import annotations

import builtins
import types
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Caller(Protocol):
    """What the workspace needs from a session: run one function on the kernel, get its value."""

    async def call(
        self, fn: Callable[..., Any], args: Sequence[Any], *, timeout: float | None, name: str
    ) -> Any: ...


def by_value(fn: Callable[..., Any], module: str) -> Callable[..., Any]:
    """``fn`` under a module name nothing can import, so it is sent to the kernel by value (the
    kernel need not have colabremote installed); it must import what it uses itself."""
    return types.FunctionType(
        fn.__code__, {"__name__": module, "__builtins__": builtins}, fn.__name__, fn.__defaults__
    )
