"""A dropped kernel WebSocket loses nothing: calls in flight finish, exactly once, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote.testing import ColabEmulator, JupyterServer, drop_connection

from .conftest import wait_for_path


def slow_append(path: str, text: str, seconds: float) -> str:
    """Appends ``text`` after ``seconds``; ``path.started`` says it began."""
    Path(f"{path}.started").touch()
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def big_result(n: int, started: str) -> Any:
    import numpy as np

    Path(started).touch()
    return np.arange(n, dtype=np.int64)


@pytest.fixture
def jupyter_session(jupyter_server: JupyterServer) -> Iterator[cr.Session]:
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        yield session


def drop_when(session: cr.Session, path: Path) -> threading.Thread:
    """Cut the session's kernel connection once a remote function has made ``path``."""

    def cut() -> None:
        wait_for_path(path)
        drop_connection(session)

    thread = threading.Thread(target=cut)
    thread.start()
    return thread


def test_call_in_flight_survives_a_drop(jupyter_session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = jupyter_session.remote(slow_append)
    f(str(log), "warm-up", 0)
    (tmp_path / "log.started").unlink()
    cutter = drop_when(jupyter_session, tmp_path / "log.started")
    assert f(str(log), "during the drop", 2.0) == "during the drop"
    cutter.join()
    assert f(str(log), "after", 0) == "after"
    assert log.read_text().splitlines() == ["warm-up", "during the drop", "after"]


def test_many_calls_across_a_drop(jupyter_session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = jupyter_session.remote(slow_append)
    cutter = drop_when(jupyter_session, tmp_path / "log.started")
    futures = [f.submit(str(log), f"call {i}", 0.1) for i in range(15)]
    assert [fut.result(timeout=60) for fut in futures] == [f"call {i}" for i in range(15)]
    cutter.join()
    # Exactly once each, in the order they were made, wherever the drop caught them.
    assert log.read_text().splitlines() == [f"call {i}" for i in range(15)]


@pytest.mark.slow
def test_large_result_across_a_drop(jupyter_session: cr.Session, tmp_path: Path) -> None:
    """The connection is cut as each 32 MB result starts on its way (several chunks)."""
    f = jupyter_session.remote(big_result)
    for i in range(5):
        started = tmp_path / f"started-{i}"
        cutter = drop_when(jupyter_session, started)
        out = f(4_000_000, str(started))
        cutter.join()
        np.testing.assert_array_equal(out[:5], [0, 1, 2, 3, 4])
        assert out.shape == (4_000_000,)


# -- order across a drop, with the emulator's switches deciding what the drop catches ----------


def append_line(path: str, text: str) -> str:
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def append_when_released(path: str, started: str, release: str) -> str:
    """Notes that it started, waits for ``release`` (at most 60 s), then appends "finished"."""
    with open(path, "a") as f:
        f.write("started\n")
    Path(started).touch()
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path, "a") as f:
        f.write("finished\n")
    return "finished"


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu_session(emu: ColabEmulator) -> Iterator[cr.Session]:
    token = EnvironmentToken(emu.mint_access_token())
    with cr.Session("colab", base_url=emu.url, credentials=token, progress=False) as session:
        yield session
    emu.faults.clear()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Until ``condition()`` holds, with a deadline: a slow machine fails instead of passing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.01)


def calls_in_flight(session: cr.Session) -> int:
    client = session._core.client
    return 0 if client is None else client.calls_in_flight


def hold_reconnection(emu: ColabEmulator, session: cr.Session) -> Any:
    """Hold the session's next kernel WebSocket upgrade, so a test can act while it reconnects."""
    kernel_id = session.info().details["kernel_id"]
    return emu.faults.hold_next(f"/api/kernels/{kernel_id}/channels")


