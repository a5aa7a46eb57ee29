"""A dropped kernel WebSocket loses nothing: calls in flight finish, exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote.testing import JupyterServer, drop_connection

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
    ran = log.read_text().splitlines()
    # Exactly once each. Not necessarily in order: a call caught in transit by the drop is sent
    # again after the reconnection, behind calls made later (docs/reliability.md).
    assert sorted(ran, key=lambda line: int(line.split()[1])) == [f"call {i}" for i in range(15)]


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
