"""Remote generators on a local kernel: values as produced, back-pressure, early exits, errors,
timeouts and Ctrl-C. (Every backend, and a dropped WebSocket, in test_compliance.py.)"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote._kernel.wire import STREAM_STEP_ITEMS, STREAM_WINDOW
from colabremote.exceptions import ConfigurationError, RemoteTimeout, RemoteTraceback

from .conftest import Output, wait_for_path

# -- generators that run remotely ----------------------------------------------------------------


def wait_for(path: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def first_then_wait(release: str) -> Iterator[str]:
    yield "first"
    wait_for(release)  # only a client that already has "first" can release this
    yield "second"


def chatty(n: int) -> Generator[int, None, None]:
    for i in range(n):
        print(f"making {i}")
        yield i
    print("all made")


def counting(counter: str) -> Generator[int, None, None]:
    """Endless; ``counter`` holds how many values it has produced."""
    i = 0
    while True:
        i += 1
        with open(counter, "w") as f:
            f.write(str(i))
        yield i


def read_number(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def with_finally(done: str) -> Generator[int, None, None]:
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        print("cleaning up")
        Path(done).touch()


def fails_after(n: int) -> Iterator[int]:
    yield from range(n)
    raise ValueError(f"failed after {n}")


def slow_after(n: int, seconds: float) -> Iterator[int]:
    yield from range(n)
    time.sleep(seconds)
    yield n


async def async_squares(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i * i


async def async_waits(marker: str) -> AsyncGenerator[int, None]:
    try:
        yield 1
        Path(f"{marker}.started").touch()
        await asyncio.sleep(30)
        yield 2
    finally:
        Path(f"{marker}.finally").touch()


def blocks_after_one(marker: str) -> Iterator[int]:
    try:
        yield 1
        wait_for(f"{marker}.asked")  # the consumer is inside next() now
        Path(f"{marker}.started").touch()
        time.sleep(60)
        yield 2
    finally:
        print("generator stopped")
        Path(f"{marker}.finally").touch()


def not_a_generator() -> list[int]:
    return [1, 2]


@pytest.fixture(scope="module")
def output() -> Output:
    return Output()


@pytest.fixture(scope="module")
def local(output: Output) -> Iterator[cr.Session]:
    with cr.Session("local", progress=False, on_output=output) as s:
        yield s


# -- values as produced ------------------------------------------------------------------------


def test_each_value_arrives_as_it_is_produced(local: cr.Session, tmp_path: Path) -> None:
    release = tmp_path / "release"
    values = local.remote(first_then_wait)(str(release))
    assert next(values) == "first"  # the generator is still running, waiting for us
    release.touch()
    assert list(values) == ["second"]


def test_output_and_values_interleave_in_order(local: cr.Session, output: Output) -> None:
    output.clear()
    for value in local.remote(chatty)(3):
        output("stdout", f"got {value}\n")
    lines = output.text().splitlines()
    assert lines == ["making 0", "got 0", "making 1", "got 1", "making 2", "got 2", "all made"]


def test_many_values_in_order(local: cr.Session) -> None:
    assert list(local.remote(chatty)(5000)) == list(range(5000))


def test_async_generators_stream_with_async_for(local: cr.Session) -> None:
    f = local.remote(async_squares)

    async def main() -> list[int]:
        return [x async for x in f(5)]

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


# -- back-pressure -------------------------------------------------------------------------------


def test_a_slow_consumer_pauses_the_producer(local: cr.Session, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    values = local.remote(counting)(str(counter))
    assert next(values) == 1
    read = local.remote(read_number)
    # Calls run after the steps already asked for: the producer stopped within the window.
    produced = read(str(counter))
    assert produced <= (STREAM_WINDOW + 1) * STREAM_STEP_ITEMS
    assert read(str(counter)) == produced  # and stays paused while nobody asks
    values.close()


# -- leaving early -------------------------------------------------------------------------------


def test_close_runs_the_generators_finally(local: cr.Session, tmp_path: Path) -> None:
    done = tmp_path / "done"
    values = local.remote(with_finally)(str(done))
    assert [next(values), next(values)] == [0, 1]
    values.close()
    assert done.exists()  # close() returns after the finally ran
    with pytest.raises(StopIteration):
        next(values)


def test_break_and_garbage_collection_stop_the_generator(local: cr.Session, tmp_path: Path) -> None:
    f = local.remote(with_finally)
    for value in f(str(tmp_path / "broke")):
        if value == 3:
            break
    gc.collect()
    wait_for_path(tmp_path / "broke")
    dropped = f(str(tmp_path / "dropped"))
    next(dropped)
    del dropped
    gc.collect()
    wait_for_path(tmp_path / "dropped")


# -- errors, timeouts, Ctrl-C --------------------------------------------------------------------


def test_an_exception_mid_stream_raises_at_that_point(local: cr.Session) -> None:
    values = local.remote(fails_after)(3)
    assert [next(values) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="failed after 3") as raised:
        next(values)
    assert isinstance(raised.value.__cause__, RemoteTraceback)
    assert "fails_after" in str(raised.value.__cause__)
    with pytest.raises(StopIteration):
        next(values)


def test_a_function_that_is_not_a_generator_is_called_as_usual(local: cr.Session) -> None:
    assert local.remote(not_a_generator)() == [1, 2]


@pytest.mark.slow
def test_timeout_applies_to_each_value(local: cr.Session) -> None:
    values = local.remote(slow_after, timeout=1.0)(3, 30)
    started = time.monotonic()
    assert [next(values) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RemoteTimeout):
        next(values)
    assert time.monotonic() - started < 15
    assert list(local.remote(chatty)(2)) == [0, 1]


def test_ctrl_c_stops_the_generator_once_and_the_session_goes_on(
    local: cr.Session, output: Output, tmp_path: Path
) -> None:
    marker = tmp_path / "marker"
    values = local.remote(blocks_after_one)(str(marker))
    assert next(values) == 1  # the first step runs on, with a `next` queued behind it

    def press_ctrl_c() -> None:  # once the generator waits inside the step, not before
        wait_for_path(f"{marker}.started")
        os.kill(os.getpid(), signal.SIGINT)

    press = threading.Thread(target=press_ctrl_c)
    press.start()
    output.clear()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        Path(f"{marker}.asked").touch()
        next(values)
    press.join()
    assert time.monotonic() - started < 15
    assert Path(f"{marker}.finally").exists()  # before the KeyboardInterrupt reached us
    assert "generator stopped" in output.text()
    with pytest.raises(StopIteration):
        next(values)
    assert list(local.remote(chatty)(2)) == [0, 1]


def test_cancelling_async_iteration_stops_the_generator(local: cr.Session, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = local.remote(async_waits)

    async def main() -> None:
        values = f(str(marker))
        assert await values.__anext__() == 1
        waiting = asyncio.ensure_future(values.__anext__())
        await asyncio.to_thread(wait_for_path, f"{marker}.started")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    wait_for_path(f"{marker}.finally")
    assert list(local.remote(chatty)(2)) == [0, 1]


# -- what generators do not do -------------------------------------------------------------------


def test_submit_map_aio_spawn_and_keep_refuse_a_generator_function(local: cr.Session) -> None:
    f = local.remote(chatty)
    with pytest.raises(ConfigurationError, match=r"iterate over the values"):
        f.submit(3)
    with pytest.raises(ConfigurationError, match=r"map\(\)"):
        list(f.map([1, 2]))
    with pytest.raises(ConfigurationError, match=r"\.aio\(\)"):
        asyncio.run(f.aio(3))
    with pytest.raises(ConfigurationError, match=r"spawn\(\)"):
        f.spawn(3)
    with pytest.raises(ConfigurationError, match=r"\.keep"):
        f.keep(3)


def test_send_with_a_value_is_refused(local: cr.Session) -> None:
    values = local.remote(chatty)(3)
    assert values.send(None) == 0
    with pytest.raises(ConfigurationError, match="takes no values"):
        values.send(5)  # type: ignore[arg-type]  # the wrong use this test is about
    values.close()
