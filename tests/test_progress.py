"""Progress bars for large transfers: drawn on a terminal, silent elsewhere or when turned off."""

from __future__ import annotations

import os
import pty
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote._progress import Progress
from colabremote.testing import JupyterServer


def size_of(x: Any) -> int:
    return int(x.nbytes)


def make_array(n: int) -> Any:
    import numpy as np

    return np.ones(n, dtype=np.uint8)


class Terminal:
    """A real pseudo-terminal to stand in for sys.stderr (installed from the test body: pytest
    re-installs its own capture between a fixture's setup and the test)."""

    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.stream = os.fdopen(slave, "w")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sys, "stderr", self.stream)

    def __call__(self) -> str:
        """What the terminal showed since the last look."""
        self.stream.flush()
        os.set_blocking(self.master, False)
        chunks = []
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    term = Terminal()
    yield term
    term.stream.close()
    os.close(term.master)


@pytest.mark.slow
def test_large_arguments_and_results_show_progress(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal.install(monkeypatch)
    with cr.Session("local", progress=True) as session:
        terminal()  # forget the start-up messages
        assert session.remote(size_of)(np.ones(80 * 1024 * 1024, dtype=np.uint8)) == 80 * 2**20
        sent = terminal()
        assert "colabremote: sending" in sent and "100%" in sent
        assert session.remote(size_of)(np.ones(1024, dtype=np.uint8)) == 1024
        assert "colabremote:" not in terminal()  # small transfers stay quiet


@pytest.mark.slow
def test_large_results_show_progress(
    terminal: Terminal, monkeypatch: pytest.MonkeyPatch, jupyter_server: JupyterServer
) -> None:
    """Results arrive in chunks over a WebSocket (over ZeroMQ they come whole, in one message)."""
    terminal.install(monkeypatch)
    url, token = jupyter_server.url, jupyter_server.token
    with cr.Session("jupyter", url=url, token=token, progress=True) as session:
        terminal()
        assert session.remote(make_array)(80 * 1024 * 1024).nbytes == 80 * 2**20
        received = terminal()
        assert "colabremote: receiving" in received and "100%" in received


def test_progress_can_be_turned_off(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    terminal.install(monkeypatch)
    with cr.Session("local", progress=False) as session:
        session.remote(size_of)(np.ones(80 * 1024 * 1024, dtype=np.uint8))
    assert "colabremote" not in terminal()


def test_no_bar_when_not_a_terminal(tmp_path: Any) -> None:
    with open(tmp_path / "log", "w") as stream:
        bar = Progress("copying", 100, stream=stream)
        bar.advance(100)
        bar.done()
    assert (tmp_path / "log").read_text() == ""
