"""Packages and shell commands on the runtime (issue 12), on every backend, offline.

The kernels run in a venv of their own (its site-packages reaches this venv's through a .pth
line, so ipykernel and cloudpickle import), so nothing is ever installed into the test suite's
environment. Packages are tiny wheels built here; pip sees no index (PIP_NO_INDEX) and finds
them through PIP_FIND_LINKS. The runtime's install records go to a temporary XDG_CACHE_HOME.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import colabremote as cr
from colabremote.testing import JupyterServer

from ._wheels import build_wheel, kernel_venv
from .conftest import BackendName, Output, backend_params, wait_for_path

FAKE_UV = """#!/bin/sh
printf '%s\\n' "$*" >> {log}
{before}
[ "$1 $2 $3" = "pip install --python" ] || exit 2
python="$4"
shift 4
exec "$python" -m pip install --disable-pip-version-check "$@"
"""


@dataclass
class Workspace:
    """One backend whose kernels run in their own venv, and the paths the tests look at."""

    name: BackendName
    python: str
    options: dict[str, Any]
    tmp: Path
    records: Path  # where the runtime keeps its install records
    uv_dir: Path  # on the kernels' PATH; a fake uv appears here only while a test wants it

    def session(self, **extra: Any) -> cr.Session:
        return cr.Session(self.name, progress=False, **self.options, **extra)

    def recorded(self) -> set[str]:
        return set(os.listdir(self.records)) if self.records.exists() else set()


@pytest.fixture(scope="module", params=backend_params())
def workspace(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workspace]:
    tmp = tmp_path_factory.mktemp(f"workspace-{request.param}")
    wheels = tmp / "wheels"
    wheels.mkdir()
    for name, version in [("tinypkg", "1.0"), ("tinypkg", "2.0"), ("uvpkg", "1.0")]:
        build_wheel(wheels, name, version)
    python = kernel_venv(tmp / "kernel-venv")
    uv_dir = tmp / "bin"
    uv_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        # Inherited by the kernels (and the servers that start them) from here on.
        patch.setenv("PIP_NO_INDEX", "1")
        patch.setenv("PIP_FIND_LINKS", str(wheels))
        patch.setenv("PIP_CONFIG_FILE", os.devnull)
        patch.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
        patch.setenv("PATH", f"{uv_dir}{os.pathsep}{os.environ['PATH']}")
        records = tmp / "cache" / "colabremote" / "pip"
        if request.param == "jupyter":
            with JupyterServer(python=python) as server:
                yield Workspace(
                    "jupyter",
                    python,
                    {"url": server.url, "token": server.token},
                    tmp,
                    records,
                    uv_dir,
                )
            return
        options: dict[str, Any] = {"python": python}
        if request.param == "emulator":
            options["gpu"] = "T4"
        yield Workspace(request.param, python, options, tmp, records, uv_dir)


@pytest.fixture(scope="module")
def output() -> Output:
    return Output()


@pytest.fixture(scope="module")
def session(workspace: Workspace, output: Output) -> Iterator[cr.Session]:
    with workspace.session(on_output=output) as s:
        yield s


def imported_version(module: str) -> str:
    import importlib

    return str(importlib.import_module(module).VERSION)


# -- packages ----------------------------------------------------------------------------------


def test_installed_package_imports_in_the_next_call(
    session: cr.Session, output: Output, workspace: Workspace
) -> None:
    output.clear()
    session.pip_install("tinypkg==1.0")
    assert "tinypkg" in output.text()  # the installer's output came here
    assert session.remote(imported_version)("tinypkg") == "1.0"
    assert len(workspace.recorded()) == 1


def test_the_same_spec_again_does_not_run_the_installer(
    session: cr.Session, output: Output, workspace: Workspace
) -> None:
    session.pip_install("tinypkg==1.0")  # installed, or already recorded
    before = workspace.recorded()
    output.clear()
    session.pip_install("tinypkg==1.0")
    assert output.text() == ""  # pip prints at least "Requirement already satisfied"
    assert workspace.recorded() == before


def test_a_new_session_on_the_same_runtime_finds_it_done(
    session: cr.Session, workspace: Workspace
) -> None:
    session.pip_install("tinypkg==1.0")  # installed, or already recorded
    fresh = Output()
    with workspace.session(on_output=fresh, pip=["tinypkg==1.0"]) as s:
        assert fresh.text() == ""
        assert s.remote(imported_version)("tinypkg") == "1.0"


def test_a_new_version_of_an_imported_package_warns(
    session: cr.Session, workspace: Workspace
) -> None:
    assert session.remote(imported_version)("tinypkg") == "1.0"  # imported in this kernel
    with pytest.warns(cr.RestartNeededWarning, match="tinypkg") as caught:
        session.pip_install("tinypkg==2.0")
    warning = next(w.message for w in caught if isinstance(w.message, cr.RestartNeededWarning))
    assert (warning.package, warning.old, warning.new) == ("tinypkg", "1.0", "2.0")
    assert "open a new session" in str(warning)  # says how to restart


def test_a_failed_install_raises_with_its_last_lines_and_records_nothing(
    session: cr.Session, workspace: Workspace
) -> None:
    before = workspace.recorded()
    with pytest.raises(cr.PackageInstallError) as caught:
        session.pip_install("nosuchpkg==1.0")
    error = caught.value
    assert error.returncode != 0
    assert "pip install" in error.command and "nosuchpkg==1.0" in error.command
    assert any("nosuchpkg" in line for line in error.tail)
    assert "nosuchpkg" in str(error)
    assert workspace.recorded() == before
    with pytest.raises(cr.PackageInstallError):  # not recorded: the installer runs again
        session.pip_install("nosuchpkg==1.0")


@contextlib.contextmanager
def fake_uv(workspace: Workspace, log: Path, before: str = "") -> Iterator[None]:
    """A ``uv`` on the kernels' PATH while the block runs: it logs its arguments, runs
    ``before`` (shell), then installs with pip."""
    uv = workspace.uv_dir / "uv"
    uv.write_text(FAKE_UV.format(log=log, before=before), encoding="utf-8")
    uv.chmod(uv.stat().st_mode | stat.S_IXUSR)
    try:
        yield
    finally:
        uv.unlink()


def test_the_installers_output_arrives_while_it_runs(
    session: cr.Session, output: Output, workspace: Workspace
) -> None:
    go = workspace.tmp / "go-install"
    before = f"echo resolving uvpkg; while [ ! -e {go} ]; do sleep 0.05; done"
    output.clear()
    failures: list[BaseException] = []

    def install() -> None:
        try:
            session.pip_install("uvpkg>=1.0")
        except BaseException as error:  # reported by the assertions below
            failures.append(error)

    with fake_uv(workspace, workspace.tmp / "uv-live.log", before):
        worker = threading.Thread(target=install)
        worker.start()
        deadline = time.monotonic() + 60
        while "resolving uvpkg" not in output.text():  # here while the installer still waits
            assert time.monotonic() < deadline, "the installer's first line never arrived"
            assert worker.is_alive()
            time.sleep(0.01)
        go.touch()
        worker.join(60)
    assert not worker.is_alive() and failures == []
    assert "uvpkg" in output.text().split("resolving uvpkg", 1)[1]  # pip's own lines followed


def test_uv_is_used_where_the_runtime_has_it(session: cr.Session, workspace: Workspace) -> None:
    log = workspace.tmp / "uv.log"
    with fake_uv(workspace, log):
        session.pip_install("uvpkg==1.0")
    python = session.eval("__import__('sys').executable")
    assert log.read_text(encoding="utf-8").splitlines() == [
        f"pip install --python {python} uvpkg==1.0"
    ]
    assert session.remote(imported_version)("uvpkg") == "1.0"


def test_packages_given_at_open_are_there_before_the_first_call(workspace: Workspace) -> None:
    requirements = workspace.tmp / "requirements.txt"
    requirements.write_text("uvpkg==1.0\ntinypkg==2.0\n", encoding="utf-8")
    with workspace.session(requirements=requirements) as s:
        assert s.remote(imported_version)("uvpkg") == "1.0"


def test_a_session_opened_for_detached_calls_installs_before_its_first_call(
    workspace: Workspace,
) -> None:
    """s.calls() opens a session without a kernel; the first call then starts one, and the
    session's packages are installed there before that call runs."""
    build_wheel(workspace.tmp / "wheels", "latepkg", "1.0")
    s = workspace.session(pip=["latepkg==1.0"])
    try:
        assert s.calls() == []
        assert s.remote(imported_version)("latepkg") == "1.0"
    finally:
        s.close()


