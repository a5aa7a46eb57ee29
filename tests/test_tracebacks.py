"""What a user sees when a public call fails: their own frames, at most one frame of ours, and our
one-line message, in a plain script, under pytest and in IPython; the whole traceback under
COLABREMOTE_DEBUG=1; and one short KeyboardInterrupt after Ctrl-C. Each case runs a small script
in a subprocess, as a user would, against the local backend or a Colab emulator."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabremote.testing._emulator import ColabEmulator
from tests.conftest import wait_for_path

#: A path in a traceback frame from any of these is an internal frame.
NOISE = ("colabremote/_", "tenacity", "concurrent/futures", "asyncio", "httpx", "threading.py")
#: The one frame of ours a trimmed traceback keeps: the public wrapper that raised it again.
WRAPPER = "colabremote/_tracebacks.py"
CAUSE = "The above exception was the direct cause of the following exception:"
FRAME = re.compile(r'^\s*File "?([^",]+)"?, line \d+', re.MULTILINE)


@pytest.fixture(scope="module")
def emulator() -> Iterator[ColabEmulator]:
    with ColabEmulator() as emu:
        yield emu


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment for a script: no sign-in anywhere, retries without waiting, no debug."""
    environ = dict(os.environ)
    for name in (
        "COLABREMOTE_DEBUG",
        "COLABREMOTE_ACCESS_TOKEN",
        "COLABREMOTE_BASE_URL",
        "COLABREMOTE_BACKEND",
        "GOOGLE_APPLICATION_CREDENTIALS",
    ):
        environ.pop(name, None)
    environ.update(
        COLABREMOTE_CONFIG_DIR=str(tmp_path / "config"),
        COLABREMOTE_TOKEN_STORE="file",
        COLABREMOTE_RETRY_WAIT="0",
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return environ


def local_part(output: str) -> str:
    """The local traceback: what follows the remote one, when a remote traceback comes first."""
    return output.rsplit(CAUSE, maxsplit=1)[-1]


def assert_trimmed(output: str, user_file: str, *, raised: bool = True) -> None:
    """Every frame of the local traceback is the user's, but for one of ours at most; no
    internal exception is chained to it. (An error never ``raised`` in the user's code, as
    ``future.exception()`` returns it, has no local frames at all.)"""
    local = local_part(output)
    frames = FRAME.findall(local)
    assert bool(frames) is raised, output
    ours = [f for f in frames if not f.endswith(user_file)]
    assert len(ours) <= 1 and all(f.endswith(WRAPPER) for f in ours), output
    for noise in NOISE:
        assert noise not in local.replace(WRAPPER, ""), f"{noise} in\n{output}"
    assert "During handling of the above exception" not in output, output
    assert output.count("The above exception was the direct cause") <= 1, output


def assert_whole(output: str) -> None:
    """Under COLABREMOTE_DEBUG=1 colabremote's own frames are there."""
    frames = FRAME.findall(local_part(output))
    assert any("colabremote/_" in f and not f.endswith(WRAPPER) for f in frames), output


def run_script(path: Path, env: dict[str, str], *, debug: bool = False) -> str:
    run = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        env=dict(env, COLABREMOTE_DEBUG="1") if debug else env,
        timeout=180,
    )
    assert run.returncode == 1, run.stderr
    return run.stderr


SCRIPTS = {
    "configuration": """
        import colabremote as cr

        cr.Session(backend="emulator", gpu="T5")
        """,
    "remote exception": """
        import colabremote as cr

        with cr.Session(backend="local", progress=False) as s:

            @s.remote
            def divide(x):
                return 1 / x

            divide(0)
        """,
    "time-out": """
        import colabremote as cr

        with cr.Session(backend="local", progress=False) as s:

            @s.remote(timeout=0.5)
            def slow():
                import time

                time.sleep(30)

            slow()
        """,
    "sign-in": """
        import colabremote as cr

        cr.Session(backend="colab", progress=False).open()
        """,
    "default session sign-in": """
        import colabremote as cr

        @cr.remote
        def one():
            return 1

        one()
        """,
}

LAST_LINE = {
    "configuration": "ConfigurationError: gpu='T5' is not a Colab GPU",
    "remote exception": "ZeroDivisionError: division by zero",
    "time-out": "RemoteTimeout: slow did not finish within 0.5 s",
    "sign-in": "AuthError: assigning a Colab runtime",
    "default session sign-in": "AuthError: assigning a Colab runtime",
}