@pytest.mark.slow
def test_a_call_caught_in_transit_keeps_its_place(
    emu: ColabEmulator, emu_session: cr.Session, tmp_path: Path
) -> None:
    """A leaves here but never reaches the kernel; B and C are made while the session
    reconnects. The kernel still runs A, B, C in that order, each once."""
    log = tmp_path / "log"
    f = emu_session.remote(append_line)
    assert f(str(log), "warm-up") == "warm-up"
    swallowed = emu.faults.swallow_frame(b"first: A")
    held = hold_reconnection(emu, emu_session)
    a = f.submit(str(log), "first: A")
    assert swallowed.wait(60), "A never reached the emulator"
    drop_connection(emu_session)
    try:
        assert held.arrived.wait(60), "the session did not reconnect"
        b = f.submit(str(log), "then: B")
        c = f.submit(str(log), "then: C")
        wait_until(lambda: calls_in_flight(emu_session) == 3, "B and C being queued")
    finally:
        held.release()
    assert [x.result(timeout=60) for x in (a, b, c)] == ["first: A", "then: B", "then: C"]
    assert log.read_text().splitlines() == ["warm-up", "first: A", "then: B", "then: C"]
    assert f(str(log), "after") == "after"


@pytest.mark.slow
def test_a_call_that_started_before_a_drop_is_fetched_not_run_again(
    emu: ColabEmulator, emu_session: cr.Session, tmp_path: Path
) -> None:
    log, started, release = tmp_path / "log", tmp_path / "started", tmp_path / "release"
    held = hold_reconnection(emu, emu_session)
    running = emu_session.remote(append_when_released).submit(str(log), str(started), str(release))
    wait_for_path(started)
    drop_connection(emu_session)
    try:
        assert held.arrived.wait(60), "the session did not reconnect"
        later = emu_session.remote(append_line).submit(str(log), "made during the drop")
        wait_until(lambda: calls_in_flight(emu_session) == 2, "the later call being queued")
    finally:
        held.release()
    release.touch()
    assert running.result(timeout=60) == "finished"
    assert later.result(timeout=60) == "made during the drop"
    assert log.read_text().splitlines() == ["started", "finished", "made during the drop"]


def plus(a: int, b: int) -> int:
    return a + b


def kill_kernel() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_new_client_never_gets_what_the_server_kept_for_the_last_one() -> None:
    """jupyter_server keeps a closed connection's messages for its session id and replays them
    to the next connection with that id. A reconnection asks for them (same id); the client
    that replaces a dead kernel's must not (a new id), or it would hear the old kernel's
    shutdown_reply and fail its first call as restarted."""
    from colabremote.exceptions import KernelDied
    from colabremote.testing import emulator_of

    with cr.Session(backend="emulator") as session:
        assert session.remote(plus)(1, 2) == 3
        emu = emulator_of(session)

        def channel_sessions() -> list[str]:
            return [
                r.query["session_id"][0]
                for r in emu.requests
                if r.path.endswith("/channels") and "session_id" in r.query
            ]

        first = channel_sessions()
        assert len(set(first)) == 1
        drop_connection(session)
        assert session.remote(plus)(3, 4) == 7
        assert set(channel_sessions()) == set(first)  # the reconnection asked for the replay
        with pytest.raises(KernelDied):
            session.remote(kill_kernel)()
        assert session.remote(plus)(5, 6) == 11
        assert len(set(channel_sessions())) == 2  # the new client did not


def logged_values(path: str, n: int) -> Iterator[int]:
    """Yields 0..n-1, noting each in ``path`` as it is produced."""
    for i in range(n):
        with open(path, "a") as f:
            f.write(f"{i}\n")
        yield i


def test_a_drop_during_a_generator_loses_and_repeats_no_value(
    emu_session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    values = []
    for value in emu_session.remote(logged_values)(str(log), 3000):
        values.append(value)
        if value == 100:
            drop_connection(emu_session)
    assert values == list(range(3000))
    assert log.read_text().splitlines() == [str(i) for i in range(3000)]
