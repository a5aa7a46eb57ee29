"""Sessions: one kernel, its lifecycle, and the calls that run on it.

``_Core`` holds the state and runs on colabremote's private event loop; :class:`Session` (blocking)
and :class:`AsyncSession` (``await``) are thin facades over it, so both work anywhere, including
inside a running event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _serialization as serialization
from ._backends.base import Backend
from ._backends.factory import make_backend
from ._kernel.calls import Interrupts
from ._kernel.client import AgentReply, KernelClient, OutputHandler
from ._kernel.wire import Op
from ._loop import loop_thread
from .exceptions import (
    AuthError,
    ConfigurationError,
    ConnectionLost,
    KernelDied,
    RemoteCallError,
    RemoteTimeout,
    SessionClosed,
)

if TYPE_CHECKING:
    from ._remote import RemoteFunction

log = logging.getLogger("colabremote")

T = TypeVar("T")
Item = tuple[tuple[Any, ...], dict[str, Any]]
Outcome = tuple[str, Any]

#: How long an interrupted call may take to stop before the kernel is replaced.
INTERRUPT_GRACE = 10.0
#: How long a dropped kernel connection is retried before the calls in flight fail.
RECONNECT_SECONDS = 60.0
_ALIVE_POLL = {"local": 0.25}
_DEFAULT_ALIVE_POLL = 2.0


@dataclass(frozen=True)
class SessionInfo:
    """What the session runs on. Never holds secrets."""

    backend: str
    python: str
    implementation: str
    platform: str
    hostname: str
    pid: int
    cwd: str
    gpus: tuple[dict[str, str], ...]
    tpus: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def python_version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)


def _default_output(name: str, text: str) -> None:
    stream = sys.stderr if name == "stderr" else sys.stdout
    stream.write(text)
    stream.flush()


@dataclass(frozen=True)
class RuntimeInfo:
    """A Colab runtime: what it is and where its proxy is (never the proxy token)."""

    endpoint: str
    accelerator: str
    variant: str | None
    machine_shape: str | None
    runtime_version: str | None
    idle_timeout: float | None
    proxy_url: str | None
    release_on_close: bool


def runtime_info(backend: Backend) -> RuntimeInfo:
    if backend.name not in ("colab", "emulator"):
        raise ConfigurationError(
            f"a {backend.name!r} session has no Colab runtime; Session.info describes its kernel"
        )
    d = backend.describe()
    return RuntimeInfo(
        endpoint=str(d["endpoint"]),
        accelerator=str(d["accelerator"]),
        variant=d.get("variant"),
        machine_shape=d.get("machine_shape"),
        runtime_version=d.get("runtime_version"),
        idle_timeout=d.get("idle_timeout"),
        proxy_url=d.get("proxy_url"),
        release_on_close=bool(d.get("release_on_close")),
    )


def _silent(message: str) -> None:
    del message


def _default_progress(message: str) -> None:
    if sys.stderr is not None and sys.stderr.isatty():
        sys.stderr.write(f"colabremote: {message}\n")
        sys.stderr.flush()
    log.info("%s", message)


class _Core:
    """A session's state and logic. Every method runs on the private event loop."""

    def __init__(
        self,
        backend: Backend,
        *,
        on_output: OutputHandler | None,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.backend = backend
        self.on_output = on_output or _default_output
        self.progress = progress or _default_progress
        self.show_progress = progress is not _silent  # progress=False also hides transfer bars
        self.client: KernelClient | None = None
        self.modules = serialization.LocalModules()
        self.state = "new"
        self._gate = asyncio.Lock()  # one open / revive at a time
        self._watchdog: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._gpu_info: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._gate:
            if self.state == "open":
                return
            if self.state == "closed":
                raise SessionClosed("this session is closed; create a new one")
            try:
                await self.backend.start(self.progress)
                await self._connect()
            except BaseException:
                await self._teardown()
                self.state = "closed"
                raise
            self.state = "open"
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
            _open_cores.add(self)

    async def _connect(self) -> None:
        transport = await self.backend.connect()
        client = KernelClient(
            transport,
            on_output=self.on_output,
            on_colab_request=getattr(self.backend, "answer_colab_request", None),
        )
        client.show_progress = self.show_progress
        client.on_disconnect = lambda exc: self._schedule_reconnect(client, exc)
        client.start()
        try:
            await self._wait_ready(client)
            await client.install_agent()
        except BaseException:
            await client.close()
            raise
        self.client = client
        self.modules.forget_sent()

    async def _wait_ready(self, client: KernelClient) -> None:
        """Until the kernel answers on shell and its output reaches us (iopub is subscribed).

        A kernel that has just started may publish before our subscription reaches it, and then
        the probe's idle status is lost although its reply came. The reply says the kernel is
        up, so the next probe goes 0.1 s later rather than after the full second.
        """
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            try:
                await client.execute("", silent=True, quiet=True, timeout=1.0, idle_timeout=0.1)
                return
            except TimeoutError:
                pass
            except ConnectionLost:
                if not await self.backend.is_alive():
                    raise self._startup_failure() from None
                raise
            if not await self.backend.is_alive():
                raise self._startup_failure()
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionLost("the kernel did not answer within 120 s of starting")

    def _schedule_reconnect(self, client: KernelClient, exc: ConnectionLost) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect(client, exc))
        self._reconnecting = task

    async def _reconnect(self, client: KernelClient, exc: ConnectionLost) -> None:
        """Reconnect to the same kernel after a dropped connection; nothing in flight is lost."""
        self.progress("the kernel connection dropped; reconnecting")
        delay = 0.2
        deadline = asyncio.get_running_loop().time() + RECONNECT_SECONDS
        while self.state == "open" and client is self.client:
            try:
                if not await self.backend.is_alive():
                    gone = getattr(self.backend, "gone", None)
                    client.fail_all(
                        gone or KernelDied("the kernel died while the connection was down")
                    )
                    return
                transport = await self.backend.connect()
            except AuthError as error:
                # Signing in failed: trying again cannot fix that. Say what to do now, not in
                # 60 s. (A runtime proxy's own 401 is still retried: a new proxy token fixes it.)
                client.fail_all(error)
                return
            except Exception as error:  # noqa: BLE001 - retried until the deadline
                if asyncio.get_running_loop().time() > deadline:
                    client.fail_all(ConnectionLost(f"could not reconnect to the kernel: {error}"))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            await client.reconnect(transport)
            self.progress("reconnected to the kernel")
            return

    def _startup_failure(self) -> Exception:
        explain = getattr(self.backend, "startup_failure", None)
        if explain is not None:
            failure: Exception = explain()
            return failure
        return KernelDied("the kernel died while starting")

    async def close(self) -> None:
        async with self._gate:
            if self.state == "closed":
                return
            self.state = "closed"
            _open_cores.discard(self)
            await self._teardown()

    async def _teardown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watchdog
        if self.client is not None:
            await self.client.close()
            self.client = None
        await self.backend.close()

    async def _watch(self) -> None:
        """Notice a kernel that dies during a call (a crash, the OOM killer)."""
        interval = _ALIVE_POLL.get(self.backend.name, _DEFAULT_ALIVE_POLL)
        while True:
            await asyncio.sleep(interval)
            client = self.client
            if client is None or client.failure is not None or client.calls_in_flight == 0:
                continue
            try:
                alive = await self.backend.is_alive()
            except Exception:  # noqa: BLE001 - a failed probe is not a death
                continue
            if not alive and client.failure is None:
                client.fail_all(
                    KernelDied(
                        "the kernel died during the call (it may have run out of memory or "
                        "crashed in native code); the session starts a fresh kernel for the "
                        "next call, without the old kernel's state"
                    )
                )

    async def ready_client(self) -> KernelClient:
        """The healthy kernel client, replacing a dead kernel or a dropped connection first."""
        if self.state == "new":
            await self.open()
        if self.state == "closed":
            raise SessionClosed("this session is closed; create a new one")
        client = self.client
        if client is not None and client.failure is None:
            return client
        async with self._gate:
            client = self.client
            if client is not None and client.failure is None:
                return client
            failure = client.failure if client is not None else None
            if client is not None:
                await client.close()
                self.client = None
            if isinstance(failure, KernelDied) or not await self.backend.is_alive():
                await self.backend.restart(self.progress)
            await self._connect()
            assert self.client is not None
            return self.client

    # -- calls -----------------------------------------------------------------------------

    async def run(
        self,
        fn: Callable[..., Any],
        items: Sequence[Item],
        *,
        timeout: float | None,
        name: str,
    ) -> tuple[list[Outcome], float]:
        """Run ``fn`` once per item, in one message. Returns the outcomes and kernel seconds."""
        client = await self.ready_client()
        python = client.kernel_python or sys.version_info[:3]
        function = serialization.pack_function(fn, kernel_python=python)
        arguments = serialization.pack_arguments(items, kernel_python=python)
        files = self.modules.pending(serialization.imported_names(fn))
        # Nothing is awaited between here and sending the call, so calls reach the kernel in
        # the order they were made; the sources go just ahead of the call that needs them.
        shipped = self._ship(client, files) if files else None
        call = client.calls.submit(name, function.key, function.parts, arguments)
        if shipped is not None:
            await shipped
        interrupts = Interrupts(
            interrupt=self.backend.interrupt,
            replace_kernel=functools.partial(self._replace_stuck_kernel, client),
            progress=self.progress,
            grace=INTERRUPT_GRACE,
        )
        reply = await client.calls.result(call, timeout=timeout, interrupts=interrupts)
        outcomes = serialization.unpack_outcomes(reply.parts) if reply.parts else []
        return outcomes, float(reply.fields.get("seconds", 0.0))

    def _ship(
        self, client: KernelClient, files: list[serialization.SourceFile]
    ) -> asyncio.Future[AgentReply]:
        """Send local modules to the kernel now; the returned future is its answer."""
        listing = [{"path": f.path, "module": f.module, "hash": f.digest} for f in files]
        contents = [f.content for f in files]
        sent = client.agent_request({"op": Op.SOURCES, "files": listing}, contents)
        self.modules.mark_sent(files)
        return sent

    async def _replace_stuck_kernel(self, client: KernelClient) -> None:
        self.progress("the kernel ignored the interrupt; starting a fresh one")
        client.fail_all(KernelDied("the kernel did not respond to an interrupt and was replaced"))
        with contextlib.suppress(Exception):
            await self.backend.restart(self.progress)

    # -- other operations ------------------------------------------------------------------

    async def exec(self, code: str, timeout: float | None) -> None:
        client = await self.ready_client()
        task = asyncio.get_running_loop().create_task(client.execute(code, store_history=False))
        try:
            done, _ = await asyncio.wait([task], timeout=timeout)
        except asyncio.CancelledError:  # Ctrl-C: stop the code in the kernel too
            await asyncio.shield(self._stop_execute(task))
            raise
        if not done:
            await self._stop_execute(task)
            raise RemoteTimeout(f"the code did not finish within {timeout:g} s and was interrupted")
        task.result()

    async def _stop_execute(self, task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(Exception):
            await self.backend.interrupt()
        done, _ = await asyncio.wait([task], timeout=INTERRUPT_GRACE)
        if done:
            with contextlib.suppress(BaseException):
                task.result()
        else:
            task.cancel()
            if self.client is not None:
                await self._replace_stuck_kernel(self.client)

    async def transfer(self, direction: str, source: str, target: str, progress: bool) -> None:
        await self.ready_client()
        if direction == "upload":
            if not os.path.isfile(source):
                raise FileNotFoundError(f"{source} is not a file here")
            await self.backend.upload(source, target, show_progress=progress)
        else:
            await self.backend.download(source, target, show_progress=progress)

    async def info(self) -> SessionInfo:
        client = await self.ready_client()
        if self._gpu_info is None:
            reply = await client.agent_request({"op": "info"})
            self._gpu_info = reply.fields
        hello = client.hello
        python = hello.get("python") or [0, 0, 0]
        return SessionInfo(
            backend=self.backend.name,
            python=".".join(str(p) for p in python),
            implementation=str(hello.get("implementation", "")),
            platform=str(hello.get("platform", "")),
            hostname=str(hello.get("hostname", "")),
            pid=int(hello.get("pid", 0)),
            cwd=str(hello.get("cwd", "")),
            gpus=tuple(self._gpu_info.get("gpus") or ()),
            tpus=tuple(self._gpu_info.get("tpus") or ()),
            details=self.backend.describe(),
        )


def outcome_value(outcome: Outcome, name: str) -> Any:
    """The value of one outcome, or raise what the remote function raised."""
    status, value = outcome
    if status == "ok":
        return value
    if status == "interrupted":
        raise RemoteCallError(
            f"{name} was interrupted on the kernel (by an interrupt sent to the kernel "
            "from elsewhere, or meant for another call); it did not complete"
        )
    raise serialization.rebuild_exception(value)


# -- facades -----------------------------------------------------------------------------------


class _SessionBase:
    """What Session and AsyncSession share: construction, ``remote`` and ``info``."""

    def __init__(
        self,
        backend: str | Backend = "local",
        *,
        on_output: OutputHandler | None = None,
        progress: Callable[[str], None] | bool | None = None,
        **options: Any,
    ) -> None:
        progress_fn: Callable[[str], None] | None
        if progress is False:
            progress_fn = _silent
        elif progress is True or progress is None:
            progress_fn = None
        else:
            progress_fn = progress
        self._core = _Core(
            make_backend(backend, options), on_output=on_output, progress=progress_fn
        )
        self._loop = loop_thread()
        _release_on_sigterm(self._core.backend)

    @property
    def backend(self) -> str:
        return self._core.backend.name

    @property
    def closed(self) -> bool:
        return self._core.state == "closed"

    @overload
    def remote(self, fn: Callable[..., T], /) -> RemoteFunction[..., T]: ...

    @overload
    def remote(
        self, fn: None = None, /, *, timeout: float | None = None
    ) -> Callable[[Callable[..., T]], RemoteFunction[..., T]]: ...

    def remote(self, fn: Any = None, /, *, timeout: float | None = None) -> Any:
        """Decorate a function so calling it runs it on this session's kernel."""
        from ._remote import remote

        return remote(fn, timeout=timeout, session=self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend!r} state={self._core.state!r}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a colabremote Session cannot be sent to the kernel; create what the remote "
            "function needs inside it"
        )

    # Used by RemoteFunction: run on the private loop.
    def _submit_run(
        self, fn: Callable[..., Any], items: Sequence[Item], timeout: float | None, name: str
    ) -> Any:
        return self._loop.submit(self._core.run(fn, items, timeout=timeout, name=name))


