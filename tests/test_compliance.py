"""The backend compliance suite: every behaviour users rely on, on every backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import colabremote as cr
from colabremote.exceptions import (
    ArgumentNotSerializable,
    BlockingCallError,
    CallCancelled,
    RemoteError,
    RemoteTraceback,
    ResultNotSerializable,
    SerializationError,
    SessionClosed,
)
from colabremote.testing import JupyterServer

from ._wheels import build_wheel, kernel_venv
from .conftest import Output, wait_for_path

# -- functions that run remotely (module level: shipped by value, code as source) --------------


def add(a: int, b: int = 10) -> int:
    return a + b


def whoami() -> int:
    return os.getpid()


def square(x: int) -> int:
    return x * x


def fails(message: str) -> None:
    raise ValueError(message)


class AppError(Exception):
    """Defined in this module, so it travels by value and comes back as this very class."""


def fails_with_app_error() -> None:
    raise AppError("application failure")


def fails_with_kernel_only_type() -> None:
    # A module that exists only on the kernel: its exception type cannot be imported here.
    import importlib
    import tempfile

    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "kernel_only_module.py"), "w") as f:
        f.write("class HiddenError(Exception):\n    pass\n")
    sys.path.insert(0, folder)
    module = importlib.import_module("kernel_only_module")
    raise module.HiddenError("hidden details")


class NeedsTwoArgs(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")
        self.a = a
        self.b = b


def fails_with_unpicklable_exception() -> None:
    raise NeedsTwoArgs(1, 2)


@dataclasses.dataclass
class Point:
    x: float
    y: float

    def norm2(self) -> float:
        return self.x * self.x + self.y * self.y


def make_point(x: float, y: float) -> Point:
    return Point(x, y)


def printer(n: int, delay: float) -> str:
    for i in range(n):
        print(f"line {i}", flush=True)
        time.sleep(delay)
    print("to stderr", file=sys.stderr, flush=True)
    return "done"


def progress_bar() -> None:
    for i in range(3):
        sys.stdout.write(f"\r{i + 1}/3")
        sys.stdout.flush()
    sys.stdout.write("\n")


def returns_lock() -> Any:
    return threading.Lock()


def recursive_fib(n: int) -> int:
    return n if n < 2 else recursive_fib(n - 1) + recursive_fib(n - 2)


def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def outer_calls_remote(x: int) -> int:
    # `square_remote` is a RemoteFunction here; on the kernel it runs inline.
    return square_remote(x) + 1


square_remote = cr.remote(square)


# -- results and arguments ---------------------------------------------------------------------


def test_call_returns_result_by_value(session: cr.Session) -> None:
    f = session.remote(add)
    assert f(1, 2) == 3
    assert f(1) == 11
    assert f(a=5, b=5) == 10


def test_runs_in_the_kernel_process(session: cr.Session) -> None:
    assert session.remote(whoami)() != os.getpid()
    assert session.remote(whoami)() == session.info().pid


def test_local_runs_here(session: cr.Session) -> None:
    assert session.remote(whoami).local() == os.getpid()


def test_classes_from_the_calling_module_round_trip(session: cr.Session) -> None:
    point = session.remote(make_point)(3.0, 4.0)
    assert isinstance(point, Point)
    assert point.norm2() == 25.0


class Scaler:
    """Its methods and instances are called remotely in the forms users write."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor

    @staticmethod
    def shift(x: int) -> int:
        return x + 100

    @classmethod
    def name(cls) -> str:
        return cls.__name__

    def __call__(self, x: int) -> int:
        return x - self.factor


