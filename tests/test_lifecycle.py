"""Interrupts, time-outs, dying kernels and exactly-once execution, on every backend."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.exceptions import KernelDied, RemoteTimeout

from .conftest import wait_for_path

# -- remote functions --------------------------------------------------------------------------


def set_global(value: int) -> None:
    globals()["remembered"] = value


def get_global() -> int:
    return int(globals().get("remembered", -1))


def slow_then_mark(path: str, seconds: float) -> str:
    """Works for ``seconds``; leaves ``path.started`` at once, ``path.interrupted`` when it is
    interrupted, and ``path`` only when it finishes."""
    Path(path + ".started").touch()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        Path(path + ".interrupted").touch()
        raise
    Path(path).write_text("finished")
    return "finished"


def busy_loop_then_mark(path: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            pass
    except KeyboardInterrupt:
        Path(path + ".interrupted").touch()
        raise
    Path(path).write_text("finished")


def append_line(path: str, text: str) -> str:
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def ignore_interrupts(seconds: float) -> str:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(seconds)
    return "ignored"


def add(a: int, b: int) -> int:
    return a + b


# -- time-outs ---------------------------------------------------------------------------------


def test_timeout_interrupts_the_remote_call(fresh_session: cr.Session, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = fresh_session.remote(slow_then_mark, timeout=1)
    started = time.monotonic()
    with pytest.raises(RemoteTimeout, match="did not finish within 1 s"):
        f(str(marker), 30)
    assert time.monotonic() - started < 10
    # It was stopped, not left running: the interrupt reached it before the error came back.
    assert Path(f"{marker}.interrupted").exists()
    assert not marker.exists()
    assert fresh_session.remote(add)(1, 2) == 3


def test_timeout_of_a_busy_loop(fresh_session: cr.Session, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(RemoteTimeout):
        fresh_session.remote(busy_loop_then_mark, timeout=0.5)(str(marker), 30)
    assert Path(f"{marker}.interrupted").exists()
    assert not marker.exists()
    assert fresh_session.remote(add)(2, 2) == 4


def test_timeout_clock_starts_when_the_call_starts(
    fresh_session: cr.Session, tmp_path: Path
) -> None:
    """A call queued behind another is not timed while it waits."""
    slow = fresh_session.remote(slow_then_mark)
    quick = fresh_session.remote(slow_then_mark, timeout=2)
    first = slow.submit(str(tmp_path / "a"), 1.5)
    second = quick.submit(str(tmp_path / "b"), 0.5)
    assert first.result(timeout=30) == "finished"
    assert second.result(timeout=30) == "finished"


@pytest.mark.slow
def test_kernel_that_ignores_interrupts_is_replaced(fresh_session: cr.Session) -> None:
    fresh_session.remote(set_global)(5)
    with pytest.raises(RemoteTimeout):
        fresh_session.remote(ignore_interrupts, timeout=0.5)(60)
    # The stuck kernel was replaced: calls work again, on a fresh kernel.
    assert fresh_session.remote(get_global)() == -1


# -- Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_interrupts_the_kernel(fresh_session: cr.Session, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    f = fresh_session.remote(slow_then_mark)
    fresh_session.remote(set_global)(11)

    def press_ctrl_c() -> None:  # once the remote function has started, not before
        wait_for_path(f"{marker}.started")
        os.kill(os.getpid(), signal.SIGINT)

    press = threading.Thread(target=press_ctrl_c)
    press.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        f(str(marker), 30)
    press.join()
    assert time.monotonic() - started < 15
    assert Path(f"{marker}.interrupted").exists()
    assert not marker.exists()
    # Same kernel, state kept: an interrupt is not a restart.
    assert fresh_session.remote(get_global)() == 11


def test_cancelling_a_future_interrupts_only_that_call(
    fresh_session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    slow = fresh_session.remote(slow_then_mark)
    record = fresh_session.remote(append_line)
    doomed = slow.submit(str(tmp_path / "never"), 30)
    after = [record.submit(str(log), f"after {i}") for i in range(3)]
    wait_for_path(tmp_path / "never.started")
    doomed.cancel()
    assert [fut.result(timeout=30) for fut in after] == ["after 0", "after 1", "after 2"]
    assert log.read_text().splitlines() == ["after 0", "after 1", "after 2"]  # exactly once
    assert (tmp_path / "never.interrupted").exists()
    assert not (tmp_path / "never").exists()


# -- dying kernels -----------------------------------------------------------------------------


def test_kernel_death_raises_and_the_session_goes_on(fresh_session: cr.Session) -> None:
    fresh_session.remote(set_global)(3)
    with pytest.raises(KernelDied, match="died"):
        fresh_session.remote(die)()
    assert fresh_session.remote(add)(20, 22) == 42
    assert fresh_session.remote(get_global)() == -1  # a fresh kernel: old state is gone


# -- exactly once ------------------------------------------------------------------------------


def test_every_call_runs_exactly_once(fresh_session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = fresh_session.remote(append_line)
    for i in range(20):
        f(str(log), f"call {i}")
    list(f.map([str(log)] * 300, [f"map {i}" for i in range(300)]))
    futures = [f.submit(str(log), f"submit {i}") for i in range(30)]
    for fut in futures:
        fut.result(timeout=60)
    lines = log.read_text().splitlines()
    expected = (
        [f"call {i}" for i in range(20)]
        + [f"map {i}" for i in range(300)]
        + [f"submit {i}" for i in range(30)]
    )
    assert lines == expected


def test_a_lost_idle_status_is_waited_for_only_as_long_as_asked(
    fresh_session: cr.Session,
) -> None:
    """The readiness probe's mechanism: the reply came, the idle status did not (a subscription
    still joining); ``idle_timeout`` bounds that second wait on its own."""
    from colabremote._kernel.messages import Message
    from colabremote._loop import loop_thread

    assert fresh_session.remote(add)(1, 2) == 3  # open
    client = fresh_session._core.client
    assert client is not None
    route = client._route

    def drop_idle(msg: Message) -> None:
        if msg.msg_type == "status" and msg.content.get("execution_state") == "idle":
            return
        route(msg)

    client._route = drop_idle  # type: ignore[method-assign]
    try:
        probe = client.execute("", silent=True, quiet=True, timeout=60, idle_timeout=0.2)
        with pytest.raises(TimeoutError):
            loop_thread().run(probe)
    finally:
        client._route = route  # type: ignore[method-assign]
    assert fresh_session.remote(add)(2, 2) == 4