class Session(_SessionBase):
    """A kernel to run functions on, used from ordinary (blocking) code.

    ``Session(backend="local")`` starts a kernel on this machine (``python=`` picks another
    interpreter); ``Session(backend="jupyter", url=..., token=...)`` uses any Jupyter server.
    The kernel starts on first use or on ``with``; ``close()`` releases it.
    """

    def open(self) -> Session:
        self._loop.run(self._core.open())
        return self

    def close(self) -> None:
        if self._core.state != "closed":
            self._loop.run(self._core.close())

    def __enter__(self) -> Session:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def exec(self, code: str, *, timeout: float | None = None) -> None:
        """Run code in the kernel; what it prints appears here as it is printed."""
        self._loop.run(self._core.exec(code, timeout))

    @property
    def info(self) -> SessionInfo:
        """Python version, platform, hostname, GPUs and backend of the kernel."""
        return self._loop.run(self._core.info())

    @property
    def runtime(self) -> RuntimeInfo:
        """The Colab runtime this session holds (Colab and emulator sessions only)."""
        self._loop.run(self._core.ready_client())
        return runtime_info(self._core.backend)

    def upload(self, local: str | os.PathLike[str], remote: str, *, progress: bool = True) -> None:
        """Copy a local file to the kernel's machine (on Colab, for example to
        ``/content/data.csv``). A progress bar shows on a terminal unless ``progress=False``."""
        self._loop.run(self._core.transfer("upload", os.fspath(local), remote, progress))

    def download(
        self, remote: str, local: str | os.PathLike[str], *, progress: bool = True
    ) -> None:
        """Copy a file from the kernel's machine here; the local file appears whole or not at
        all."""
        self._loop.run(self._core.transfer("download", remote, os.fspath(local), progress))


