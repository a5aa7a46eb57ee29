"""Exactly once: a call the agent has started is never sent again, whatever goes wrong while its
outcome is packed or sent; only a call the agent never received is resent (docs/reliability.md).

Each remote function appends a line to a file in ``tmp_path`` per run, so the tests count runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import colabremote as cr
from colabremote._colab.auth import EnvironmentToken
from colabremote._kernel.client import INSTALL_TIMEOUT
from colabremote._session.core import CLOSE_WAIT_SECONDS
from colabremote.exceptions import (
    ConnectionLost,
    KernelDied,
    KernelRestarted,
    ResultNotSerializable,
    SessionClosed,
)
from colabremote.testing import ColabEmulator, JupyterServer

from .conftest import wait_for_path


class UnprintableError(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class Unpicklable:
    """A result whose pickling fails with an exception that cannot be printed."""

    def __reduce__(self) -> Any:
        raise UnprintableError("no pickling")


def note_run(path: str) -> None:
    with open(path, "a") as f:
        f.write("ran\n")


def raises_unprintable(path: str) -> None:
    note_run(path)
    raise UnprintableError("boom")


def returns_unpicklable(path: str) -> Unpicklable:
    note_run(path)
    return Unpicklable()


def breaks_agent_serializer(path: str) -> int:
    note_run(path)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise UnprintableError("the serializer is broken")

    vars(sys.modules["_colabremote_agent"])["dumps"] = broken
    return 1


def runs(path: Path) -> int:
    return path.read_text().count("ran\n") if path.exists() else 0


def test_exception_with_a_raising_str_runs_once(session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    with pytest.raises(Exception) as caught:
        session.remote(raises_unprintable)(str(log))
    assert not isinstance(caught.value, ConnectionLost)
    assert caught.type is UnprintableError
    assert runs(log) == 1


def test_result_that_fails_to_pickle_unprintably_runs_once(
    session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with pytest.raises(ResultNotSerializable, match="Unpicklable"):
        session.remote(returns_unpicklable)(str(log))
    assert runs(log) == 1
    assert session.remote(len)([1, 2, 3]) == 3  # the session carries on


def test_user_code_breaking_the_agent_serializer_runs_once(
    fresh_session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with pytest.raises(ResultNotSerializable, match="could not be packed"):
        fresh_session.remote(breaks_agent_serializer)(str(log))
    assert runs(log) == 1


def deletes_agent_module() -> None:
    del sys.modules["_colabremote_agent"]


def test_deleted_agent_module_is_put_back(session: cr.Session) -> None:
    session.remote(deletes_agent_module)()
    assert session.remote(sorted)([3, 1, 2]) == [1, 2, 3]
    assert session.remote(runs)(Path(__file__)) == 0


def test_broken_agent_serializer_is_repaired_for_the_next_call(
    fresh_session: cr.Session, tmp_path: Path
) -> None:
    log = tmp_path / "runs"
    with pytest.raises(ResultNotSerializable):
        fresh_session.remote(breaks_agent_serializer)(str(log))
    assert fresh_session.remote(sorted)([3, 1, 2]) == [1, 2, 3]


# -- a kernel restarted from elsewhere (the jupyter server's restart, as JupyterLab sends it) --


def remember(value: int) -> None:
    import builtins

    builtins.colabremote_test_value = value  # type: ignore[attr-defined]


def recall() -> int | None:
    import builtins

    return getattr(builtins, "colabremote_test_value", None)


def deaf_until(started: str, release: str) -> None:
    """Ignore interrupts (so only the restart ends this), say "started", wait for ``release``."""
    import signal
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    note_run(started)
    deadline = time.monotonic() + 120
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


Restart = Callable[[], None]


@pytest.fixture(scope="module")
def emu() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emulator:
        yield emulator


def emulated(emu: ColabEmulator, **options: Any) -> cr.Session:
    """A Colab session on the module's emulator."""
    token = EnvironmentToken(emu.mint_access_token())
    return cr.Session("colab", base_url=emu.url, credentials=token, progress=False, **options)


@pytest.fixture(params=["jupyter", pytest.param("emulator", marks=pytest.mark.slow)])
def restartable(request: pytest.FixtureRequest) -> Iterator[tuple[cr.Session, Restart]]:
    """A session, and a way to restart its kernel from outside: the Jupyter server's REST call
    as JupyterLab sends it, or Colab's "Restart session" through the runtime's proxy."""
    if request.param == "emulator":
        emu: ColabEmulator = request.getfixturevalue("emu")
        with emulated(emu) as s:
            endpoint = s.runtime().endpoint
            kernel_id = s.info().details["kernel_id"]
            yield s, lambda: emu.restart_kernel(endpoint, kernel_id)
        return
    server: JupyterServer = request.getfixturevalue("jupyter_server")
    with cr.Session("jupyter", url=server.url, token=server.token, progress=False) as s:
        kernel_id = s.info().details["kernel_id"]

        def restart() -> None:
            response = httpx.post(
                f"{server.url}/api/kernels/{kernel_id}/restart",
                headers={"Authorization": f"token {server.token}"},
                timeout=120,
            )
            response.raise_for_status()

        yield s, restart


