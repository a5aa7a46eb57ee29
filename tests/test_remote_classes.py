"""Remote classes: instances that live on the kernel, methods with every way to call, handles
passed to other functions, freed when closed or dropped; from files, IPython cells and kernels of
other Python versions. One local session for the module."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote.exceptions import ConfigurationError, RefLost, RemoteAttributeError, RemoteTimeout

from .conftest import Output, other_pythons, wait_for_path

PYTHONS = other_pythons()


class BadInput(Exception):
    """Defined here: travels by value and comes back as this class."""


class Counter:
    """State kept on the kernel between method calls."""

    label = "counter"

    def __init__(self, start: int) -> None:
        self.total = start
        self.pid = os.getpid()
        print(f"init {start}")

    def add(self, amount: int) -> int:
        if amount < 0:
            raise BadInput(f"negative amount {amount}")
        print(f"adding {amount}")
        self.total += amount
        return self.total

    def where(self) -> int:
        return self.pid

    def wait_for(self, started: str, seconds: float) -> None:
        with open(started, "w"):
            pass
        time.sleep(seconds)

    @property
    def doubled(self) -> int:
        return 2 * self.total

    def close(self) -> str:
        return "the class's own close"

    @classmethod
    def kind(cls) -> str:
        return cls.__name__

    def __len__(self) -> int:
        return self.total

    def count_up(self, steps: int) -> Iterator[int]:
        for _ in range(steps):
            self.total += 1
            yield self.total

    async def count_down(self, steps: int) -> AsyncIterator[int]:
        for _ in range(steps):
            yield self.total
            self.total -= 1


def read_total(counter: Counter) -> int:
    """A plain remote function given a handle: it gets the instance itself."""
    return counter.total


def kept_count() -> int:
    table = sys.modules.get("_colabremote_kept")
    return len(table.objects) if table is not None else 0


@pytest.fixture(scope="module")
def output() -> Output:
    return Output()


@pytest.fixture(scope="module")
def s(output: Output) -> Iterator[cr.Session]:
    with cr.Session("local", progress=False, on_output=output) as session:
        yield session


@pytest.fixture(scope="module")
def counters(s: cr.Session) -> cr.RemoteClass[Counter]:
    return s.remote(Counter)


def wait_kept(s: cr.Session, expected: int, timeout: float = 10.0) -> None:
    gc.collect()  # values of earlier tests' refs caught in reference cycles go too
    count = s.remote(kept_count)
    deadline = time.monotonic() + timeout
    while (current := count()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel keeps {current} objects, not {expected}")
        time.sleep(0.02)


def test_init_runs_once_on_the_kernel_and_state_stays_there(
    s: cr.Session, counters: cr.RemoteClass[Counter], output: Output
) -> None:
    output.clear()
    counter = counters(10)
    assert isinstance(counter, cr.RemoteInstance)
    assert counter.where() != os.getpid()
    assert counter.add(5) == 15
    assert counter.add(1) == 16
    assert output.text("stdout").count("init 10") == 1
    assert "adding 5" in output.text("stdout")  # live output, as any call's
    assert counters.local(1).total == 1  # .local: an ordinary instance, here


def test_methods_have_every_way_to_call(counters: cr.RemoteClass[Counter]) -> None:
    counter = counters(0)
    assert counter.add.submit(1).result() == 1
    assert list(counter.add.map([1, 1, 1])) == [2, 3, 4]

    async def main() -> int:
        handle = await counters.aio(100)
        return int(await handle.add.aio(1))

    assert asyncio.run(main()) == 101
    kept = counter.add.keep(1)
    assert isinstance(kept, cr.Ref) and kept.fetch() == 5
    with pytest.raises(RemoteAttributeError, match=r"drop the \.keep"):
        counters.keep  # noqa: B018 - the attribute access is what raises
    assert not hasattr(counters, "keep")
    typed = counter.method(Counter.add)
    assert typed(1) == 6
    assert counter.method(Counter.close)() == "the class's own close"
    assert counter.method(Counter.kind)() == "Counter"  # type: ignore[arg-type]
    assert counter.kind() == "Counter"
    assert counter.method(Counter.__len__)() == 6
    with pytest.raises(ConfigurationError, match="not a method of Counter"):
        counter.method(read_total)


def test_exceptions_come_back_as_themselves(counters: cr.RemoteClass[Counter]) -> None:
    counter = counters(0)
    with pytest.raises(BadInput, match="negative amount -1"):
        counter.add(-1)
    assert counter.add(2) == 2  # the instance is still there


def test_a_method_timeout_interrupts_and_the_instance_survives(
    counters: cr.RemoteClass[Counter], tmp_path: Path
) -> None:
    counter = counters(7)
    started = tmp_path / "started"
    limited = counter.wait_for.with_options(timeout=0.5)
    assert limited.timeout == 0.5
    with pytest.raises(RemoteTimeout, match=r"Counter\.wait_for did not finish"):
        limited(str(started), 30)
    assert started.exists()
    assert counter.add(0) == 7


def test_cancelling_an_aio_method_interrupts_it(
    counters: cr.RemoteClass[Counter], tmp_path: Path
) -> None:
    counter = counters(3)
    started = tmp_path / "started"

    async def main() -> None:
        task = asyncio.ensure_future(counter.wait_for.aio(str(started), 30))
        await asyncio.to_thread(wait_for_path, started)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    began = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - began < 20
    assert counter.add(1) == 4


def test_a_handle_passed_to_a_remote_function_is_the_instance(
    s: cr.Session, counters: cr.RemoteClass[Counter]
) -> None:
    counter = counters(40)
    counter.add(2)
    assert s.remote(read_total)(counter) == 42  # type: ignore[arg-type]
    assert s.remote(read_total)({"nested": [counter]}["nested"][0]) == 42  # type: ignore[arg-type]


def test_close_with_and_garbage_collection_free_the_instance(
    s: cr.Session, counters: cr.RemoteClass[Counter]
) -> None:
    wait_kept(s, 0)
    closed, dropped = counters(1), counters(2)
    with counters(3) as scoped:
        assert scoped.add(1) == 4
    wait_kept(s, 2)
    closed.close()
    del dropped
    wait_kept(s, 0)
    with pytest.raises(RefLost, match=r"test_remote_classes\.Counter \(Counter\(\) at"):
        closed.add(1)
    assert " closed " in repr(closed)


def test_attributes_that_are_not_methods_are_refused(counters: cr.RemoteClass[Counter]) -> None:
    counter = counters(5)
    for name in ("total", "label", "doubled", "missing"):
        with pytest.raises(RemoteAttributeError, match=f"def get_{name}"):
            getattr(counter, name)
        assert not hasattr(counter, name)  # an AttributeError too
    assert counter.ref.fetch().total == 5  # a copy, here


def test_repr_and_pickling(counters: cr.RemoteClass[Counter]) -> None:
    import pickle

    counter = counters(1)
    assert repr(counter).startswith("<RemoteInstance Counter ")
    assert repr(counters).startswith("<RemoteClass Counter")
    with pytest.raises(TypeError, match="own session"):
        pickle.dumps(counter)


def test_decorator_forms(s: cr.Session) -> None:
    limited = s.remote(timeout=30)(Counter)
    assert isinstance(limited, cr.RemoteClass)
    assert limited.timeout == 30
    assert limited(1).add.timeout == 30
    assert isinstance(cr.remote(Counter, session=s), cr.RemoteClass)
    assert limited.with_options(timeout=5).cls is Counter


# Cells as a user types them at an IPython prompt: a class in a cell, decorated there.
CELLS = [
    """
    import json
    import colabremote as cr
    s = cr.Session("local", python=KERNEL_PYTHON, progress=False)
    """,
    """
    @s.remote
    class Tally:
        def __init__(self, start):
            self.items = [start]

        def push(self, item):
            self.items.append(item)
            return list(self.items)
    """,
    """
    tally = Tally("a")
    tally.push("b")
    results = {"items": tally.push("c"), "version": s.info().python}
    s.close()
    with open(RESULTS, "w") as f:
        json.dump(results, f)
    """,
]

DRIVER = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance(colors="nocolor")
shell.user_ns.update(KERNEL_PYTHON=sys.argv[1], RESULTS=sys.argv[2])
for cell in json.load(sys.stdin):
    if not shell.run_cell(cell, store_history=True).success:
        sys.exit(f"this cell failed:\\n{cell}")
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", ["this", *sorted(PYTHONS)])
def test_a_class_from_an_ipython_cell(version: str, tmp_path: Path) -> None:
    """A class typed in an IPython cell travels as source: to this Python's kernel, and to
    kernels of the other Python versions configured."""
    python = sys.executable if version == "this" else PYTHONS[version]
    results_file = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", DRIVER, python, str(results_file)],
        input=json.dumps([textwrap.dedent(cell) for cell in CELLS]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads(results_file.read_text())
    assert results["items"] == ["a", "b", "c"]
    if version != "this":
        assert results["version"].startswith(version)


@pytest.mark.crossversion
@pytest.mark.parametrize("version", sorted(PYTHONS) or ["none"])
def test_a_class_from_a_file_on_another_python(version: str) -> None:
    if version == "none":
        pytest.skip("no other Python versions configured (COLABREMOTE_TEST_PYTHONS; .ci/run)")
    with (
        pytest.warns(cr.PythonMismatchWarning),
        cr.Session("local", python=PYTHONS[version], progress=False) as session,
    ):
        counter = session.remote(Counter)(1)
        assert counter.add(2) == 3
        with pytest.raises(BadInput):
            counter.add(-2)
        version_seen: Any = session.info().python
    assert version_seen.startswith(version)


def test_generator_methods_stream_from_the_instance(counters: cr.RemoteClass[Counter]) -> None:
    with counters(10) as counter:
        assert list(counter.count_up(3)) == [11, 12, 13]
        assert counter.add(0) == 13  # the generator ran on the instance itself

        async def collect() -> list[int]:
            return [value async for value in counter.count_down(2)]

        assert asyncio.run(collect()) == [13, 12]
        assert counter.add(0) == 11
