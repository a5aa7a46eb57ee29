"""Output is never dropped without a word: what remote code prints arrives in full, in order and
live, over the agent's own channel, past the Jupyter server's iopub rate limits; output the server
drops anyway (written to file descriptors) comes with an OutputDroppedWarning."""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import colabremote as cr
from colabremote.testing import JupyterServer
from tests.conftest import BackendSpec, Output

#: The two backends behind a Jupyter server, which rate-limits iopub (1 MB/s by default).
RATE_LIMITED = ["jupyter", "emulator"]


def wait_for_text(output: Output, text: str, timeout: float = 60.0) -> None:
    """Until ``text`` has arrived in ``output``: polled with a deadline, so a slow machine fails."""
    deadline = time.monotonic() + timeout
    while text not in output.text():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} did not arrive within {timeout:g} s")
        time.sleep(0.01)


def merged(output: Output) -> list[tuple[str, str]]:
    """The output as (stream, text) runs, consecutive pieces of one stream joined."""
    with output.lock:
        chunks = [(name, text) for _, name, text in output.chunks]
    runs: list[tuple[str, str]] = []
    for name, text in chunks:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + text)
        else:
            runs.append((name, text))
    return runs


@pytest.fixture(scope="module", params=RATE_LIMITED)
def spec(request: pytest.FixtureRequest) -> BackendSpec:
    if request.param == "jupyter":
        server: JupyterServer = request.getfixturevalue("jupyter_server")
        return BackendSpec("jupyter", {"url": server.url, "token": server.token})
    return BackendSpec("emulator", {"gpu": "T4"})


@pytest.fixture(scope="module")
def out() -> Output:
    return Output()


@pytest.fixture(scope="module")
def s(spec: BackendSpec, out: Output) -> Iterator[cr.Session]:
    with spec.session(on_output=out) as session:
        yield session


@pytest.fixture
def output(out: Output) -> Output:
    out.clear()
    return out


LINE = "0123456789" * 10  # 100 characters, 101 with the newline


def print_lines(count: int) -> int:
    for _ in range(count):
        print(LINE)
    return count


def print_numbers(count: int) -> None:
    for i in range(count):
        print(i, flush=True)  # a kernel's own stream makes one message of each flush


@pytest.mark.slow
def test_50_mb_printed_quickly_arrives_in_full(s: cr.Session, output: Output) -> None:
    count = 500_000  # 50.5 MB, 50 times the server's default iopub data rate per second
    with warnings.catch_warnings():
        warnings.simplefilter("error", cr.OutputDroppedWarning)
        assert s.remote(print_lines)(count) == count
    text = output.text("stdout")
    assert len(text) == count * (len(LINE) + 1)
    assert text == (LINE + "\n") * count


@pytest.mark.slow
def test_a_million_tiny_prints_arrive_in_full_and_in_order(s: cr.Session, output: Output) -> None:
    count = 1_000_000
    s.remote(print_numbers)(count)
    assert output.text("stdout") == "".join(f"{i}\n" for i in range(count))


