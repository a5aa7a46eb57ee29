"""Fixtures: real kernels on every backend, and a real jupyter_server on 127.0.0.1."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

import colabremote as cr
from colabremote import _retry as retry
from colabremote.testing import JupyterServer

BackendName = Literal["local", "jupyter", "emulator"]
BACKENDS: list[BackendName] = ["local", "jupyter", "emulator"]


@pytest.fixture(autouse=True, scope="session")
def _retries_do_not_wait() -> Iterator[None]:
    """Retries in tests happen at once; nothing is changed when this file is imported."""
    retry.set_wait_scale(0)
    yield
    retry.set_wait_scale(1)


@pytest.fixture(autouse=True, scope="session")
def _emulators_use_temp_folders() -> Iterator[None]:
    """Emulators (here and in subprocesses) keep runtime files in temp folders, so parallel
    ones never contend for /content; tests/test_content_root.py asks for /content itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLABREMOTE_EMULATOR_CONTENT_ROOT", "temp")
        yield


def wait_for_path(path: str | os.PathLike[str], timeout: float = 60.0) -> None:
    """Until a remote function has made ``path`` (its way of saying "started"): polled with a
    deadline, so a slow machine fails the test instead of letting it pass untested."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{os.fspath(path)} did not appear within {timeout:g} s")
        time.sleep(0.01)


@dataclass
class Output:
    """Records what a session's kernel printed, with arrival times."""

    chunks: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, name: str, text: str) -> None:
        with self.lock:
            self.chunks.append((time.monotonic(), name, text))

    def text(self, name: str | None = None) -> str:
        with self.lock:
            return "".join(t for _, n, t in self.chunks if name is None or n == name)

    def clear(self) -> None:
        with self.lock:
            self.chunks.clear()


@pytest.fixture(scope="session")
def jupyter_server() -> Iterator[JupyterServer]:
    with JupyterServer(nodelay=True) as server:
        yield server


@dataclass
class BackendSpec:
    name: BackendName
    options: dict[str, Any]

    def session(self, **extra: Any) -> cr.Session:
        return cr.Session(self.name, progress=False, **self.options, **extra)


# The fast subset (-m "not slow") runs these per-backend modules on local kernels only: the
# emulator's variants start a Colab emulator and a jupyter_server per module, the jupyter ones a
# kernel per module on a server. test_reconnect.py, test_backends.py and test_emulator.py keep
# fast tests of the WebSocket and Colab paths.
_SLOW_BACKENDS = {"jupyter", "emulator"}


def backend_params(names: list[BackendName] = BACKENDS) -> list[Any]:
    """Backend names as fixture parameters: all of them by default, only local in the fast
    subset."""
    return [
        pytest.param(name, marks=pytest.mark.slow) if name in _SLOW_BACKENDS else name
        for name in names
    ]


@pytest.fixture(scope="module", params=backend_params())
def backend(request: pytest.FixtureRequest) -> BackendSpec:
    if request.param == "jupyter":
        server: JupyterServer = request.getfixturevalue("jupyter_server")
        return BackendSpec("jupyter", {"url": server.url, "token": server.token})
    if request.param == "emulator":
        return BackendSpec("emulator", {"gpu": "T4"})
    return BackendSpec("local", {})


@pytest.fixture(scope="module")
def output() -> Output:
    return Output()


@pytest.fixture(scope="module")
def session(backend: BackendSpec, output: Output) -> Iterator[cr.Session]:
    """One session per backend per module (kernels take a moment to start)."""
    with backend.session(on_output=output) as s:
        yield s


@pytest.fixture
def fresh_session(backend: BackendSpec) -> Iterator[cr.Session]:
    """A session of its own, for tests that interrupt, time out or kill the kernel."""
    with backend.session() as s:
        yield s


def other_pythons() -> dict[str, str]:
    """Interpreters with ipykernel for cross-version tests: COLABREMOTE_TEST_PYTHONS is
    'X.Y=/path/python,...'; .ci/run sets it up."""
    spec = os.environ.get("COLABREMOTE_TEST_PYTHONS", "")
    found = {}
    for entry in filter(None, spec.split(",")):
        version, _, path = entry.partition("=")
        found[version.strip()] = path.strip()
    return found
