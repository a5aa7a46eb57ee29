"""Code from IPython cells goes as source when linecache holds the cell; code with no source
anywhere goes as bytecode, as before."""

from __future__ import annotations

import linecache
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from colabremote._kernel.agent import shipping


def cell(tag: str) -> str:
    """A cell as IPython caches it (``!echo`` already turned into Python); ``tag`` makes its
    code objects unequal to every other test's (code objects compare by value)."""
    return (
        "get_ipython().system('echo transformed by IPython')\n"
        "class Counter:\n"
        "    def bump(self, n):\n"
        f"        return (lambda k: (k + n, {tag!r}))(1)\n"
    )


def run_cell(name: str, source: str, *, cache: bool) -> dict[str, Any]:
    """Compile and run ``source`` as IPython does: under a made-up file name, its lines in
    linecache (with no modification time, so checkcache keeps them) when ``cache``."""
    if cache:
        lines = source.splitlines(keepends=True)
        linecache.cache[name] = (len(source), None, lines, name)
    namespace: dict[str, Any] = {"get_ipython": lambda: types.SimpleNamespace(system=print)}
    exec(compile(source, name, "exec"), namespace)
    return namespace


@pytest.fixture
def cell_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        linecache.cache.pop(name, None)


@pytest.mark.parametrize("name", ["<ipython-input-3-0123abcd>", "/tmp/ipykernel_1/2345.py"])
def test_cell_code_ships_as_source(name: str, cell_names: list[str]) -> None:
    cell_names.append(name)
    counter = run_cell(name, cell(name), cache=True)["Counter"]
    bump = counter.bump.__code__
    lambda_code = next(c for c in shipping.iter_code(bump) if c.co_name == "<lambda>")
    for code in (bump, lambda_code):
        spec = shipping.code_source_spec(code)
        assert spec is not None and spec[0] == name
        rebuilt = shipping.rebuild_code(*spec)
        assert rebuilt is not code and shipping._same_code(rebuilt, code)


@pytest.mark.parametrize("name", ["<stdin>", "<string>", "<ipython-input-4-0123abcd>"])
def test_code_without_cached_source_goes_as_bytecode(name: str) -> None:
    bump = run_cell(name, cell(f"uncached {name}"), cache=False)["Counter"].bump.__code__
    assert shipping.code_source_spec(bump) is None
    with pytest.raises(shipping.BytecodeRefused):
        shipping.dumps(bump, allow_bytecode=False)


def test_a_cell_edited_in_the_cache_goes_as_bytecode(cell_names: list[str]) -> None:
    """The cached lines must compile to the live code: other lines are never shipped."""
    name = "<ipython-input-5-0123abcd>"
    cell_names.append(name)
    source = cell(name)
    bump: Callable[..., Any] = run_cell(name, source, cache=True)["Counter"].bump
    linecache.cache[name] = (0, None, source.replace("k + n", "k - n").splitlines(True), name)
    code = bump.__code__
    assert shipping.code_source_spec(code) is None
    assert isinstance(shipping.loads(shipping.dumps(code)), types.CodeType)  # as bytecode
