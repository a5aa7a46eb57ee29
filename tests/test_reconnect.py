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
from colabremote.testing import JupyterServer


def slow_append(path: str, text: str, seconds: float) -> str:
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(text + "\n")
    return text


def big_result(n: int) -> Any:
    import numpy as np

    return np.arange(n, dtype=np.int64)


@pytest.fixture
def jupyter_session(jupyter_server: JupyterServer) -> Iterator[cr.Session]:
    with cr.Session(
        "jupyter", url=jupyter_server.url, token=jupyter_server.token, progress=False
    ) as session:
        yield session


def drop_connection(session: cr.Session, after: float) -> threading.Timer:
    """Abort the session's kernel WebSocket (its TCP connection) after a delay."""

    def abort() -> None:
        client = session._core.client
        assert client is not None
        ws: Any = client.transport._ws  # type: ignore[attr-defined]
        session._loop.loop.call_soon_threadsafe(ws.transport.abort)

    timer = threading.Timer(after, abort)
    timer.start()
    return timer


def test_call_in_flight_survives_a_drop(jupyter_session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = jupyter_session.remote(slow_append)
    f(str(log), "warm-up", 0)
    drop_connection(jupyter_session, 0.5)
    assert f(str(log), "during the drop", 2.0) == "during the drop"
    assert f(str(log), "after", 0) == "after"
    assert log.read_text().splitlines() == ["warm-up", "during the drop", "after"]


def test_many_calls_across_a_drop(jupyter_session: cr.Session, tmp_path: Path) -> None:
    log = tmp_path / "log"
    f = jupyter_session.remote(slow_append)
    drop_connection(jupyter_session, 0.3)
    futures = [f.submit(str(log), f"call {i}", 0.1) for i in range(15)]
    assert [fut.result(timeout=60) for fut in futures] == [f"call {i}" for i in range(15)]
    assert log.read_text().splitlines() == [f"call {i}" for i in range(15)]  # exactly once


def test_large_result_across_a_drop(jupyter_session: cr.Session) -> None:
    f = jupyter_session.remote(big_result)
    drop_connection(jupyter_session, 0.05)
    for _ in range(5):
        out = f(4_000_000)  # 32 MB, several chunks
        np.testing.assert_array_equal(out[:5], [0, 1, 2, 3, 4])
        assert out.shape == (4_000_000,)