def test_restart_from_elsewhere_fails_the_call_at_once_and_the_next_call_works(
    restartable: tuple[cr.Session, Restart], tmp_path: Path
) -> None:
    session, restart = restartable
    session.remote(remember)(7)
    started, release = tmp_path / "started", tmp_path / "release"

    def restart_once_started() -> None:
        wait_for_path(started)
        restart()

    restarter = threading.Thread(target=restart_once_started, daemon=True)
    restarter.start()
    try:
        with pytest.raises(KernelRestarted):
            session.remote(deaf_until, timeout=120)(str(started), str(release))
    finally:
        release.touch()
        restarter.join(120)
    assert runs(started) == 1
    assert session.remote(recall)() is None  # a fresh kernel, with the agent installed again
    assert session.remote(sorted)([2, 1]) == [1, 2]


def test_restart_from_elsewhere_between_calls(
    restartable: tuple[cr.Session, Restart],
) -> None:
    session, restart = restartable
    session.remote(remember)(7)
    restart()
    assert session.remote(recall)() is None
    assert session.remote(sorted)([2, 1]) == [1, 2]


# -- close() in bounded time, whatever the connection is doing ---------------------------------


def test_close_finishes_while_the_kernel_never_answers_the_connect(
    jupyter_server: JupyterServer, tmp_path: Path
) -> None:
    url, token = jupyter_server.url, jupyter_server.token
    started, release = tmp_path / "started", tmp_path / "release"
    with cr.Session("jupyter", url=url, token=token, progress=False) as busy:
        kernel_id = busy.info().details["kernel_id"]
        blocker = threading.Thread(
            target=busy.remote(deaf_until), args=(str(started), str(release)), daemon=True
        )
        blocker.start()
        try:
            wait_for_path(started)  # the kernel is busy: it answers nobody's connect
            stuck = cr.Session("jupyter", url=url, token=token, kernel_id=kernel_id, progress=False)
            failures: list[BaseException] = []

            def open_it() -> None:
                try:
                    stuck.open()
                except BaseException as exc:
                    failures.append(exc)

            opener = threading.Thread(target=open_it, daemon=True)
            opener.start()
            core = stuck._core
            deadline = time.monotonic() + 60
            while core._connecting is None and opener.is_alive():
                assert time.monotonic() < deadline, "the second session never began connecting"
                time.sleep(0.01)
            begun = time.monotonic()
            stuck.close()
            assert time.monotonic() - begun < CLOSE_WAIT_SECONDS
            opener.join(30)
            assert not opener.is_alive()
            assert [type(f) for f in failures] == [SessionClosed]
        finally:
            release.touch()
            blocker.join(60)


def die() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_restart_during_the_reconnection_after_a_kernel_kill_fails_fast_and_close_releases(
    emu: ColabEmulator,
) -> None:
    """The kernel is killed; while the session brings a kernel back and installs the agent in
    it, the kernel is restarted from elsewhere (its install never reaches it). The call fails
    with a typed error well inside the install's deadline, and close() releases the runtime."""
    session = emulated(emu)
    try:
        endpoint = session.runtime().endpoint
        kernel_id = session.info().details["kernel_id"]
        with pytest.raises(KernelDied):
            session.remote(die)()
        swallowed = emu.faults.swallow_frame(b"def __colabremote_install(source)")

        def restart_once_the_install_is_sent() -> None:
            if swallowed.wait(60):
                emu.restart_kernel(endpoint, kernel_id)

        restarter = threading.Thread(target=restart_once_the_install_is_sent, daemon=True)
        restarter.start()
        begun = time.monotonic()
        with pytest.raises(KernelDied):  # KernelRestarted, or the server saying "restarting"
            session.remote(sorted)([2, 1])
        assert time.monotonic() - begun < INSTALL_TIMEOUT / 2
        assert swallowed.is_set()
        restarter.join(60)
        assert not restarter.is_alive()
    finally:
        emu.faults.clear()
        begun = time.monotonic()
        session.close()
        assert time.monotonic() - begun < CLOSE_WAIT_SECONDS
    assert endpoint not in emu.assigned_endpoints()
