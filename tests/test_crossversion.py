"""Kernels of other Python minor versions: functions from .py files travel as source."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
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
    session = cr.Session("local", python=PYTHONS[request.param], progress=False)
    with pytest.warns(cr.PythonMismatchWarning):  # said once, at open
        session.open()
    with session:
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
    with (
        pytest.warns(cr.PythonMismatchWarning),
        cr.Session("local", python=PYTHONS[version], progress=False) as session,
    ):
        doc, value = session.remote(decorates_with_colabremote)(5)
    assert doc.startswith("Pass-through stand-in") and value == 5


# Cells as a user types them at an IPython prompt or in a notebook: a helper and a class in
# their own cells, shell and magic lines (valid Python only once IPython transforms them), and
# remote functions that use all of it, nested code included.
IPYTHON_CELLS = [
    """
    import json, sys
    import colabremote as cr
    printed = []
    s = cr.Session("local", python=KERNEL_PYTHON, progress=False,
                   on_output=lambda name, text: printed.append(text))
    results = {}
    """,
    """
    def helper(x):
        return x * 10
    """,
    """
    !echo shell line in a cell
    %time warmed = 1
    class Point:
        def __init__(self, x):
            self.x = x

        def norm(self):
            return abs(self.x)
    """,
    """
    @s.remote
    def work(x):
        import sys
        bump = lambda v: v + 1
        def inner(y):
            return helper(y) + Point(-y).norm()
        return bump(inner(x)), list(sys.version_info[:2])
    """,
    "results['work'] = work(2)",
    """
    def shell_on_the_kernel(marker):
        !echo {marker}
        listed = !echo listed-{marker}
        %time spent = 2
        return list(listed)
    """,
    "results['shell'] = s.remote(shell_on_the_kernel)('m4rk3r')",
    """
    def fails():
        raise ValueError("raised in a cell")
    """,
    """
    try:
        s.remote(fails)()
    except ValueError as exc:
        results['traceback'] = exc.__cause__.text
    """,
    """
    exec("def typed_at_a_plain_prompt(x):\\n    return x\\n")
    try:
        s.remote(typed_at_a_plain_prompt)(1)
    except cr.exceptions.PythonVersionMismatch as exc:
        results['no_source'] = str(exc)
    """,
    """
    s.close()
    results['printed'] = "".join(printed)
    with open(RESULTS, "w") as f:
        json.dump(results, f)
    """,
]

#: Runs the cells in a real IPython shell; cells that fail print their error and stop it.
IPYTHON_DRIVER = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

options = {"colors": "nocolor"}
if sys.argv[2] == "ipykernel":  # a notebook's kernel (Jupyter, VS Code) names cells as files
    from ipykernel.compiler import XCachingCompiler
    options["compiler_class"] = XCachingCompiler
shell = InteractiveShell.instance(**options)
shell.user_ns.update(KERNEL_PYTHON=sys.argv[1], RESULTS=sys.argv[3])
for cell in json.load(sys.stdin):
    if not shell.run_cell(cell, store_history=True).success:
        sys.exit(f"this cell failed:\\n{cell}")
"""


def _ipython_cases() -> list[tuple[str, str]]:
    cases = [(version, "ipython") for version in sorted(PYTHONS)]
    if "3.13" in PYTHONS:  # Colab's Python, from a notebook as the local REPL
        cases.append(("3.13", "ipykernel"))
    return cases or [("none", "ipython")]


@pytest.mark.parametrize(("version", "compiler"), _ipython_cases())
def test_ipython_cells_cross_versions_as_source(
    version: str, compiler: str, tmp_path: Path
) -> None:
    """Functions, classes and lambdas from IPython cells travel as source (their lines are in
    linecache), so this Python's IPython calls a kernel of another version; ``!`` and ``%``
    lines in a remote function run on the kernel's shell; a remote traceback shows the cell's
    lines; code with no source anywhere is still refused before sending."""
    if version == "none":
        pytest.skip("no other Python versions configured (COLABREMOTE_TEST_PYTHONS; .ci/run)")
    results_file = tmp_path / "results.json"
    cells = [textwrap.dedent(cell) for cell in IPYTHON_CELLS]
    run = subprocess.run(
        [sys.executable, "-c", IPYTHON_DRIVER, PYTHONS[version], compiler, str(results_file)],
        input=json.dumps(cells),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "shell line in a cell" in run.stdout  # the cell's own ! line ran here
    results = json.loads(results_file.read_text())
    assert results["work"] == [23, [int(part) for part in version.split(".")]]
    assert results["shell"] == ["listed-m4rk3r"]
    assert "m4rk3r" in results["printed"].split()  # `!echo` printed it on the kernel
    assert "Wall time" in results["printed"]  # %time ran on the kernel
    assert 'raise ValueError("raised in a cell")' in results["traceback"]
    assert "Define it in a .py file" in results["no_source"]