def times_ten(fn: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        return fn(*args, **kwargs) * 10

    return wrapper


@times_ten
def decorated(x: int) -> int:
    return x + 1


def test_every_kind_of_callable(session: cr.Session) -> None:
    """Partials, bound, static and class methods, callable instances, decorated functions and
    builtins all run remotely, and keep their bound state."""
    assert session.remote(functools.partial(add, 1))(2) == 3
    assert session.remote(functools.partial(functools.partial(add, b=5), 1))() == 6
    assert session.remote(Scaler(3).scale)(2) == 6
    assert session.remote(Scaler.shift)(1) == 101
    assert session.remote(Scaler.name)() == "Scaler"
    assert session.remote(Scaler(1))(5) == 4
    assert session.remote(decorated)(4) == 50
    assert session.remote(len)([1, 2, 3]) == 3
    assert session.remote(math.hypot)(3, 4) == 5.0


def test_numpy_arrays_round_trip(session: cr.Session) -> None:
    data = np.arange(1000, dtype=np.float32).reshape(10, 100)
    out = session.remote(np.negative)(data)  # type: ignore[arg-type]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, -data)


def add_one_in_place(x: Any) -> Any:
    x += 1  # needs a writable argument, as a local call would have
    return x


@pytest.mark.parametrize("size", [10, 12 * 1024 * 1024])  # inline, and in chunks
def test_arrays_are_writable_both_ways(session: cr.Session, size: int) -> None:
    out = session.remote(add_one_in_place)(np.zeros(size, dtype=np.uint8))
    assert out.flags.writeable and int(out[0]) == int(out[-1]) == 1
    out += 1
    assert int(out[-1]) == 2


def test_payload_over_the_server_message_limit(session: cr.Session) -> None:
    """Jupyter servers drop WebSocket messages over 10 MiB: 24 MiB each way must still work."""
    data = np.random.default_rng(0).integers(0, 255, size=24 * 1024 * 1024, dtype=np.uint8)
    out = session.remote(np.flip)(data)
    np.testing.assert_array_equal(out, data[::-1])


def test_closures_and_lambdas_from_files(session: cr.Session) -> None:
    offset = 7

    def shifted(x: int) -> int:
        return x + offset

    assert session.remote(shifted)(1) == 8
    assert session.remote(lambda x: x * 3)(5) == 15


def test_recursion_and_nested_remote_functions(session: cr.Session) -> None:
    assert session.remote(recursive_fib)(15) == 610
    assert session.remote(outer_calls_remote)(4) == 17


def test_unpicklable_argument_fails_before_sending(session: cr.Session) -> None:
    f = session.remote(add)
    with pytest.raises(ArgumentNotSerializable, match=r"argument 1 of type _thread\.lock"):
        f(1, threading.Lock())  # type: ignore[arg-type]
    assert f(1, 1) == 2  # nothing half-sent: the session goes on


def test_unpicklable_result(session: cr.Session) -> None:
    with pytest.raises(ResultNotSerializable, match="cannot be pickled"):
        session.remote(returns_lock)()
    assert session.remote(add)(2, 2) == 4


def test_function_referencing_a_session_fails_clearly(session: cr.Session) -> None:
    def uses_session() -> str:
        return repr(session)

    with pytest.raises(SerializationError, match="Session cannot be sent"):
        session.remote(uses_session)()


# -- exceptions --------------------------------------------------------------------------------


def test_remote_exception_is_raised_as_its_own_type(session: cr.Session) -> None:
    with pytest.raises(ValueError, match="no good") as info:
        session.remote(fails)("no good")
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fails" in cause.text
    assert "raise ValueError(message)" in cause.text  # the source line, shown remotely


def test_exception_defined_in_calling_module(session: cr.Session) -> None:
    with pytest.raises(AppError, match="application failure"):
        session.remote(fails_with_app_error)()


def test_exception_type_not_importable_here(session: cr.Session) -> None:
    with pytest.raises(RemoteError) as info:
        session.remote(fails_with_kernel_only_type)()
    assert info.value.type_name == "kernel_only_module.HiddenError"
    assert info.value.value == "hidden details"
    assert "fails_with_kernel_only_type" in info.value.remote_traceback


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(session: cr.Session) -> None:
    with pytest.raises(RemoteError) as info:
        session.remote(fails_with_unpicklable_exception)()
    assert info.value.type_name.endswith("NeedsTwoArgs")
    assert info.value.value == "1/2"


# -- output ------------------------------------------------------------------------------------


def test_output_streams_live_and_in_order(session: cr.Session, output: Output) -> None:
    output.clear()
    result_times: list[float] = []

    def call() -> None:
        assert session.remote(printer)(4, 0.3) == "done"
        result_times.append(time.monotonic())

    call()
    stdout_chunks = [(t, text) for t, name, text in output.chunks if name == "stdout"]
    assert output.text("stdout") == "".join(f"line {i}\n" for i in range(4))
    assert output.text("stderr") == "to stderr\n"
    # The first line arrived long before the call returned: it was streamed, not batched.
    assert stdout_chunks[0][0] < result_times[0] - 0.6


def test_carriage_returns_pass_through(session: cr.Session, output: Output) -> None:
    output.clear()
    session.remote(progress_bar)()
    assert output.text("stdout") == "\r1/3\r2/3\r3/3\n"


def test_exec_streams_output_and_raises(session: cr.Session, output: Output) -> None:
    output.clear()
    session.exec("print('from exec', 6 * 7)")
    assert output.text() == "from exec 42\n"
    with pytest.raises(ZeroDivisionError):
        session.exec("1 / 0")


def test_info(session: cr.Session, backend: Any) -> None:
    info = session.info()
    assert info.backend == backend.name
    assert info.python_version == sys.version_info[:2]
    assert info.hostname
    assert info.gpus == ()


# -- concurrency and async ---------------------------------------------------------------------


def test_submit_returns_futures(session: cr.Session) -> None:
    f = session.remote(square)
    futures = [f.submit(i) for i in range(20)]
    assert [fut.result(timeout=60) for fut in futures] == [i * i for i in range(20)]
    bad = session.remote(fails).submit("via future")
    with pytest.raises(ValueError, match="via future"):
        bad.result(timeout=60)


def test_map_keeps_input_order(session: cr.Session) -> None:
    f = session.remote(add)
    assert list(f.map(range(500), range(500))) == [2 * i for i in range(500)]
    assert list(f.map([])) == []


def test_map_raises_at_the_failing_item(session: cr.Session) -> None:
    def maybe_fail(i: int) -> int:
        if i == 3:
            raise KeyError(i)
        return i

    results = session.remote(maybe_fail).map(range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError):
        next(results)


def test_aio(session: cr.Session) -> None:
    f = session.remote(square)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(f.aio(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_blocking_api_inside_a_running_event_loop_points_to_aio(session: cr.Session) -> None:
    f = session.remote(square)

    async def main() -> None:
        with pytest.raises(BlockingCallError, match=r"f\.aio"):
            f(9)
        with pytest.raises(BlockingCallError, match="AsyncSession"):
            session.exec("x = 1")
        with pytest.raises(BlockingCallError):
            list(f.map([1, 2]))

    asyncio.run(main())
    assert f(9) == 81  # nothing was left half-done: the session goes on


def test_calls_from_many_threads(session: cr.Session) -> None:
    f = session.remote(square)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(f, range(40))) == [i * i for i in range(40)]


def test_async_session(backend: Any) -> None:
    async def main() -> tuple[int, str]:
        async with cr.AsyncSession(backend.name, progress=False, **backend.options) as s:
            f = s.remote(square)
            info = await s.info()
            return await f.aio(12), info.backend

    assert asyncio.run(main()) == (144, backend.name)


# -- memory ------------------------------------------------------------------------------------


def kernel_rss_mb() -> float:
    import gc

    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def one_megabyte(i: int) -> bytes:
    return bytes([i % 256]) * (1024 * 1024)


@pytest.mark.slow
def test_kernel_memory_stays_flat_over_many_large_results(session: cr.Session) -> None:
    f = session.remote(one_megabyte)
    rss = session.remote(kernel_rss_mb)
    for i in range(50):
        f(i)
    before = rss()
    for i in range(1000):
        assert len(f(i)) == 1024 * 1024
    after = rss()
    assert after - before < 60, f"kernel grew from {before:.0f} MB to {after:.0f} MB"


# -- lifecycle ---------------------------------------------------------------------------------


def test_closed_session_refuses_calls(backend: Any) -> None:
    s = backend.session()
    f = s.remote(square)
    assert f(3) == 9  # opens on first use
    s.close()
    with pytest.raises(SessionClosed):
        f(3)
    s.close()  # closing twice is fine


def test_with_options_gives_a_copy_with_another_timeout(session: cr.Session) -> None:
    from colabremote.exceptions import RemoteTimeout

    f = session.remote(sleeper)
    limited = f.with_options(timeout=0.5)
    assert (f.timeout, limited.timeout) == (None, 0.5)
    assert limited.session is f.session
    with pytest.raises(RemoteTimeout):
        limited(30)
    assert f(0) == "slept"


# -- the runtime as a workspace: packages, shell lines, env and secrets (issue 12) -------------


def environment_seen(*names: str) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


def imported_version(module: str) -> str:
    import importlib

    return str(importlib.import_module(module).VERSION)


@pytest.fixture(scope="module")
def workspace(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cr.Session]:
    """A session whose kernels run in a venv of their own (installs never reach the suite's),
    with pip pointed at a folder of tiny wheels (no index) through env=, and one secret."""
    tmp = tmp_path_factory.mktemp(f"compliance-workspace-{backend.name}")
    (tmp / "wheels").mkdir()
    build_wheel(tmp / "wheels", "compliancepkg", "1.0")
    python = kernel_venv(tmp / "venv")
    env = {
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(tmp / "wheels"),
        "PIP_CONFIG_FILE": os.devnull,
        "XDG_CACHE_HOME": str(tmp / "cache"),  # the runtime's install records
        "COMPLIANCE_SETTING": "on",
    }
    secrets = {"COMPLIANCE_TOKEN": "compliance-secret-value"}
    with contextlib.ExitStack() as stack:
        if backend.name == "jupyter":
            server = stack.enter_context(JupyterServer(python=python))
            options: dict[str, Any] = {"url": server.url, "token": server.token}
        else:
            options = {**backend.options, "python": python}
        yield stack.enter_context(
            cr.Session(backend.name, progress=False, env=env, secrets=secrets, **options)
        )


def test_env_and_secrets_are_set_before_the_first_call(workspace: cr.Session) -> None:
    seen = workspace.remote(environment_seen)("COMPLIANCE_SETTING", "COMPLIANCE_TOKEN")
    assert seen == {"COMPLIANCE_SETTING": "on", "COMPLIANCE_TOKEN": "compliance-secret-value"}
    assert "compliance-secret-value" not in repr(workspace)
    assert "compliance-secret-value" not in repr(workspace.info())


def test_pip_install_of_a_local_wheel(workspace: cr.Session) -> None:
    workspace.pip_install("compliancepkg==1.0")
    assert workspace.remote(imported_version)("compliancepkg") == "1.0"


def test_shell_returns_status_and_output(session: cr.Session, output: Output) -> None:
    output.clear()
    result = session.shell("echo out-line; echo err-line >&2; exit 3")
    assert isinstance(result, cr.ShellResult)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out-line\n", "err-line\n")
    assert "out-line" in output.text("stdout") and "err-line" in output.text("stderr")
    assert session.shell("true", check=True).returncode == 0


def test_shell_check_raises_on_a_nonzero_exit(session: cr.Session) -> None:
    with pytest.raises(cr.ShellCommandError) as info:
        session.shell("echo why-it-failed >&2; exit 5", check=True)
    assert info.value.returncode == 5
    assert "why-it-failed" in str(info.value)


def test_exec_runs_shell_lines_as_a_cell_does(session: cr.Session, output: Output) -> None:
    output.clear()
    session.exec("!echo from-a-shell-line\nvalue = 6 * 7\nprint(value)")
    assert "from-a-shell-line" in output.text() and "42\n" in output.text()  # `!` uses a pty


# -- state on the kernel: refs and remote classes (issue 13) -----------------------------------


def object_id(value: Any) -> int:
    return id(value)


def array_total(values: Any) -> float:
    return float(np.sum(values))


class Accumulator:
    """A remote class: its instance lives on the kernel between calls."""

    def __init__(self, start: float) -> None:
        self.total = start

    def add(self, amount: float) -> float:
        self.total += amount
        return self.total


def accumulated(accumulator: Accumulator) -> float:
    return accumulator.total


def kill_the_kernel() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def test_refs_are_kept_passed_and_fetched(session: cr.Session) -> None:
    array = np.arange(10_000, dtype=np.float64)
    ref = session.put(array)
    where = session.remote(object_id)
    assert where(ref) == where([ref][0])  # the same object each time: never sent again
    kept = session.remote(array_total).keep(ref)
    assert kept.fetch() == float(array.sum())
    np.testing.assert_array_equal(ref.fetch(), array)
    ref.free()
    with pytest.raises(cr.exceptions.RefLost, match="freed"):
        where(ref)


def test_a_remote_instance_lives_on_the_kernel(session: cr.Session) -> None:
    with session.remote(Accumulator)(1.0) as accumulator:
        assert accumulator.add(2.0) == 3.0
        assert list(accumulator.add.map([1.0, 1.0])) == [4.0, 5.0]
        assert session.remote(accumulated)(accumulator) == 5.0  # type: ignore[arg-type]


def test_refs_and_instances_survive_a_dropped_connection(session: cr.Session, backend: Any) -> None:
    if backend.name == "local":
        pytest.skip("a local kernel's connection is ZeroMQ sockets, with nothing to drop")
    from colabremote.testing import drop_connection

    ref = session.put([1, 2])
    accumulator = session.remote(Accumulator)(10.0)
    drop_connection(session)  # the session reconnects to the same kernel, which keeps them
    assert ref.fetch() == [1, 2]
    assert accumulator.add(1.0) == 11.0


def test_a_kernel_killed_under_a_remote_instance(fresh_session: cr.Session) -> None:
    """Using the instance afterwards names its class; the session goes on with a new kernel."""
    accumulator = fresh_session.remote(Accumulator)(1.0)
    ref = fresh_session.put("kept")
    with pytest.raises(cr.exceptions.KernelDied):
        fresh_session.remote(kill_the_kernel)()
    with pytest.raises(cr.exceptions.RefLost, match=r"test_compliance\.Accumulator") as lost:
        accumulator.add(1.0)
    assert "restarted or been replaced" in str(lost.value)
    assert lost.value.type_name.endswith("Accumulator")
    with pytest.raises(cr.exceptions.RefLost):
        ref.fetch()
    assert fresh_session.remote(Accumulator)(2.0).add(1.0) == 3.0


# -- the runtime as a workspace: sync, folder download, terminal, forward (issue 12) ----------
# Every backend's kernel runs on this machine here, so remote folders are absolute paths under
# tmp_path (a relative one would land in the local kernel's working directory: this checkout).


def write_tree(root: str, files: dict[str, str]) -> None:
    """Runs on the kernel: ``files`` (relative path -> text) under ``root``."""
    import os

    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as file:
            file.write(text)


def read_tree(root: str) -> dict[str, str]:
    """Runs on the kernel: every file under ``root`` (relative path -> text)."""
    import os

    found = {}
    for here, _folders, names in os.walk(root):
        for name in names:
            path = os.path.join(here, name)
            with open(path) as file:
                found[os.path.relpath(path, root).replace(os.sep, "/")] = file.read()
    return found


def serve_once_started() -> int:
    """Runs on the kernel: a small HTTP server in a thread; its port."""
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"hello from the runtime"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def unused_port() -> int:
    """Runs on the kernel: a port nothing listens on there."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _needs(backend: Any, module: str, what: str) -> None:
    """Skip on a Jupyter server without the server extension ``module`` that ``what`` needs."""
    import importlib.util

    if backend.name == "jupyter" and importlib.util.find_spec(module) is None:
        pytest.skip(f"{what} on a Jupyter server needs {module} installed there")


def test_sync_sends_only_what_changed_and_ignores_what_git_ignores(
    session: cr.Session, tmp_path: Any
) -> None:
    source, target = tmp_path / "src", str(tmp_path / "dst")
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("alpha")
    (source / "sub" / "b.txt").write_text("beta")
    (source / ".gitignore").write_text("*.tmp\n")
    (source / "scratch.tmp").write_text("stays here")
    first = session.sync(source, target)
    assert first.sent == (".gitignore", "a.txt", "sub/b.txt")
    assert session.remote(read_tree)(target) == {
        ".gitignore": "*.tmp\n",
        "a.txt": "alpha",
        "sub/b.txt": "beta",
    }
    (source / "a.txt").write_text("ALPHA")
    second = session.sync(source, target)
    assert second.sent == ("a.txt",) and second.skipped == (".gitignore", "sub/b.txt")


def test_folder_download_mirrors_only_what_differs(session: cr.Session, tmp_path: Any) -> None:
    remote = str(tmp_path / "made-there")
    session.remote(write_tree)(remote, {"score.txt": "0.93", "logs/run.txt": "epoch 1"})
    first = session.download(remote, tmp_path / "here")
    assert sorted(first.sent) == ["logs/run.txt", "score.txt"]
    assert (tmp_path / "here" / "logs" / "run.txt").read_text() == "epoch 1"
    second = session.download(remote, tmp_path / "here")
    assert second.sent == () and sorted(second.skipped) == ["logs/run.txt", "score.txt"]


def test_terminal_runs_a_shell_and_reports_its_exit_status(
    session: cr.Session, backend: Any
) -> None:
    _needs(backend, "jupyter_server_terminals", "a terminal")
    with session.terminal(cols=100, rows=30) as t:
        t.send("echo $((6*7))\n")
        t.expect(r"(?<![(*])\b42\r?\n", timeout=30)  # computed, so the typed line never matches
        t.send("exit 3\n")
        assert t.wait(timeout=30) == 3


def test_forward_reaches_a_server_on_the_runtime(session: cr.Session, backend: Any) -> None:
    import httpx

    from colabremote.exceptions import ConfigurationError

    _needs(backend, "jupyter_server_proxy", "forward")
    port = session.remote(serve_once_started)()
    with session.forward(port) as url:
        reply = httpx.get(url + "/", timeout=30)
    assert (reply.status_code, reply.text) == (200, "hello from the runtime")
    nothing = session.remote(unused_port)()
    here = 0 if backend.name == "local" else unused_port()  # local: the port itself, no relay
    with (
        pytest.raises(ConfigurationError, match=f"nothing listens on port {nothing}"),
        session.forward(nothing, local_port=here),
    ):
        pytest.fail("the forward should not have started")
    if here:  # refused before its listener started: the local port is still free
        import socket

        with socket.socket() as again:
            again.bind(("127.0.0.1", here))


def test_bad_workspace_input_is_one_typed_error_naming_it(
    session: cr.Session, backend: Any, tmp_path: Any
) -> None:
    """Each refused before anything was applied: no remote folder made, no local listener."""
    from colabremote.exceptions import PathNotFound

    with pytest.raises(PathNotFound, match="no-such-folder"):
        session.sync(tmp_path / "no-such-folder", str(tmp_path / "dst"))
    assert not (tmp_path / "dst").exists()
    with pytest.raises(PathNotFound, match="not-made"):
        session.download(str(tmp_path / "not-made"), tmp_path / "here")
    assert not (tmp_path / "here").exists()
    with pytest.raises(cr.ShellCommandError, match=r"'echo no; exit 4' exited with status 4"):
        session.shell("echo no; exit 4", check=True)


# -- detached calls ------------------------------------------------------------------------------


def waits_for_cancel(started: str) -> None:
    with open(started, "w"):
        pass
    for _ in range(600):  # 60 s at most: a cancel that does not arrive fails the test
        time.sleep(0.1)


def test_spawn_streams_logs_then_returns_the_result(session: cr.Session, output: Output) -> None:
    output.clear()
    call = session.remote(printer).spawn(3, 0.01)
    assert ":" in call.id
    expected = "line 0\nline 1\nline 2\nto stderr\n"
    assert "".join(call.logs(follow=True)) == expected  # whole, each piece once
    assert call.result(timeout=60) == "done"
    assert call.logs() == expected
    assert call.status().state == "done"
    assert output.text() == ""  # a detached call's output goes to its log, not the session
    listed = {status.id: status for status in session.calls()}
    assert listed[call.id].function == "printer" and listed[call.id].finished is not None
    failing = session.remote(fails).spawn("detached failure")
    with pytest.raises(ValueError, match="detached failure"):
        failing.result(timeout=60)
    assert session.call(failing.id).status().error == "builtins.ValueError: detached failure"


def test_cancel_interrupts_a_detached_call(session: cr.Session, tmp_path: Any) -> None:
    started = tmp_path / "started"
    call = session.remote(waits_for_cancel).spawn(str(started))
    wait_for_path(started)
    assert call.cancel().state == "cancelled"
    with pytest.raises(CallCancelled, match=call.id):
        call.result(timeout=60)
    assert session.remote(add)(1, 2) == 3  # the kernel runs the session's next calls


# -- generators and map options ------------------------------------------------------------------


def chatty_values(n: int) -> Iterator[int]:
    for i in range(n):
        print(f"making {i}")
        yield i


def megabytes_with_rss(n: int) -> Iterator[tuple[float, bytes]]:
    """``n`` values of 1 MiB each, with the kernel's RSS in MB as produced."""
    for i in range(n):
        yield kernel_rss_mb() if i % 50 == 0 else 0.0, bytes(1024 * 1024)


def test_generator_values_and_output_interleave(session: cr.Session, output: Output) -> None:
    output.clear()
    for value in session.remote(chatty_values)(3):
        output("stdout", f"got {value}\n")
    assert output.text().splitlines() == [
        "making 0",
        "got 0",
        "making 1",
        "got 1",
        "making 2",
        "got 2",
    ]


def test_map_return_exceptions(session: cr.Session) -> None:
    results = list(session.remote(square).map([1, "x", 3], return_exceptions=True))
    assert results[0] == 1 and results[2] == 9
    assert isinstance(results[1], TypeError)


@pytest.mark.slow
def test_kernel_memory_stays_flat_while_a_slow_consumer_reads_a_generator(
    session: cr.Session,
) -> None:
    """1 GB through a generator to a consumer slower than the kernel: the kernel's memory holds
    only the few steps asked for ahead (``STREAM_WINDOW`` of at most 4 MiB each)."""
    samples = []
    for i, (rss, payload) in enumerate(session.remote(megabytes_with_rss)(1000)):
        assert len(payload) == 1024 * 1024
        if rss:
            samples.append(rss)
        if i % 10 == 0:
            time.sleep(0.001)  # a slow consumer
    assert max(samples) - samples[0] < 100, (
        f"kernel RSS went {samples[0]:.0f} -> {max(samples):.0f} MB"
    )


# -- retries under faults (issue 13) -------------------------------------------------------------


def count_run(path: str) -> int:
    """Appends a line to ``path`` (outside the kernel's memory); how many runs there were."""
    with open(path, "a") as f:
        f.write("run\n")
    with open(path) as f:
        return len(f.read().splitlines())


def killed_on_first_run(path: str) -> int:
    count = count_run(path)
    if count == 1:
        kill_the_kernel()
    return count


def raises_on_first_run(path: str, seconds: float) -> int:
    """The first run raises ValueError, or sleeps ``seconds`` past a timeout when given."""
    count = count_run(path)
    if count == 1:
        if not seconds:
            raise ValueError("the first run fails")
        time.sleep(seconds)
    return count


def run_count(path: Any) -> int:
    with open(path) as f:
        return len(f.read().splitlines())


@pytest.mark.slow
def test_a_call_whose_kernel_is_killed_runs_once_more_on_the_fresh_kernel(
    fresh_session: cr.Session, tmp_path: Any
) -> None:
    f = fresh_session.remote(killed_on_first_run)
    with pytest.raises(cr.exceptions.KernelDied):
        f(str(tmp_path / "raised"))
    assert run_count(tmp_path / "raised") == 1
    assert f.with_options(retries=1)(str(tmp_path / "retried")) == 2
    assert run_count(tmp_path / "retried") == 2


def test_only_errors_named_in_retry_on_are_retried(session: cr.Session, tmp_path: Any) -> None:
    f = session.remote(raises_on_first_run, retries=1)
    with pytest.raises(ValueError, match="first run"):
        f(str(tmp_path / "own"), 0)
    assert run_count(tmp_path / "own") == 1
    timed = f.with_options(timeout=0.5, retry_on=(TimeoutError,))
    assert timed(str(tmp_path / "timeout"), 60) == 2
    with pytest.raises(cr.exceptions.RemoteTimeout):
        f.with_options(timeout=0.5, retry_on=(KeyError,))(str(tmp_path / "not"), 60)
    assert run_count(tmp_path / "not") == 1


def test_map_unordered(session: cr.Session) -> None:
    assert sorted(session.remote(square).map(range(5), ordered=False)) == [0, 1, 4, 9, 16]