def print_then_wait(path: str) -> str:
    print("waiting for the test", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return "the test never answered"
        time.sleep(0.01)
    return "done"


def test_output_arrives_while_the_call_runs(s: cr.Session, output: Output, tmp_path: Path) -> None:
    """The remote function goes on only once the test has seen its line here."""
    path = str(tmp_path / "seen")
    call = s.remote(print_then_wait).submit(path)
    wait_for_text(output, "waiting for the test\n")
    Path(path).touch()
    assert call.result(timeout=60) == "done"


def interleave(rounds: int) -> None:
    for i in range(rounds):
        print(f"out {i}")
        print(f"err {i}", file=sys.stderr)


def test_stdout_and_stderr_keep_their_order(s: cr.Session, output: Output) -> None:
    rounds = 200
    s.remote(interleave)(rounds)
    expected: list[tuple[str, str]] = []
    for i in range(rounds):
        expected += [("stdout", f"out {i}\n"), ("stderr", f"err {i}\n")]
    assert merged(output) == expected


def print_and_display() -> None:
    from IPython.display import display

    print("printed before")
    display("displayed")  # type: ignore[no-untyped-call]
    print("printed after")


def test_display_output_keeps_its_place_among_prints(s: cr.Session, output: Output) -> None:
    s.remote(print_and_display)()
    wait_for_text(output, "printed after\n")
    assert output.text("stdout") == "printed before\n'displayed'\nprinted after\n"


def add_log_handler() -> None:
    """A logging handler made during one call keeps that call's sys.stderr."""
    import logging

    logger = logging.getLogger("colabremote-output-test")
    logger.addHandler(logging.StreamHandler())
    logger.propagate = False


def print_and_log(rounds: int) -> None:
    import logging

    logger = logging.getLogger("colabremote-output-test")
    for i in range(rounds):
        print(f"printed {i}")
        logger.warning("logged %d", i)


def test_a_handler_kept_from_an_earlier_call_keeps_its_place(s: cr.Session, output: Output) -> None:
    s.remote(add_log_handler)()
    s.remote(print_and_log)(50)
    expected: list[tuple[str, str]] = []
    for i in range(50):
        expected += [("stdout", f"printed {i}\n"), ("stderr", f"logged {i}\n")]
    assert merged(output) == expected


def run_echo(word: str) -> int:
    return os.system(f"echo {word}")


def test_a_subprocess_output_still_appears(s: cr.Session, output: Output) -> None:
    assert s.remote(run_echo)("hi-from-a-subprocess") == 0
    wait_for_text(output, "hi-from-a-subprocess\n")


def print_later(path: str) -> str:
    """Start threads that print after the call has returned: one through ``sys.stdout`` as it
    is then, one through the stream object it held during the call."""
    held = sys.stdout

    def later() -> None:
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        print("late through sys.stdout", flush=True)
        held.write("late through the held stream\n")
        held.flush()

    threading.Thread(target=later, daemon=True).start()
    return "returned"


def test_threads_that_print_after_the_call_are_heard(
    s: cr.Session, output: Output, tmp_path: Path
) -> None:
    path = str(tmp_path / "go")
    assert s.remote(print_later)(path) == "returned"
    Path(path).touch()
    wait_for_text(output, "late through sys.stdout\n")
    wait_for_text(output, "late through the held stream\n")
    assert s.remote(print_lines)(1) == 1  # the session is none the worse


def print_in_a_forked_child() -> int:
    """A forked child prints through the kernel's own streams (the call's sender stays home)."""
    pid = os.fork()
    if pid == 0:
        print("from the forked child", flush=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("from the parent")
    return status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_output_still_appears(s: cr.Session, output: Output) -> None:
    assert s.remote(print_in_a_forked_child)() == 0
    wait_for_text(output, "from the parent\n")
    wait_for_text(output, "from the forked child\n")


# -- a server with a tiny data rate limit --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_limit_server() -> Iterator[JupyterServer]:
    with JupyterServer(extra_args=("--ServerApp.iopub_data_rate_limit=10000",)) as server:
        yield server


def write_to_fd(size: int) -> int:
    """``size`` bytes to file descriptor 1, past Python's sys.stdout, as a C library would."""
    os.write(1, b"x" * size)
    return size


@pytest.mark.slow
def test_output_dropped_by_the_server_is_reported(tiny_limit_server: JupyterServer) -> None:
    output = Output()
    with (
        warnings.catch_warnings(record=True) as caught,
        cr.Session(
            "jupyter",
            url=tiny_limit_server.url,
            token=tiny_limit_server.token,
            progress=False,
            on_output=output,
        ) as s,
    ):
        warnings.simplefilter("always")
        assert s.remote(print_lines)(20_000) == 20_000  # 2 MB of print(): not limited
        assert output.text("stdout") == (LINE + "\n") * 20_000
        assert not [w for w in caught if issubclass(w.category, cr.OutputDroppedWarning)]
        s.remote(write_to_fd)(2_000_000)
        deadline = time.monotonic() + 60
        while not [w for w in caught if issubclass(w.category, cr.OutputDroppedWarning)]:
            assert time.monotonic() < deadline, "no OutputDroppedWarning within 60 s"
            time.sleep(0.01)
    dropped = [w for w in caught if issubclass(w.category, cr.OutputDroppedWarning)]
    message = str(dropped[0].message)
    assert "data rate limit" in message
    assert "iopub_data_rate_limit" in message
    assert "IOPub data rate exceeded." in output.text("stderr")


def test_exec_output_dropped_by_the_server_is_reported(tiny_limit_server: JupyterServer) -> None:
    """s.exec() output travels as the kernel's stream messages: dropped ones are warned of."""
    with (
        warnings.catch_warnings(record=True) as caught,
        cr.Session(
            "jupyter",
            url=tiny_limit_server.url,
            token=tiny_limit_server.token,
            progress=False,
            on_output=Output(),
        ) as s,
    ):
        warnings.simplefilter("always")
        s.exec("print('x' * 2_000_000)")
        deadline = time.monotonic() + 60
        while not [w for w in caught if issubclass(w.category, cr.OutputDroppedWarning)]:
            assert time.monotonic() < deadline, "no OutputDroppedWarning within 60 s"
            time.sleep(0.01)