def scenario_env(name: str, env: dict[str, str], emulator: ColabEmulator) -> dict[str, str]:
    if "sign-in" not in name:
        return env
    # A token the emulator never issued: Colab refuses it (HTTP 401), after the retry policy and
    # the refresh-and-resend have run, which is where tenacity's frames came from.
    extra = {"COLABREMOTE_BASE_URL": emulator.url, "COLABREMOTE_ACCESS_TOKEN": "ya29.not-issued"}
    if name.startswith("default"):
        extra["COLABREMOTE_BACKEND"] = "colab"
    return dict(env, **extra)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "time-out" else n for n in SCRIPTS],
)
def test_a_script_shows_the_users_frames_and_our_message(
    name: str, tmp_path: Path, env: dict[str, str], emulator: ColabEmulator
) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPTS[name]))
    environ = scenario_env(name, env, emulator)

    trimmed = run_script(script, environ)
    assert_trimmed(trimmed, str(script))
    assert LAST_LINE[name] in trimmed.rstrip().splitlines()[-1], trimmed
    if name == "remote exception":  # the user's remote code stays, as the cause
        assert "Remote traceback:" in trimmed and "return 1 / x" in trimmed, trimmed
        assert trimmed.count("Traceback (most recent call last)") == 2, trimmed

    whole = run_script(script, environ, debug=True)
    assert_whole(whole)
    if "sign-in" in name:
        assert "tenacity" in whole


