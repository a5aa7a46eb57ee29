"""Checked by mypy (not run): decorated functions keep their signatures."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

from typing_extensions import assert_type

import colabremote as cr


def scale(x: float, factor: int = 2) -> float:
    return x * factor


session = cr.Session(backend="local")
remote_scale = session.remote(scale)
assert_type(remote_scale(1.5), float)
assert_type(remote_scale.local(1.5, factor=3), float)
assert_type(remote_scale.submit(1.5), concurrent.futures.Future[float])
assert_type(remote_scale.map([1.0, 2.0]), Iterator[float])


@cr.remote
def greet(name: str) -> str:
    return f"hello {name}"


@cr.remote(timeout=10)
def count(items: list[int]) -> int:
    return len(items)


assert_type(greet("x"), str)
assert_type(count([1, 2]), int)


async def uses_aio() -> None:
    assert_type(await greet.aio("x"), str)


def wrong_types() -> None:
    greet(1)  # type: ignore[arg-type]
    count()  # type: ignore[call-arg]
