"""A session's core: one kernel, its lifecycle, and the calls that run on it.

``_Core`` holds the state and runs on colabremote's private event loop; ``AsyncSession`` and
``Session`` (in ``api.py``) are facades over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import logging
import os
import posixpath
import sys
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .._backends.base import Backend
from .._info import SessionInfo
from .._kernel.calls import Call, Interrupts
from .._kernel.client import KernelClient, OutputHandler
from .._kernel.messages import AgentReply
from .._kernel.wire import ItemStatus, Op
from .._serialization import (
    KernelTarget,
    LocalModules,
    SourceFile,
    pack_arguments,
    pack_function,
    rebuild_exception,
    unpack_outcomes,
)
from .._workspace import files
from .._workspace.packages import PackageSpec, install
from .._workspace.secrets import SET_ENVIRONMENT, KernelEnvironment
from ..exceptions import (
    AuthError,
    ConfigurationError,
    ConnectionLost,
    KernelDied,
    PathNotFound,
    PythonMismatchWarning,
    RemoteCallError,
    RemoteTimeout,
    SessionClosed,
    SessionForked,
)

log = logging.getLogger("colabremote")
#: True inside the task that installs a session's packages on its first connect.
_INSTALLING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "colabremote_installing", default=False
)

Item = tuple[tuple[Any, ...], dict[str, Any]]
Outcome = tuple[str, Any]

#: How long an interrupted call may take to stop before the kernel is replaced.
INTERRUPT_GRACE = 10.0
#: How long a dropped kernel connection is retried before the calls in flight fail.
RECONNECT_SECONDS = 60.0
#: How long a new kernel may take to set the session's environment variables.
ENVIRONMENT_TIMEOUT = 60.0
#: How long ``close()`` waits for a reconnection or a kernel start under way to give up, before
#: it tears the session down anyway.
CLOSE_WAIT_SECONDS = 10.0


class State(enum.Enum):
    """Where a session is in its life: made, open (a kernel is connected), or closed for good."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def _default_output(name: str, text: str) -> None:
    stream = sys.stderr if name == "stderr" else sys.stdout
    stream.write(text)
    stream.flush()


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
        remake_backend: Callable[[], Backend],
        on_output: OutputHandler | None,
        progress: Callable[[str], None] | None,
        exclude_modules: Iterable[str | os.PathLike[str]] = (),
        trust_kernel: bool = True,
        packages: PackageSpec | None = None,
        environment: KernelEnvironment | None = None,
    ) -> None:
        self.backend = backend
        #: Installed at open, before the first call (``Session(pip=..., requirements=...)``).
        self.packages = packages
        #: ``env=`` and ``secrets=``: set on every new kernel before anything else runs there.
        self.environment = environment or KernelEnvironment()
        #: False: results and exceptions from the kernel are rebuilt as plain data only.
        self.trust_kernel = trust_kernel
        self._remake_backend = remake_backend  # a closed backend is not reused: a fresh one
        self.on_output = on_output or _default_output
        self.progress = progress or _default_progress
        self.show_progress = progress is not _silent  # progress=False also hides transfer bars
        self.client: KernelClient | None = None
        self.modules = LocalModules(exclude_modules)
        self.state = State.NEW
        self._gate = asyncio.Lock()  # one open / revive at a time
        self._watchdog: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        #: A client still being connected (under ``_gate``), so ``close()`` can stop it.
        self._connecting: KernelClient | None = None
        self._torn_down = False
        self._gpu_info: dict[str, Any] | None = None
        self._start_failure: BaseException | None = None  # why the last start failed
        self._pid = os.getpid()  # a forked child gets a copy of this core it must not use
        self._python_reported = False  # the PythonMismatchWarning is said once per session
        #: The session opened without a kernel (``connect=False``) and has packages: the first
        #: call to connect one installs them, before that call; ``_installed`` is its outcome,
        #: which the other callers wait for.
        self._install_pending = False
        self._installed: asyncio.Future[None] | None = None
        #: Run first by ``close()``, while the backend still works (detached calls decide there
        #: whether the kernel and runtime must stay).
        self.close_hooks: list[Callable[[], Awaitable[None]]] = []

    def _refuse_if_forked(self) -> None:
        """A forked child shares the parent's kernel connection and runtime: using them from
        there would corrupt the parent's session, so the child gets a clear error instead."""
        if os.getpid() != self._pid:
            raise SessionForked(
                "this session was made in the parent of this forked process and cannot be used "
                "here (sessions do not survive fork); make a new session in the child. The "
                "parent's session keeps working"
            )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, connect: bool = True) -> None:
        """Get the kernel and connect to it. ``connect=False``: get only what it runs on (for
        detached calls, read through the server); the first call starts and connects it."""
        self._refuse_if_forked()
        async with self._gate:
            if self.state is State.OPEN:
                return
            if self.state is State.CLOSED:
                raise self._closed_error()
            try:
                # Secrets are read first: a missing one fails here, before a runtime is got.
                # (In a thread: a keyring may take a while, or ask the user to unlock it.)
                if self.environment.unread:
                    await asyncio.to_thread(self.environment.resolve)
                self.backend.secrets = self.environment.secrets
                if not connect:
                    self.backend.defer_kernel()
                await self.backend.start(self.progress)
                if connect:
                    await self._connect()
            except (asyncio.CancelledError, KeyboardInterrupt):
                # Interrupted (Ctrl-C), not failed: release what was got and stay NEW, so the
                # next call starts again, with a fresh backend.
                await asyncio.shield(self._teardown())
                self.backend = self._remake_backend()
                raise
            except BaseException as error:
                await self._teardown()
                self.state = State.CLOSED
                self._start_failure = error
                raise
            self._start_failure = None
            self.state = State.OPEN
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())
            _open_cores.add(self)
        # Outside the gate (the install is a call, and a call may need the gate to reconnect),
        # yet before any other call: nothing is awaited between here and sending the install.
        if self.packages is not None:
            if connect:
                await self._prepare(self.packages)
            else:
                self._install_pending = True

    async def _prepare(self, packages: PackageSpec) -> None:
        """Install the session's packages before any call; if that fails, the open failed."""
        try:
            await install(self, packages)
        except BaseException as error:
            self.state = State.CLOSED
            _open_cores.discard(self)
            self._start_failure = error
            await asyncio.shield(self._teardown())
            raise

    def _closed_error(self) -> SessionClosed:
        """SessionClosed, saying why the session's start failed when that is what closed it."""
        failure = self._start_failure
        if failure is None:
            return SessionClosed("this session is closed; create a new one")
        why = type(failure).__name__
        if str(failure):
            why = f"{why}: {failure}"
        return SessionClosed(f"this session is closed: its start failed ({why}); create a new one")

    async def _connect(self) -> None:
        self.backend.new_client()
        transport = await self.backend.connect()
        client = KernelClient(
            transport,
            on_output=self.on_output,
            on_colab_request=self.backend.answer_colab_request,
        )
        client.show_progress = self.show_progress
        client.on_disconnect = lambda exc: self._schedule_reconnect(client, exc)
        client.start()
        self._connecting = client
        try:
            await self._wait_ready(client)
            await client.install_agent()
            await self._set_environment(client)
            if self.state is State.CLOSED:
                raise SessionClosed("this session was closed while it connected to the kernel")
        except BaseException:
            await client.close()
            raise
        finally:
            self._connecting = None
        self.client = client
        self.modules.forget_sent()
        self._report_python(client)

    def _report_python(self, client: KernelClient) -> None:
        """Say once, at open, when the kernel runs another Python minor version than this one,
        which functions still travel (those with source) and which cannot."""
        if self._python_reported or client.kernel_python is None:
            return
        self._python_reported = True
        remote = ".".join(map(str, client.kernel_python[:2]))
        local = ".".join(map(str, sys.version_info[:2]))
        if remote == local:
            return
        message = (
            f"the kernel runs Python {remote}, this Python is {local}: functions from .py files "
            "and IPython cells travel as source and work; those typed at a plain python prompt "
            "or made with exec cannot be sent (PythonVersionMismatch). For the same Python on "
            f"both sides, run Python {remote} here, or on Colab pass runtime_version='match'"
        )
        log.info("%s", message)
        warnings.warn(PythonMismatchWarning(message, local=local, remote=remote), stacklevel=2)

    async def _set_environment(self, client: KernelClient) -> None:
        """Set ``env=`` and ``secrets=`` in a new kernel's ``os.environ``, before any call of the
        user's: at open, and on each kernel after a restart or a replacement. The values go as
        a call's pickled argument, never as code text."""
        variables = self.environment.variables()
        if not variables:
            return
        python = client.kernel_python or sys.version_info[:3]
        function = pack_function(SET_ENVIRONMENT, kernel_python=python)
        arguments = pack_arguments([((variables,), {})], kernel_python=python)
        name = "setting the session's environment variables"
        call = client.calls.submit(name, function.key, function.parts, arguments)
        interrupts = Interrupts(
            interrupt=self.backend.interrupt,
            replace_kernel=functools.partial(self._replace_stuck_kernel, client),
            progress=self.progress,
            grace=INTERRUPT_GRACE,
        )
        reply = await client.calls.result(call, timeout=ENVIRONMENT_TIMEOUT, interrupts=interrupts)
        outcomes = unpack_outcomes(reply.parts, trusted=self.trust_kernel)
        outcome_value(outcomes[0], name)

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
                    raise self.backend.startup_failure() from None
                raise
            if not await self.backend.is_alive():
                raise self.backend.startup_failure()
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
        while self.state is State.OPEN and client is self.client:
            try:
                if not await self.backend.is_alive():
                    client.fail_all(
                        self.backend.gone
                        or KernelDied("the kernel died while the connection was down")
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

    async def close(self) -> None:
        if os.getpid() != self._pid:
            return  # the parent owns the kernel and closes it; a child's close leaves it be
        if self.state is State.CLOSED:
            return
        for hook in self.close_hooks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), CLOSE_WAIT_SECONDS)
        # Said first, so a reconnection or kernel start under way gives up instead of holding
        # the gate: close() finishes, and releases the runtime, whatever the connection does.
        self.state = State.CLOSED
        _open_cores.discard(self)
        closed = SessionClosed("this session was closed")
        for client in (self.client, self._connecting):
            if client is not None:
                client.fail_all(closed)
        try:
            await asyncio.wait_for(self._gate.acquire(), CLOSE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("closing the session while a kernel start or reconnection is under way")
            await self._teardown()
            return
        try:
            await self._teardown()
        finally:
            self._gate.release()

    async def _teardown(self) -> None:
        """Stop everything and release the kernel, once (a failed open and close both call it)."""
        if self._torn_down:
            return
        self._torn_down = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reconnecting
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
        interval = self.backend.alive_poll_interval
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
        """The healthy kernel client, replacing a dead kernel or a dropped connection first.

        On a session that opened without a kernel, the first caller installs the packages
        (its own calls pass straight through) and every other caller waits for that."""
        client = await self._revived_client()
        if not self._install_pending or _INSTALLING.get():
            return client
        if self._installed is None:
            installed = self._installed = asyncio.get_running_loop().create_future()
            token = _INSTALLING.set(True)  # the install's own calls pass straight through
            try:
                assert self.packages is not None
                await self._prepare(self.packages)
            except BaseException as error:
                installed.set_exception(error)
                installed.exception()  # retrieved here; each waiting caller raises it too
                raise
            finally:
                _INSTALLING.reset(token)
                self._install_pending = False
            installed.set_result(None)
        else:
            await asyncio.shield(self._installed)
        return await self._revived_client()

    async def _revived_client(self) -> KernelClient:
        self._refuse_if_forked()
        if self.state is State.NEW:
            await self.open()
        if self.state is State.CLOSED:
            raise self._closed_error()
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
        reached: set[str] = set()
        # Refs in the call travel as keys, checked against this session and this kernel.
        target = KernelTarget(self, client.hello.get("kept_identity"))
        function = pack_function(fn, kernel_python=python, reached=reached, kernel=target)
        arguments = pack_arguments(items, kernel_python=python, reached=reached, kernel=target)
        files = self.modules.pending(reached)
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
        outcomes = unpack_outcomes(reply.parts, trusted=self.trust_kernel) if reply.parts else []
        return self.modules.explain_missing(outcomes), float(reply.fields.get("seconds", 0.0))

    async def send_call(
        self,
        client: KernelClient,
        fn: Callable[..., Any],
        item: Item,
        *,
        name: str,
        fields: dict[str, Any],
    ) -> Call:
        """Send one call with extra ``fields`` on ``client`` (from :meth:`ready_client`), and
        return once it is sent, not answered: a generator's first step, whose values arrive
        before its answer. Wait for it with ``client.calls.result`` and :meth:`interrupts_for`."""
        python = client.kernel_python or sys.version_info[:3]
        reached: set[str] = set()
        function = pack_function(fn, kernel_python=python, reached=reached)
        arguments = pack_arguments([item], kernel_python=python, reached=reached)
        files = self.modules.pending(reached)
        shipped = self._ship(client, files) if files else None
        call = client.calls.submit(name, function.key, function.parts, arguments, fields=fields)
        if shipped is not None:
            await shipped
        return call

    def interrupts_for(self, client: KernelClient) -> Interrupts:
        """How a call on ``client`` is stopped (a timeout, Ctrl-C)."""
        return Interrupts(
            interrupt=self.backend.interrupt,
            replace_kernel=functools.partial(self._replace_stuck_kernel, client),
            progress=self.progress,
            grace=INTERRUPT_GRACE,
        )

    def _ship(self, client: KernelClient, files: list[SourceFile]) -> asyncio.Future[AgentReply]:
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

    async def call(
        self, fn: Callable[..., Any], args: Sequence[Any], *, timeout: float | None, name: str
    ) -> Any:
        """Run ``fn(*args)`` on the kernel once and return its value (or raise its error)."""
        outcomes, _seconds = await self.run(fn, [(tuple(args), {})], timeout=timeout, name=name)
        return outcome_value(outcomes[0], name)

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
        try:
            task.result()
        except ModuleNotFoundError as error:
            explained = self.modules.missing_in_exec(error)
            if explained is None:
                raise
            raise explained from error.__cause__

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
        """Copy one file. A download to an existing directory lands inside it under the remote
        file's name, as ``cp`` does."""
        await self.ready_client()
        if direction == "upload":
            if not os.path.isfile(source):
                raise PathNotFound(
                    f"{source} is not a file here; pass the path of an existing file to upload"
                )
            if os.path.getsize(source) > files.CHUNK and await files.upload_in_pieces(
                self, source, target, progress=progress
            ):
                return  # through the kernel in pieces, never one giant request
            await self.backend.upload(source, target, show_progress=progress)
            return
        if os.path.isdir(target):
            name = posixpath.basename(source.rstrip("/"))
            if not name:
                raise ConfigurationError(
                    f"{source!r} names no file to download; pass the remote file's path"
                )
            target = os.path.join(target, name)
        await self.backend.download(source, target, show_progress=progress)

    async def kernel_file_path(self, remote: str) -> str | None:
        """Where the file ``upload``/``download`` name ``remote`` is on the kernel's machine,
        when the backend can tell."""
        client = await self.ready_client()
        kernel = files.KernelSide(self, str(client.hello.get("cwd") or ""))
        return await self.backend.kernel_file_path(remote, kernel)

    async def info(self) -> SessionInfo:
        client = await self.ready_client()
        if self._gpu_info is None:
            reply = await client.agent_request({"op": Op.INFO})
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
    if status == ItemStatus.OK:
        return value
    if status == ItemStatus.INTERRUPTED:
        raise RemoteCallError(
            f"{name} was interrupted on the kernel (by an interrupt sent to the kernel "
            "from elsewhere, or meant for another call); it did not complete"
        )
    raise rebuild_exception(value)


#: Sessions that are open, so the interpreter's exit hooks can release their kernels.
_open_cores: weakref.WeakSet[_Core] = weakref.WeakSet()