def test_a_failed_install_at_open_fails_the_open(workspace: Workspace) -> None:
    s = workspace.session(pip=["nosuchpkg==2.0"])
    with pytest.raises(cr.PackageInstallError):
        s.open()
    assert s.closed


# -- shell -------------------------------------------------------------------------------------


def test_shell_streams_output_as_it_is_printed(
    session: cr.Session, output: Output, workspace: Workspace
) -> None:
    go = workspace.tmp / "go"
    command = f"echo started; while [ ! -e {go} ]; do sleep 0.05; done; echo finished"
    output.clear()
    results: list[cr.ShellResult] = []
    worker = threading.Thread(target=lambda: results.append(session.shell(command)))
    worker.start()
    deadline = time.monotonic() + 60
    while "started" not in output.text("stdout"):  # seen here while the command still waits
        assert time.monotonic() < deadline, "the first line never arrived"
        assert worker.is_alive()
        time.sleep(0.01)
    go.touch()
    worker.join(60)
    assert results == [cr.ShellResult(command, 0, "started\nfinished\n", "")]


def test_shell_returns_the_status_and_both_streams(session: cr.Session) -> None:
    result = session.shell("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert session.shell("pwd").stdout.strip() == session.info().cwd


def test_shell_check_raises_on_a_nonzero_exit(session: cr.Session) -> None:
    with pytest.raises(cr.ShellCommandError, match="no such thing") as caught:
        session.shell("echo 'no such thing' >&2; exit 7", check=True)
    assert caught.value.returncode == 7
    assert caught.value.result.stderr == "no such thing\n"


def test_shell_timeout_kills_the_command_and_its_children(
    session: cr.Session, workspace: Workspace
) -> None:
    child = workspace.tmp / "child.pid"
    with pytest.raises(cr.RemoteTimeout, match="did not finish within 2 s"):
        session.shell(f"sleep 300 & echo $! > {child}; wait", timeout=2)
    wait_for_path(child)
    pid = int(child.read_text())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()  # killed (maybe unreaped)
    assert session.shell("echo still here").stdout == "still here\n"


def test_exec_runs_ipython_shell_lines_and_magics(session: cr.Session, output: Output) -> None:
    output.clear()
    session.exec("!echo hi from a bang line\n%pwd")
    text = output.text()
    assert "hi from a bang line" in text
    assert session.info().cwd in text
    output.clear()
    session.exec("%%bash\necho from bash $((6 * 7))")
    assert "from bash 42" in output.text()
