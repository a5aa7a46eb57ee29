"""Using colabremote as people do at a prompt: the plugin in a bare install, exit without close,
Ctrl-C at the terminal and during a start, and ``s.eval``."""

from __future__ import annotations

import _thread
import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import venv
from pathlib import Path

import httpx
import pytest

import colabremote as cr
from colabremote.exceptions import KernelStartError, PythonVersionMismatch, SessionClosed
from colabremote.testing import JupyterServer, emulator_of

from .conftest import other_pythons

# Real REPLs and fresh virtual environments in subprocesses.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent

#: The base dependencies (pyproject's ``dependencies``) plus pytest, to install in a bare venv.
BASE_DEPENDENCIES = [
    "httpx>=0.27,<1",
    "cloudpickle>=3.0,<4",
    "jupyter-client>=8.0,<9",
    "keyring>=24",
    "tenacity>=8.2",
    "websockets>=13,<18",
    "pytest>=8",
]


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether process ``pid`` has ended (is not running, nor a zombie), within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# -- 1. the pytest plugin in an install without extras -------------------------------------------


@pytest.mark.slow
def test_plugin_loads_with_only_the_base_dependencies(tmp_path: Path) -> None:
    """``pip install colabremote`` (no extras): an unrelated project's tests still run green,
    and the ``jupyter_server`` fixture, when used, names the extra it needs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *BASE_DEPENDENCIES], check=True, timeout=300)
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True, timeout=300)
    probe = "import importlib.util as u; print(u.find_spec('jupyter_server') is None)"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout == "True\n"

    project = tmp_path / "project"
    project.mkdir()
    (project / "test_unrelated.py").write_text(
        textwrap.dedent(
            """
            def test_arithmetic():
                assert 1 + 1 == 2

            def test_needs_the_extra(jupyter_server):
                pass
            """
        )
    )
    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "arithmetic"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout

    run = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "extra"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert "pip install 'colabremote[emulator]'" in run.stdout


# -- 2. exit without close -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["session", "default"])
def test_exit_without_close_stops_everything_quietly(tmp_path: Path, how: str) -> None:
    """A script that leaves an emulator session open (its own, or the default session) exits
    without a traceback, and leaves no jupyter_server, kernel or temp folder behind."""
    pids_file = tmp_path / "pids.json"
    temp = tmp_path / "temp"
    temp.mkdir()
    opened = (
        'cr.Session("emulator", progress=False).open().eval'
        if how == "session"
        else 'cr.remote(lambda expression: eval(expression, {"os": __import__("os")}))'
    )
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            import colabremote as cr

            evaluate = {opened}
            pids = evaluate("[__import__('os').getpid(), __import__('os').getppid()]")
            with open(sys.argv[1], "w") as f:
                json.dump(pids, f)
            """
        )
    )
    env = dict(os.environ, TMPDIR=str(temp), COLABREMOTE_BACKEND="emulator")
    run = subprocess.run(
        [sys.executable, str(script), str(pids_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot schedule new futures" not in run.stderr
    kernel, server = json.loads(pids_file.read_text())
    assert _gone(server), "the runtime's jupyter_server outlived the script"
    assert _gone(kernel), "the kernel outlived the script"
    assert [p.name for p in temp.iterdir() if p.name.startswith("colabremote-")] == []


# -- 3. Ctrl-C at the terminal -------------------------------------------------------------------


def test_jupyter_server_has_its_own_session_and_no_terminal_stdin() -> None:
    with JupyterServer() as server:
        assert server.pid is not None
        assert os.getsid(server.pid) == server.pid
        assert os.getsid(server.pid) != os.getsid(0)
        assert os.readlink(f"/proc/{server.pid}/fd/0") == os.devnull


def test_ctrl_c_at_the_terminal_does_not_reach_the_emulator_servers(tmp_path: Path) -> None:
    """SIGINT to the user's process group (what Ctrl-C at a REPL sends) interrupts the user's
    process only: the runtime's jupyter_server and kernel keep serving the session."""
    script = tmp_path / "repl.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            import colabremote as cr

            s = cr.Session("emulator", progress=False).open()
            s.exec("x = 41")
            try:
                pids = s.eval("[__import__('os').getpid(), __import__('os').getppid()]")
                print(json.dumps(pids), flush=True)
                sys.stdin.readline()  # the prompt, waiting for the user's next line
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            print(s.eval("x + 1"), flush=True)
            s.close()
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal gives a REPL
    )
    try:
        assert process.stdout is not None
        kernel, server = json.loads(process.stdout.readline())
        assert os.getsid(server) != process.pid
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.splitlines() == ["interrupted", "42"]
    assert _gone(server) and _gone(kernel)


# -- 4. Ctrl-C while a session starts ------------------------------------------------------------


def test_ctrl_c_during_open_leaves_the_session_reopenable() -> None:
    """Ctrl-C while the runtime's kernel starts releases what was got; the next call starts the
    session again."""

    interrupted = threading.Event()

    def progress(message: str) -> None:
        if message.startswith("starting a kernel") and not interrupted.is_set():
            interrupted.set()
            _thread.interrupt_main()  # Ctrl-C, as the REPL's main thread receives it

    session = cr.Session("emulator", progress=progress)
    first = emulator_of(session)
    with pytest.raises(KeyboardInterrupt):
        session.open()
    try:
        assert "state='new'" in repr(session)
        assert not first._server.running, "the interrupted start's emulator still runs"
        session.exec("x = 41")  # starts again (the progress hook interrupts only once)
        assert session.eval("x + 1") == 42
        assert emulator_of(session) is not first
    finally:
        session.close()


def test_a_failed_start_says_why_on_later_calls(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "no kernel in this interpreter" >&2\nexit 3\n')
    fake.chmod(0o755)
    session = cr.Session("local", python=str(fake), progress=False)
    with pytest.raises(KernelStartError):
        session.open()
    with pytest.raises(
        SessionClosed, match=r"(?s)its start failed .*no kernel in this interpreter"
    ):
        session.exec("1")


# -- eval ----------------------------------------------------------------------------------------


def test_eval_returns_values_from_the_namespace_exec_ran_in() -> None:
    with cr.Session("local", progress=False) as session:
        session.exec("import collections\nx = 41")
        assert session.eval("x + 1") == 42
        assert session.eval("collections.Counter('aab')") == {"a": 2, "b": 1}
        with pytest.raises(NameError, match="undefined_name"):
            session.eval("undefined_name")
        with pytest.raises(ZeroDivisionError):
            session.eval("1 / 0")
        with pytest.raises(SyntaxError):
            session.eval("x = 2")  # a statement, not an expression


def test_async_eval() -> None:
    async def main() -> object:
        async with cr.AsyncSession("local", progress=False) as session:
            await session.exec("y = [1, 2]")
            return await session.eval("y * 2")

    assert asyncio.run(main()) == [1, 2, 1, 2]


# -- the emulator as users meet it -----------------------------------------------------------


def _serve(temp: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``colabremote emulator`` in a subprocess, and its URL once it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "colabremote", "emulator", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, TMPDIR=str(temp)),
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert "is serving at http://127.0.0.1:" in first, first
    return process, first.split("serving at ")[1].split()[0]


@pytest.mark.parametrize("verbose", [False, True])
def test_emulator_command_is_quiet_and_stops_on_sigterm(tmp_path: Path, verbose: bool) -> None:
    """No access log on the user's stderr unless ``--verbose``; SIGTERM stops it as Ctrl-C
    does, leaving no temp folder."""
    temp = tmp_path / "temp"
    temp.mkdir()
    process, url = _serve(temp, *(["--verbose"] if verbose else []))
    try:
        with httpx.Client(trust_env=False) as client:
            assert client.get(f"{url}/no/such/page").status_code == 404
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert ("404 GET /no/such/page" in err) is verbose, err
    assert [p.name for p in temp.iterdir() if p.name.startswith("colabremote-")] == []


def _double(x: int) -> int:
    return 2 * x


# Colab's current image runs Python 3.13: that is the runtime this option exists to reproduce.
# (Other versions' kernels are covered on the local backend by test_crossversion.py.)
@pytest.mark.crossversion
@pytest.mark.parametrize("version", ["3.13"])
def test_emulator_runtime_in_another_python(version: str) -> None:
    """``python=`` runs the runtime's kernels in another interpreter, as Colab's Python differs
    from the user's: functions from files travel as source, one typed at a prompt is refused."""
    if version not in other_pythons():
        pytest.skip(f"no Python {version} configured (COLABREMOTE_TEST_PYTHONS; .ci/run)")
    session = cr.Session("emulator", python=other_pythons()[version], progress=False)
    if version != f"{sys.version_info[0]}.{sys.version_info[1]}":
        with pytest.warns(cr.PythonMismatchWarning):  # said once, at open
            session.open()
    with session:
        assert session.info().python.rsplit(".", 1)[0] == version
        assert session.remote(_double)(21) == 42
        namespace: dict[str, object] = {}
        exec("def typed_at_a_prompt(x):\n    return x + 1\n", namespace)
        typed = namespace["typed_at_a_prompt"]
        assert callable(typed)
        if version != f"{sys.version_info[0]}.{sys.version_info[1]}":
            with pytest.raises(PythonVersionMismatch):
                session.remote(typed)(1)