class AsyncSession(_SessionBase):
    """The same as :class:`Session`, for ``async`` code: ``async with AsyncSession() as s``."""

    async def _run(self, coro: Any) -> Any:
        return await asyncio.wrap_future(self._loop.submit(coro))

    async def open(self) -> AsyncSession:
        await self._run(self._core.open())
        return self

    async def close(self) -> None:
        await self._run(self._core.close())

    async def __aenter__(self) -> AsyncSession:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def exec(self, code: str, *, timeout: float | None = None) -> None:
        await self._run(self._core.exec(code, timeout))

    async def info(self) -> SessionInfo:
        result: SessionInfo = await self._run(self._core.info())
        return result

    async def runtime(self) -> RuntimeInfo:
        """The Colab runtime this session holds (Colab and emulator sessions only)."""
        await self._run(self._core.ready_client())
        return runtime_info(self._core.backend)

    async def upload(
        self, local: str | os.PathLike[str], remote: str, *, progress: bool = True
    ) -> None:
        await self._run(self._core.transfer("upload", os.fspath(local), remote, progress))

    async def download(
        self, remote: str, local: str | os.PathLike[str], *, progress: bool = True
    ) -> None:
        await self._run(self._core.transfer("download", remote, os.fspath(local), progress))


# -- the default session -----------------------------------------------------------------------

