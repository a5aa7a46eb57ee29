"""Kernels of other Python minor versions: functions from .py files travel as source."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import colabremote as cr
from colabremote.exceptions import PythonVersionMismatch

from .conftest import other_pythons

PYTHONS = other_pythons()

pytestmark = pytest.mark.crossversion


@pytest.fixture(scope="module", params=sorted(PYTHONS) or ["none"])
def versioned(request: pytest.FixtureRequest) -> Iterator[tuple[str, cr.Session]]:
    if request.param == "none":
        pytest.skip("no other Python versions configured (COLABREMOTE_TEST_PYTHONS; .ci/run)")
    with cr.Session("local", python=PYTHONS[request.param], progress=False) as session:
        yield request.param, session


SCALE = 3


@dataclasses.dataclass
class Box:
    width: float
    height: float

    def area(self) -> float:
        return self.width * self.height


class Shape:
    def describe(self) -> str:
        return "shape"


class Square(Shape):
    def __init__(self, side: float) -> None:
        self.side = side

    def describe(self) -> str:
        return f"square of {self.side} and a {super().describe()}"  # needs the __class__ cell


def kernel_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def uses_module_attributes(x: float) -> float:
    # Attribute calls on top-level imports compile differently on 3.11: still shipped as source.
    return math.sqrt(x) + float(np.sum(np.ones(3))) + len(os.sep)


def make_box(w: float, h: float) -> Box:
    return Box(w, h)


def make_multiplier(k: int):  # type: ignore[no-untyped-def]
    def multiply(x: int) -> int:
        return x * k * SCALE

    return multiply


def describe_square(side: float) -> str:
    return Square(side).describe()


def comprehension_and_generator(n: int) -> list[int]:
    squares = [i * i for i in range(n)]
    return sorted({s % 7 for s in squares}) + list(x for x in range(3))


def raises_key_error() -> None:
    empty: dict[str, int] = {}
    empty["missing"]


def test_kernel_runs_the_other_version(versioned: tuple[str, cr.Session]) -> None:
    version, session = versioned
    assert session.remote(kernel_version)() == version
    assert session.info().python.startswith(version)


def test_functions_from_files_cross_versions(versioned: tuple[str, cr.Session]) -> None:
    _, session = versioned
    assert session.remote(uses_module_attributes)(16.0) == 4.0 + 3.0 + 1
    box = session.remote(make_box)(2.0, 3.5)
    assert isinstance(box, Box) and box.area() == 7.0
    assert session.remote(make_multiplier(2))(5) == 30  # a closure
    assert session.remote(describe_square)(2) == "square of 2 and a shape"
    assert session.remote(comprehension_and_generator)(5) == [0, 1, 2, 4, 0, 1, 2]
    assert list(session.remote(kernel_version).map([])) == []


def test_exceptions_cross_versions(versioned: tuple[str, cr.Session]) -> None:
    _, session = versioned
    with pytest.raises(KeyError, match="missing"):
        session.remote(raises_key_error)()


def test_code_without_source_fails_before_sending(versioned: tuple[str, cr.Session]) -> None:
    version, session = versioned
    namespace: dict[str, object] = {}
    exec("def typed_at_a_prompt(x):\n    return x + 1\n", namespace)
    fn = namespace["typed_at_a_prompt"]
    local = f"{sys.version_info[0]}.{sys.version_info[1]}"
    with pytest.raises(PythonVersionMismatch) as info:
        session.remote(fn)(1)  # type: ignore[call-overload]
    message = str(info.value)
    assert local in message and version in message
    assert "Define it in a .py file" in message
    assert session.remote(kernel_version)() == version  # nothing was half-sent


def decorates_with_colabremote(x: int) -> tuple[str, int]:
    import colabremote as inner  # this kernel's environment has no colabremote: the stand-in

    @inner.remote(timeout=5)
    def negate(y: int) -> int:
        return -y

    with inner.Session() as s:
        return str(inner.__doc__), s.remote(inner.remote(abs))(negate(x))


@pytest.mark.parametrize("version", sorted(PYTHONS) or ["none"])
def test_kernel_without_colabremote_gets_a_pass_through(
    version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipped code that decorates with colabremote runs in place on a kernel that lacks it."""
    if version == "none":
        pytest.skip("no other Python versions configured (COLABREMOTE_TEST_PYTHONS; .ci/run)")
    monkeypatch.chdir(tmp_path)  # the kernel starts here, where no colabremote can be imported
    with cr.Session("local", python=PYTHONS[version], progress=False) as session:
        doc, value = session.remote(decorates_with_colabremote)(5)
    assert doc.startswith("Pass-through stand-in") and value == 5