def test_every_public_entry_point_is_trimmed(tmp_path: Path, env: dict[str, str]) -> None:
    """Errors from .submit, .map, .aio, s.exec, s.eval, upload, download, AsyncSession methods,
    @remote and with_options, each caught and printed by the user's own code."""
    script = tmp_path / "api.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import traceback

            import colabremote as cr


            def show(label, error):
                print(f"=== {label}")
                print("".join(traceback.format_exception(error)), flush=True)


            def attempt(label, call):
                try:
                    call()
                except BaseException as error:
                    show(label, error)
                else:
                    print(f"=== {label}\\nno error", flush=True)


            with cr.Session(backend="local", progress=False) as s:

                @s.remote
                def divide(x):
                    return 1 / x

                attempt("call", lambda: divide(0))
                attempt("submit", lambda: divide.submit(0).result())
                show("submit exception()", divide.submit(0).exception())
                attempt("map", lambda: list(divide.map([1, 0])))
                attempt("exec", lambda: s.exec("1 / 0"))
                attempt("eval", lambda: s.eval("1 / 0"))
                attempt("exec argument", lambda: s.exec(123))
                attempt("upload", lambda: s.upload("no-such-file", "x"))
                attempt("download", lambda: s.download("no-such-file", "x"))
                attempt("with_options", lambda: divide.with_options(timeout=-1))

                async def main():
                    try:
                        await divide.aio(0)
                    except ZeroDivisionError as error:
                        show("aio", error)
                    try:
                        await cr.AsyncSession(progress=False).exec(123)
                    except cr.exceptions.ConfigurationError as error:
                        show("AsyncSession.exec", error)

                asyncio.run(main())
            attempt("@remote", lambda: cr.remote(600))
            attempt("Session", lambda: cr.Session(backend="jupyter"))
            """
        )
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180
    )
    assert run.returncode == 0, run.stderr
    cases = dict(part.split("\n", 1) for part in run.stdout.split("=== ")[1:] if part.strip())
    assert len(cases) == 14, run.stdout
    for label, output in cases.items():
        assert "no error" not in output, label
        assert_trimmed(output, str(script), raised=label != "submit exception()")


@pytest.mark.slow
def test_pytest_reports_only_the_test_frames(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import colabremote as cr


            def test_configuration():
                cr.Session(backend="emulator", gpu="T5")


            def test_remote_exception():
                with cr.Session(backend="local", progress=False) as s:

                    @s.remote
                    def divide(x):
                        return 1 / x

                    divide(0)
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_user.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 failed" in run.stdout, run.stdout
    report = run.stdout
    assert "colabremote/" not in report, report  # not even the wrapper: pytest hides it
    for noise in ("tenacity", "concurrent/futures", "asyncio"):
        assert noise not in report, report
    assert "E       colabremote.exceptions.ConfigurationError: gpu='T5'" in report, report
    assert "E           ZeroDivisionError: division by zero" in report, report
    assert "return 1 / x" in report, report  # the remote traceback, as the cause


def test_ipython_shows_the_cell_and_our_message(tmp_path: Path, env: dict[str, str]) -> None:
    code = 'import colabremote as cr\ncr.Session(backend="emulator", gpu="T5")\n'
    command = [sys.executable, "-m", "IPython", "--no-banner", "--quick", "--colors=NoColor"]
    run = subprocess.run(
        [*command, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    output = run.stdout + run.stderr
    assert "ConfigurationError: gpu='T5' is not a Colab GPU" in output, output
    assert "Cell In[1], line 2" in output, output
    frames = re.findall(r"^File (\S+?):\d+", output, re.MULTILINE)
    # IPython keeps the last frame even when it is hidden: ours is that one, and the only one.
    assert len(frames) <= 1 and all(f.endswith(WRAPPER) for f in frames), output
    for noise in NOISE:
        assert noise not in output.replace(WRAPPER, ""), output


# -- Ctrl-C --------------------------------------------------------------------------------------


CTRL_C_SCRIPTS = {
    "call": """
        import sys
        import colabremote as cr

        with cr.Session(backend="local", progress=False) as s:

            @s.remote
            def sleepy(marker):
                import time

                open(marker, "w").close()
                time.sleep(60)

            sleepy(sys.argv[1])
        """,
    "exec": """
        import sys
        import colabremote as cr

        s = cr.Session(backend="local", progress=False)
        s.exec(f"import time; open({sys.argv[1]!r}, 'w').close(); time.sleep(60)")
        """,
}


def interrupt(script: Path, env: dict[str, str], marker: Path) -> tuple[int, str, str]:
    """Run ``script``, wait until its remote code has started, then press Ctrl-C (SIGINT)."""
    process = subprocess.Popen(
        [sys.executable, str(script), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_path(marker)
        process.send_signal(signal.SIGINT)
        # The kernel stops the call at once; 30 s would be a Ctrl-C that waited for nothing.
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


@pytest.mark.parametrize(
    "how",
    [pytest.param(h, marks=pytest.mark.slow) if h == "exec" else h for h in CTRL_C_SCRIPTS],
)
def test_ctrl_c_during_a_call_prints_one_short_keyboard_interrupt(
    how: str, tmp_path: Path, env: dict[str, str]
) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(CTRL_C_SCRIPTS[how]))
    code, _out, err = interrupt(script, env, tmp_path / "started")
    assert code in (-signal.SIGINT, 130, 1), err
    lines = err.rstrip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", err
    assert lines[-1] == "KeyboardInterrupt", err
    assert err.count("KeyboardInterrupt") == 1, err
    assert_trimmed(err, str(script))
    assert len(lines) <= 6, err  # the header, the user's frame, ours, the exception
    for noise in (
        "Exception ignored",
        "Exception in thread",
        "Task was destroyed",
        "never retrieved",
    ):
        assert noise not in err, err


def test_the_session_works_after_ctrl_c_stops_an_exec(tmp_path: Path, env: dict[str, str]) -> None:
    """An exec stopped by Ctrl-C rebuilds the kernel's KeyboardInterrupt on colabremote's loop
    thread; the loop carries on, and the interrupted kernel takes the next call at once."""
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import colabremote as cr

            s = cr.Session(backend="local", progress=False)
            try:
                s.exec(f"import time; open({sys.argv[1]!r}, 'w').close(); time.sleep(60)")
            except KeyboardInterrupt:
                print("interrupted", flush=True)
            print(s.eval("6 * 7"), flush=True)
            s.close()
            """
        )
    )
    code, out, err = interrupt(script, env, tmp_path / "started")
    assert code == 0, err
    assert out.splitlines() == ["interrupted", "42"], out + err
    assert err == "", err


# -- the CLI -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_prints_one_line_and_the_traceback_only_under_debug(
    env: dict[str, str], emulator: ColabEmulator
) -> None:
    environ = dict(
        env, COLABREMOTE_BASE_URL=emulator.url, COLABREMOTE_ACCESS_TOKEN="ya29.not-issued"
    )
    command = [sys.executable, "-m", "colabremote", "whoami"]
    plain = subprocess.run(command, capture_output=True, text=True, env=environ, timeout=120)
    assert plain.returncode == 1
    assert plain.stderr.startswith("colabremote: reading Colab user info: "), plain.stderr
    assert len(plain.stderr.splitlines()) == 1, plain.stderr

    debug = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(environ, COLABREMOTE_DEBUG="1"),
        timeout=120,
    )
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):"), debug.stderr
    assert "tenacity" in debug.stderr and "colabremote/_colab/control.py" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.rstrip()
    assert "ya29.not-issued" not in debug.stderr + plain.stderr
