"""The trimming of tracebacks raised to users (``_tracebacks``), and the loop thread that must
outlive a KeyboardInterrupt rebuilt from the kernel."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from colabremote import _tracebacks
from colabremote._loop import loop_thread
from colabremote._serialization import pack_arguments
from colabremote._tracebacks import debugging, public, public_async, public_iterator
from colabremote._validation import seconds
from colabremote.exceptions import (
    ArgumentNotSerializable,
    ConfigurationError,
    RemoteTraceback,
    SerializationError,
)

HERE = os.path.abspath(__file__)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLABREMOTE_DEBUG", raising=False)


def files(error: BaseException) -> list[str]:
    return [frame.filename for frame in traceback.extract_tb(error.__traceback__)]


def internal(source: str, name: str) -> Callable[..., Any]:
    """A function compiled as if it were a module of colabremote, so its frames count as ours."""
    namespace: dict[str, Any] = {"__name__": "colabremote._made_up"}
    path = os.path.join(os.path.dirname(_tracebacks.__file__), "_made_up.py")
    exec(compile(source, path, "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


@pytest.mark.parametrize(("value", "expected"), [("", False), ("0", False), ("1", True)])
def test_debugging_reads_the_environment_each_time(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("COLABREMOTE_DEBUG", value)
    assert debugging() is expected


def test_our_frames_are_cut_to_the_wrapper() -> None:
    with pytest.raises(ConfigurationError) as caught:
        public(seconds)("timeout", "5")
    assert files(caught.value) == [HERE, _tracebacks.__file__]


def test_debug_keeps_our_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLABREMOTE_DEBUG", "1")
    with pytest.raises(ConfigurationError) as caught:
        public(seconds)("timeout", "5")
    assert any(path.endswith("_validation.py") for path in files(caught.value))


def test_an_internal_cause_is_dropped() -> None:
    """A lock cannot be pickled: the pickler's TypeError says nothing our message does not."""
    with pytest.raises(ArgumentNotSerializable) as caught:
        public(pack_arguments)([((threading.Lock(),), {})], kernel_python=sys.version_info[:3])
    error = caught.value
    assert error.__cause__ is None and error.__suppress_context__
    assert "During handling" not in "".join(traceback.format_exception(error))


class RefusesPickling:
    def __reduce__(self) -> Any:
        raise ValueError("this object stays here")


def test_a_cause_from_the_users_code_stays_with_its_frames_only() -> None:
    with pytest.raises(SerializationError) as caught:
        public(pack_arguments)([((RefusesPickling(),), {})], kernel_python=sys.version_info[:3])
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError)
    assert files(cause) == [HERE]  # __reduce__ alone: no pickler or colabremote frame


def test_a_remote_traceback_stays_as_the_cause() -> None:
    def fails() -> None:
        error = ZeroDivisionError("division by zero")
        error.__cause__ = RemoteTraceback("  File 'job.py', line 2, in divide")
        raise error

    with pytest.raises(ZeroDivisionError) as caught:
        public(fails)()
    assert isinstance(caught.value.__cause__, RemoteTraceback)


def test_an_internal_context_is_suppressed() -> None:
    """An error raised while ours handled another, with no ``from``: no "During handling"."""
    convert = internal(
        "def convert():\n"
        "    try:\n"
        "        {}['missing']\n"
        "    except KeyError:\n"
        "        raise RuntimeError('a clean message')\n",
        "convert",
    )
    with pytest.raises(RuntimeError) as caught:
        public(convert)()
    assert caught.value.__suppress_context__
    assert "KeyError" not in "".join(traceback.format_exception(caught.value))


def test_async_and_iterator_forms_trim_too() -> None:
    async def check() -> None:
        await asyncio.sleep(0)
        seconds("timeout", "5")

    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(public_async(check)())
    assert not any(path.endswith("_validation.py") for path in files(caught.value))

    def produce() -> Iterator[float | None]:
        yield 1.0
        yield seconds("timeout", "5")

    iterator = public_iterator(produce)()
    assert next(iterator) == 1.0
    with pytest.raises(ConfigurationError) as caught:
        next(iterator)
    assert not any(path.endswith("_validation.py") for path in files(caught.value))


def test_closing_a_wrapped_iterator_closes_the_inner_one() -> None:
    closed = []

    def produce() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    iterator = public_iterator(produce)()
    assert next(iterator) == 1
    iterator.close()  # type: ignore[attr-defined]
    assert closed == [True]


def test_the_loop_thread_outlives_a_task_that_raises_keyboard_interrupt() -> None:
    """asyncio lets a task's KeyboardInterrupt out of run_forever; an interrupted s.exec raises
    one on the loop thread. Every session shares that loop, so it must keep running."""
    thread = loop_thread()

    async def interrupted() -> None:
        raise KeyboardInterrupt

    failed = thread.submit(interrupted())
    assert isinstance(failed.exception(timeout=10), KeyboardInterrupt)
    assert thread.submit(asyncio.sleep(0, "still running")).result(timeout=10) == "still running"