_default_lock = threading.Lock()
_default: Session | None = None


def settings_from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Session options from ``COLABREMOTE_*`` variables."""
    env = os.environ if environ is None else environ
    backend = env.get("COLABREMOTE_BACKEND") or "local"
    options: dict[str, Any] = {"backend": backend}
    names = {
        "COLABREMOTE_PYTHON": "python",
        "COLABREMOTE_URL": "url",
        "COLABREMOTE_TOKEN": "token",
        "COLABREMOTE_KERNEL_NAME": "kernel_name",
    }
    if backend in ("colab", "emulator"):
        names = {"COLABREMOTE_GPU": "gpu", "COLABREMOTE_TPU": "tpu"}
        if backend == "colab":
            names["COLABREMOTE_BASE_URL"] = "base_url"
    for variable, option in names.items():
        if env.get(variable):
            options[option] = env[variable]
    return options


def default_session() -> Session:
    """The session ``@colabremote.remote`` functions use: made on first use from
    ``COLABREMOTE_*`` settings, closed when the interpreter exits."""
    global _default
    with _default_lock:
        if _default is None or _default.closed:
            options = settings_from_environment()
            backend = options.pop("backend")
            _default = Session(backend, **options)
        return _default


def _close_default() -> None:
    global _default
    session, _default = _default, None
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


_open_cores: weakref.WeakSet[_Core] = weakref.WeakSet()


def _release_on_sigterm(backend: Backend) -> None:
    """Make SIGTERM exit through the interpreter's exit hooks, which release Colab runtimes.

    Installed once, from the main thread, and only where SIGTERM still has its default action
    (a program's own handler is left alone).
    """
    if backend.name not in ("colab", "emulator"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@atexit.register
def _close_all_at_exit() -> None:
    """Sessions still open when the interpreter exits release their kernels."""
    _close_default()
    cores = list(_open_cores)
    if not cores:
        return
    thread = loop_thread()

    async def close_all() -> None:
        await asyncio.gather(*(core.close() for core in cores), return_exceptions=True)

    with contextlib.suppress(Exception):
        thread.submit(close_all()).result(timeout=30)
